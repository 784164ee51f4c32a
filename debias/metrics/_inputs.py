"""Input checking shared by every metric: array-likes of integer labels -> int64 numpy arrays.

Metrics are called every epoch on every split, often straight on model outputs, so the checks
are cheap (dtype inspection; value scans only for float input) and the errors say which
argument was wrong and what was expected.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np

from debias._types import Group


def as_labels(x: Any, name: str) -> np.ndarray:
    """Convert one array-like of integer labels to a 1-D int64 numpy array.

    Accepts numpy arrays, lists, pandas Series and torch tensors (any device; they are copied to
    the CPU). Float input is accepted only when every value is a finite whole number, because
    labels that went through a float container (pandas with NaN support, ``torch.float``) are
    common and harmless; fractional values are rejected.

    Raises:
        ValueError: naming ``name`` when the input is not 1-D, empty, holds NaN/inf, or holds
            non-integer values.
    """
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch.Tensor without importing torch
        t = x.detach().cpu()
        # bfloat16/half have no numpy equivalent; float64 keeps whole numbers exact
        x = t.double().numpy() if t.is_floating_point() else t.numpy()
    elif hasattr(x, "to_numpy"):  # pandas Series / Index
        x = x.to_numpy()
    try:
        arr = np.asarray(x)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a 1-D array of integer labels; got {x!r}") from exc
    if arr.dtype.kind == "O":
        try:
            arr = arr.astype(np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(
                f"{name} must hold integer labels; got objects such as {arr.flat[0]!r}"
            ) from exc
    if arr.ndim != 1:
        hint = ""
        if arr.ndim == 2:
            hint = " (for logits or scores [N, C], pass argmax over axis 1)"
        raise ValueError(
            f"{name} must be a 1-D array of labels; got shape {tuple(arr.shape)}{hint}"
        )
    if arr.size == 0:
        raise ValueError(f"{name} is empty; expected at least one label")
    kind = arr.dtype.kind
    if kind in "iu":
        return arr.astype(np.int64, copy=False)
    if kind == "b":
        return arr.astype(np.int64)
    if kind == "f":
        if not np.isfinite(arr).all():
            bad = int((~np.isfinite(arr)).sum())
            raise ValueError(f"{name} contains {bad} NaN/inf value(s); expected integer labels")
        if not (arr == np.round(arr)).all():
            example = arr[arr != np.round(arr)][0]
            raise ValueError(
                f"{name} must hold integer labels; got non-integer value {example!r} "
                f"(dtype {arr.dtype})"
            )
        return arr.astype(np.int64)
    raise ValueError(f"{name} must hold integer labels; got dtype {arr.dtype}")


def check_arrays(**arrays: Any) -> list[np.ndarray]:
    """:func:`as_labels` on each keyword argument, then check that all lengths agree."""
    out = [as_labels(v, k) for k, v in arrays.items()]
    names = list(arrays)
    for name, arr in zip(names[1:], out[1:]):
        if len(arr) != len(out[0]):
            raise ValueError(
                f"{name} has {len(arr)} entries but {names[0]} has {len(out[0])}; "
                "expected one entry per sample in each"
            )
    return out


def as_aligned(aligned: Iterable[Any] | None) -> frozenset[Group] | None:
    """Validate an explicit aligned-group collection; ``None`` stays ``None`` (the diagonal)."""
    if aligned is None:
        return None
    if isinstance(aligned, (str, bytes)) or not isinstance(aligned, Iterable):
        raise ValueError(
            f"aligned must be a collection of (y, b) pairs such as {{(0, 0), (1, 1)}}; "
            f"got {aligned!r}"
        )
    pairs: set[Group] = set()
    for item in aligned:
        try:
            y, b = item
            fy, fb = float(y), float(b)
        except (TypeError, ValueError) as exc:
            raise ValueError(
                f"aligned must be a collection of (y, b) pairs of integers; got item {item!r}"
            ) from exc
        if not (math.isfinite(fy) and math.isfinite(fb)) or fy != int(fy) or fb != int(fb):
            raise ValueError(
                f"aligned must be a collection of (y, b) pairs of integers; got item {item!r}"
            )
        pairs.add((int(fy), int(fb)))
    return frozenset(pairs)
