"""Sweep reports: ``make_report(sweep_dir, out_dir)`` / ``debias report SWEEP_DIR --out DIR``.

Modules by job: :mod:`~debias.report.vocabulary` (every metric a report shows, declared once),
:mod:`~debias.report.summary` (mean ± 95% CI over seeds), :mod:`~debias.report.compare` (paired
comparisons), :mod:`~debias.report.representation` (DFR head, bias leakage),
:mod:`~debias.report.sweep_data` (all of it loaded once), :mod:`~debias.report.markdown`,
:mod:`~debias.report.figures` (with :mod:`~debias.report.plots`) and
:mod:`~debias.report.report` (:func:`make_report`).
"""

from __future__ import annotations

import importlib
from typing import Any

# Loaded on first use (pandas, matplotlib), so that `debias --help` stays fast.
_EXPORTS = {
    "METRICS": "debias.report.vocabulary",
    "METRIC_LABELS": "debias.report.vocabulary",
    "REBIAS_VANILLA": "debias.report.summary",
    "ReportMetric": "debias.report.vocabulary",
    "SummaryInfo": "debias.report.summary",
    "SweepData": "debias.report.sweep_data",
    "format_ci": "debias.report.markdown",
    "load_sweep_data": "debias.report.sweep_data",
    "make_figures": "debias.report.figures",
    "make_report": "debias.report.report",
    "report_from_tables": "debias.report.report",
    "mean_ci": "debias.report.summary",
    "summarize": "debias.report.summary",
    "summary_cell": "debias.report.markdown",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'debias.report' has no attribute {name!r}")
