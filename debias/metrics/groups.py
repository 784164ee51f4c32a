"""Group metrics over (target, bias) groups (PROTOCOLS §5).

A group is ``g = (y, b)``: the true label and the bias attribute. ``acc_g`` is the accuracy
inside ``g``. Every metric here is a function of three per-group count matrices (samples,
correct predictions, predictions per class) built with one ``numpy.bincount`` each on a
combined group id, so a report on 100k rows costs milliseconds and can run every epoch on
every split. The plain functions (:func:`unbiased_accuracy`, ...) and :func:`group_report`
share the same reducers, so they cannot disagree.

Aligned groups: which ``(y, b)`` pairs are bias-aligned is dataset-specific. The diagonal
``b == y`` (the default when ``aligned=None``) is right for Biased-MNIST only; CelebA
(Blond_Hair, Male) is aligned on ``{(0, 1), (1, 0)}`` and UTKFace on its own pairs. Every
dataset in ``debias.data`` exports its pairs as ``TensorImageDataset.aligned_groups``: pass
``aligned=ds.aligned_groups``.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd

from debias._types import Group, group_code
from debias.metrics._inputs import as_aligned, check_arrays
from debias.metrics.bootstrap import stratified_bootstrap
from debias.metrics.intervals import clopper_pearson

# Largest dense (label x bias) table built straight from non-negative label values; beyond it
# labels are re-coded with np.unique (sparse or negative label values).
_DENSE_CELLS = 1 << 20

# The metrics that depend only on per-group correct counts, hence can be bootstrapped.
BOOTSTRAP_METRICS = (
    "accuracy",
    "unbiased_accuracy",
    "worst_group_accuracy",
    "aligned_accuracy",
    "conflicting_accuracy",
    "balanced_accuracy",
)
# GroupReport keys computed from targets and predictions alone (no bias label): selecting an
# epoch on one of them reads no bias labels of the validation split.
BIAS_FREE_METRICS = frozenset({"accuracy", "balanced_accuracy", "n"})


# --------------------------------------------------------------------------------------------
# Counting
# --------------------------------------------------------------------------------------------
def _encode(arrays: list[np.ndarray], max_codes: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Map label arrays onto codes ``0..K-1`` shared across ``arrays``; return (values, codes)."""
    lo = min(int(a.min()) for a in arrays)
    hi = max(int(a.max()) for a in arrays)
    if lo >= 0 and hi < max_codes:
        # Labels are already small non-negative ints (the usual case): use them as codes.
        return np.arange(hi + 1, dtype=np.int64), arrays
    values, inverse = np.unique(np.concatenate(arrays), return_inverse=True)
    inverse = inverse.reshape(-1)
    splits = np.cumsum([len(a) for a in arrays])[:-1]
    return values.astype(np.int64), np.split(inverse.astype(np.int64), splits)


def _check_aligned_pairs(
    aligned: frozenset[Group], labels: np.ndarray, bias_values: np.ndarray
) -> None:
    """Aligned pairs whose label or bias value never occurs: an error when every pair is such
    (every sample would silently count as conflicting), else a warning naming them. A pair of
    occurring values without samples is legitimate (a rho-0 split has no aligned sample)."""
    ys, bs = set(labels.tolist()), set(bias_values.tolist())
    outside = sorted((y, b) for y, b in aligned if y not in ys or b not in bs)
    if not outside:
        return
    where = (
        f"aligned pair(s) {outside} name a label or bias value that does not occur (labels "
        f"{sorted(ys)}, bias values {sorted(bs)})"
    )
    if len(outside) == len(aligned):
        raise ValueError(
            f"{where}: no sample could be bias-aligned; expected pairs (y, b) from those values, "
            "e.g. the dataset's aligned_groups"
        )
    warnings.warn(f"{where}; those pairs match no sample", stacklevel=4)


