"""Run files written crash-safe (see :mod:`debias._atomic`), so ``debias train`` can always resume."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import torch

from debias._atomic import atomic_write


def save_torch(obj: Any, path: str | os.PathLike) -> None:
    # Serialised in memory first: a full disk is then an OSError naming the file (ENOSPC),
    # not torch's "[enforce fail at inline_container.cc]" from inside its zip writer.
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write(Path(path), lambda fh: fh.write(buf.getbuffer()))


def save_json(obj: Any, path: str | os.PathLike) -> None:
    text = json.dumps(obj, indent=2, sort_keys=False, default=_json_default, allow_nan=True)
    atomic_write(Path(path), lambda fh: fh.write(text.encode() + b"\n"))


def save_text(text: str, path: str | os.PathLike) -> None:
    atomic_write(Path(path), lambda fh: fh.write(text.encode()))


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
