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
        )
        for split in ("train", "val", "test")
    }


def _celeba(
    *,
    root: str | None = None,
    target: str = "Blond_Hair",
    bias: str = "Male",
    protocol: str = "groupdro",
    data_seed: int = 0,
    image_size: int = 64,
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
    "utkface": {"target": "gender", "bias": "race", "bias_rate": 0.9, "image_size": 64},
    "celeba": {"target": "Blond_Hair", "bias": "Male", "protocol": "groupdro", "image_size": 64},
}
# Options a dataset cannot run without.
REQUIRED_OPTIONS: dict[str, tuple[str, ...]] = {"biased-mnist": ("rho",), "digits": ("rho",)}
# Every dataset-specific option of any dataset.
DATA_OPTIONS = tuple(sorted({k for opts in DATASET_OPTIONS.values() for k in opts}))


def dataset_options(name: str) -> dict[str, Any]:
    """``{option: default}`` of a registered dataset (see :data:`DATASET_OPTIONS`)."""
    try:
        return DATASET_OPTIONS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; expected one of {sorted(DATASETS)}") from None


def load_splits(name: str, **options: Any) -> Splits:
    """All splits of a registered dataset; ``options`` are the dataset's own keyword arguments."""
    try:
        factory = DATASETS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; expected one of {sorted(DATASETS)}") from None
    return factory(**options)
