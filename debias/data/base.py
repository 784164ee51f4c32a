"""The one in-memory dataset shape every loader returns.

Every dataset in ``debias`` (Biased-MNIST, UTKFace, CelebA, the scikit-learn digits fallback)
holds its images as one uint8 tensor ``[N, C, H, W]`` plus int64 ``targets`` and ``bias``
tensors. Training then indexes whole tensors on the data's device instead of running a
per-sample ``DataLoader`` (PROTOCOLS §1 and the speed issue: per-sample PIL transforms are what
made the original code slow). ``__getitem__`` still works, so the object is a normal torch
``Dataset`` for users who want a ``DataLoader``.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable, Iterable, Sequence

import pandas as pd
import torch
from torch.utils.data import Dataset

from debias._types import Group

# The splits every loader that splits its own data gives (Biased-MNIST adds its two test sets).
SPLITS = ("train", "val", "test")

# Side of the square images a decoded dataset (faces, a metadata table) stores by default.
DEFAULT_IMAGE_SIZE = 64


class TensorImageDataset(Dataset):
    """Images, targets and bias labels held as whole tensors.

    Attributes:
        images: uint8 ``[N, C, H, W]``.
        targets: int64 ``[N]``, the label to predict.
        bias: int64 ``[N]``, the bias attribute (colour index, race, Male, ...).
        aligned_groups: the explicit set of bias-aligned ``(target, bias)`` pairs. Metrics take
            it from here; the diagonal ``b == y`` is right for Biased-MNIST only.
        num_classes, num_bias: label cardinalities (not inferred from a possibly partial split).
        class_names, bias_names: what each target / bias value means, indexed by the value
            (``("male", "female")``, colour names, ...); the codes as strings when the loader
            gives none. Reports and figures print these instead of integer codes.
        mean, std: per-channel normalisation applied by :meth:`normalize`.
        transform: optional callable on a single uint8 ``[C, H, W]`` image, torchvision style.
    """

    name: str = "tensor"

    def __init__(
        self,
        images: torch.Tensor,
        targets: torch.Tensor,
        bias: torch.Tensor,
        *,
        aligned_groups: Iterable[Group],
        num_classes: int,
        num_bias: int,
        mean: Sequence[float] = (0.5, 0.5, 0.5),
        std: Sequence[float] = (0.5, 0.5, 0.5),
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        class_names: Sequence[str] | None = None,
        bias_names: Sequence[str] | None = None,
    ) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(
                f"images must be a uint8 tensor [N, C, H, W]; got {images.dtype} with shape "
                f"{tuple(images.shape)}"
            )
        n = images.shape[0]
        if targets.shape != (n,) or bias.shape != (n,):
            raise ValueError(
                f"targets and bias must have shape ({n},) to match images; got "
                f"{tuple(targets.shape)} and {tuple(bias.shape)}"
            )
        self.images = images
        self.targets = targets.long()
        self.bias = bias.long()
        self.aligned_groups: tuple[Group, ...] = tuple(
            sorted((int(y), int(b)) for y, b in aligned_groups)
        )
        self.num_classes = int(num_classes)
        self.num_bias = int(num_bias)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.transform = transform
        self.class_names = _names("class_names", class_names, self.num_classes)
        self.bias_names = _names("bias_names", bias_names, self.num_bias)

    # -- torch Dataset protocol -------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        img = self.images[index]
        x = self.transform(img) if self.transform is not None else self.normalize(img)
        return x, int(self.targets[index]), int(self.bias[index])

    # -- whole-tensor helpers ---------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.images.device

    @property
    def aligned(self) -> torch.Tensor:
        """Bool ``[N]``: True where ``(target, bias)`` is one of :attr:`aligned_groups`."""
        out = torch.zeros(len(self), dtype=torch.bool, device=self.targets.device)
        for y, b in self.aligned_groups:
            out |= (self.targets == y) & (self.bias == b)
        return out

    def to(self, device: torch.device | str) -> TensorImageDataset:
        """Move every tensor attribute to ``device`` in place and return ``self``."""
        for key, value in list(vars(self).items()):
            if isinstance(value, torch.Tensor):
                setattr(self, key, value.to(device))
        return self

    def subset(self, rows: torch.Tensor | Sequence[int]) -> TensorImageDataset:
        """A shallow copy holding only ``rows``: every per-sample tensor or list is indexed."""
        n = len(self)
        rows_t = torch.as_tensor(rows, dtype=torch.long)
        out = copy.copy(self)
        for key, value in vars(self).items():
            if isinstance(value, torch.Tensor) and value.ndim > 0 and value.shape[0] == n:
                setattr(out, key, value[rows_t.to(value.device)])
            elif isinstance(value, list) and len(value) == n:
                setattr(out, key, [value[i] for i in rows_t.tolist()])
        return out

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 ``[..., C, H, W]`` -> float32 ``(x / 255 - mean) / std``."""
        mean = torch.tensor(self.mean, device=images.device).view(-1, 1, 1)
        std = torch.tensor(self.std, device=images.device).view(-1, 1, 1)
        return (images.float().div_(255.0) - mean) / std

    def fingerprint(self) -> str:
        """sha256 hex digest of what a run reads: the images (uint8 bytes), then the targets and
        bias labels (little-endian int64). A run records it per split; a later ``audit --run``
        or ``evaluate`` refuses data whose fingerprint changed (labels flipped, rows dropped).
        Datasets with a cheaper exact identity (Biased-MNIST) override it."""
        h = hashlib.sha256()
        h.update(self.images.detach().cpu().contiguous().numpy().tobytes())
        for labels in (self.targets, self.bias):
            h.update(labels.detach().cpu().numpy().astype("<i8").tobytes())
        return h.hexdigest()

    def group_counts(self) -> pd.DataFrame:
        """Counts per ``(target, bias)`` group present: columns ``y, b`` (codes), ``target,
        bias`` (their names, :attr:`class_names` / :attr:`bias_names`), ``n``, ``aligned``.

        Example:
            >>> ds.group_counts().head(2)  # doctest: +SKIP
               y  b target  bias     n  aligned
            0  0  0      0   red  5453     True
            1  0  1      0  blue     3    False
        """
        y = self.targets.cpu().numpy()
        b = self.bias.cpu().numpy()
        df = pd.DataFrame({"y": y, "b": b}).value_counts().rename("n").reset_index()
        df = df.sort_values(["y", "b"]).reset_index(drop=True)
        df.insert(2, "target", [self.class_names[int(v)] for v in df["y"]])
        df.insert(3, "bias", [self.bias_names[int(v)] for v in df["b"]])
        aligned = set(self.aligned_groups)
        df["aligned"] = [(int(r.y), int(r.b)) in aligned for r in df.itertuples()]
        return df

    def __repr__(self) -> str:
        c, h, w = self.images.shape[1:]
        return (
            f"{type(self).__name__}(n={len(self)}, image={c}x{h}x{w}, "
            f"classes={self.num_classes}, bias_values={self.num_bias}, "
            f"aligned={int(self.aligned.sum())}, device={self.device})"
        )


def _names(what: str, names: Sequence[str] | None, count: int) -> tuple[str, ...]:
    """``names`` as a tuple of ``count`` strings, or the codes ``"0".."count-1"``."""
    if names is None:
        return tuple(str(i) for i in range(count))
    out = tuple(str(n) for n in names)
    if len(out) != count:
        raise ValueError(f"{what} must name all {count} values; got {len(out)}: {list(out)}")
    return out
