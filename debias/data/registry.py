"""Dataset registry: one name → one :class:`~debias.data.spec.DatasetSpec` → all the splits a
training run needs.

Each spec's factory returns ``{split_name: TensorImageDataset}`` with a ``"train"`` split, a
``"val"`` split (used for model selection; never the test set) and one or more test splits.
Everything a run reports is computed on these splits with the dataset's own ``aligned_groups``.
The built-in datasets are registered at the end of this module, one spec each.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from debias.data.base import DEFAULT_IMAGE_SIZE, SPLITS
from debias.data.spec import DataOption, DatasetSpec, Splits, number

__all__ = [
    "DATASETS",
    "DataOption",
    "DatasetSpec",
    "dataset_family",
    "dataset_options",
    "dataset_spec",
    "find_spec",
    "label_names",
    "load_splits",
    "register_dataset",
]

# name -> spec; filled by register_dataset (the built-ins at the end of this module).
DATASETS: dict[str, DatasetSpec] = {}


# -- factories -------------------------------------------------------------------------------------
def _biased_mnist(
    *,
    rho: float,
    data_seed: int,
    root: str | None,
    val_size: int,
    download: bool,
    palette: str,
) -> Splits:
    from debias.data.biased_mnist import SPLITS as MNIST_SPLITS
    from debias.data.biased_mnist import biased_mnist

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
        for split in MNIST_SPLITS
    }


def _digits(*, rho: float, data_seed: int, palette: str, root: str | None = None) -> Splits:
    """The offline fallback: scikit-learn's real handwritten digits coloured like Biased-MNIST
    (``root`` is unused: the digits ship with scikit-learn)."""
    import torch

    from debias.data.biased_mnist import colour_bias
    from debias.data.digits import digits_splits

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
    root: str | None,
    target: str,
    bias: str,
    bias_rate: float,
    data_seed: int,
    image_size: int,
    on_error: str,
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
        for split in SPLITS
    }


def _celeba(
    *,
    root: str | None,
    target: str,
    bias: str,
    protocol: str,
    data_seed: int,
    image_size: int,
    on_error: str,
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
        for split in SPLITS
    }


def _waterbirds(
    *,
    root: str | None,
    data_seed: int,
    image_size: int,
    on_error: str,
    official_counts: bool,
) -> Splits:
    """The official Waterbirds release (``data_seed`` is unused: the splits are official)."""
    from debias.data.waterbirds import Waterbirds

    return {
        split: Waterbirds(
            root, split, image_size=image_size, official_counts=official_counts, on_error=on_error
        )
        for split in SPLITS
    }


def _metadata(
    spec: str,
    *,
    root: str | None,
    target: str | None,
    bias: str | None,
    data_seed: int,
    image_size: int,
    on_error: str,
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
        for split in SPLITS
    }


# -- the registry ----------------------------------------------------------------------------------
def register_dataset(
    spec: DatasetSpec | str,
    factory: Callable[..., Splits] | None = None,
    *,
    options: Mapping[str, Any] | None = None,
    augment: Mapping[str, Any] | None = None,
    colour_bias: bool = False,
    level_keys: tuple[str, ...] = (),
    replace: bool = False,
) -> DatasetSpec:
    """Make a dataset available as ``dataset=spec.name``; returns the spec registered.

    Every fact about the dataset is in the :class:`~debias.data.spec.DatasetSpec`: its
    options (a new one is given as ``data_options``/``--data-option NAME=VALUE``), required
    ones, augmentation, colour bias, bias-level keys, label names and report columns.
    The older form ``register_dataset(name, factory, options={option: default}, augment=...,
    colour_bias=..., level_keys=...)`` builds the spec from those; an option named like a
    built-in dataset's keeps that option's check and help.
    """
    if not isinstance(spec, DatasetSpec):
        spec = DatasetSpec(
            name=spec,
            factory=factory,
            options=tuple(_option_like(k, v) for k, v in (options or {}).items()),
            augment=dict(augment or {}),
            colour_bias=colour_bias,
            level_keys=tuple(level_keys),
        )
    elif factory is not None or options is not None:
        raise TypeError("register_dataset(spec): the spec holds the factory and options")
    if spec.name in DATASETS and not replace:
        raise ValueError(f"a dataset named {spec.name!r} is registered already (replace=True)")
    if not spec.name or ":" in spec.name:
        raise ValueError(f"dataset name {spec.name!r}: expected a non-empty name without ':'")
    if not callable(spec.factory):
        raise TypeError(f"register_dataset({spec.name!r}): the factory must be callable")
    DATASETS[spec.name] = spec
    return spec


def _option_like(name: str, default: Any) -> DataOption:
    """Option ``name`` with ``default``, checked and explained like a built-in dataset's."""
    for spec in DATASETS.values():
        for opt in spec.options:
            if opt.name == name:
                return dataclasses.replace(opt, default=default, required=False)
    return DataOption(name, default)


