"""Biased-MNIST: MNIST digits on a coloured background whose colour is tied to the class.

Exactly the construction of ReBias (Bahng et al., ICML 2020; clovaai/rebias
``datasets/colour_mnist.py``), reused unchanged by BiasCon, EnD and FairKL (PROTOCOLS §1):

* **Image**: binarise the digit; pixel > 0 becomes white (255, 255, 255), pixel == 0 becomes the
  background colour of the sample's bias index. 3x28x28 uint8, normalised with mean = std = 0.5.
* **Colours**: rho is an exact count per class, not a coin flip. For class c with n_c samples,
  shuffled with a seeded ``RandomState``: the first ``int(n_c * rho)`` get colour c; the rest are
  cut into consecutive chunks of ``ceil((n_c - int(n_c * rho)) / 9)`` samples and chunk k gets
  the k-th entry of a shuffled list of the other nine colours. The random calls are made in the
  same order as ReBias, so ``colour_bias(..., seed=s)`` gives the same colours as ReBias run
  after ``np.random.seed(s)``.
* **Order**: unlike ReBias (which groups rows by colour and then shuffles them), rows stay in
  source order, and ``source_index`` records which row of the source split each one is.

Splits (:func:`biased_mnist`): ``train`` = MNIST-train minus a held-out validation set, at rho;
``val`` = the held-out MNIST-train images (rho 0.1 by default); ``test`` = MNIST-test at rho 0.1
(the field's "unbiased" test); ``test_biased`` = rho 1; ``test_conflicting`` = rho 0.
"""

from __future__ import annotations

import hashlib
import math
import numbers
import os
from collections.abc import Sequence

import numpy as np
import torch

from debias.data.base import TensorImageDataset
from debias.data.mnist import load_mnist

__all__ = [
    "PALETTES",
    "SPLITS",
    "VAL_SEED_OFFSET",
    "COLOUR_NAMES",
    "ColouredMNIST",
    "assign_colours",
    "biased_mnist",
    "colour_bias",
    "validation_rows",
]

RGB = tuple[int, int, int]

_REBIAS: tuple[RGB, ...] = (
    (255, 0, 0),
    (0, 255, 0),
    (0, 0, 255),
    (225, 225, 0),  # 225, not 255: as in ReBias' COLOUR_MAP
    (225, 0, 225),  # 225, not 255
    (0, 255, 255),
    (255, 128, 0),
    (255, 0, 128),
    (128, 0, 255),
    (128, 128, 128),
)
PALETTES: dict[str, tuple[RGB, ...]] = {
    "rebias": _REBIAS,
    # FairKL's code changes colour 9 only; offered by name, never substituted silently.
    "fairkl": _REBIAS[:9] + ((50, 255, 128),),
}
# What a reader calls each palette colour (the bias names of the dataset).
_REBIAS_NAMES = (
    "red", "green", "blue", "yellow", "magenta", "cyan", "orange", "pink", "violet", "grey",
)  # fmt: skip
COLOUR_NAMES: dict[str, tuple[str, ...]] = {
    "rebias": _REBIAS_NAMES,
    "fairkl": _REBIAS_NAMES[:9] + ("mint",),
}

SPLITS = ("train", "val", "test", "test_biased", "test_conflicting")
_SPLIT_RHO = {"val": 0.1, "test": 0.1, "test_biased": 1.0, "test_conflicting": 0.0}
_FIXED_RHO = ("test_biased", "test_conflicting")
# The validation rows are drawn with RandomState(seed + VAL_SEED_OFFSET), a stream separate from
# the colour stream RandomState(seed), so changing val_size never changes how colours are drawn.
VAL_SEED_OFFSET = 10_000
_NUM_CLASSES = 10
_N_OTHER = 9  # ReBias' n_confusing_labels; 9 is the value every paper uses