class _GroupTable:
    """Per-(y, b) counts of one prediction set, plus the non-empty groups in (y, b) order."""

    def __init__(
        self,
        y_true: np.ndarray,
        y_pred: np.ndarray,
        bias: np.ndarray,
        aligned: frozenset[Group] | None,
        derived_aligned: bool = False,
    ) -> None:
        bias_values, (b,) = _encode([bias], _DENSE_CELLS)
        nb = len(bias_values)
        labels, (y, p) = _encode([y_true, y_pred], max(1, _DENSE_CELLS // nb))
        nc = len(labels)
        cells = nc * nb
        gid = group_code(y, b, nb)
        hit = y == p
        self.labels = labels
        self.bias_values = bias_values
        # [C, B] matrices; row = label code (of y_true, or of y_pred for `predicted`).
        self.n = np.bincount(gid, minlength=cells).reshape(nc, nb)
        self.correct = np.bincount(gid[hit], minlength=cells).reshape(nc, nb)
        self.predicted = np.bincount(p * nb + b, minlength=cells).reshape(nc, nb)
        if aligned is None:
            self.aligned = labels[:, None] == bias_values[None, :]
        else:
            self.aligned = np.zeros((nc, nb), dtype=bool)
            for ya, ba in aligned:
                ci = int(np.searchsorted(labels, ya))
                bi = int(np.searchsorted(bias_values, ba))
                if ci < nc and bi < nb and labels[ci] == ya and bias_values[bi] == ba:
                    self.aligned[ci, bi] = True
            seen_y = labels[(self.n.sum(1) + self.predicted.sum(1)) > 0]
            seen_b = bias_values[self.n.sum(0) > 0]
            if not derived_aligned:
                # Pairs derived from another split (a dataset's training split) may name labels
                # this split lacks: only pairs a user gave are checked against the data.
                _check_aligned_pairs(aligned, seen_y, seen_b)
        # Non-empty groups, row-major, i.e. sorted by y then b.
        rows, cols = np.nonzero(self.n)
        self.g_y = labels[rows]
        self.g_b = bias_values[cols]
        self.g_n = self.n[rows, cols]
        self.g_correct = self.correct[rows, cols]
        self.g_aligned = self.aligned[rows, cols]
        # Groups are sorted by class, so per-class sums are contiguous runs (np.add.reduceat).
        self.class_starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])

    @classmethod
    def from_inputs(
        cls,
        y_true: Any,
        y_pred: Any,
        bias: Any,
        aligned: Iterable[Any] | None = None,
        derived_aligned: bool = False,
    ) -> _GroupTable:
        y, p, b = check_arrays(y_true=y_true, y_pred=y_pred, bias=bias)
        return cls(y, p, b, as_aligned(aligned), derived_aligned)


# --------------------------------------------------------------------------------------------
# Reducers: each maps correct counts [..., G] (G non-empty groups) to values [...], so the same
# code gives the point estimate ([G]) and the bootstrap replicates ([R, G]).
# --------------------------------------------------------------------------------------------
def _accuracy(g_n: np.ndarray, g_correct: np.ndarray) -> np.ndarray:
    return g_correct.sum(-1) / g_n.sum()


def _unbiased(g_n: np.ndarray, g_correct: np.ndarray) -> np.ndarray:
    return (g_correct / g_n).mean(-1)


def _worst(g_n: np.ndarray, g_correct: np.ndarray) -> np.ndarray:
    return (g_correct / g_n).min(-1)


def _subset_mean(g_n: np.ndarray, g_correct: np.ndarray, mask: np.ndarray) -> np.ndarray:
    if not mask.any():
        return np.full(g_correct.shape[:-1], np.nan)
    return (g_correct[..., mask] / g_n[mask]).mean(-1)


def _balanced(g_n: np.ndarray, g_correct: np.ndarray, class_starts: np.ndarray) -> np.ndarray:
    recall = np.add.reduceat(g_correct, class_starts, axis=-1) / np.add.reduceat(g_n, class_starts)
    return recall.mean(-1)


