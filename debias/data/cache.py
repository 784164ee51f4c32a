"""Decode JPEGs once: a disk cache of decoded, cropped and resized uint8 image tensors.

Face datasets ship as thousands of small JPEGs. Decoding them every epoch (the per-sample PIL
pipeline of the original BiasCon code) is what makes those runs slow on a CPU, so every face
loader in ``debias`` decodes its files once, stores one uint8 tensor ``[N, 3, S, S]`` under
:func:`debias.data.root.cache_root` and reads it back on every later run.

Cache key. ``sha256`` of a JSON document holding the dataset name, the sorted relative file list
with each file's size and ``mtime_ns``, the output size, the crop rule and :data:`CROP_VERSION`
(plus any extra ``cache_key_parts``). A changed, added or removed file therefore gives a new key
and a rebuild; stale entries are left in place (see :func:`cache_info` / :func:`clear_cache`).
The absolute location of the data is *not* part of the key, so two byte-identical copies with the
same mtimes share an entry.

Pipeline per image: read bytes -> ``torchvision.io.decode_image`` (libjpeg-turbo; PIL only as a
fallback, e.g. for files torchvision rejects) -> 8 bits (16-bit PNGs: the high byte) -> crop -> ``torch.nn.functional.interpolate``
(bilinear, ``antialias=True``, torch's uint8 kernel) in batches of equally-sized crops.
Decoding runs in a small thread pool (the native decoder and interpolate release the GIL).

Crop rules:
    ``"center-square"``: crop the centred ``s x s`` square, ``s = min(H, W)`` (top/left offsets
    ``(H - s) // 2`` and ``(W - s) // 2``), then resize to ``S x S``. A no-op crop for square
    images (UTKFace); for aligned CelebA (178x218, here 89x109) it removes the vertical margin.
    ``"none"``: resize the whole image to ``S x S`` (aspect ratio not kept).

Files are written atomically (temporary file in the cache folder + ``os.replace``), so a crashed
or concurrent run never leaves a half-written entry under the final name.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import time
import warnings
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from debias._atomic import atomic_write
from debias.data.root import cache_root


@functools.lru_cache(maxsize=1)
def _tv_decoder():
    """torchvision's decoder, imported on first use (importing torchvision takes seconds, and
    ``import debias.data`` must stay cheap); ``None`` where it is unusable: PIL covers every
    file it would."""
    try:
        from torchvision.io import ImageReadMode, decode_image
    except Exception:  # pragma: no cover - depends on the torchvision build
        return None
    return lambda t: decode_image(t, mode=ImageReadMode.RGB)


__all__ = [
    "CROP_RULES",
    "CROP_VERSION",
    "DEPTH_VERSION",
    "DecodedImages",
    "ImageDecodeError",
    "cache_info",
    "clear_cache",
    "fingerprint",
    "load_images",
]

CROP_RULES = ("center-square", "none")
# Bump whenever the crop/resize arithmetic changes: old cache entries then stop matching.
CROP_VERSION = 1
# How pixels deeper than 8 bits are decoded (2: a 16-bit image's high byte; before, 16-bit
# files failed or were clipped to white). Only loaders of arbitrary files (metadata tables) fold
# it into their key: the built-in datasets are 8-bit JPEGs, whose entries stay valid.
DEPTH_VERSION = 2
CACHE_FORMAT = 2
SUBDIR = "images"
_CHUNK = 128
# torchvision 0.29 deprecates its decoders with a warning on *every* call; one per image would
# bury the user's own warnings, and the decoder still works.
_TV_DEPRECATION = r".*image decoding and encoding capabilities of TorchVision.*"


class ImageDecodeError(ValueError):
    """An image file could not be read or decoded (raised when ``on_error="raise"``)."""


@dataclass
class DecodedImages:
    """Result of :func:`load_images`.

    Attributes:
        images: uint8 ``[N, 3, S, S]`` in the order of the ``paths`` given; rows of files that
            failed to decode are all zero. On a cache hit this may be memory-mapped from the
            cache file: index it (or ``.clone()``) to get rows in memory.
        failed: ``{index into paths: reason}`` for unreadable files (empty when all decoded).
        cache_path: the cache file read or written.
        cache_hit: True when the images came from the cache without decoding.
        seconds: wall time of the whole call.
    """

    images: torch.Tensor
    failed: dict[int, str] = field(default_factory=dict)
    cache_path: Path | None = None
    cache_hit: bool = False
    seconds: float = 0.0

    @property
    def ok(self) -> torch.Tensor:
        """Bool ``[N]``: True for rows that decoded."""
        mask = torch.ones(self.images.shape[0], dtype=torch.bool)
        if self.failed:
            mask[list(self.failed)] = False
        return mask


def _rel(path: str, root: str) -> str:
    """'/'-joined path of ``path`` relative to ``root`` (string ops: pathlib is the bottleneck
    of a cache hit on 10k files)."""
    if not os.path.isabs(path):
        rel = os.path.normpath(path)
    elif path.startswith(prefix := root.rstrip(os.sep) + os.sep):
        rel = path[len(prefix) :]
    else:
        try:
            rel = str(Path(path).relative_to(root))
        except ValueError as err:
            raise ValueError(f"image path {path} is not inside the dataset folder {root}") from err
    if rel.startswith(".."):
        raise ValueError(f"image path {path} is not inside the dataset folder {root}")
    return rel.replace(os.sep, "/")


def fingerprint(
    name: str,
    root: str | os.PathLike,
    rel_paths: Sequence[str],
    image_size: int,
    crop: str = "center-square",
    cache_key_parts: Mapping[str, Any] | None = None,
) -> str:
    """Cache key: sha256 hex of (name, sorted ``(rel_path, size, mtime_ns)``, size, crop rule).

    ``rel_paths`` are '/'-separated paths relative to ``root``; missing files raise
    ``FileNotFoundError``.
    """
    root_s = os.fspath(root)
    files = []
    for rel in sorted(rel_paths):
        stat = os.stat(os.path.join(root_s, rel))
        files.append([rel, stat.st_size, stat.st_mtime_ns])
    doc = {
        "name": name,
        "files": files,
        "image_size": int(image_size),
        "crop": crop,
        "crop_version": CROP_VERSION,
        "format": CACHE_FORMAT,
        "extra": dict(sorted((cache_key_parts or {}).items())),
    }
    blob = json.dumps(doc, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()


def _decode(path: Path) -> torch.Tensor:
    """Bytes of ``path`` -> uint8 RGB ``[3, H, W]``; torchvision first, PIL as the fallback."""
    data = path.read_bytes()
    tv_error = None
    decode = _tv_decoder()
    if decode is not None:
        try:
            return _to_uint8(decode(torch.frombuffer(bytearray(data), dtype=torch.uint8)))
        except Exception as err:  # PIL reads some files libjpeg rejects (and other formats)
            tv_error = err
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            arr = _pil_rgb(im)
    except Exception as err:
        msg = f"{type(err).__name__}: {err}"
        if tv_error is not None:
            msg = f"torchvision: {type(tv_error).__name__}: {tv_error}; PIL: {msg}"
        raise ImageDecodeError(msg) from err
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def _to_uint8(img: torch.Tensor) -> torch.Tensor:
    """A 16-bit image (PNG; torchvision decodes those as uint16) in 8 bits: ``v -> v >> 8``,
    torchvision's ``to_dtype(uint8, scale=True)`` rule; an 8-bit value stored as ``257·v``
    comes back exactly. 8-bit images pass through."""
    if img.dtype == torch.uint8:
        return img
    if img.dtype != torch.uint16:
        raise ImageDecodeError(f"decoded as {img.dtype}; expected 8- or 16-bit pixels")
    return (img.to(torch.int32) >> 8).to(torch.uint8)  # uint16 has no shift kernel


def _pil_rgb(im: Any) -> np.ndarray:
    """A PIL image as uint8 RGB ``[H, W, 3]``; 16-bit grey (``I;16*``) scaled as in
    :func:`_to_uint8` (PIL's own ``convert`` clips it to white). 32-bit modes are refused."""
    if im.mode.startswith("I;16"):
        grey = (np.asarray(im).astype(np.uint16) >> 8).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if im.mode in ("I", "F"):
        raise ImageDecodeError(
            f"PIL mode {im.mode!r} (32-bit pixels) is not supported; expected an 8- or 16-bit image"
        )
    return np.asarray(im.convert("RGB")).copy()


def _crop(img: torch.Tensor, crop: str) -> torch.Tensor:
    if crop == "none":
        return img
    h, w = img.shape[-2:]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    return img[:, top : top + s, left : left + s]


def _resize(batch: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 ``[B, 3, h, w]`` -> uint8 ``[B, 3, size, size]`` (bilinear, antialiased)."""
    if batch.shape[-2:] == (size, size):
        return batch
    try:
        # torch's native uint8 antialiased path is ~15x faster than going through float32 on
        # CPU (it is what makes 10k faces take seconds); it rounds in fixed point, so a pixel
        # may differ by 1 grey level from the float path.
        return F.interpolate(batch, size=(size, size), mode="bilinear", antialias=True)
    except (RuntimeError, NotImplementedError):  # builds without the uint8 kernel
        out = F.interpolate(
            batch.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False
        )
        return out.round_().clamp_(0, 255).to(torch.uint8)


def _work(chunk: list[tuple[int, Path]], out: torch.Tensor, size: int, crop: str) -> dict[int, str]:
    failed: dict[int, str] = {}
    by_shape: dict[tuple[int, ...], list[tuple[int, torch.Tensor]]] = {}
    for i, path in chunk:
        try:
            img = _crop(_decode(path), crop)
        except Exception as err:
            failed[i] = f"{type(err).__name__}: {err}"
            continue
        by_shape.setdefault(tuple(img.shape), []).append((i, img))
    for items in by_shape.values():
        idx = torch.tensor([i for i, _ in items])
        out[idx] = _resize(torch.stack([im for _, im in items]), size)
    return failed


def _decode_all(paths: list[Path], size: int, crop: str, num_threads: int) -> tuple:
    out = torch.zeros(len(paths), 3, size, size, dtype=torch.uint8)
    items = list(enumerate(paths))
    chunks = [items[k : k + _CHUNK] for k in range(0, len(items), _CHUNK)]
    failed: dict[int, str] = {}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_TV_DEPRECATION, category=DeprecationWarning)
        if num_threads <= 1 or len(chunks) <= 1:
            for ch in chunks:
                failed.update(_work(ch, out, size, crop))
        else:
            with ThreadPoolExecutor(max_workers=num_threads) as pool:
                for f in pool.map(lambda ch: _work(ch, out, size, crop), chunks):
                    failed.update(f)
    return out, failed


def _is_inside(child: Path, parent: Path) -> bool:
    try:
        child.resolve().relative_to(parent.resolve())
        return True
    except ValueError:
        return False


def load_images(
    paths: Sequence[str | os.PathLike],
    image_size: int,
    *,
    root: str | os.PathLike,
    name: str,
    crop: str = "center-square",
    cache_key_parts: Mapping[str, Any] | None = None,
    cache_dir: str | os.PathLike | None = None,
    on_error: str = "raise",
    num_threads: int = 2,
    use_cache: bool = True,
    root_is_data: bool = True,
) -> DecodedImages:
    """Decode, crop and resize ``paths`` to uint8 ``[N, 3, image_size, image_size]``, cached.

    Args:
        paths: image files, absolute or relative to ``root``, all inside ``root``.
        image_size: output side ``S``.
        root: the dataset folder; the cache key uses paths relative to it.
        root_is_data: True (a dataset's own folder): the cache folder must not lie anywhere
            inside ``root`` (data folders may be read-only or shared). False (``root`` is only
            the common ancestor of the images, as for a metadata table): the cache folder must
            not lie inside a folder that holds one of the images, and may lie elsewhere under
            ``root`` (images under ``/data/x`` and ``/data/y``, cache under ``/data/cache``).
        name: dataset name, part of the key and of the cache file name.
        crop: one of :data:`CROP_RULES` (see the module docstring).
        cache_key_parts: extra JSON-able values folded into the key.
        cache_dir: cache folder, default :func:`cache_root` (``$DEBIAS_CACHE`` or
            ``~/.cache/debias``); entries go to its ``images/`` subfolder.
        on_error: ``"raise"``: an unreadable file raises :class:`ImageDecodeError` naming it;
            ``"skip"``: it is reported in ``DecodedImages.failed`` and its row stays zero.
        num_threads: decoder threads.
        use_cache: False decodes without reading or writing the cache.
    """
    _check_load_arguments(crop, on_error, image_size)
    start = time.perf_counter()
    root = Path(root)
    rels = _relative_paths(paths, root)
    # The cache stores files in sorted order, so callers listing them differently share it.
    order = sorted(range(len(rels)), key=rels.__getitem__)
    sorted_rels = [rels[i] for i in order]
    cache_path = None
    stored = None
    if use_cache:
        cdir = cache_root(cache_dir) / SUBDIR
        _check_cache_location(cdir, root, sorted_rels if not root_is_data else None)
        cache_path = _cache_file(cdir, root, name, sorted_rels, image_size, crop,
                                 cache_key_parts)  # fmt: skip
        stored = _read_cache(cache_path, sorted_rels)

    hit = stored is not None
    if hit:
        images_sorted = stored["images"]
        position = {rel: row for row, rel in enumerate(sorted_rels)} if stored["failed"] else {}
        failed_sorted = {position[r]: m for r, m in stored["failed"].items()}
    else:
        images_sorted, failed_sorted = _decode_all(
            [root / r for r in sorted_rels], image_size, crop, num_threads
        )
        if cache_path is not None:
            _write_cache(cache_path, name, root, sorted_rels, images_sorted, failed_sorted,
                         image_size, crop, start)  # fmt: skip

    images, failed = _in_caller_order(order, images_sorted, failed_sorted)
    if failed and on_error == "raise":
        i = min(failed)
        more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
        raise ImageDecodeError(
            f"cannot decode image {root / rels[i]}: {failed[i]}{more}. Replace or remove that "
            "file, or skip and count unreadable images: --on-error skip (CLI), on_error='skip' (Python)"
        )
    return DecodedImages(
        images=images,
        failed=dict(sorted(failed.items())),
        cache_path=cache_path,
        cache_hit=hit,
        seconds=time.perf_counter() - start,
    )


# -- the steps of load_images -----------------------------------------------------------------
def _check_load_arguments(crop: str, on_error: str, image_size: Any) -> None:
    if crop not in CROP_RULES:
        raise ValueError(f"crop must be one of {CROP_RULES}; got {crop!r}")
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip'; got {on_error!r}")
    if not isinstance(image_size, int) or isinstance(image_size, bool) or image_size < 1:
        raise ValueError(f"image_size must be a positive int; got {image_size!r}")


def _relative_paths(paths: Sequence[str | os.PathLike], root: Path) -> list[str]:
    root_s = os.path.normpath(os.fspath(root))
    rels = [_rel(os.fspath(p), root_s) for p in paths]
    if len(set(rels)) != len(rels):
        raise ValueError("paths contain duplicates; each image file may appear once")
    return rels


def _check_cache_location(cdir: Path, root: Path, rels: list[str] | None) -> None:
    """Refuse a cache folder that would write into the data: anywhere inside ``root`` when
    ``rels`` is None, else inside a folder holding one of the images ``root / rel``."""
    if rels is None:
        if _is_inside(cdir, root):
            raise ValueError(
                f"cache folder {cdir} is inside the dataset folder {root}; the data root must "
                "stay untouched: set DEBIAS_CACHE or cache_dir= to a folder elsewhere"
            )
        return
    base = root.resolve()
    # Only the folders that hold images, not their common ancestor: a table listing
    # /home/me/a/*.jpg and /home/me/b/*.jpg may cache in /home/me/.cache.
    holders = {base / os.path.dirname(r) for r in rels}
    target = cdir.resolve()
    for folder in (target, *target.parents):
        if folder in holders:
            raise ValueError(
                f"cache folder {cdir} is inside {folder}, which holds images of this dataset; "
                "the image folders must stay untouched: set DEBIAS_CACHE or cache_dir= to a "
                "folder that holds none of them"
            )


def _cache_file(
    cdir: Path,
    root: Path,
    name: str,
    sorted_rels: list[str],
    image_size: int,
    crop: str,
    cache_key_parts: Mapping[str, Any] | None,
) -> Path:
    """The cache entry's path in ``cdir``: ``<name>-<S>px-<crop>-<key>.pt``."""
    key = fingerprint(name, root, sorted_rels, image_size, crop, cache_key_parts)
    safe = "".join(c if c.isalnum() or c in "-_" else "-" for c in name)
    return cdir / f"{safe}-{image_size}px-{crop}-{key[:24]}.pt"


def _read_cache(cache_path: Path, sorted_rels: list[str]) -> dict[str, Any] | None:
    """The stored entry, or None when there is none, it is unreadable or holds other files."""
    if not cache_path.exists():
        return None
    try:
        # mmap: a split that needs a tenth of the rows reads about a tenth of the file.
        stored = torch.load(cache_path, map_location="cpu", weights_only=True, mmap=True)
        if stored.get("files") != "\n".join(sorted_rels):  # collision or foreign file
            return None
        return stored
    except Exception as err:
        warnings.warn(
            f"ignoring unreadable image cache {cache_path} ({err}); rebuilding it",
            stacklevel=3,
        )
        return None


def _write_cache(
    cache_path: Path,
    name: str,
    root: Path,
    sorted_rels: list[str],
    images: torch.Tensor,
    failed: dict[int, str],
    image_size: int,
    crop: str,
    start: float,
) -> None:
    """Write the entry and its ``.json`` description (sizes, failures, decode time)."""
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": CACHE_FORMAT,
        "name": name,
        # one string: the weights-only unpickler is slow on a list of 10k strings
        "files": "\n".join(sorted_rels),
        "images": images,
        "failed": {sorted_rels[i]: m for i, m in failed.items()},
        "image_size": image_size,
        "crop": crop,
    }
    atomic_write(cache_path, lambda fh: torch.save(payload, fh))
    meta = {
        "name": name,
        "image_size": image_size,
        "crop": crop,
        "crop_version": CROP_VERSION,
        "n_images": len(sorted_rels),
        "n_failed": len(failed),
        "decode_seconds": round(time.perf_counter() - start, 3),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "root": str(root),
    }
    meta_path = cache_path.with_suffix(".json")
    atomic_write(meta_path, lambda fh: fh.write(json.dumps(meta, indent=1).encode()))


def _in_caller_order(
    order: list[int], images_sorted: torch.Tensor, failed_sorted: dict[int, str]
) -> tuple[torch.Tensor, dict[int, str]]:
    """Rows and failures back in the order the caller listed the paths."""
    if order == list(range(len(order))):
        return images_sorted, dict(failed_sorted)
    inverse = torch.empty(len(order), dtype=torch.long)
    inverse[torch.tensor(order, dtype=torch.long)] = torch.arange(len(order))
    return images_sorted[inverse], {order[i]: m for i, m in failed_sorted.items()}


def cache_info(cache_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """What the image cache holds: folder, one dict per entry, total bytes."""
    cdir = cache_root(cache_dir) / SUBDIR
    entries = []
    total = 0
    for pt in sorted(cdir.glob("*.pt")) if cdir.is_dir() else []:
        size = pt.stat().st_size
        total += size
        entry: dict[str, Any] = {"file": str(pt), "bytes": size}
        meta = pt.with_suffix(".json")
        if meta.exists():
            try:
                entry.update(json.loads(meta.read_text()))
            except (OSError, ValueError):
                pass
        entries.append(entry)
    return {"path": str(cdir), "entries": entries, "total_bytes": total}


def clear_cache(cache_dir: str | os.PathLike | None = None, name: str | None = None) -> int:
    """Delete cache entries (all, or those of dataset ``name``); returns how many were removed."""
    removed = 0
    for entry in cache_info(cache_dir)["entries"]:
        if name is not None and entry.get("name") != name:
            continue
        pt = Path(entry["file"])
        pt.unlink(missing_ok=True)
        pt.with_suffix(".json").unlink(missing_ok=True)
        removed += 1
    return removed
