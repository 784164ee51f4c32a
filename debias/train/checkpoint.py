"""Crash-safe files: write to a temporary file, then rename over the target.

A run killed mid-write (Ctrl-C, OOM, a pre-empted node) leaves either the previous complete
file or the new one, never a torn file, so ``debias train`` can always resume.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_torch(obj: Any, path: str | os.PathLike) -> None:
    _atomic_write(Path(path), lambda fh: torch.save(obj, fh))


def load_torch(path: str | os.PathLike) -> Any:
    return torch.load(Path(path), map_location="cpu", weights_only=False)


def save_json(obj: Any, path: str | os.PathLike) -> None:
    text = json.dumps(obj, indent=2, sort_keys=False, default=_json_default, allow_nan=True)
    _atomic_write(Path(path), lambda fh: fh.write(text.encode() + b"\n"))


def save_text(text: str, path: str | os.PathLike) -> None:
    _atomic_write(Path(path), lambda fh: fh.write(text.encode()))


def _json_default(o: Any) -> Any:
    if hasattr(o, "item"):
        return o.item()
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, (set, tuple)):
        return list(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON-serialisable: {type(o).__name__}")
