"""Exact binomial intervals for one group's accuracy.

A group accuracy is ``k`` correct out of ``n``; a percentile bootstrap of it collapses to a
point at ``k = 0`` or ``k = n`` (every resample is 0/n), which reads as certainty that is not
there: 0 correct out of 98 is compatible with a true accuracy up to 3.7% at 95%. The
Clopper–Pearson interval inverts two one-sided binomial tests and never covers less than its
level:

``low = B(α/2; k, n − k + 1)``, ``high = B(1 − α/2; k + 1, n − k)``, with ``B(q; a, b)`` the
``q`` quantile of the Beta(a, b) distribution, ``α = 1 − level``, ``low = 0`` when ``k = 0`` and
``high = 1`` when ``k = n``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["clopper_pearson"]


def clopper_pearson(k: Any, n: Any, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Exact (Clopper–Pearson) interval of ``k / n`` as fractions: ``(low, high)`` arrays.

    ``k`` and ``n`` are integer counts (scalars or arrays of one shape) with ``0 <= k <= n``;
    ``n = 0`` gives ``(nan, nan)``.
    """
    from scipy import stats

    if not 0.0 < float(level) < 1.0:
        raise ValueError(
            f"level must be a confidence level strictly between 0 and 1; got {level!r}"
        )
    k = np.asarray(k, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    if k.shape != n.shape or (k < 0).any() or (k > n).any():
        raise ValueError("k and n must be counts of one shape with 0 <= k <= n")
    alpha = 1.0 - float(level)
    with np.errstate(invalid="ignore", divide="ignore"):
        low = np.where(k > 0, stats.beta.ppf(alpha / 2, k, n - k + 1), 0.0)
        high = np.where(k < n, stats.beta.ppf(1 - alpha / 2, k + 1, n - k), 1.0)
    empty = n == 0
    return np.where(empty, np.nan, low), np.where(empty, np.nan, high)
