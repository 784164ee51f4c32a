"""Search distributions of hyper-parameters: where a random search draws a value from.

A method's :class:`~debias.methods.HParam` and a tunable :class:`~debias.train.TrainConfig`
field may declare one (``search=``), beside its default, with where the range comes from
(SubpopBench's ``hparams_registry.py`` where it has one, else the method's paper).
``debias methods`` lists them; a sweep's ``search:`` block (:mod:`debias.sweep.search`) draws
from them.

Three kinds, each with a seeded ``sample(rng)`` on a :class:`random.Random`:

* :class:`LogUniform` ``(low, high)``: ``v = exp(log low + u·(log high − log low))``, ``u`` uniform
  on [0, 1); SubpopBench's ``10**r.uniform(a, b)`` is ``LogUniform(10**a, 10**b)``. With
  ``integer=True`` the value is ``floor(v)``, as SubpopBench's ``int(2**r.uniform(a, b))``.
* :class:`Uniform` ``(low, high)``: ``v = low + u·(high − low)``.
* :class:`Choice` ``(values)``: ``values[floor(u·len(values))]``.

Reproducibility: every draw reads ``rng.random()`` only, the one part of :mod:`random` whose
sequence Python guarantees across versions for a given integer seed (``uniform`` and
``choice`` are implementation details that may change). Floats are rounded to
:data:`SIGNIFICANT` significant digits, so a last-bit difference of ``exp``/``log`` between two
C libraries cannot change a drawn value (or a run's folder name), and the values read well.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

__all__ = [
    "SIGNIFICANT",
    "SUBPOPBENCH",
    "Choice",
    "Distribution",
    "LogUniform",
    "Uniform",
    "round_sig",
]

SIGNIFICANT = 4
# The file the ranges are transcribed from (YyzHarry/SubpopBench at commit 4d3dbbe, 2023-07-09);
# a space's source names its line there.
SUBPOPBENCH = "SubpopBench subpopbench/hparams_registry.py@4d3dbbe"


def round_sig(value: float, digits: int = SIGNIFICANT) -> float:
    """``value`` rounded to ``digits`` significant digits (``0.000371249`` -> ``0.0003712``)."""
    if value == 0 or not math.isfinite(value):
        return value
    return round(value, digits - 1 - math.floor(math.log10(abs(value))))


def _check_range(kind: str, low: Any, high: Any, positive: bool) -> None:
    for name, v in (("low", low), ("high", high)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ValueError(f"{kind}: {name}={v!r}, expected a finite number")
    if positive and low <= 0:
        raise ValueError(f"{kind}: low={low!r}, expected a number > 0 (a log scale)")
    if not low < high:
        raise ValueError(f"{kind}: low={low!r} must be below high={high!r}")


@dataclass(frozen=True)
class LogUniform:
    """Log-uniform on ``[low, high)`` (``integer``: floored to an int); see the module docstring."""

    low: float
    high: float
    integer: bool = False
    source: str = ""

    def __post_init__(self) -> None:
        _check_range("log-uniform", self.low, self.high, positive=True)

    def sample(self, rng: random.Random) -> float | int:
        a, b = math.log(self.low), math.log(self.high)
        v = math.exp(a + rng.random() * (b - a))
        return int(math.floor(v)) if self.integer else round_sig(v)

    def describe(self) -> str:
        kind = "log-uniform integer" if self.integer else "log-uniform"
        return f"{kind} on [{self.low:g}, {self.high:g})"


@dataclass(frozen=True)
class Uniform:
    """Uniform on ``[low, high)``; see the module docstring."""

    low: float
    high: float
    source: str = ""

    def __post_init__(self) -> None:
        _check_range("uniform", self.low, self.high, positive=False)

    def sample(self, rng: random.Random) -> float:
        return round_sig(self.low + rng.random() * (self.high - self.low))

    def describe(self) -> str:
        return f"uniform on [{self.low:g}, {self.high:g})"


@dataclass(frozen=True)
class Choice:
    """One of ``values``, each with probability ``1/len(values)``; see the module docstring."""

    values: tuple[Any, ...]
    source: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.values, tuple) or not self.values:
            raise ValueError(f"choice: values={self.values!r}, expected a non-empty tuple")

    def sample(self, rng: random.Random) -> Any:
        return self.values[min(int(rng.random() * len(self.values)), len(self.values) - 1)]

    def describe(self) -> str:
        return "one of {" + ", ".join(repr(v) for v in self.values) + "}"


Distribution = LogUniform | Uniform | Choice
