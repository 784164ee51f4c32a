"""Type aliases shared across subpackages (declared once, imported where needed)."""

from __future__ import annotations

#: A ``(target, bias)`` group, e.g. one bias-aligned pair ``(y, b)``.
Group = tuple[int, int]