def dataset_family(name: str) -> str:
    """The registry key of a dataset name: ``metadata:PATH`` -> ``metadata``, else the name."""
    family, sep, _ = name.partition(":")
    spec = DATASETS.get(family)
    return family if sep and spec is not None and spec.argument else name


def find_spec(name: str) -> DatasetSpec | None:
    """The spec of a dataset name (``metadata:PATH`` included), or None if none is registered
    (a report on runs of a dataset this process has not registered)."""
    return DATASETS.get(dataset_family(name))


def dataset_spec(name: str) -> DatasetSpec:
    """The spec of a dataset name, or an error listing the registered ones."""
    spec = find_spec(name)
    if spec is None:
        from debias._hints import did_you_mean

        raise ValueError(
            f"unknown dataset {name!r}{did_you_mean(name, DATASETS)}; expected one of "
            f"{[s.display_name for s in DATASETS.values()]}"
        )
    return spec


def dataset_options(name: str) -> dict[str, Any]:
    """``{option: default}`` of a registered dataset."""
    return dataset_spec(name).defaults


def label_names(
    dataset: str, options: Mapping[str, Any]
) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
    """``(class_names, bias_names)`` of a dataset from its options, without loading it (the
    same constants its loader gives its splits); None when only the data can tell
    (``metadata:``, a user's dataset). For results written before runs recorded the names."""
    spec = find_spec(dataset)
    if spec is None or spec.label_names is None:
        return None
    return spec.label_names(
        {**spec.defaults, **{k: v for k, v in options.items() if v is not None}}
    )


def load_splits(name: str, **options: Any) -> Splits:
    """All splits of a registered dataset; ``options`` are its own options (defaults filled
    in) and :data:`~debias.data.spec.COMMON_OPTIONS`.

    ``metadata:PATH`` loads any dataset described by a CSV/Parquet table (see :func:`_metadata`).
    """
    spec = dataset_spec(name)
    argument = name.partition(":")[2] if spec.argument else None
    return spec.load(argument, **options)


class _FactView(Mapping[str, Any]):
    """A read-only ``{name: fact}`` view of every registered spec, for code written against the
    tables the specs replaced (``DATASET_OPTIONS``, ``DEFAULT_AUGMENT``)."""

    def __init__(self, fact: Callable[[DatasetSpec], Any]) -> None:
        self._fact = fact

    def __getitem__(self, name: str) -> Any:
        return self._fact(DATASETS[name])

    def __iter__(self) -> Iterator[str]:
        return iter(DATASETS)

    def __len__(self) -> int:
        return len(DATASETS)


DATASET_OPTIONS: Mapping[str, dict[str, Any]] = _FactView(lambda s: s.defaults)
DEFAULT_AUGMENT: Mapping[str, dict[str, Any]] = _FactView(lambda s: dict(s.augment))


# -- the built-in datasets -------------------------------------------------------------------------
def _mnist_names(options: Mapping[str, Any]) -> tuple[tuple[str, ...], ...] | None:
    from debias.data.biased_mnist import COLOUR_NAMES

    colours = COLOUR_NAMES.get(options["palette"])
    return (tuple(str(c) for c in range(10)), colours) if colours else None


def _utkface_names(options: Mapping[str, Any]) -> tuple[tuple[str, ...], ...] | None:
    from debias.data.utkface import BIAS_NAMES, CLASS_NAMES

    target, bias = options["target"], options["bias"]
    if target in CLASS_NAMES and bias in BIAS_NAMES:
        return CLASS_NAMES[target], BIAS_NAMES[bias]
    return None


def _celeba_names(options: Mapping[str, Any]) -> tuple[tuple[str, ...], ...]:
    from debias.data.celeba import attribute_names

    return attribute_names(options["target"]), attribute_names(options["bias"])


def _palette(name: str, value: Any) -> str:
    from debias.data.biased_mnist import PALETTES

    if value not in PALETTES:
        raise ValueError(f"unknown palette {value!r}; expected one of {sorted(PALETTES)}")
    return value


def _protocol(name: str, value: Any) -> str:
    from debias.data.celeba import PROTOCOLS, canonical_protocol

    value = canonical_protocol(value)
    if value not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {list(PROTOCOLS)}; got {value!r}")
    return value