def _count_metrics(
    t: _GroupTable | SimpleNamespace, g_correct: np.ndarray
) -> dict[str, np.ndarray]:
    """All :data:`BOOTSTRAP_METRICS` from correct counts ``[..., G]`` of table ``t``."""
    return {
        "accuracy": _accuracy(t.g_n, g_correct),
        "unbiased_accuracy": _unbiased(t.g_n, g_correct),
        "worst_group_accuracy": _worst(t.g_n, g_correct),
        "aligned_accuracy": _subset_mean(t.g_n, g_correct, t.g_aligned),
        "conflicting_accuracy": _subset_mean(t.g_n, g_correct, ~t.g_aligned),
        "balanced_accuracy": _balanced(t.g_n, g_correct, t.class_starts),
    }


def _range_over_bias(rate: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """max - min of ``rate`` [K, B] over the valid bias groups of each row; NaN if none valid."""
    hi = np.where(valid, rate, -np.inf).max(1)
    lo = np.where(valid, rate, np.inf).min(1)
    return np.where(valid.any(1), hi - lo, np.nan)


def _equalized_odds(t: _GroupTable) -> tuple[float, float]:
    """Equalized-odds gaps from the count matrices; see :func:`equalized_odds`."""
    present = t.n.sum(0) > 0
    if present.sum() < 2:
        # A gap across one bias value is not 0 (equal odds), it is undefined.
        warnings.warn(
            f"equalized-odds gaps need at least 2 bias values; bias takes only "
            f"{t.bias_values[present].tolist()} here: the gaps are NaN (undefined), not 0",
            stacklevel=4,
        )
        return float("nan"), float("nan")
    n = t.n[:, present]
    tp_all = t.correct[:, present]
    pred_all = t.predicted[:, present]
    n_bias = n.sum(0)  # samples per bias group
    if t.labels.min() >= 0 and t.labels.max() <= 1:
        # Binary: positive class 1 only (class 0 one-vs-rest swaps TPR and TNR: same gaps).
        rows = np.flatnonzero(t.labels == 1)
        if rows.size:
            pos, tp, pred = n[rows], tp_all[rows], pred_all[rows]
        else:  # nobody is, or is predicted, 1: TPR undefined, TNR = 1 everywhere
            pos = tp = pred = np.zeros((1, n.shape[1]), dtype=np.int64)
    else:
        rows = np.flatnonzero(n.sum(1) > 0)  # classes present in y_true
        pos, tp, pred = n[rows], tp_all[rows], pred_all[rows]
    neg = n_bias[None, :] - pos
    fp = pred - tp
    with np.errstate(divide="ignore", invalid="ignore"):
        tpr = tp / pos
        tnr = 1.0 - fp / neg
    gaps = np.stack([_range_over_bias(tpr, pos > 0), _range_over_bias(tnr, neg > 0)], axis=1)
    defined = ~np.isnan(gaps)
    count = defined.sum(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_c = np.where(defined, gaps, 0.0).sum(1) / count
    max_c = np.where(defined, gaps, -np.inf).max(1)
    ok = count > 0
    if not ok.any():
        return float("nan"), float("nan")
    return float(mean_c[ok].mean()), float(max_c[ok].max())


# --------------------------------------------------------------------------------------------
# Plain functions
# --------------------------------------------------------------------------------------------
def accuracy(y_true: Any, y_pred: Any) -> float:
    """Plain top-1 accuracy: ``(1/N) Σ_i [ŷ_i = y_i]``."""
    y, p = check_arrays(y_true=y_true, y_pred=y_pred)
    return float(_accuracy(np.array([len(y)]), np.array([np.count_nonzero(y == p)])))


def unbiased_accuracy(y_true: Any, y_pred: Any, bias: Any) -> float:
    """Unbiased accuracy: ``(1/|G|) Σ_{g∈G} acc_g`` over the non-empty ``(y, b)`` groups ``G``.

    Every group counts equally whatever its size (ReBias / EnD "unbiased" test metric).
    """
    t = _GroupTable.from_inputs(y_true, y_pred, bias)
    return float(_unbiased(t.g_n, t.g_correct))


def worst_group_accuracy(y_true: Any, y_pred: Any, bias: Any) -> float:
    """Worst-group accuracy: ``min_{g∈G} acc_g`` over the non-empty ``(y, b)`` groups ``G``."""
    t = _GroupTable.from_inputs(y_true, y_pred, bias)
    return float(_worst(t.g_n, t.g_correct))


def bias_aligned_accuracy(
    y_true: Any, y_pred: Any, bias: Any, aligned: Iterable[Any] | None = None
) -> float:
    """Bias-aligned accuracy: ``mean_{g∈G, g∈A} acc_g`` over the non-empty aligned groups.

    ``aligned`` is the explicit set ``A`` of aligned ``(y, b)`` pairs (a dataset's
    ``aligned_groups``); ``None`` means the diagonal ``b == y``, right for Biased-MNIST only.
    NaN when no aligned group is present.
    """
    t = _GroupTable.from_inputs(y_true, y_pred, bias, aligned)
    return float(_subset_mean(t.g_n, t.g_correct, t.g_aligned))


def bias_conflicting_accuracy(
    y_true: Any, y_pred: Any, bias: Any, aligned: Iterable[Any] | None = None
) -> float:
    """Bias-conflicting accuracy: ``mean_{g∈G, g∉A} acc_g`` over non-empty conflicting groups.

    ``aligned`` as in :func:`bias_aligned_accuracy`. NaN when no conflicting group is present.
    """
    t = _GroupTable.from_inputs(y_true, y_pred, bias, aligned)
    return float(_subset_mean(t.g_n, t.g_correct, ~t.g_aligned))


def _adjusted(t: _GroupTable, weights: Mapping[Group, float]) -> float:
    """``sum_g w_g acc_g / sum_g w_g`` over the groups present in ``t`` with a weight."""
    acc = t.g_correct / t.g_n
    w = np.array([float(weights.get((int(y), int(b)), 0.0)) for y, b in zip(t.g_y, t.g_b)])
    return float((w * acc).sum() / w.sum()) if w.sum() > 0 else math.nan


def adjusted_accuracy(y_true: Any, y_pred: Any, bias: Any, weights: Mapping[Group, float]) -> float:
    """The "adjusted average accuracy" of Sagawa et al. (2020) on Waterbirds: group accuracies
    weighted by the *training* group frequencies,
    ``sum_g w_g acc_g / sum_g w_g`` with ``w_g = n_train(y, b)`` (counts or fractions; only
    ratios matter), over the ``(y, b)`` groups present here. It estimates the accuracy on the
    training distribution from a test set whose groups are balanced differently. NaN when no
    present group has a weight.

    Example:
        >>> adjusted_accuracy([0, 0, 1, 1], [0, 1, 1, 1], [0, 0, 1, 0], {(0, 0): 3, (1, 1): 1})
        0.625
    """
    return _adjusted(_GroupTable.from_inputs(y_true, y_pred, bias), weights)


def balanced_accuracy(y_true: Any, y_pred: Any) -> float:
    """Balanced accuracy: ``(1/|C|) Σ_{c∈C} recall_c``, ``C`` = classes present in ``y_true``.

    Equals ``sklearn.metrics.balanced_accuracy_score`` (without ``adjusted``).
    """
    y, p = check_arrays(y_true=y_true, y_pred=y_pred)
    t = _GroupTable(y, p, np.zeros_like(y), None)
    return float(_balanced(t.g_n, t.g_correct, t.class_starts))


def equalized_odds(y_true: Any, y_pred: Any, bias: Any) -> tuple[float, float]:
    """Equalized-odds gaps across bias groups: ``(mean_gap, max_gap)``.

    For a bias group ``b``: ``TPR_b = P(ŷ=1 | y=1, b)``, ``TNR_b = P(ŷ=0 | y=0, b)``,
    ``FPR_b = 1 - TNR_b``. ``ΔR = max_b R_b - min_b R_b``.

    Binary targets (all labels in {0, 1}, positive class 1):

    * mean gap ``= (ΔTPR + ΔTNR) / 2``; for two bias groups this is FSCL's
      ``(|TPR_0 - TPR_1| + |TNR_0 - TNR_1|) / 2`` (Park et al. 2022);
    * max gap ``= max(ΔTPR, ΔFPR)``, which is
      ``fairlearn.metrics.equalized_odds_difference`` (``ΔFPR = ΔTNR``).

    Multiclass (**ours**): one-vs-rest for each class ``c`` present in ``y_true``
    (positive = ``c``), the same two quantities per class; mean gap = mean over classes of the
    per-class mean gap, max gap = max over classes of the per-class max gap.

    A bias group with no positives (negatives) for a class is skipped for that class's TPR
    (TNR), where fairlearn would count its rate as 0. A rate defined in no bias group is left
    out of the class's gaps; a class with neither rate is left out; NaN if nothing is left.
    """
    return _equalized_odds(_GroupTable.from_inputs(y_true, y_pred, bias))


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------
@dataclass
class GroupReport:
    """All §5 metrics of one prediction set, with per-group counts and optional bootstrap CIs.

    Fields (accuracies are fractions in [0, 1]):
        accuracy: plain top-1.
        unbiased_accuracy: mean of ``acc_g`` over the non-empty ``(y, b)`` groups.
        worst_group_accuracy: min of ``acc_g`` over the non-empty groups.
        worst_group: the ``(y, b)`` attaining it (the first in (y, b) order on ties).
        aligned_accuracy / conflicting_accuracy: mean of ``acc_g`` over the non-empty aligned /
            conflicting groups; NaN when the data has no such group (e.g. a "conflicting" test
            split at rho 0 has no aligned group).
        balanced_accuracy: mean per-class recall over classes present in ``y_true``.
        equalized_odds_mean_gap / equalized_odds_max_gap: see :func:`equalized_odds`.
        n, n_aligned, n_conflicting: sample counts.
        groups: one row per non-empty group, columns ``y, b, n, correct, accuracy, aligned,
            ci_low, ci_high``, sorted by ``(y, b)``; ``ci_low`` / ``ci_high`` are the exact
            (Clopper–Pearson) interval of the group's accuracy at ``ci_level``
            (:func:`debias.metrics.intervals.clopper_pearson`): 0 of 98 correct is [0, 0.037],
            not the point [0, 0] a bootstrap gives.
        ci: ``{metric: (low, high)}`` bootstrap intervals; empty unless ``bootstrap > 0``.
        ci_level: the confidence level of ``ci``.
        adjusted_accuracy: :func:`adjusted_accuracy` with the ``group_weights`` given to
            :func:`group_report`; None (and absent from :meth:`to_dict`) without them.
    """

    accuracy: float
    unbiased_accuracy: float
    worst_group_accuracy: float
    worst_group: Group
    aligned_accuracy: float
    conflicting_accuracy: float
    balanced_accuracy: float
    equalized_odds_mean_gap: float
    equalized_odds_max_gap: float
    n: int
    n_aligned: int
    n_conflicting: int
    groups: pd.DataFrame = field(repr=False)
    ci: dict[str, tuple[float, float]] = field(default_factory=dict)
    ci_level: float = 0.95
    adjusted_accuracy: float | None = None

    def to_dict(self) -> dict[str, float | int]:
        """Flat, JSON-serialisable dict (NaN stays a float NaN, which ``json.dumps`` accepts).

        Keys: the scalar fields, ``n_groups``, ``worst_group_y`` / ``worst_group_b``, and for
        each bootstrapped metric ``<metric>_ci_low`` / ``<metric>_ci_high``.
        """
        out: dict[str, float | int] = {
            "accuracy": float(self.accuracy),
            "unbiased_accuracy": float(self.unbiased_accuracy),
            "worst_group_accuracy": float(self.worst_group_accuracy),
            "worst_group_y": int(self.worst_group[0]),
            "worst_group_b": int(self.worst_group[1]),
            "aligned_accuracy": float(self.aligned_accuracy),
            "conflicting_accuracy": float(self.conflicting_accuracy),
            "balanced_accuracy": float(self.balanced_accuracy),
            "equalized_odds_mean_gap": float(self.equalized_odds_mean_gap),
            "equalized_odds_max_gap": float(self.equalized_odds_max_gap),
            "n": int(self.n),
            "n_aligned": int(self.n_aligned),
            "n_conflicting": int(self.n_conflicting),
            "n_groups": len(self.groups),
        }
        if self.adjusted_accuracy is not None:
            out["adjusted_accuracy"] = float(self.adjusted_accuracy)
        for name, (low, high) in self.ci.items():
            out[f"{name}_ci_low"] = float(low)
            out[f"{name}_ci_high"] = float(high)
        return out

    def accuracy_table(self) -> pd.DataFrame:
        """``acc_g`` as a table (fractions in [0, 1], like every field): rows ``y``, columns
        ``b``; NaN for empty groups.

        On Biased-MNIST this is the 10x10 digit-by-colour table.
        """
        return self.groups.pivot(index="y", columns="b", values="accuracy")

    def count_table(self) -> pd.DataFrame:
        """Group sizes as a table: rows ``y``, columns ``b``; 0 for empty groups."""
        return self.groups.pivot(index="y", columns="b", values="n").fillna(0).astype(np.int64)

    def summary(self) -> str:
        """A compact multi-line, human-readable summary (percentages).

        The worst group's interval is its exact one from :attr:`groups` (a bootstrap of 0 of
        98 correct is the point [0, 0]); an aligned or conflicting accuracy over no group says
        so instead of printing NaN.
        """

        def pct(x: float) -> str:
            return "   n/a" if math.isnan(x) else f"{100 * x:6.2f}"

        def interval(name: str) -> str:
            if name not in self.ci or math.isnan(self.ci[name][0]):
                return ""
            low, high = self.ci[name]
            return f"  [{100 * low:.2f}, {100 * high:.2f}]"

        head = (
            f"GroupReport: n={self.n:,} in {len(self.groups)} (y, b) groups "
            f"(aligned {self.n_aligned:,}, conflicting {self.n_conflicting:,})"
        )
        if self.ci:
            head += f"; {100 * self.ci_level:g}% bootstrap CIs, the worst group's exact"
        lines = [head]
        for label, key in (
            ("accuracy", "accuracy"),
            ("unbiased accuracy", "unbiased_accuracy"),
            ("worst-group accuracy", "worst_group_accuracy"),
            ("bias-aligned acc.", "aligned_accuracy"),
            ("bias-conflicting acc.", "conflicting_accuracy"),
            ("balanced accuracy", "balanced_accuracy"),
        ):
            value = getattr(self, key)
            if key == "worst_group_accuracy":
                text = f"{pct(value)}%{self._worst_group_text()}"
            elif math.isnan(value) and key in ("aligned_accuracy", "conflicting_accuracy"):
                text = f"no {key.split('_')[0]} samples"
            else:
                text = f"{pct(value)}%{interval(key)}"
            lines.append(f"  {label:<22}{text}")
        lines.append(
            f"  {'equalized odds gap':<22}mean {pct(self.equalized_odds_mean_gap).strip()}%"
            f"  max {pct(self.equalized_odds_max_gap).strip()}%"
        )
        return "\n".join(lines)

    def _worst_group_text(self) -> str:
        """``  [0.00, 3.69] exact  (y=0, b=0, 0/98 correct)``: the worst group's own row."""
        wy, wb = self.worst_group
        row = self.groups[(self.groups.y == wy) & (self.groups.b == wb)]
        if not len(row):
            return f"  (y={wy}, b={wb})"
        r = row.iloc[0]
        return (
            f"  [{100 * r.ci_low:.2f}, {100 * r.ci_high:.2f}] exact  "
            f"(y={wy}, b={wb}, {int(r.correct)}/{int(r.n)} correct)"
        )

    def __str__(self) -> str:
        return self.summary()


# The metrics an epoch (``select="val/<metric>"``) may be selected on, with their direction:
# +1 higher is better (accuracies), -1 lower is better (gaps). The others of a report are an
# index (worst_group_y/_b) or a count (n, n_groups...): no better or worse, never selectable.
SELECTION_DIRECTION: dict[str, int] = {
    "accuracy": 1,
    "unbiased_accuracy": 1,
    "worst_group_accuracy": 1,
    "aligned_accuracy": 1,
    "conflicting_accuracy": 1,
    "balanced_accuracy": 1,
    "equalized_odds_mean_gap": -1,
    "equalized_odds_max_gap": -1,
}


@functools.lru_cache(maxsize=1)
def report_metrics() -> tuple[str, ...]:
    """The names of a :meth:`GroupReport.to_dict` without intervals: what a history row holds
    per split and ``select="val/<metric>"`` may name."""
    return tuple(group_report([0, 1], [0, 1], [0, 1]).to_dict())


def bootstrap_from_groups(
    groups: pd.DataFrame, *, n_boot: int = 1000, ci: float = 0.95, seed: int = 0
) -> dict[str, tuple[float, float]]:
    """Stratified bootstrap intervals of :data:`BOOTSTRAP_METRICS` from a saved group table.

    ``groups`` has one row per non-empty group with columns ``y, b, n, correct, aligned`` (a
    :attr:`GroupReport.groups` table, or the ``groups`` records of a run's ``metrics.json``), so
    a finished run's intervals over its test images need no predictions. Same resampling as
    ``group_report(..., bootstrap=n_boot)`` on the predictions the table came from.
    """
    g = groups.sort_values(["y", "b"])
    missing = sorted({"y", "b", "n", "correct", "aligned"} - set(g.columns))
    if missing:
        raise ValueError(f"groups: missing column(s) {missing}; expected y, b, n, correct, aligned")
    y = g["y"].to_numpy()
    table = SimpleNamespace(
        g_n=g["n"].to_numpy(np.int64),
        g_aligned=g["aligned"].to_numpy(bool),
        class_starts=np.flatnonzero(np.r_[True, y[1:] != y[:-1]]),
    )
    return stratified_bootstrap(
        table.g_n,
        g["correct"].to_numpy(np.int64),
        lambda draws: _count_metrics(table, draws),
        n_boot=n_boot,
        ci=ci,
        seed=seed,
    )


def group_report(
    y_true: Any,
    y_pred: Any,
    bias: Any,
    aligned: Iterable[Any] | None = None,
    *,
    bootstrap: int = 0,
    ci: float = 0.95,
    seed: int = 0,
    group_weights: Mapping[Group, float] | None = None,
    derived_aligned: bool = False,
) -> GroupReport:
    """Every §5 metric of one prediction set in one pass.

    Args:
        y_true, y_pred, bias: 1-D integer labels of equal length (numpy, lists, pandas,
            torch tensors on any device).
        aligned: explicit aligned ``(y, b)`` pairs, e.g. ``ds.aligned_groups``. ``None`` means
            ``b == y``, which is right for Biased-MNIST only; other datasets export their own
            ``aligned_groups``.
        bootstrap: number of stratified bootstrap replicates (0 = no intervals). Rows are
            resampled with replacement within each ``(y, b)`` group (see
            :func:`debias.metrics.bootstrap.stratified_bootstrap`), and :data:`BOOTSTRAP_METRICS`
            are recomputed on each replicate. The worst-group interval is a minimum over
            resampled groups, so it leans low (a known trait of bootstrapping an extremum).
        ci: confidence level of the bootstrap intervals and of the per-group exact intervals,
            in (0, 1).
        seed: bootstrap seed.
        group_weights: ``{(y, b): weight}``, the training split's group counts: adds
            :func:`adjusted_accuracy` to the report.
        derived_aligned: ``aligned`` was derived from other data (a dataset's training
            split), not given by a user: its pairs are not checked against this split's labels.

    With a single bias value the equalized-odds gaps are NaN and a warning says why.

    Returns a :class:`GroupReport`: the headline numbers as attributes (``accuracy``,
    ``unbiased_accuracy``, ``worst_group_accuracy``, ``bias_aligned_accuracy``,
    ``bias_conflicting_accuracy``, the equalized-odds gaps), ``groups`` (a pandas DataFrame,
    one row per ``(y, b)`` group with ``n``, ``correct``, ``accuracy`` and its exact interval),
    ``intervals`` (with ``bootstrap``), ``to_dict()`` and ``accuracy_table()``. See
    :class:`GroupReport` for the fields and :func:`equalized_odds` for the gaps.

    Example:
        >>> r = group_report([0, 0, 1, 1], [0, 1, 1, 1], [0, 1, 1, 0])
        >>> r.accuracy, r.unbiased_accuracy, r.worst_group_accuracy
        (0.75, 0.75, 0.0)
    """
    if isinstance(bootstrap, bool) or not isinstance(bootstrap, (int, np.integer)) or bootstrap < 0:
        raise ValueError(f"bootstrap must be a non-negative integer; got {bootstrap!r}")
    if not isinstance(ci, (int, float)) or not 0.0 < float(ci) < 1.0:
        raise ValueError(f"ci must be a confidence level strictly between 0 and 1; got {ci!r}")
    t = _GroupTable.from_inputs(y_true, y_pred, bias, aligned, derived_aligned)
    point = _count_metrics(t, t.g_correct)
    eo_mean, eo_max = _equalized_odds(t)
    acc_g = t.g_correct / t.g_n
    worst = int(np.argmin(acc_g))
    low, high = clopper_pearson(t.g_correct, t.g_n, ci)
    groups = pd.DataFrame(
        {
            "y": t.g_y,
            "b": t.g_b,
            "n": t.g_n,
            "correct": t.g_correct,
            "accuracy": acc_g,
            "aligned": t.g_aligned,
            "ci_low": low,
            "ci_high": high,
        }
    )
    intervals: dict[str, tuple[float, float]] = {}
    if bootstrap > 0:
        intervals = stratified_bootstrap(
            t.g_n,
            t.g_correct,
            lambda draws: _count_metrics(t, draws),
            n_boot=int(bootstrap),
            ci=ci,
            seed=seed,
        )
    return GroupReport(
        accuracy=float(point["accuracy"]),
        unbiased_accuracy=float(point["unbiased_accuracy"]),
        worst_group_accuracy=float(point["worst_group_accuracy"]),
        worst_group=(int(t.g_y[worst]), int(t.g_b[worst])),
        aligned_accuracy=float(point["aligned_accuracy"]),
        conflicting_accuracy=float(point["conflicting_accuracy"]),
        balanced_accuracy=float(point["balanced_accuracy"]),
        equalized_odds_mean_gap=eo_mean,
        equalized_odds_max_gap=eo_max,
        n=int(t.g_n.sum()),
        n_aligned=int(t.g_n[t.g_aligned].sum()),
        n_conflicting=int(t.g_n[~t.g_aligned].sum()),
        groups=groups,
        ci=intervals,
        ci_level=float(ci),
        adjusted_accuracy=None if group_weights is None else _adjusted(t, group_weights),
    )
