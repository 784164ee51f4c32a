"""Dataset registry: one name → all the splits a training run needs.

Each entry returns ``{split_name: TensorImageDataset}`` with a ``"train"`` split, a ``"val"``
split (used for model selection; never the test set) and one or more test splits. Everything a
run reports is computed on these splits with the dataset's own ``aligned_groups``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from debias.data.base import TensorImageDataset

Splits = dict[str, TensorImageDataset]


def _biased_mnist(
    *,
    rho: float | None = None,
    data_seed: int = 0,
    root: str | None = None,
    val_size: int = 5000,
    download: bool = False,
    palette: str = "rebias",
    **_: Any,
) -> Splits:
    from debias.data.biased_mnist import SPLITS, biased_mnist

    if rho is None:
        raise ValueError("dataset 'biased-mnist' needs rho (the bias level of the training split)")
    return {
        split: biased_mnist(
            split,
            rho=rho if split == "train" else None,
            seed=data_seed,
            root=root,
            val_size=val_size,
            download=download,
            palette=palette,
        )
        for split in SPLITS
    }


def _digits(
    *, rho: float | None = None, data_seed: int = 0, palette: str = "rebias", **_: Any
) -> Splits:
    """The offline fallback: scikit-learn's real handwritten digits coloured like Biased-MNIST."""
    import torch

    from debias.data.biased_mnist import colour_bias
    from debias.data.digits import digits_splits

    if rho is None:
        raise ValueError("dataset 'digits' needs rho")
    (tr_x, tr_y), (te_x, te_y) = digits_splits(seed=data_seed)
    # Hold out every 10th training image for validation: disjoint from train by construction.
    idx = torch.arange(len(tr_y))
    val_mask = idx % 10 == 0

    def make(x, y, r, rows):
        return colour_bias(x, y, r, seed=data_seed, palette=palette, source_index=rows)

    splits = {
        "train": make(tr_x[~val_mask], tr_y[~val_mask], rho, idx[~val_mask]),
        "val": make(tr_x[val_mask], tr_y[val_mask], 0.1, idx[val_mask]),
        "test": make(te_x, te_y, 0.1, None),
        "test_biased": make(te_x, te_y, 1.0, None),
        "test_conflicting": make(te_x, te_y, 0.0, None),
    }
    for name, ds in splits.items():
        ds.split = name
    return splits


def _utkface(
    *,
    root: str | None = None,
    target: str = "gender",
    bias: str = "race",
    bias_rate: float = 0.9,
    data_seed: int = 0,
    image_size: int = 64,
    on_error: str = "raise",
    **_: Any,
) -> Splits:
    from debias.data.utkface import UTKFace

    return {
        split: UTKFace(
            root,
            split,
            target=target,
            bias=bias,
            bias_rate=bias_rate,
            seed=data_seed,
            image_size=image_size,
            on_error=on_error,
        )
        for split in ("train", "val", "test")
    }


def _celeba(
    *,
    root: str | None = None,
    target: str = "Blond_Hair",
    bias: str = "Male",
    protocol: str = "official",
    data_seed: int = 0,
    image_size: int = 64,
    on_error: str = "raise",
    **_: Any,
) -> Splits:
    from debias.data.celeba import CelebA

    return {
        split: CelebA(
            root,
            split,
            target=target,
            bias=bias,
            protocol=protocol,
            seed=data_seed,
            image_size=image_size,
            on_error=on_error,
        )
        for split in ("train", "val", "test")
    }


METADATA_PREFIX = "metadata:"


