"""MNIST from the official IDX files, parsed with numpy.

The files are looked for under :func:`debias.data.root.data_root` in two layouts:
``<root>/mnist/<name>`` (the project's layout) and ``<root>/MNIST/raw/<name>`` (torchvision's),
each gzipped (``.gz``) or not. IDX is parsed here rather than through torchvision so that a
truncated or corrupt file gives an error naming the file and what was expected, and so that no
torchvision ``processed/`` cache is written into a possibly read-only data root.
"""

from __future__ import annotations

import functools
import gzip
import os
import warnings
import zlib
from pathlib import Path

import numpy as np
import torch

from debias.data.root import ENV_VAR, data_root

__all__ = ["MNIST_FILES", "MNIST_SPLITS", "IDXFormatError", "load_mnist", "read_idx"]

MNIST_SPLITS = ("train", "test")
MNIST_FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_EXPECTED_N = {"train": 60_000, "test": 10_000}
# IDX type byte 0x08 = unsigned byte; the only element type MNIST uses.
_UBYTE = 0x08


class IDXFormatError(ValueError):
    """An IDX file is truncated, corrupt or not the kind of file that was expected."""


def _candidates(root: Path, name: str) -> list[Path]:
    # Uncompressed first: it is what torchvision leaves behind and is faster to read.
    out = []
    for folder in (root / "mnist", root / "MNIST" / "raw"):
        out += [folder / name, folder / f"{name}.gz"]
    return out


def _find(root: Path, name: str) -> Path | None:
    for path in _candidates(root, name):
        if path.is_file():
            return path
    return None


def _read_bytes(path: Path) -> bytes:
    with open(path, "rb") as fh:
        head = fh.read(2)
    # Decide on the gzip magic, not the file name, so a renamed file still works.
    if head != b"\x1f\x8b":
        return path.read_bytes()
    try:
        with gzip.open(path, "rb") as fh:
            return fh.read()
    except (gzip.BadGzipFile, EOFError, zlib.error, OSError) as exc:
        raise IDXFormatError(
            f"{path}: not a readable gzip file ({type(exc).__name__}: {exc}); expected a "
            "gzip-compressed IDX file (truncated or corrupt download?)"
        ) from exc


def read_idx(path: str | os.PathLike, ndim: int) -> np.ndarray:
    """Parse one uint8 IDX file (optionally gzipped) into a numpy array.

    Layout: 4-byte magic ``0x00 0x00 <type=0x08> <ndim>``, then ``ndim`` big-endian uint32 sizes,
    then ``prod(sizes)`` bytes of data. Raises :class:`IDXFormatError` (a ``ValueError``) naming
    the file when the magic, the number of dimensions or the data length are wrong.
    """
    path = Path(path)
    raw = _read_bytes(path)
    expected_magic = f"0x{_UBYTE << 8 | ndim:08x}"
    if len(raw) < 4:
        raise IDXFormatError(
            f"{path}: file has {len(raw)} bytes, too short for an IDX header "
            f"(expected magic number {expected_magic})"
        )
    magic = int.from_bytes(raw[:4], "big")
    if raw[0] != 0 or raw[1] != 0 or raw[2] != _UBYTE or raw[3] != ndim:
        raise IDXFormatError(
            f"{path}: bad IDX magic number 0x{magic:08x}, expected {expected_magic} "
            f"(uint8, {ndim} dimension{'s' if ndim > 1 else ''}); wrong file or corrupt?"
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise IDXFormatError(
            f"{path}: expected a {header}-byte IDX header, found only {len(raw)} bytes "
            "(truncated or corrupt?)"
        )
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(dims, dtype=np.int64))
    if len(raw) != expected:
        what = "x".join(str(d) for d in dims)
        raise IDXFormatError(
            f"{path}: expected {expected} bytes of image data ({header}-byte header + {what} "
            f"uint8), found {len(raw)} (truncated or corrupt?)"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


@functools.lru_cache(maxsize=4)
def _parse_pair(
    images_path: str, images_stamp: tuple[int, int], labels_path: str, labels_stamp: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    # The (mtime_ns, size) stamps are part of the key so a replaced file is re-read.
    del images_stamp, labels_stamp
    images = read_idx(images_path, ndim=3)
    labels = read_idx(labels_path, ndim=1)
    if images.shape[1:] != (28, 28):
        raise IDXFormatError(
            f"{images_path}: expected 28x28 images, found {images.shape[1]}x{images.shape[2]}"
        )
    if images.shape[0] != labels.shape[0]:
        raise IDXFormatError(
            f"{images_path} holds {images.shape[0]} images but {labels_path} holds "
            f"{labels.shape[0]} labels; expected the same count (mismatched or corrupt files?)"
        )
    if labels.size and int(labels.max()) > 9:
        raise IDXFormatError(
            f"{labels_path}: labels must be digits 0..9, found {int(labels.max())}"
        )
    # np.frombuffer views are read-only; copy once into tensors that own their memory.
    return torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64))


