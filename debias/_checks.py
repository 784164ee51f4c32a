"""Range checks of option values, declared once (TrainConfig and the dataset specs use them)."""

from __future__ import annotations

import math
import numbers
from typing import Any


class OptionTypeError(TypeError, ValueError):
    """A value of the wrong type given to debias (a TypeError for the Python API; also a
    ValueError, so that the CLI reports it as the usage error it is: one line, exit 2)."""


def check_number(
    name: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    integer: bool = False,
) -> None:
    """``value`` is a (whole, with ``integer``) finite number in the given range, or an error."""
    kind = numbers.Integral if integer else numbers.Real
    ok = isinstance(value, kind) and not isinstance(value, bool) and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value <= high
    if not ok:
        lo = "" if low is None else f"{'>' if low_open else '>='} {low:g}"
        hi = "" if high is None else f"<= {high:g}"
        what = " and ".join(p for p in (lo, hi) if p)
        raise ValueError(
            f"{name} must be {'an integer' if integer else 'a number'}"
            + (f" {what}" if what else "")
            + f"; got {value!r}"
        )
