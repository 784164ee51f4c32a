"""Deep Feature Reweighting: the last layer refitted on group-balanced held-out data.

DFR (Kirichenko, Izmailov & Wilson, "Last Layer Re-Training is Sufficient for Robustness to
Spurious Correlations", ICLR 2023) judges what a frozen representation holds: if a linear head
fitted on data where the bias no longer predicts the target reaches a high worst-group accuracy,
the features carry the target; if it stays low, they carry mostly the bias. It reads the
validation split's bias labels (to balance its groups and to choose ``C``) and nothing of any
test split: every number it gives must say so.

The protocol is the official code's "DFR on validation" with its defaults
(PolinaKirichenko/deep_feature_reweighting, ``dfr_evaluate_spurious.py``:
``dfr_on_validation_tune`` then ``dfr_on_validation_eval``, ``balance_dfr_val=True``,
``notrain_dfr_val=True``), transcribed step for step so that a seeded run draws the official
subsamples; ``tests/test_dfr.py`` checks the chosen ``C`` and the test accuracies against a
transcription of that code on fixed features. See :func:`fit_dfr` for the steps and the odd
corners of the official code that are kept.

SubpopBench's ``DFR`` (YyzHarry/SubpopBench ``subpopbench/learning/algorithms.py``) is a
different procedure: one fixed group-subsampled copy of the validation split
(``subsample_type='group'``), the classifier trained by SGD on
``CE + dfr_reg·||W||_1`` (weights only, no intercept penalty; ``dfr_reg`` 0.1 by default,
searched as ``10^U(-2, 0.5)`` and picked by its model selection), no standardisation and no
averaging over refits. Numbers of the two are not interchangeable.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from debias._types import group_code

__all__ = [
    "C_GRID",
    "DFRError",
    "DFRHead",
    "REFITS",
    "SCALER_ROWS",
    "SOURCE",
    "TIE_RULE",
    "fit_dfr",
    "group_codes",
    "rule",
    "scaler_rows",
    "tied",
]

# The official C_OPTIONS (its WaterBirds grid, the one the script runs) and its num_retrains.
C_GRID = (1.0, 0.7, 0.3, 0.1, 0.07, 0.03, 0.01)
REFITS = 20
# Training rows whose features the refit's standardisation is fitted on (None: every row, as
# the official code does). Encoding the whole training split would by itself cost 10-15% of a
# CPU-protocol run (measured: 58,000 LeNet encodings took 24 s of a 200 s run on busy cores);
# the mean of 5,000 seeded rows is within about 1/sqrt(5000) = 1.4% of a standard deviation of
# the full split's.
SCALER_ROWS = 5000
SOURCE = (
    "PolinaKirichenko/deep_feature_reweighting@9d8d5de dfr_evaluate_spurious.py (DFR on "
    "validation: dfr_on_validation_tune + dfr_on_validation_eval, balance_dfr_val=True, "
    "notrain_dfr_val=True)"
)


def rule(refits: int = REFITS) -> str:
    """The protocol in one paragraph, for the records (with ``refits`` refits)."""
    return (
        "features of the frozen encoder; validation split halved at random; the second half "
        "subsampled to equal (target, bias) group sizes, standardised, and an L1 logistic "
        "regression (liblinear) fitted for each C in "
        + ", ".join(f"{c:g}" for c in C_GRID)
        + "; C chosen by worst-group accuracy on the first half (ties: the larger C); then "
        f"{refits} refits with that C on group-balanced subsamples of the whole validation "
        f"split (the official code: {REFITS}), standardised with training-split statistics, "
        "coefficients and intercepts averaged. Reads the validation split's bias labels; "
        "nothing of the test splits"
    )


TIE_RULE = (
    "the larger C: the official np.argmax over the grid, listed from large to small, takes the "
    "first best score"
)


def tied(tuning: dict[float, float]) -> list[float]:
    """The Cs whose tuning score equals the best one (NaN scores: none), in grid order."""
    scores = [v for v in tuning.values() if not np.isnan(v)]
    return [c for c, v in tuning.items() if scores and v == max(scores)]


class DFRError(ValueError):
    """The validation split cannot be group-balanced (a group with no image where needed)."""


@dataclass
class DFRHead:
    """An averaged DFR head: ``predict(X) = classes[argmax(scaler(X)·coefᵀ + intercept)]``
    (two classes: ``classes[score > 0]``, sklearn's rule).

    Attributes:
        coef / intercept: the mean over the refits, ``[K, D]`` / ``[K]`` (``[1, D]`` / ``[1]``
            for two classes), on standardised features.
        scaler: the refit's ``StandardScaler`` (fitted on the training-split features given).
        classes: the target values, in coefficient order.
        C: the chosen inverse regularisation strength; ``tuning``: ``{C: worst-group accuracy
            on the scoring half}``.
        groups: ``(target, bias)`` groups in the validation split; ``per_group``: images per
            group in each refit (the smallest group's size); ``n_val``: validation images.
    """

    coef: np.ndarray
    intercept: np.ndarray
    scaler: StandardScaler
    classes: np.ndarray
    C: float
    tuning: dict[float, float]
    refits: int
    groups: int
    per_group: int
    n_val: int
    notes: list[str] = field(default_factory=list)

    def decision(self, X: Any) -> np.ndarray:
        """``scaler(X)·coefᵀ + intercept``, as sklearn's ``decision_function`` computes it."""
        scores = self.scaler.transform(_matrix(X)) @ self.coef.T + self.intercept
        return scores.ravel() if scores.shape[1] == 1 else scores

    def predict(self, X: Any) -> np.ndarray:
        scores = self.decision(X)
        pick = (scores > 0).astype(int) if scores.ndim == 1 else scores.argmax(1)
        return self.classes[pick]

    def linear(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(weight [K, D], bias [K])`` of one linear layer on the raw features giving the same
        scores, standardisation folded in: ``W = coef / scale``, ``b = intercept − W·mean``.
        Two classes get two rows, ``(−s/2, +s/2)``, so ``argmax`` is the sign rule."""
        w = self.coef / self.scaler.scale_
        b = self.intercept - w @ self.scaler.mean_
        if len(self.classes) == 2:
            w, b = np.concatenate([-w / 2, w / 2]), np.concatenate([-b / 2, b / 2])
        return torch.from_numpy(w).float(), torch.from_numpy(b).float()

    def record(self) -> dict[str, Any]:
        """What ``metrics.json`` keeps of the fit (JSON-ready)."""
        return {
            "C": self.C,
            "tuning_worst_group_accuracy": {f"{c:g}": v for c, v in self.tuning.items()},
            # Every C that scored as well as the chosen one: more than one is a tie, decided by
            # TIE_RULE, not by the data (a small scoring half often ties every C at one value).
            "C_tied": [f"{c:g}" for c in tied(self.tuning)],
            "tie_rule": TIE_RULE,
            "refits": self.refits,
            "val_groups": self.groups,
            "images_per_group": self.per_group,
            "val_images": self.n_val,
            "scaler_rows": int(self.scaler.n_samples_seen_),
            "notes": list(self.notes),
        }


def _matrix(X: Any) -> np.ndarray:
    if isinstance(X, torch.Tensor):
        X = X.detach().float().cpu().numpy()
    return np.asarray(X)


def group_codes(targets: Any, bias: Any) -> np.ndarray:
    """Consecutive ids ``0..G-1`` of the ``(target, bias)`` pairs present, in ``(y, b)`` order
    (the official code's ``g`` on data where every group occurs)."""
    y, b = np.asarray(targets, dtype=np.int64), np.asarray(bias, dtype=np.int64)
    return np.unique(group_code(y, b, int(b.max()) + 1), return_inverse=True)[1].reshape(-1)


def scaler_rows(n: int, seed: int) -> np.ndarray:
    """Sorted rows of an ``n``-row training split whose features standardise the refit: a
    seeded :data:`SCALER_ROWS` of them (all when the split is not larger)."""
    if SCALER_ROWS is None or n <= SCALER_ROWS:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=SCALER_ROWS, replace=False))


def _balanced_rows(g: np.ndarray, rng: np.random.RandomState) -> tuple[np.ndarray, int]:
    """Rows of ``g``'s groups ``0..max(g)``, each cut to the smallest one's size after a
    shuffle: the official ``g_idx`` / ``min_g`` / ``np.random.shuffle(g)`` loop, same draws."""
    g_idx = [np.where(g == k)[0] for k in range(int(g.max()) + 1)]
    min_g = min(len(ix) for ix in g_idx)
    for ix in g_idx:
        rng.shuffle(ix)
    return np.concatenate([ix[:min_g] for ix in g_idx]), min_g


def _fit_l1(
    X: np.ndarray, y: np.ndarray, C: float, rng: np.random.RandomState
) -> tuple[np.ndarray, np.ndarray]:
    """``LogisticRegression(penalty="l1", solver="liblinear", C)``: ``(coef, intercept)``.

    More than two classes: one binary fit per class (one-vs-rest), which is what the official
    code's call did under scikit-learn < 1.8 (liblinear trains one-vs-rest; 1.8 refuses it).
    Each liblinear call seeds its coordinate order from ``rng`` as sklearn does, one draw per
    call; the one-vs-rest fits share one draw, as the single old call did.
    """
    classes = np.unique(y)
    if len(classes) < 2:
        raise DFRError(
            f"the half of the validation split DFR fits on holds target class "
            f"{classes.tolist()} only ({len(y)} group-balanced row(s)); DFR needs every class "
            "in both halves: use a larger validation split"
        )
    if len(classes) == 2:
        m = LogisticRegression(l1_ratio=1.0, C=C, solver="liblinear", random_state=rng)
        m.fit(X, y)
        return m.coef_, m.intercept_
    seed = rng.randint(np.iinfo("i").max)
    coefs, intercepts = [], []
    for c in classes:
        m = LogisticRegression(l1_ratio=1.0, C=C, solver="liblinear", random_state=seed)
        m.fit(X, (y == c).astype(np.int64))
        coefs.append(m.coef_)
        intercepts.append(m.intercept_)
    return np.concatenate(coefs), np.concatenate(intercepts)


def _predict(X: np.ndarray, coef: np.ndarray, intercept: np.ndarray, classes: np.ndarray):
    scores = X @ coef.T + intercept
    if scores.shape[1] == 1:
        return classes[(scores.ravel() > 0).astype(int)]
    return classes[scores.argmax(1)]


def _group_accuracies(correct: np.ndarray, g: np.ndarray, n_groups: int) -> np.ndarray:
    """Accuracy in each group ``0..n_groups-1``; NaN for a group with no row (numpy's mean of
    an empty slice, as in the official code)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.array([correct[g == k].mean() for k in range(n_groups)])


def _tune(
    X: np.ndarray, y: np.ndarray, g: np.ndarray, rng: np.random.RandomState, c_grid
) -> tuple[float, dict[float, float]]:
    """``dfr_on_validation_tune`` (``num_retrains=1``): the C with the best worst-group
    accuracy on one half of the validation split, fitted on the other half balanced."""
    n_half = len(X) // 2
    idx = np.arange(len(X))
    rng.shuffle(idx)
    fit_rows, score_rows = idx[n_half:], idx[:n_half]
    pick, min_g = _balanced_rows(g[fit_rows], rng)
    if min_g == 0:
        raise DFRError(
            "a (target, bias) group of the validation split has no image in the half DFR fits "
            f"on ({len(X)} validation images, {int(g.max()) + 1} groups); DFR needs every group "
            "in both halves: use a larger validation split"
        )
    n_groups = int(g[fit_rows].max()) + 1
    fit_rows = fit_rows[pick]
    scaler = StandardScaler()
    x_fit = scaler.fit_transform(X[fit_rows])
    x_score = scaler.transform(X[score_rows])
    classes = np.unique(y[fit_rows])
    scores: dict[float, float] = {}
    for c in c_grid:
        coef, intercept = _fit_l1(x_fit, y[fit_rows], c, rng)
        correct = _predict(x_score, coef, intercept, classes) == y[score_rows]
        scores[float(c)] = float(np.min(_group_accuracies(correct, g[score_rows], n_groups)))
    # np.argmax: the first maximum (the larger C on a tie); a NaN (a group absent from the
    # scoring half makes every score NaN) is taken as the maximum, so C = the first one.
    best = list(scores)[int(np.argmax(list(scores.values())))]
    return best, scores


def _refit(
    X: np.ndarray, y: np.ndarray, g: np.ndarray, x_scale: np.ndarray, c: float,
    rng: np.random.RandomState, refits: int,
) -> tuple[np.ndarray, np.ndarray, StandardScaler, int]:  # fmt: skip
    """``dfr_on_validation_eval``: ``refits`` fits on group-balanced subsamples of the whole
    validation split, standardised with ``x_scale``'s statistics, averaged."""
    scaler = StandardScaler().fit(x_scale)
    coefs, intercepts = [], []
    min_g = 0
    for _ in range(refits):
        rows, min_g = _balanced_rows(g, rng)
        # The official loop also shuffles a permutation of the training rows that it then
        # leaves unused (its add_train branch is off); drawing it too keeps the official draws.
        rng.shuffle(np.arange(len(x_scale)))
        coef, intercept = _fit_l1(scaler.transform(X[rows]), y[rows], c, rng)
        coefs.append(coef)
        intercepts.append(intercept)
    return np.mean(coefs, axis=0), np.mean(intercepts, axis=0), scaler, min_g


def fit_dfr(
    val_features: Any,
    val_targets: Any,
    val_bias: Any,
    scale_features: Any,
    *,
    seed: int = 0,
    c_grid: tuple[float, ...] = C_GRID,
    refits: int = REFITS,
) -> DFRHead:
    """Fit a DFR head on frozen validation features ``[N, D]`` (see the module docstring).

    Steps (the official ``dfr_on_validation_tune`` / ``dfr_on_validation_eval``), all draws from
    one ``np.random.RandomState(seed)`` in the official order, group ``g`` = the ``(target,
    bias)`` pair (:func:`group_codes`):

    1. **Tune.** Shuffle the validation rows; the second half (``idx[N//2:]``) is cut to equal
       group sizes (each group shuffled, the smallest one's size kept), standardised with a
       ``StandardScaler`` fitted on it, and an L1 logistic regression (liblinear, class weights
       1:1, ``C`` from ``c_grid``) fitted; it is scored on the first half, *not* balanced, by
       its worst-group accuracy. The best ``C`` wins (the larger on a tie).
    2. **Refit.** ``refits`` times: the whole validation split cut to equal group sizes (a fresh
       draw each time), standardised with a scaler fitted on ``scale_features`` (the official
       code fits it on the training split's features, not on the validation data it then
       fits), the same regression with the chosen ``C``. Coefficients and intercepts are
       averaged over the refits.

    Odd corners of the official code kept here: the tuning and the refit standardise
    differently (balanced half vs training split); in the tuning the groups are
    ``0..max(g in the fitted half)`` (a higher group absent from that half is not scored) and a
    group absent from the scoring half makes every score NaN, which ``np.argmax`` picks first
    (so ``C = c_grid[0]``); each refit draws an unused permutation of the training rows. With
    more than two classes each fit is one-vs-rest (see :func:`_fit_l1`).

    Args:
        val_features / val_targets / val_bias: the validation split (targets ``0..K-1``).
        scale_features: features the refit's standardisation is fitted on (training rows).
        seed: seeds every draw. c_grid / refits: the official ``C_OPTIONS`` / ``num_retrains``.

    Raises:
        DFRError: fewer than two classes, or a group or a class missing from the half the
            tuning fits on.
        ValueError: features and labels of different lengths, or ``refits`` < 1.
    """
    if isinstance(refits, bool) or not isinstance(refits, int) or refits < 1:
        raise ValueError(f"refits must be an integer >= 1; got {refits!r}")
    X, x_scale = _matrix(val_features), _matrix(scale_features)
    y = np.asarray(_matrix(val_targets), dtype=np.int64)
    g = group_codes(y, _matrix(val_bias))
    if X.ndim != 2 or len(X) != len(y) or len(g) != len(y):
        raise ValueError(
            f"val_features must be [N, D] with one target and one bias label per row; got "
            f"{X.shape}, {len(y)} targets, {len(g)} bias labels"
        )
    classes = np.unique(y)
    if len(classes) < 2:
        raise DFRError(f"the validation split holds a single target class ({classes.tolist()})")
    rng = np.random.RandomState(seed)
    c, scores = _tune(X, y, g, rng, c_grid)
    coef, intercept, scaler, per_group = _refit(X, y, g, x_scale, c, rng, refits)
    notes = []
    if any(np.isnan(v) for v in scores.values()):
        notes.append(
            "a group had no image in the scoring half: every tuning score is NaN and C is the "
            "first of the grid (the official code's argmax)"
        )
    return DFRHead(
        coef=coef, intercept=intercept, scaler=scaler, classes=classes, C=c, tuning=scores,
        refits=refits, groups=int(g.max()) + 1, per_group=per_group, n_val=len(y), notes=notes,
    )  # fmt: skip
