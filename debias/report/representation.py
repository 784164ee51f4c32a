"""The report's representation section (issue 21): what a fair head reads from each encoder.

A run's own numbers measure its classifier, whose last layer was fitted on the biased training
split. The ``representation`` section every run ends with (:mod:`debias.train.represent`)
measures its frozen features instead, and this module summarises it like the run's own
numbers (same conditions, seeds, intervals and paired tests, :mod:`debias.report.report`):

* **DFR head** (Kirichenko et al., ICLR 2023, the official protocol, :mod:`debias.audit.dfr`):
  an L1 logistic regression refitted on group-balanced subsamples of the *validation* split,
  scored on every test split with the run's own metrics. It reads the validation split's bias
  labels (so every DFR number is at least "V", whatever the method read in training) and nothing
  of the test splits.
* **Bias leakage** (:func:`debias.audit.audit_embeddings`): cross-validated balanced accuracy of
  a linear probe that predicts the bias attribute from the features, on the test split cut to
  equal (target, bias) group sizes; chance = 1 / number of bias values. Lower means the
  features carry less of the bias, not that a head uses less of it.

Computing only (frames); the Markdown and the figure are rendered by the report.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from debias import results
from debias.report.report import METRIC_LABELS, REP_LEAKAGE, summarize

__all__ = [
    "LEAKAGE",
    "REPRESENTATION_LABELS",
    "REPRESENTATION_PAIRED",
    "load_representation_results",
    "summarize_representation",
]

LEAKAGE = REP_LEAKAGE
# The DFR head's numbers carry the test splits' names, the audit's the pseudo-split "audit".
AUDIT_SPLIT = "audit"
# label -> candidate (split, metric) sources, as report.METRIC_LABELS.
REPRESENTATION_LABELS = {**METRIC_LABELS, LEAKAGE: ((AUDIT_SPLIT, "bias_leakage"),)}
# The representation's paired comparisons (every method against CE, ConTeX against SupCon).
REPRESENTATION_PAIRED = ("unbiased", "worst-group")
# Columns of results.load that describe a run as a whole (joined onto its representation rows).
_RUN_COLUMNS = [c for c in results.RESULT_COLUMNS if c not in ("split", "metric", "value")]


def load_representation_results(
    df: pd.DataFrame, sweep_dir: str | Path | Sequence[str | Path]
) -> pd.DataFrame:
    """A :func:`debias.results.load`-shaped frame of the runs' representation sections: one row
    per (run, split, metric), the DFR head's GroupReport on each test split under the split's
    name and the audit's leakage under split ``"audit"``, with each run's config, selection and
    supervision from ``df`` (the run's own record). Empty when no run has the section."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # runs without the section: the report says how many
        rep = results.load_representation(sweep_dir)
    if rep.empty:
        return rep
    rep = rep[rep["part"].isin(["dfr", "audit"])].copy()
    rep.loc[rep["part"] == "audit", "split"] = AUDIT_SPLIT
    rep = rep.drop(columns=["part", "dfr_C"])
    runs = df.drop_duplicates(["sweep", "run"])[["sweep", "run", *_RUN_COLUMNS]]
    return rep.merge(runs, on=["sweep", "run"], how="inner")


def summarize_representation(
    df: pd.DataFrame, sweep_dir: str | Path | Sequence[str | Path]
) -> tuple[pd.DataFrame, dict[str, Any]] | None:
    """``(summary, info)`` of the representation sections, as :func:`report.summarize` gives
    for the runs' own numbers (mean, 95% interval over seeds); ``info["chance"]`` is the
    leakage's chance level (%) per dataset and ``info["missing"]`` the finished runs without the
    section. None when no run has it."""
    frame = load_representation_results(df, sweep_dir)
    if frame.empty:
        return None
    summary, info = summarize(frame, labels=REPRESENTATION_LABELS)
    chance = frame[(frame["split"] == AUDIT_SPLIT) & (frame["metric"] == "bias_leakage_chance")]
    info["chance"] = {
        str(d): 100 * float(v) for d, v in chance.groupby("dataset")["value"].mean().items()
    }
    have = set(zip(frame["sweep"], frame["run"], strict=True))
    info["missing"] = sorted(
        r for s, r in df[["sweep", "run"]].drop_duplicates().itertuples(index=False)
        if (s, r) not in have
    )  # fmt: skip
    return summary, info


def representation_paired(info: dict[str, Any]) -> pd.DataFrame:
    """The paired comparisons on the DFR head's numbers: every method against CE and ConTeX
    against SupCon (:func:`debias.report.report.paired_tables`), on
    :data:`REPRESENTATION_PAIRED` and, where the results table shows it, the average minus
    worst-group gap."""
    from debias.report.report import paired_tables

    metrics = [*REPRESENTATION_PAIRED]
    if "accuracy − worst-group" in info["table_metrics"]:
        metrics.append("accuracy − worst-group")
    return paired_tables(info, metrics)


def table_metrics(info: dict[str, Any]) -> list[str]:
    """The representation table's columns: the results table's accuracies (not the
    equalized-odds gaps, which a DFR head tuned for worst-group accuracy does not target), then
    the bias leakage."""
    return [m for m in info["table_metrics"] if not m.startswith("EO ")] + [LEAKAGE]