def _metadata(
    spec: str,
    *,
    root: str | None = None,
    target: str | None = None,
    bias: str | None = None,
    data_seed: int = 0,
    image_size: int = 64,
    on_error: str = "raise",
    **_: Any,
) -> Splits:
    """``metadata:PATH[?path=COL&split=COL&aligned=Y:B,Y:B]``: any table-described dataset.

    ``target``/``bias`` name the label columns (SubpopBench's ``y``/``a`` by default); the
    query part names the file and split columns and the aligned pairs when the defaults of
    :class:`~debias.data.metadata.MetadataDataset` do not fit.
    """
    from urllib.parse import parse_qsl

    from debias.data.metadata import MetadataDataset

    path, _, query = spec.partition("?")
    extra = dict(parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query)))
    unknown = sorted(set(extra) - {"path", "split", "aligned"})
    if not path:
        raise ValueError("dataset 'metadata:' needs a path, e.g. metadata:waterbirds/metadata.csv")
    if unknown:
        raise ValueError(
            f"dataset 'metadata:{spec}': unknown option(s) {unknown}; expected "
            "metadata:PATH[?path=COL&split=COL&aligned=Y:B,Y:B]"
        )
    options: dict[str, Any] = {"path_column": extra.get("path"), "split_column": "split"}
    if "split" in extra:
        options["split_column"] = extra["split"] or None  # "split=" forces a stratified split
    if "aligned" in extra:
        options["aligned_groups"] = [p.split(":", 1) for p in extra["aligned"].split(",")]
    if target is not None:
        options["target"] = target
    if bias is not None:
        options["bias"] = bias
    return {
        split: MetadataDataset(
            path,
            split,
            root=root,
            seed=data_seed,
            image_size=image_size,
            on_error=on_error,
            **options,
        )
        for split in ("train", "val", "test")
    }


DATASETS: dict[str, Callable[..., Splits]] = {
    "biased-mnist": _biased_mnist,
    "digits": _digits,
    "utkface": _utkface,
    "celeba": _celeba,
}

# Which augmentation suits which data: digits must not be flipped; faces may.
DEFAULT_AUGMENT = {
    "biased-mnist": {"crop_padding": 2, "rotation": 10.0, "hflip": False},
    "digits": {"crop_padding": 2, "rotation": 10.0, "hflip": False},
    "utkface": {"crop_padding": 4, "rotation": 10.0, "hflip": True},
    "celeba": {"crop_padding": 4, "rotation": 10.0, "hflip": True},
    # natural images (Waterbirds, audit sets); faces the most common case
    "metadata": {"crop_padding": 4, "rotation": 10.0, "hflip": True},
}

# Datasets whose bias attribute is the image colour (colour jitter perturbs the shortcut).
COLOUR_BIAS = {"biased-mnist", "digits"}

# The data options (TrainConfig fields) each dataset takes, with its default for each (None:
# no default, the loader decides or requires it). ``data_seed`` and ``root`` apply to every
# dataset; any other option given for a dataset that does not take it is an error, so that a
# setting that changes nothing is never recorded as if it did.
COMMON_OPTIONS = ("data_seed", "root")
DATASET_OPTIONS: dict[str, dict[str, Any]] = {
    "biased-mnist": {"rho": None, "val_size": 5000, "palette": "rebias", "download": False},
    "digits": {"rho": None, "palette": "rebias"},
    "utkface": {
        "target": "gender",
        "bias": "race",
        "bias_rate": 0.9,
        "image_size": 64,
        "on_error": "raise",
    },
    "celeba": {
        "target": "Blond_Hair",
        "bias": "Male",
        "protocol": "official",
        "image_size": 64,
        "on_error": "raise",
    },
    # target/bias name the label columns (None: the loader's y / a); see _metadata.
    "metadata": {"target": None, "bias": None, "image_size": 64, "on_error": "raise"},
}
# Which options say how biased a dataset's training data is (the report's x axis and the
# conditions it groups runs by).
LEVEL_KEYS: dict[str, tuple[str, ...]] = {
    "biased-mnist": ("rho",),
    "digits": ("rho",),
    "utkface": ("bias", "bias_rate"),
    "celeba": ("target", "bias", "protocol"),
    "metadata": ("target", "bias"),
}
# Options a dataset cannot run without.
REQUIRED_OPTIONS: dict[str, tuple[str, ...]] = {"biased-mnist": ("rho",), "digits": ("rho",)}
# Every dataset-specific option of any dataset.
DATA_OPTIONS = tuple(sorted({k for opts in DATASET_OPTIONS.values() for k in opts}))