def _stamp(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_mtime_ns, st.st_size


def _download(root: Path, split: str) -> None:
    # torchvision creates <root>/MNIST/raw before it tries the network; a failed download must
    # not leave those empty folders behind (root may be a link into a shared data tree).
    made = [p for p in (root, root / "MNIST", root / "MNIST" / "raw") if not p.exists()]
    try:
        import torchvision  # lazy: importing torchvision costs ~1 s and is rarely needed

        torchvision.datasets.MNIST(root=str(root), train=split == "train", download=True)
    except Exception as exc:  # offline, no write access, mirror down, ...
        for folder in reversed(made):
            try:
                folder.rmdir()  # only if still empty
            except OSError:
                break
        raise FileNotFoundError(
            f"MNIST {split!r} files are not under {root} and downloading them with "
            f"torchvision.datasets.MNIST(root={str(root)!r}, download=True) failed: "
            f"{type(exc).__name__}: {exc}. Put the IDX files in {root / 'mnist'} or set "
            f"{ENV_VAR} to a folder that has them."
        ) from exc


def load_mnist(
    split: str, root: str | os.PathLike | None = None, download: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Load an MNIST split as ``(images uint8 [N, 28, 28], labels int64 [N])``.

    Args:
        split: ``"train"`` (60,000 images) or ``"test"`` (10,000).
        root: data root; default ``$DEBIAS_DATA``, then ``./data``.
        download: if the files are missing, fetch them with ``torchvision.datasets.MNIST``
            into ``<root>/MNIST/raw`` and read those.

    Parsed arrays are cached in-process (keyed on the resolved paths and their mtimes/sizes);
    each call returns fresh copies, so callers may modify them freely.
    """
    if split not in MNIST_FILES:
        raise ValueError(f"unknown MNIST split {split!r}; valid splits are {MNIST_SPLITS}")
    base = data_root(root)
    names = MNIST_FILES[split]
    found = [_find(base, name) for name in names]
    if any(p is None for p in found) and download:
        _download(base, split)
        found = [_find(base, name) for name in names]
    if any(p is None for p in found):
        looked = [str(p) for name in names for p in _candidates(base, name)]
        raise FileNotFoundError(
            f"MNIST {split!r} files not found under data root {base} (resolved to "
            f"{base.resolve()}). Looked for:\n  "
            + "\n  ".join(looked)
            + f"\nPoint debias at the folder holding mnist/: `export {ENV_VAR}=/path/to/data` "
            "in the shell (`make demo` sets it for itself only, to ../shared/data), or pass "
            "--root DIR on the command line (root=... in Python); or download it "
            "(--download, download=True)."
        )
    images_path, labels_path = (p.resolve() for p in found)  # type: ignore[union-attr]
    images, labels = _parse_pair(
        str(images_path), _stamp(images_path), str(labels_path), _stamp(labels_path)
    )
    if images.shape[0] != _EXPECTED_N[split]:
        # Not an error: subsets are legitimate for quick experiments, but worth knowing.
        warnings.warn(
            f"{images_path}: MNIST {split!r} normally has {_EXPECTED_N[split]} images, this "
            f"file has {images.shape[0]}",
            stacklevel=2,
        )
    return images.clone(), labels.clone()
