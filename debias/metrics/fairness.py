"""The fairlearn bridge: the same groups as :mod:`debias.metrics.groups`, as ``MetricFrame`` s.

``fairlearn.metrics.MetricFrame`` is the common currency of fairness audits (any sklearn-style
metric, ``by_group``, ``group_min``, ``difference``, its own bootstrap). :func:`metric_frame`
groups by the intersectional ``(y, b)`` groups of PROTOCOLS §5, so that
``mf.group_min()["accuracy"]`` is the worst-group accuracy and ``mf.by_group["accuracy"].mean()``
the unbiased accuracy; :func:`bias_metric_frame` groups by the bias attribute alone, the usual
audit view (selection rate, TPR, FPR per bias group).

fairlearn and scikit-learn are imported on first use, keeping ``import debias.metrics`` light
for training loops that only need :func:`debias.metrics.group_report`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from debias.metrics._inputs import check_arrays

if TYPE_CHECKING:
    from fairlearn.metrics import MetricFrame

Metrics = Callable[..., Any] | dict[str, Callable[..., Any]]


def metric_frame(
    y_true: Any, y_pred: Any, bias: Any, *, metrics: Metrics | None = None
) -> MetricFrame:
    """A ``MetricFrame`` over the intersectional ``(y, b)`` groups.

    ``sensitive_features`` is a DataFrame with columns ``"y"`` (true label) and ``"b"`` (bias).
    fairlearn's ``by_group`` has a row for every combination of a ``y`` value and a ``b`` value,
    NaN for the empty ones; pandas reductions skip NaN, so over the non-empty groups ``G``

    * ``mf.by_group["accuracy"].mean()`` = unbiased accuracy ``(1/|G|) Σ_g acc_g``,
    * ``mf.group_min()["accuracy"]`` = worst-group accuracy ``min_g acc_g``

    (see :func:`from_metric_frame`).

    Args:
        y_true, y_pred, bias: 1-D integer labels of equal length (numpy, lists, torch, pandas).
        metrics: anything ``MetricFrame(metrics=...)`` accepts; default
            ``{"accuracy": sklearn.metrics.accuracy_score, "count": fairlearn.metrics.count}``.
    """
    from fairlearn.metrics import MetricFrame, count
    from sklearn.metrics import accuracy_score

    y, p, b = check_arrays(y_true=y_true, y_pred=y_pred, bias=bias)
    if metrics is None:
        metrics = {"accuracy": accuracy_score, "count": count}
    return MetricFrame(
        metrics=metrics,
        y_true=y,
        y_pred=p,
        sensitive_features=pd.DataFrame({"y": y, "b": b}),
    )


def from_metric_frame(mf: MetricFrame, metric: str = "accuracy") -> dict[str, float]:
    """Overall, unbiased and worst-group values of one metric of a ``(y, b)`` ``MetricFrame``.

    Returns ``{metric: overall, "unbiased_<metric>": mean of by_group,
    "worst_group_<metric>": group_min(), "n_groups": number of groups}``. For
    ``metric="accuracy"`` the keys match :meth:`debias.metrics.GroupReport.to_dict`.

    Raises:
        ValueError: when ``metric`` is not one of the frame's metrics.
    """
    by_group = mf.by_group
    overall = mf.overall
    group_min = mf.group_min()
    if isinstance(by_group, pd.DataFrame):
        if metric not in by_group.columns:
            raise ValueError(
                f"metric {metric!r} is not in this MetricFrame; expected one of "
                f"{list(by_group.columns)}"
            )
        by_group, overall, group_min = by_group[metric], overall[metric], group_min[metric]
    # fairlearn lists empty (y, b) combinations as NaN rows: they are not groups.
    values = by_group.dropna()
    return {
        metric: float(overall),
        f"unbiased_{metric}": float(values.mean()),
        f"worst_group_{metric}": float(group_min),
        "n_groups": int(len(values)),
    }


def bias_metric_frame(
    y_true: Any, y_pred: Any, bias: Any, *, metrics: Metrics | None = None
) -> MetricFrame:
    """A ``MetricFrame`` grouped by the bias attribute alone (``sensitive_features`` = ``b``).

    Default metrics: ``accuracy`` and ``count``; for binary labels (all in {0, 1}) also
    ``selection_rate`` ``P(ŷ=1 | b)``, ``true_positive_rate`` ``P(ŷ=1 | y=1, b)``,
    ``true_negative_rate`` ``P(ŷ=0 | y=0, b)`` and ``false_positive_rate``
    ``P(ŷ=1 | y=0, b)``, so ``mf.difference()`` gives the demographic-parity and
    equalized-odds components. Those rates assume a positive class 1 and are left out for
    multiclass labels; pass ``metrics`` to choose others.
    """
    from fairlearn.metrics import (
        MetricFrame,
        count,
        false_positive_rate,
        selection_rate,
        true_negative_rate,
        true_positive_rate,
    )
    from sklearn.metrics import accuracy_score

    y, p, b = check_arrays(y_true=y_true, y_pred=y_pred, bias=bias)
    if metrics is None:
        metrics = {"accuracy": accuracy_score, "count": count}
        labels = np.union1d(np.unique(y), np.unique(p))
        if labels.min() >= 0 and labels.max() <= 1:
            metrics |= {
                "selection_rate": selection_rate,
                "true_positive_rate": true_positive_rate,
                "true_negative_rate": true_negative_rate,
                "false_positive_rate": false_positive_rate,
            }
    return MetricFrame(
        metrics=metrics, y_true=y, y_pred=p, sensitive_features=pd.Series(b, name="b")
    )
