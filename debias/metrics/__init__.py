"""Group metrics (PROTOCOLS §5): plain functions over label arrays, results as pandas objects.

``group_report(y_true, y_pred, bias, aligned=ds.aligned_groups)`` gives every metric at once;
the plain functions give one each; ``metric_frame`` / ``bias_metric_frame`` bridge to
``fairlearn.metrics.MetricFrame``.
"""

from __future__ import annotations

from debias.metrics.bootstrap import stratified_bootstrap
from debias.metrics.fairness import bias_metric_frame, from_metric_frame, metric_frame
from debias.metrics.groups import (
    BOOTSTRAP_METRICS,
    GroupReport,
    accuracy,
    balanced_accuracy,
    bias_aligned_accuracy,
    bias_conflicting_accuracy,
    bootstrap_from_groups,
    equalized_odds,
    group_report,
    report_metrics,
    unbiased_accuracy,
    worst_group_accuracy,
)
from debias.metrics.intervals import clopper_pearson
from debias.metrics.multiplicity import holm_adjust

__all__ = [
    "BOOTSTRAP_METRICS",
    "GroupReport",
    "accuracy",
    "balanced_accuracy",
    "bias_aligned_accuracy",
    "bias_conflicting_accuracy",
    "bias_metric_frame",
    "bootstrap_from_groups",
    "clopper_pearson",
    "equalized_odds",
    "from_metric_frame",
    "group_report",
    "holm_adjust",
    "metric_frame",
    "report_metrics",
    "stratified_bootstrap",
    "unbiased_accuracy",
    "worst_group_accuracy",
]
