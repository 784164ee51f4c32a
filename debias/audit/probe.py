"""The audit's linear probe and the uncertainty of what it measures.

A leakage number alone cannot be read: a probe on random Gaussian embeddings scores 0.115
against a nominal chance of 0.100 at N = 1000 (10 bias values) and 0.249 against 0.333 at
N = 60, because a finite sample is never exactly at chance, either way. So every leakage comes
with

* an **interval**: a stratified percentile bootstrap of the balanced accuracy over the probe's
  out-of-fold predictions (rows resampled within each bias value; :data:`BOOTSTRAP` replicates,
  95%); and
* a **permutation baseline**: the same probe (same folds, same settings) refitted on the bias
  labels shuffled *within each target class*, :data:`PERMUTATIONS` draws. Shuffling within class
  keeps the class-conditional bias distribution, so what the target alone predicts about the
  bias stays in the baseline and only the bias information the embedding carries beyond it is
  removed. Its mean is the chance level measured on this data; its largest draw the bar.

The verdict ``leaking`` is ``ci_low > null_max``: the lower end of the leakage's interval is
above every permuted draw. ``p_value = (1 + #{draws >= leakage}) / (1 + draws)`` (its smallest
value is ``1 / (1 + draws)``, so with 5 draws it is a rank, not a fine test). A probe whose
smallest bias group (within the probed rows) has fewer than :data:`MIN_GROUP` images is not run:
its number would be a statement about a handful of images.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

__all__ = [
    "BOOTSTRAP",
    "LEAKAGE_COLUMNS",
    "MIN_GROUP",
    "PERMUTATIONS",
    "balanced_accuracy_interval",
    "leakage_test",
    "linear_probe_predict",
    "shuffle_within",
]

#: Permuted refits of the probe per leakage number (the permutation baseline).
PERMUTATIONS = 5
#: Bootstrap replicates of the leakage's interval.
BOOTSTRAP = 1000
#: Fewest images per bias value (per (target, bias) group within a class) a probe is run on.
MIN_GROUP = 5
#: What :func:`leakage_test` returns besides ``leakage``, in this order.
LEAKAGE_COLUMNS = ("ci_low", "ci_high", "null_mean", "null_max", "p_value", "leaking")


def linear_probe_predict(
    X: np.ndarray,
    labels: np.ndarray,
    *,
    cv: int = 5,
    seed: int = 0,
    max_iter: int = 100,
    C: float = 1.0,
    notes: list[str] | None = None,
    what: str = "probe",
) -> np.ndarray:
    """Out-of-fold predictions of ``labels`` from ``X`` by a standardised logistic regression.

    ``StratifiedKFold(cv, shuffle=True, random_state=seed)``; the scaler is fitted on each
    training fold only. L-BFGS (multinomial) with a ``max_iter`` cap, measured against
    ``SGDClassifier(loss="log_loss")`` (one-vs-rest) by ``bench/bench_audit.py
    --compare-solvers``: predicting 10 bias values from 80k x 512 synthetic embeddings, L-BFGS
    took 5.2 s (27 iterations) for 0.650 held-out balanced accuracy, SGD 34.4 s for 0.582, both
    single-threaded. Warnings from sklearn (no convergence, a label rarer than ``cv``) are turned
    into ``notes``.

    Example:
        >>> pred = linear_probe_predict(Z, bias, cv=5)  # doctest: +SKIP
    """
    probe = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=max_iter))
    folds = StratifiedKFold(n_splits=cv, shuffle=True, random_state=seed)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pred = cross_val_predict(probe, X, labels, cv=folds)
    if notes is not None:
        kinds = set()
        for w in caught:
            if issubclass(w.category, ConvergenceWarning):
                kinds.add(f"{what}: L-BFGS hit max_iter={max_iter} before converging")
            elif "least populated class" in str(w.message):
                kinds.add(f"{what}: a label has fewer than cv={cv} samples ({w.message})")
        notes.extend(sorted(kinds))
    return pred


def balanced_accuracy_interval(
    labels: np.ndarray, pred: np.ndarray, *, resamples: int = BOOTSTRAP, seed: int = 0,
    ci: float = 0.95,
) -> tuple[float, float]:  # fmt: skip
    """Percentile interval of the balanced accuracy ``(1/|B|) sum_b k_b / n_b`` under a
    stratified bootstrap (rows resampled within each label ``b``: ``k*_b ~ Binomial(n_b,
    k_b / n_b)``, drawn directly; :func:`debias.metrics.bootstrap.stratified_bootstrap`)."""
    from debias.metrics.bootstrap import stratified_bootstrap

    values, codes = np.unique(labels, return_inverse=True)
    n = np.bincount(codes, minlength=len(values))
    correct = np.bincount(codes, weights=(pred == labels), minlength=len(values)).astype(int)

    def statistic(k: np.ndarray) -> dict[str, np.ndarray]:
        return {"balanced": (k / n).mean(axis=1)}

    low, high = stratified_bootstrap(n, correct, statistic, n_boot=resamples, ci=ci, seed=seed)[
        "balanced"
    ]
    return float(low), float(high)


def shuffle_within(labels: np.ndarray, within: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``labels`` permuted at random inside each value of ``within`` (its counts kept there)."""
    out = labels.copy()
    for value in np.unique(within):
        idx = np.flatnonzero(within == value)
        out[idx] = labels[rng.permutation(idx)]
    return out


def leakage_test(
    X: np.ndarray, labels: np.ndarray, within: np.ndarray, *, cv: int, seed: int, max_iter: int,
    notes: list[str] | None, what: str, permutations: int = PERMUTATIONS,
) -> dict[str, Any]:  # fmt: skip
    """The probe's leakage (balanced accuracy of out-of-fold predictions of ``labels``), its
    bootstrap interval and its permutation baseline (``labels`` shuffled within ``within``);
    keys ``leakage`` and :data:`LEAKAGE_COLUMNS` (see the module docstring)."""
    pred = linear_probe_predict(
        X, labels, cv=cv, seed=seed, max_iter=max_iter, notes=notes, what=what
    )
    leakage = float(balanced_accuracy_score(labels, pred))
    low, high = balanced_accuracy_interval(labels, pred, seed=seed)
    rng = np.random.default_rng(seed + 7919)
    null = []
    for _ in range(permutations):
        shuffled = shuffle_within(labels, within, rng)
        # Same folds and probe; the shuffled fits' warnings repeat the real fit's, so no notes.
        null_pred = linear_probe_predict(X, shuffled, cv=cv, seed=seed, max_iter=max_iter)
        null.append(float(balanced_accuracy_score(shuffled, null_pred)))
    draws = np.asarray(null)
    out: dict[str, Any] = {"leakage": leakage, "ci_low": low, "ci_high": high}
    if permutations == 0:
        return out | {"null_mean": np.nan, "null_max": np.nan, "p_value": np.nan, "leaking": None}
    return out | {
        "null_mean": float(draws.mean()),
        "null_max": float(draws.max()),
        "p_value": float((1 + (draws >= leakage).sum()) / (1 + len(draws))),
        "leaking": bool(low > draws.max()),
    }
