"""Run files written crash-safe (see :mod:`debias._atomic`), so ``debias train`` can always resume."""

from __future__ import annotations

import io
import json
import math
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
    """``obj`` as strict JSON: NaN and +-inf are written as ``null`` (``json.dumps`` would write
    bare ``NaN``, which strict parsers such as ``jq`` and JavaScript reject). debias's readers
    read a null metric back as NaN (:func:`nan_for_null` on the sections of
    :data:`METRIC_SECTIONS` in :func:`debias.train.runfolder.read_metrics`; NaN in
    :func:`debias.results.load`), as they read files written with bare ``NaN`` before."""
    text = json.dumps(strict_json(obj), indent=2, sort_keys=False, allow_nan=False)
    atomic_write(Path(path), lambda fh: fh.write(text.encode() + b"\n"))


#: The sections of ``metrics.json`` whose nulls are metrics that were NaN (an undefined metric,
#: e.g. aligned accuracy on a split without aligned images); elsewhere null means None.
METRIC_SECTIONS = ("splits", "representation")


def nan_for_null(o: Any) -> Any:
    """``o`` with every None (JSON null) read back as NaN: the inverse of :func:`strict_json`
    for a section that holds numbers only where it holds None."""
    if isinstance(o, dict):
        return {k: nan_for_null(v) for k, v in o.items()}
    if isinstance(o, list):
        return [nan_for_null(v) for v in o]
    return float("nan") if o is None else o


def strict_json(o: Any) -> Any:
    """``o`` with every non-finite float replaced by None, numpy/torch values made Python."""
    if isinstance(o, dict):
        return {k: strict_json(v) for k, v in o.items()}
    if isinstance(o, (list, tuple, set)):
        return [strict_json(v) for v in o]
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if isinstance(o, (str, int, bool)) or o is None:
        return o
    return strict_json(_json_default(o))


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