def dataset_options(name: str) -> dict[str, Any]:
    """``{option: default}`` of a registered dataset (see :data:`DATASET_OPTIONS`)."""
    try:
        return DATASET_OPTIONS[dataset_family(name)]
    except KeyError:
        raise ValueError(
            f"unknown dataset {name!r}; expected one of {sorted(DATASETS)} or metadata:PATH.csv"
        ) from None


def register_dataset(
    name: str,
    factory: Callable[..., Splits],
    *,
    options: dict[str, Any],
    augment: dict[str, Any] | None = None,
    colour_bias: bool = False,
    level_keys: tuple[str, ...] = (),
    replace: bool = False,
) -> None:
    """Make ``factory(**options) -> {split: TensorImageDataset}`` available as ``dataset=name``.

    Every fact about the dataset is given here once: ``options`` are the TrainConfig data
    options it takes with their defaults (see :data:`DATASET_OPTIONS`), ``augment`` the
    :class:`~debias.data.augment.AugmentConfig` fields of its two-view augmentation, and
    ``colour_bias`` whether its bias attribute is the image colour, ``level_keys`` the options
    that say how biased its training data is (reports group and plot by them). The factory
    must return a
    ``"train"`` and a ``"val"`` split and at least one test split.
    """
    if (name in DATASETS or name in DATASET_OPTIONS) and not replace:
        raise ValueError(f"a dataset named {name!r} is registered already (replace=True)")
    unknown = sorted(set(options) - set(DATA_OPTIONS))
    if unknown:
        raise ValueError(f"register_dataset({name!r}): unknown data option(s) {unknown}")
    DATASETS[name] = factory
    DATASET_OPTIONS[name] = dict(options)
    DEFAULT_AUGMENT[name] = dict(augment or {})
    LEVEL_KEYS[name] = tuple(level_keys)
    if colour_bias:
        COLOUR_BIAS.add(name)
    else:
        COLOUR_BIAS.discard(name)


def dataset_family(name: str) -> str:
    """The registry key of a dataset name: ``metadata:PATH`` -> ``metadata``, else the name."""
    return "metadata" if name.startswith(METADATA_PREFIX) else name


def label_names(
    dataset: str, options: dict[str, Any]
) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
    """``(class_names, bias_names)`` of a built-in dataset from its options, without loading it
    (the same constants its loader gives its splits); None when only the data can tell
    (``metadata:``, a user's dataset). For results written before runs recorded the names."""
    family = dataset_family(dataset)
    if family in ("biased-mnist", "digits"):
        from debias.data.biased_mnist import COLOUR_NAMES

        colours = COLOUR_NAMES.get(options.get("palette") or "rebias")
        return (tuple(str(c) for c in range(10)), colours) if colours else None
    if family == "utkface":
        from debias.data.utkface import BIAS_NAMES, CLASS_NAMES

        target, bias = options.get("target") or "gender", options.get("bias") or "race"
        if target in CLASS_NAMES and bias in BIAS_NAMES:
            return CLASS_NAMES[target], BIAS_NAMES[bias]
    if family == "celeba":
        from debias.data.celeba import attribute_names

        target, bias = options.get("target") or "Blond_Hair", options.get("bias") or "Male"
        return attribute_names(target), attribute_names(bias)
    return None


def load_splits(name: str, **options: Any) -> Splits:
    """All splits of a registered dataset; ``options`` are the dataset's own keyword arguments.

    ``metadata:PATH`` loads any dataset described by a CSV/Parquet table (see :func:`_metadata`).
    """
    if name.startswith(METADATA_PREFIX):
        return _metadata(name[len(METADATA_PREFIX) :], **options)
    try:
        factory = DATASETS[name]
    except KeyError:
        raise ValueError(
            f"unknown dataset {name!r}; expected one of {sorted(DATASETS)} or metadata:PATH.csv"
        ) from None
    return factory(**options)