class ColouredMNIST(TensorImageDataset):
    """A coloured-background MNIST dataset (bias = background colour index).

    Attributes beyond :class:`TensorImageDataset`:
        source_index: int64 ``[N]``, row ``i`` is image ``source_index[i]`` of the source split.
        rho: the bias-aligned fraction used per class.
        seed: the seed of the colour assignment.
        palette: the palette name (a key of :data:`PALETTES`).
        split: the Biased-MNIST split name, or ``None`` when built directly by
            :func:`colour_bias`.
    """

    name = "biased-mnist"

    def __init__(
        self,
        images: torch.Tensor,
        targets: torch.Tensor,
        bias: torch.Tensor,
        *,
        source_index: torch.Tensor,
        rho: float,
        seed: int,
        palette: str,
        split: str | None = None,
        transform=None,
    ) -> None:
        super().__init__(
            images,
            targets,
            bias,
            aligned_groups=((c, c) for c in range(_NUM_CLASSES)),
            num_classes=_NUM_CLASSES,
            num_bias=_NUM_CLASSES,
            mean=(0.5, 0.5, 0.5),
            std=(0.5, 0.5, 0.5),
            transform=transform,
            class_names=[str(c) for c in range(_NUM_CLASSES)],
            bias_names=COLOUR_NAMES.get(palette),
        )
        if source_index.shape != (len(self),):
            raise ValueError(
                f"source_index must have shape ({len(self)},); got {tuple(source_index.shape)}"
            )
        self.source_index = source_index.long()
        self.rho = float(rho)
        self.seed = int(seed)
        self.palette = palette
        self.split = split

    @property
    def colours(self) -> torch.Tensor:
        """The background colour index of every image (the same tensor as :attr:`bias`)."""
        return self.bias

    def fingerprint(self) -> str:
        """sha256 hex digest of the split: source rows then colour indices, little-endian int64.

        Equal fingerprints mean the same images got the same colours, on any machine.
        """
        h = hashlib.sha256()
        h.update(self.source_index.cpu().numpy().astype("<i8").tobytes())
        h.update(self.bias.cpu().numpy().astype("<i8").tobytes())
        return h.hexdigest()

    def __repr__(self) -> str:
        split = f"split={self.split!r}, " if self.split is not None else ""
        return (
            f"ColouredMNIST({split}n={len(self)}, rho={self.rho:g}, seed={self.seed}, "
            f"palette={self.palette!r}, aligned={int(self.aligned.sum())}, device={self.device})"
        )


