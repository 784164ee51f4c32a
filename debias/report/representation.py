"""The report's representation section (issue 21): what a fair head reads from each encoder.

A run's own numbers measure its classifier, whose last layer was fitted on the biased training
split. The ``representation`` section every run ends with (:mod:`debias.train.represent`)
measures its frozen features instead, and this module summarises it like the run's own
numbers (same conditions, seeds, intervals and paired tests, :mod:`debias.report.summary`,
:mod:`debias.report.compare`):

* **DFR head** (Kirichenko et al., ICLR 2023, the official protocol, :mod:`debias.audit.dfr`):
  an L1 logistic regression refitted on group-balanced subsamples of the *validation* split,
  scored on every test split with the run's own metrics. It reads the validation split's bias
  labels (so every DFR number is at least "V", whatever the method read in training) and nothing
  of the test splits.
* **Bias leakage** (:func:`debias.audit.audit_embeddings`): cross-validated balanced accuracy of
  a linear probe that predicts the bias attribute from the features, on the test split cut to
  equal (target, bias) group sizes; chance = 1 / number of bias values. Lower means the
  features carry less of the bias, not that a head uses less of it.

Computing only (frames); :mod:`debias.report.markdown` and :mod:`debias.report.figures` render
them.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from debias import results
from debias.report.compare import paired_tables
from debias.report.summary import SummaryInfo, summarize
from debias.report.vocabulary import LEAKAGE, PAIRED_METRICS, REPRESENTATION_METRICS, metric

__all__ = [
    "LEAKAGE",
    "REPRESENTATION_PAIRED",
    "RepresentationSummary",
    "load_representation_results",
    "representation_paired",
    "summarize_representation",
    "table_metrics",
]

# The DFR head's numbers carry the test splits' names, the audit's the pseudo-split "audit"
# (the split of the leakage's source in the vocabulary).
AUDIT_SPLIT = metric(LEAKAGE).sources[0][0]
# The representation's paired comparisons (every method against CE, ConTeX against SupCon).
REPRESENTATION_PAIRED = ("unbiased", "worst-group")
# Columns of results.load that describe a run as a whole (joined onto its representation rows).
_RUN_COLUMNS = [c for c in results.RESULT_COLUMNS if c not in ("split", "metric", "value")]


@dataclass
class RepresentationSummary:
    """The runs' representation sections summarised like their own numbers.

    Attributes:
        summary: :func:`~debias.report.summary.summarize` rows of the DFR head and the leakage.
        info: its :class:`~debias.report.summary.SummaryInfo`.
        chance: the leakage's chance level (%) per dataset.
        missing: the finished runs without the section.
        paired: :func:`representation_paired`.
        baseline: the leakage's permutation baseline (%, mean over runs) per dataset, from the
            runs whose section has one (the probe on bias labels shuffled within class).
        leaking: per dataset, ``(runs whose leakage is above its baseline, runs judged)``.
    """

    summary: pd.DataFrame
    info: SummaryInfo
    chance: dict[str, float]
    missing: list[str]
    paired: pd.DataFrame
    frame: pd.DataFrame | None = None  # the rows summarised (load_representation_results)
    baseline: dict[str, float] = field(default_factory=dict)
    leaking: dict[str, tuple[int, int]] = field(default_factory=dict)


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
    df: pd.DataFrame,
    sweep_dir: str | Path | Sequence[str | Path] | None,
    frame: pd.DataFrame | None = None,
) -> RepresentationSummary | None:
    """The representation sections summarised as :func:`~debias.report.summary.summarize`
    does the runs' own numbers (mean, 95% interval over seeds), with the leakage's chance
    level, the runs without the section and the paired comparisons. None when no run has it.
    ``frame``: the :func:`load_representation_results` rows when already read (a report
    rebuilt from its tables, :mod:`debias.report.tables`), else read from ``sweep_dir``."""
    if frame is None:
        frame = load_representation_results(df, sweep_dir)
    if frame.empty:
        return None
    summary, info = summarize(frame, metrics=REPRESENTATION_METRICS)
    chance = frame[(frame["split"] == AUDIT_SPLIT) & (frame["metric"] == "bias_leakage_chance")]
    have = set(zip(frame["sweep"], frame["run"], strict=True))
    missing = sorted(
        r for s, r in df[["sweep", "run"]].drop_duplicates().itertuples(index=False)
        if (s, r) not in have
    )  # fmt: skip
    audit = frame[frame["split"] == AUDIT_SPLIT]
    null = audit[audit["metric"] == "bias_leakage_null_mean"]
    verdicts = audit[audit["metric"] == "bias_leakage_leaking"]
    return RepresentationSummary(
        summary,
        info,
        chance={
            str(d): 100 * float(v) for d, v in chance.groupby("dataset")["value"].mean().items()
        },
        missing=missing,
        paired=representation_paired(info),
        frame=frame,
        baseline={
            str(d): 100 * float(v) for d, v in null.groupby("dataset")["value"].mean().items()
        },
        leaking={str(d): (int(v.sum()), len(v)) for d, v in verdicts.groupby("dataset")["value"]},
    )


def representation_paired(info: SummaryInfo) -> pd.DataFrame:
    """The paired comparisons on the DFR head's numbers: every method against CE and ConTeX
    against SupCon (:func:`debias.report.compare.paired_tables`), on
    :data:`REPRESENTATION_PAIRED` and the other paired metrics the results table shows (the
    average minus worst-group gap on faces)."""
    shown = [
        m for m in PAIRED_METRICS if m in info.table_metrics and m not in REPRESENTATION_PAIRED
    ]
    return paired_tables(info, [*REPRESENTATION_PAIRED, *shown])


def table_metrics(info: SummaryInfo) -> list[str]:
    """The representation table's columns: the results table's metrics that a DFR head is
    scored on (the vocabulary's ``dfr``; not the equalized-odds gaps, which a head tuned for
    worst-group accuracy does not target), then the bias leakage."""
    return [m for m in info.table_metrics if metric(m).dfr] + [LEAKAGE]