_RHO = DataOption(
    "rho",
    help="fraction of bias-aligned training images",
    required=True,
    check=number(low=0, high=1, label="rho (the bias-aligned fraction of training images)"),
)
_PALETTE = DataOption("palette", "rebias", "colour palette: rebias | fairkl", check=_palette)
_IMAGE_SIZE = DataOption(
    "image_size", DEFAULT_IMAGE_SIZE, "side length in pixels", check=number(low=8, integer=True)
)
_ON_ERROR = DataOption(
    "on_error",
    "raise",
    "'raise' on an unreadable image or 'skip' to drop and count it",
    choices=("raise", "skip"),
)
_DIGIT_AUGMENT = {"crop_padding": 2, "rotation": 10.0, "hflip": False}  # digits never flipped
_FACE_AUGMENT = {"crop_padding": 4, "rotation": 10.0, "hflip": True}
# On Biased-MNIST the test split is the unbiased one, so its plain accuracy and equalized odds
# would only repeat "unbiased" (PROTOCOLS §5).
_MNIST_TABLE = ("unbiased", "worst-group", "bias-conflicting", "biased")
_MNIST_AXES = ("digit", "background colour")
# PROTOCOLS §1: ReBias Table 1, Vanilla (cross-entropy), SimpleConvNet, 80 epochs, mean of 3
# runs, unbiased test accuracy in %, by rho.
REBIAS_VANILLA: dict[float, float] = {0.999: 10.4, 0.997: 33.4, 0.995: 72.1, 0.99: 89.1}

# What Biased-MNIST and the coloured scikit-learn digits share: colour as the bias, rho as the
# bias level, digit / colour names and the MNIST report columns.
_COLOURED_DIGITS = dict(
    augment=_DIGIT_AUGMENT,
    colour_bias=True,
    level_keys=("rho",),
    label_names=_mnist_names,
    table_metrics=_MNIST_TABLE,
    group_axes=_MNIST_AXES,
)
register_dataset(
    DatasetSpec(
        "biased-mnist",
        _biased_mnist,
        options=(
            _RHO,
            DataOption(
                "val_size",
                5000,
                "held-out validation images",
                # MNIST-train has 60,000 images; val must hold some and train keep the rest.
                check=number(low=1, high=59_999, integer=True),
            ),
            _PALETTE,
            DataOption("download", False, "download MNIST if missing (needs a network)"),
        ),
        **_COLOURED_DIGITS,
        published={"ce": REBIAS_VANILLA},
        summary="MNIST digits on a background colour tied to the class (ReBias)",
    )
)
register_dataset(
    DatasetSpec(
        "digits",
        _digits,
        options=(_RHO, _PALETTE),
        **_COLOURED_DIGITS,
        summary="scikit-learn's handwritten digits coloured like Biased-MNIST (offline)",
    )
)
register_dataset(
    DatasetSpec(
        "utkface",
        _utkface,
        options=(
            DataOption("target", "gender", "target attribute", choices=("gender",)),
            DataOption("bias", "race", "bias attribute: race | age", choices=("race", "age")),
            DataOption("bias_rate", 0.9, "training bias rate", check=number(low=0, high=1)),
            _IMAGE_SIZE,
            _ON_ERROR,
        ),
        augment=_FACE_AUGMENT,
        level_keys=("bias", "bias_rate"),
        label_names=_utkface_names,
        summary="faces, gender against race or age",
    )
)
register_dataset(
    DatasetSpec(
        "celeba",
        _celeba,
        options=(
            DataOption("target", "Blond_Hair", "target attribute, any of the 40"),
            DataOption("bias", "Male", "bias attribute, any of the 40"),
            DataOption(
                "protocol",
                "official",
                "split: official (the official partitions) | biascon; 'groupdro' is a "
                "deprecated name of official",
                check=_protocol,
            ),
            _IMAGE_SIZE,
            _ON_ERROR,
        ),
        augment=_FACE_AUGMENT,
        level_keys=("target", "bias", "protocol"),
        label_names=_celeba_names,
        summary="faces, any attribute against any other",
    )
)


def _flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false; got {value!r}")
    return value


register_dataset(
    DatasetSpec(
        "waterbirds",
        _waterbirds,
        options=(
            _IMAGE_SIZE,
            _ON_ERROR,
            DataOption(
                "official_counts",
                True,
                "check the split/group counts of the official release (4,795 / 1,199 / 5,794); "
                "false for a subset",
                check=_flag,
            ),
        ),
        augment=_FACE_AUGMENT,  # natural images: shifts, small rotations, flips
        label_names=lambda options: (("landbird", "waterbird"), ("land", "water")),
        table_metrics=(
            "accuracy",
            "adjusted average",
            "worst-group",
            "unbiased",
            "accuracy − worst-group",
        ),
        group_axes=("bird", "place"),
        adjusted_average=True,
        summary="birds on land or water backgrounds (Sagawa et al. 2020, official release)",
    )
)
register_dataset(
    DatasetSpec(
        "metadata",
        _metadata,
        options=(
            # None: the loader's SubpopBench columns y / a
            DataOption("target", None, "label column of the target (default y)"),
            DataOption("bias", None, "label column of the bias (default a)"),
            _IMAGE_SIZE,
            _ON_ERROR,
        ),
        # natural images (Waterbirds, audit sets); faces the most common case
        augment=_FACE_AUGMENT,
        level_keys=("target", "bias"),
        argument="PATH.csv",
        summary="any dataset a CSV/Parquet table describes",
    )
)
