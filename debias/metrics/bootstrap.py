"""Stratified bootstrap confidence intervals for metrics that depend only on per-group counts.

Worst groups are small (tens to a few hundred samples, PROTOCOLS §5), so a number that is
compared should carry an interval. Resampling is stratified by group: each group ``g`` keeps
its size ``n_g`` in every replicate, so no group vanishes and the set of groups that
unbiased / worst-group accuracy average over stays fixed.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Statistic = Callable[[np.ndarray], dict[str, np.ndarray]]


def stratified_bootstrap(
    n: np.ndarray,
    correct: np.ndarray,
    statistic: Statistic,
    *,
    n_boot: int,
    ci: float = 0.95,
    seed: int = 0,
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap intervals, resampling rows with replacement within each group.

    Drawing ``n_g`` rows with replacement from group ``g``, which holds ``k_g`` correct
    predictions, and counting the correct ones gives ``k*_g ~ Binomial(n_g, k_g / n_g)``
    exactly. We draw those counts directly: it is the same distribution as materialising the
    resampled rows and bincounting their correctness per group, at ``O(n_boot * G)`` instead of
    ``O(n_boot * N)`` cost.

    Interval: ``(q_{(1-ci)/2}, q_{(1+ci)/2})`` of the ``n_boot`` replicate values (linear
    interpolation between order statistics, numpy's default).

    Args:
        n: int ``[G]`` group sizes, all > 0.
        correct: int ``[G]`` correct predictions per group.
        statistic: maps correct counts ``[R, G]`` to ``{name: values [R]}``; values may be NaN
            for a statistic that is undefined on this data (e.g. no aligned group), which gives
            the interval ``(nan, nan)``.
        n_boot: number of replicates, > 0.
        ci: confidence level in (0, 1).
        seed: seed of the numpy generator; the same seed gives the same intervals.
    """
    if not isinstance(n_boot, (int, np.integer)) or isinstance(n_boot, bool) or n_boot <= 0:
        raise ValueError(f"n_boot must be a positive integer; got {n_boot!r}")
    if not 0.0 < float(ci) < 1.0:
        raise ValueError(f"ci must be a confidence level strictly between 0 and 1; got {ci!r}")
    n = np.asarray(n, dtype=np.int64)
    correct = np.asarray(correct, dtype=np.int64)
    if n.shape != correct.shape or n.ndim != 1 or (n <= 0).any():
        raise ValueError("n and correct must be 1-D arrays of equal length with every n > 0")
    rng = np.random.default_rng(seed)
    draws = rng.binomial(n, correct / n, size=(int(n_boot), n.size))
    alpha = (1.0 - float(ci)) / 2.0
    out: dict[str, tuple[float, float]] = {}
    for name, values in statistic(draws).items():
        values = np.asarray(values, dtype=np.float64)
        if np.isnan(values).any():
            out[name] = (float("nan"), float("nan"))
            continue
        low, high = np.quantile(values, [alpha, 1.0 - alpha])
        out[name] = (float(low), float(high))
    return out