def assign_colours(labels: np.ndarray, rho: float, seed: int = 0) -> np.ndarray:
    """Colour index of every sample by the ReBias rule (``_update_bias_indices``).

    With ``rng = RandomState(seed)``, for each class c = 0..9 in order: shuffle the rows of class
    c (n_c of them); the first ``n_corr = int(n_c * rho)`` get colour c; the remaining
    ``n_c - n_corr`` are cut into consecutive chunks of ``ceil((n_c - n_corr) / 9)``; then
    ``other = [(c + 1) % 10, ..., (c + 9) % 10]`` is shuffled and chunk k gets ``other[k]``.
    The number of bias-conflicting samples is therefore exactly ``sum_c n_c - int(n_c * rho)``.

    Args:
        labels: int ``[N]`` with values in 0..9 (validated by :func:`colour_bias`).
        rho: fraction of bias-aligned samples per class, in [0, 1].
        seed: seed of the ``numpy.random.RandomState`` (the same calls, in the same order, as
            ReBias makes on the global numpy generator).

    Returns:
        int64 ``[N]`` colour indices, in the order of ``labels``.
    """
    labels = np.asarray(labels)
    rng = np.random.RandomState(seed)
    colours = np.full(labels.shape[0], -1, dtype=np.int64)
    for label in range(_NUM_CLASSES):
        indices = np.where(labels == label)[0]
        rng.shuffle(indices)
        n = len(indices)
        n_corr = int(n * rho)
        chunk = int(np.ceil((n - n_corr) / _N_OTHER))
        colours[indices[:n_corr]] = label
        # A Python list, shuffled after the rows, exactly as ReBias does: same random draws.
        other = [lab % _NUM_CLASSES for lab in range(label + 1, label + 1 + _N_OTHER)]
        rng.shuffle(other)
        if chunk > 0:
            rest = indices[n_corr:]
            colours[rest] = np.asarray(other, dtype=np.int64)[np.arange(len(rest)) // chunk]
    return colours


def _as_tensor(x, what: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu()
    if isinstance(x, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(x))
    raise ValueError(f"{what} must be a torch.Tensor or numpy.ndarray; got {type(x).__name__}")


def _check_rho(rho) -> float:
    if (
        isinstance(rho, bool)
        or not isinstance(rho, numbers.Real)
        or math.isnan(rho)
        or not 0.0 <= rho <= 1.0
    ):
        raise ValueError(
            f"rho must be a number in [0, 1] (the bias-aligned fraction per class); got {rho!r}"
        )
    return float(rho)


def _check_seed(seed) -> None:
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed < 2**32:
        raise ValueError(f"seed must be an integer in [0, 2**32); got {seed!r}")


def _check_palette(palette: str) -> str:
    if palette not in PALETTES:
        raise ValueError(f"unknown palette {palette!r}; valid palettes are {sorted(PALETTES)}")
    return palette


def colour_bias(
    images: torch.Tensor | np.ndarray,
    labels: torch.Tensor | np.ndarray,
    rho: float,
    *,
    seed: int = 0,
    palette: str = "rebias",
    source_index: torch.Tensor | np.ndarray | Sequence[int] | None = None,
    device: torch.device | str = "cpu",
) -> ColouredMNIST:
    """Colour the background of 10-class 28x28 greyscale digits by the ReBias rule.

    ``out[i] = 255`` where ``images[i] > 0`` and ``PALETTES[palette][b_i]`` where
    ``images[i] == 0``, with ``b = assign_colours(labels, rho, seed)``. Works on any such
    source (MNIST, Fashion-MNIST, the scikit-learn digits fallback).

    Args:
        images: uint8 ``[N, 28, 28]`` (or ``[N, 1, 28, 28]``), tensor or numpy array.
        labels: integer ``[N]`` with values in 0..9.
        rho: bias-aligned fraction per class, in [0, 1].
        seed: colour-assignment seed (see :func:`assign_colours`).
        palette: a key of :data:`PALETTES`.
        source_index: the row of each image in its source split; default ``arange(N)``.
        device: where the returned tensors live (the colouring runs there too).

    Returns:
        :class:`ColouredMNIST` with images ``[N, 3, 28, 28]`` in the input order.
    """
    rho = _check_rho(rho)
    palette = _check_palette(palette)
    _check_seed(seed)
    imgs = _as_tensor(images, "images")
    if imgs.ndim == 4 and imgs.shape[1] == 1:
        imgs = imgs[:, 0]
    if imgs.ndim != 3 or tuple(imgs.shape[1:]) != (28, 28):
        raise ValueError(
            f"images must be greyscale [N, 28, 28] (or [N, 1, 28, 28]); got shape "
            f"{tuple(imgs.shape)}"
        )
    if imgs.dtype != torch.uint8:
        raise ValueError(
            f"images must be uint8 in 0..255 (binarisation is pixel > 0); got {imgs.dtype}"
        )
    n = imgs.shape[0]
    labs = _as_tensor(labels, "labels")
    if labs.shape != (n,):
        raise ValueError(f"labels must have shape ({n},) to match images; got {tuple(labs.shape)}")
    if labs.dtype.is_floating_point or labs.dtype.is_complex or labs.dtype == torch.bool:
        raise ValueError(f"labels must be integers 0..9; got dtype {labs.dtype}")
    labs = labs.long()
    if n and (int(labs.min()) < 0 or int(labs.max()) >= _NUM_CLASSES):
        raise ValueError(
            f"labels must be in 0..9 (a 10-class source); found values "
            f"{int(labs.min())}..{int(labs.max())}"
        )
    missing = sorted(set(range(_NUM_CLASSES)) - set(labs.unique().tolist()))
    if n >= _NUM_CLASSES and missing:
        # The ReBias rule ties colour c to class c of ten; a 2-class source would use 2 colours
        # as "aligned" and spread the rest over 9 "other" colours that mean nothing.
        raise ValueError(
            f"labels must come from a 10-class source (digits 0..9); classes {missing} have no "
            f"sample among the {n}. Colour the full source and take a subset afterwards"
        )
    if source_index is None:
        src = torch.arange(n, dtype=torch.long)
    else:
        src = torch.as_tensor(np.asarray(source_index)).long()
        if src.shape != (n,):
            raise ValueError(
                f"source_index must have shape ({n},) to match images; got {tuple(src.shape)}"
            )

    bias = torch.from_numpy(assign_colours(labs.numpy(), rho, int(seed)))
    imgs, labs, bias, src = (t.to(device) for t in (imgs, labs, bias, src))
    pal = torch.tensor(PALETTES[palette], dtype=torch.uint8, device=imgs.device)
    # One broadcast pass over the whole set: the digit mask as 0/255 OR-ed with the [N,3,1,1]
    # background colours gives 255 on strokes and the colour elsewhere (faster than torch.where).
    strokes = (imgs > 0).to(torch.uint8).neg_().unsqueeze(1)  # uint8: -1 wraps to 255
    coloured = torch.bitwise_or(strokes, pal[bias][:, :, None, None])
    return ColouredMNIST(
        coloured.contiguous(),
        labs,
        bias,
        source_index=src,
        rho=rho,
        seed=int(seed),
        palette=palette,
    )


def validation_rows(n_train: int, val_size: int, seed: int = 0) -> np.ndarray:
    """Sorted rows of MNIST-train held out for validation.

    Rule (ours, PROTOCOLS §1): the first ``val_size`` entries of
    ``RandomState(seed + VAL_SEED_OFFSET).permutation(n_train)``, sorted. The same
    ``(seed, val_size)`` always gives the same rows, and the train split is their complement.
    """
    if isinstance(val_size, bool) or not isinstance(val_size, numbers.Integral):
        raise ValueError(f"val_size must be an integer; got {val_size!r}")
    if not 0 <= val_size < n_train:
        raise ValueError(f"val_size must be in [0, {n_train}); got {val_size}")
    perm = np.random.RandomState(seed + VAL_SEED_OFFSET).permutation(n_train)
    return np.sort(perm[:val_size])


def biased_mnist(
    split: str,
    rho: float | None = None,
    *,
    seed: int = 0,
    root: str | os.PathLike | None = None,
    val_size: int = 5000,
    download: bool = False,
    palette: str = "rebias",
    device: torch.device | str = "cpu",
) -> ColouredMNIST:
    """One Biased-MNIST split (PROTOCOLS §1).

    Args:
        split: one of :data:`SPLITS`:
            ``"train"``: MNIST-train minus the validation rows, at ``rho`` (required);
            ``"val"``: the ``val_size`` held-out MNIST-train rows (rho 0.1 unless given);
            ``"test"``: MNIST-test at rho 0.1 (the unbiased test) unless rho is given;
            ``"test_biased"``: MNIST-test at rho 1; ``"test_conflicting"``: at rho 0.
        rho: bias-aligned fraction per class.
        seed: seeds the colour assignment (``RandomState(seed)``) and the validation rows
            (``RandomState(seed + VAL_SEED_OFFSET)``, see :func:`validation_rows`).
        root: data root (default ``$DEBIAS_DATA``, then ``./data``).
        val_size: number of MNIST-train images held out; 0 makes "train" all 60,000.
        download: download MNIST with torchvision if the files are missing.
        palette: a key of :data:`PALETTES`.
        device: where the returned tensors live.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown Biased-MNIST split {split!r}; valid splits are {SPLITS}")
    if split == "train":
        if rho is None:
            raise ValueError(
                "rho is required for the 'train' split (e.g. 0.99, 0.995, 0.997, 0.999)"
            )
    elif split in _FIXED_RHO:
        if rho is not None and _check_rho(rho) != _SPLIT_RHO[split]:
            raise ValueError(
                f"split {split!r} is defined by rho={_SPLIT_RHO[split]:g}; got rho={rho!r}. "
                "Use split='test' with rho=... for another test correlation."
            )
        rho = _SPLIT_RHO[split]
    elif rho is None:
        rho = _SPLIT_RHO[split]
    rho = _check_rho(rho)
    _check_palette(palette)
    _check_seed(seed)

    if split in ("train", "val"):
        images, labels = load_mnist("train", root=root, download=download)
        val = validation_rows(images.shape[0], val_size, seed)
        if split == "val":
            if val_size == 0:
                raise ValueError("split 'val' needs val_size > 0")
            rows = val
        else:
            keep = np.ones(images.shape[0], dtype=bool)
            keep[val] = False
            rows = np.flatnonzero(keep)
    else:
        images, labels = load_mnist("test", root=root, download=download)
        rows = np.arange(images.shape[0])
    idx = torch.from_numpy(rows)
    ds = colour_bias(
        images[idx], labels[idx], rho, seed=seed, palette=palette, source_index=idx, device=device
    )
    ds.split = split
    return ds
