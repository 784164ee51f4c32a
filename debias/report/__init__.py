"""Sweep reports: ``make_report(sweep_dir, out_dir)`` / ``debias report SWEEP_DIR --out DIR``."""

from __future__ import annotations

import importlib
from typing import Any

# Loaded on first use (pandas, matplotlib), so that `debias --help` stays fast.
_EXPORTS = {
    name: "debias.report.report"
    for name in (
        "METRIC_LABELS",
        "REBIAS_VANILLA",
        "SweepData",
        "format_ci",
        "load_sweep_data",
        "make_figures",
        "make_report",
        "mean_ci",
        "summarize",
        "summary_cell",
    )
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'debias.report' has no attribute {name!r}")
