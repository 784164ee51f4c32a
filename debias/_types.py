"""Type aliases and the group code shared across subpackages (declared once, imported where
needed; no torch, so the metrics stay array-only)."""

from __future__ import annotations

from typing import Any

#: A ``(target, bias)`` group, e.g. one bias-aligned pair ``(y, b)``.
Group = tuple[int, int]


def group_code(y: Any, b: Any, num_bias: int) -> Any:
    """The flat code ``g = y·num_bias + b`` of each ``(target, bias)`` pair (torch tensors or
    numpy arrays alike)."""
    return y * num_bias + b
