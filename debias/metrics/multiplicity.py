"""Multiplicity: p-values of a family of tests adjusted so that the family keeps its level.

A report makes dozens of paired comparisons (every method against CE at every bias level, on
several metrics); at 0.05 each, some would come out "significant" by chance alone. Holm's step-
down procedure (Holm, "A simple sequentially rejective multiple test procedure", Scand. J.
Statist. 1979) controls the family-wise error rate (the chance of one or more false rejections
in the family) at the level of a single test, for any dependence between the tests, and is
never less powerful than Bonferroni.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["holm_adjust"]


def holm_adjust(p_values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm-adjusted p-values, in the input's order.

    With the ``m`` p-values that are not NaN sorted ascending, ``p_(1) <= ... <= p_(m)``:

    ``p̃_(i) = min(1, max_{j <= i} (m − j + 1) · p_(j))``

    (the running maximum keeps the adjusted values in the order of the raw ones). Rejecting
    every hypothesis with ``p̃ <= α`` is Holm's procedure at family-wise level ``α``; the values
    equal ``statsmodels.stats.multitest.multipletests(p, method="holm")[1]``. A NaN p-value (a
    comparison with no test, e.g. one pair) stays NaN and does not count in ``m``.

    Example:
        >>> holm_adjust([0.01, 0.04, 0.03, 0.005]).round(3).tolist()
        [0.03, 0.06, 0.06, 0.02]
    """
    p = np.asarray(p_values, dtype=float)
    if p.ndim != 1:
        raise ValueError(f"p_values must be one-dimensional; got shape {p.shape}")
    tested = ~np.isnan(p)
    if ((p[tested] < 0) | (p[tested] > 1)).any():
        raise ValueError(f"p-values must lie in [0, 1]; got {p[tested & ((p < 0) | (p > 1))]}")
    out = np.full_like(p, np.nan)
    m = int(tested.sum())
    if m == 0:
        return out
    order = np.argsort(p[tested], kind="stable")
    scaled = (m - np.arange(m)) * p[tested][order]
    adjusted = np.minimum(1.0, np.maximum.accumulate(scaled))
    back = np.empty(m)
    back[order] = adjusted
    out[tested] = back
    return out
