"""The report's metric vocabulary: every number a report shows, declared once.

Each :class:`ReportMetric` names a report column (its ``label``: the results table's header,
``summary.csv``'s ``metric`` value, a figure panel's title) and says where a run's value comes
from (``sources``: ``(split, key)`` pairs, ``key`` a :class:`debias.metrics.GroupReport` field as
``metrics.json`` stores it, the first one present in the run wins; or ``derived``: the
difference of two other labels), its unit, which way is better, and which parts of the report
show it. The summary, the Markdown, the figures, the paired comparisons and the search report
all read this table, so a new column is one entry here (and a dataset's ``table_metrics``
where its table should show it).

Units: ``metrics.json`` holds fractions; the report writes % for rates (``"%"``) and
percentage points for differences of rates (``"pp"``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "DEFAULT_TABLE_METRICS",
    "DERIVED_METRICS",
    "LEAKAGE",
    "METRICS",
    "METRIC_LABELS",
    "PAIRED_METRICS",
    "POINTS",
    "REPRESENTATION_METRICS",
    "ReportMetric",
    "metric",
    "read_first",
    "unit",
]


@dataclass(frozen=True)
class ReportMetric:
    """One report column.

    Attributes:
        label: the report's name for it (tables, ``summary.csv``, figures).
        sources: candidate ``(split, GroupReport key)`` sources in ``metrics.json``, first
            present wins per run; empty for a derived metric.
        derived: ``(minuend, subtrahend)`` labels for a per-run difference, else None.
        unit: ``"%"`` (a rate) or ``"pp"`` (a difference of rates, percentage points).
        lower_is_better: a gap: paired comparisons count a seed as won when it is smaller.
        default_table: shown by a results table whose dataset declares no ``table_metrics``.
        paired: compared method against baseline where the results table shows it.
        dfr: shown in the representation (DFR head) table where the results table shows it.
    """

    label: str
    sources: tuple[tuple[str, str], ...] = ()
    derived: tuple[str, str] | None = None
    unit: str = "%"
    lower_is_better: bool = False
    default_table: bool = True
    paired: bool = False
    dfr: bool = True


# Declaration order is the order of the default table's columns; the summary lists the read
# metrics first, then the derived ones (which need the read ones of each run).
METRICS: tuple[ReportMetric, ...] = (
    ReportMetric("accuracy", (("test", "accuracy"),)),
    ReportMetric("unbiased", (("test", "unbiased_accuracy"),), paired=True),
    ReportMetric("worst-group", (("test", "worst_group_accuracy"),), paired=True),
    # Test group accuracies weighted by training group frequencies (Waterbirds papers): only
    # datasets whose spec asks for it have it, so only their tables show it.
    ReportMetric("adjusted average", (("test", "adjusted_accuracy"),), default_table=False),
    # The gap between average and worst-group accuracy: the faces issue's measure of a shortcut.
    # (Paired only where the table shows it: on Biased-MNIST it would repeat the worst group.)
    ReportMetric(
        "accuracy − worst-group",
        derived=("accuracy", "worst-group"),
        unit="pp",
        lower_is_better=True,
        paired=True,
    ),
    # Biased-MNIST's rho = 0 test split, else the mean of the conflicting groups (faces).
    ReportMetric(
        "bias-conflicting", (("test_conflicting", "accuracy"), ("test", "conflicting_accuracy"))
    ),
    # The rho = 1 split, else the bias-aligned groups (faces).
    ReportMetric(
        "biased",
        (("test_biased", "accuracy"), ("test", "aligned_accuracy")),
        default_table=False,
    ),
    # Equalized odds across bias groups: a DFR head tuned for worst-group accuracy does not
    # target them, so the representation table leaves them out.
    ReportMetric(
        "EO mean gap",
        (("test", "equalized_odds_mean_gap"),),
        unit="pp",
        lower_is_better=True,
        dfr=False,
    ),
    ReportMetric(
        "EO max gap",
        (("test", "equalized_odds_max_gap"),),
        unit="pp",
        lower_is_better=True,
        dfr=False,
    ),
)
# The representation section's own metric: cross-validated balanced accuracy of a linear probe
# predicting the bias from the frozen features (the pseudo-split "audit" of its rows).
LEAKAGE = "bias leakage"
REPRESENTATION_METRICS: tuple[ReportMetric, ...] = (
    *METRICS,
    ReportMetric(LEAKAGE, (("audit", "bias_leakage"),), default_table=False, lower_is_better=True),
)

_BY_LABEL = {m.label: m for m in REPRESENTATION_METRICS}


def metric(label: str) -> ReportMetric:
    """The declared metric called ``label``."""
    try:
        return _BY_LABEL[label]
    except KeyError:
        raise ValueError(
            f"unknown report metric {label!r}; expected one of {', '.join(_BY_LABEL)}"
        ) from None


def unit(label: str) -> str:
    """``"pp"`` (percentage points) for a difference of rates, else ``"%"``."""
    return metric(label).unit


def read_first(metrics: Iterable[ReportMetric]) -> list[ReportMetric]:
    """``metrics`` with the read ones first, then the derived ones (the summary's order)."""
    metrics = list(metrics)
    return [m for m in metrics if not m.derived] + [m for m in metrics if m.derived]


# Views of the table for the callers that want one fact (all computed from METRICS).
METRIC_LABELS: dict[str, tuple[tuple[str, str], ...]] = {
    m.label: m.sources for m in METRICS if not m.derived
}
DERIVED_METRICS: dict[str, tuple[str, str]] = {m.label: m.derived for m in METRICS if m.derived}
POINTS = frozenset(m.label for m in REPRESENTATION_METRICS if m.unit == "pp")
DEFAULT_TABLE_METRICS = tuple(m.label for m in METRICS if m.default_table)
PAIRED_METRICS = tuple(m.label for m in METRICS if m.paired)
