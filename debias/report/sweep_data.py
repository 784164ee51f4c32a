"""What a sweep report is made of, loaded once: :class:`SweepData` / :func:`load_sweep_data`.

The summary (:mod:`debias.report.summary`), the paired comparisons
(:mod:`debias.report.compare`) and the representation section
(:mod:`debias.report.representation`) are computed here, once; the Markdown
(:mod:`debias.report.markdown`) and the figures (:mod:`debias.report.figures`) only read them.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from debias import results
from debias._types import RunStatus
from debias.report.compare import paired_tables
from debias.report.representation import RepresentationSummary, summarize_representation
from debias.report.summary import SummaryInfo, summarize

__all__ = ["SweepData", "load_sweep_data", "sweep_data_from_tables"]


@dataclass
class SweepData:
    """Everything a report is made of, loaded once from the sweep folder(s)."""

    source: Any
    df: pd.DataFrame  # debias.results.load
    summary: pd.DataFrame  # summarize(df)[0]
    info: SummaryInfo  # summarize(df)[1]
    groups: pd.DataFrame  # load_groups on the "test" split, with a "label" column
    history: pd.DataFrame | None  # load_history with a "label" column
    not_done: list[results.RunRecord]
    paired: pd.DataFrame  # paired_tables(info): every paired comparison of the run's own numbers
    # The runs' representation sections (DFR head, bias leakage), None when no run has one.
    representation: RepresentationSummary | None = None
    # When the report's tables were first written and by which debias (a report rebuilt from
    # them keeps both); None: now and this version.
    generated: str | None = None
    version: str | None = None
    # tables.json's "prior" of a report made over several sessions (the earlier session's
    # table, how many of its runs were taken: debias.report.tables.merge_prior), else None.
    prior: dict[str, Any] | None = None


def load_sweep_data(sweep_dir: str | Path | Sequence[str | Path]) -> SweepData:
    """Load a sweep's results, summary, group accuracies and histories (labelled by condition),
    paired comparisons and representation sections."""
    every = results.find_runs(sweep_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the incomplete runs are listed in the report instead
        df = results.load(sweep_dir)
        groups = results.load_groups(sweep_dir)
    if df.empty:
        left = [f"{r.run} ({r.status}{': ' + r.error if r.error else ''})" for r in every]
        raise ValueError(
            f"no finished run to report in {sweep_dir}: "
            + "; ".join(left[:5])
            + (f" ... ({len(left)} in all)" if len(left) > 5 else "")
        )
    try:
        history = results.load_history(sweep_dir)
    except FileNotFoundError:
        history = None
    not_done = [r for r in every if r.status != RunStatus.DONE]
    return _sweep_data(sweep_dir, df, groups, history, not_done, None)


def sweep_data_from_tables(folder: str | Path, history: pd.DataFrame | None = None) -> SweepData:
    """The :class:`SweepData` of a report folder's committed tables (``runs.csv``,
    ``groups.csv``, ``tables.json``: :mod:`debias.report.tables`), without the run folders;
    no histories (the convergence figure needs them) unless given (:func:`debias.results.
    load_history` rows of the runs at hand)."""
    from debias.report.tables import load_tables

    t = load_tables(folder)
    data = _sweep_data(
        t["source"], t["df"], t["groups"], history, t["not_done"], t["representation"]
    )
    data.generated, data.version = t["meta"]["generated"], t["meta"]["debias"]
    data.prior = t["meta"].get("prior")
    return data


def _sweep_data(
    source: Any,
    df: pd.DataFrame,
    groups: pd.DataFrame,
    history: pd.DataFrame | None,
    not_done: list,
    representation: pd.DataFrame | None,
) -> SweepData:
    """Summary, paired comparisons and representation section of loaded rows (``source``: the
    sweep folder(s); ``representation``: its rows when already read, else from ``source``)."""
    summary, info = summarize(df, groups)
    label_of = dict(zip(info.per_run["run_key"], info.per_run["label"]))

    def key(frame: pd.DataFrame) -> pd.Series:
        return frame["sweep"].astype(str) + "::" + frame["run"].astype(str)

    groups = groups[groups["split"] == "test"].copy()
    groups["label"] = key(groups).map(label_of)
    if history is not None:
        history = history[key(history).isin(label_of)].copy()
        history["label"] = key(history).map(label_of)
    return SweepData(
        source,
        df,
        summary,
        info,
        groups,
        history,
        not_done,
        paired_tables(info),
        summarize_representation(df, source, representation),
    )
