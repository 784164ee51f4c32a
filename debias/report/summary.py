"""The sweep summary: mean ± 95% CI over seeds per condition (method x bias level x ...).

:func:`summarize` turns :func:`debias.results.load` rows into the summary table; the metrics it
reads are the report's vocabulary (:mod:`debias.report.vocabulary`).

Statistics. For a condition (every option that varies across the sweep except ``seed``, e.g.
method x rho) with per-seed values ``v_1..v_n`` (in %):
``mean = (1/n) Σ v_i``, ``s = sqrt(Σ (v_i − mean)² / (n − 1))`` and the 95% Student
t-interval ``mean ± t_{0.975, n−1} · s / sqrt(n)``, clipped to [0, 100]. With ``n = 2``,
``t_{0.975, 1} = 12.7``: the interval is marked "n=2, wide" and not drawn in figures. With
``n = 1`` the interval is a stratified bootstrap over the run's test images (its saved group
counts, :func:`debias.metrics.bootstrap_from_groups`), labelled as such: it shows how much the
test sample alone moves the number, not how much another seed would.

Units: ``metrics.json``, :class:`~debias.metrics.GroupReport` and :mod:`debias.results` hold
fractions in [0, 1]; the summary is in % (columns ``*_pct``) or percentage points for
differences of rates.

Each number is from the run's ``metrics.json``, i.e. at the epoch its selection rule picked;
test splits are never used for selection.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from debias import results
from debias.data.registry import REBIAS_VANILLA, find_spec
from debias.methods.base import (
    NO_BIAS_LABELS,
    TRAIN_BIAS_LABELS,
    VAL_BIAS_LABELS,
    supervision_kind,
)
from debias.report.vocabulary import (
    DEFAULT_TABLE_METRICS,
    METRICS,
    ReportMetric,
    metric,
    read_first,
)
from debias.train.config import RUNTIME_FIELDS

__all__ = [
    "REBIAS_VANILLA",
    "SUPERVISION_MARK",
    "SummaryInfo",
    "mean_ci",
    "summarize",
    "supervision_mark",
    "table_metrics",
    "worst_groups",
]

# Bootstrap replicates for a one-seed condition's interval over test images.
N_BOOT = 2000


# What varies between the replicates of one condition: the training seed and, in a sweep whose
# seeds draw their own data (data_draw: seed, every shipped sweep), the data draw with it.
_REPLICATE = ("seed", "data_seed")


_NOT_CONDITIONS = set(RUNTIME_FIELDS) | set(_REPLICATE)


def mean_ci(values: Sequence[float], level: float = 0.95) -> dict[str, float]:
    """``n, mean, std`` (ddof 1) and the Student t-interval ``mean ± t·s/sqrt(n)``.

    With one value ``std`` and the interval are NaN: there is no spread to estimate.
    """
    v = np.asarray([x for x in values if x is not None and not math.isnan(x)], dtype=float)
    n = len(v)
    if n == 0:
        return {
            "n": 0,
            "mean": math.nan,
            "std": math.nan,
            "ci95_half_width": math.nan,
            "ci95_low": math.nan,
            "ci95_high": math.nan,
        }
    mean = float(v.mean())
    if n == 1:
        std = half = math.nan
    else:
        from scipy import stats

        std = float(v.std(ddof=1))
        half = float(stats.t.ppf(0.5 + level / 2, n - 1) * std / math.sqrt(n))
    return {
        "n": n,
        "mean": mean,
        "std": std,
        "ci95_half_width": half,
        "ci95_low": mean - half,
        "ci95_high": mean + half,
    }


def _published(row: pd.Series) -> float:
    """The published value its dataset's spec gives for this row's method at its bias level."""
    spec = find_spec(str(row.get("dataset")))
    table = spec.published.get(row.get("method")) if spec is not None else None
    if not table:
        return math.nan
    level = row.get(spec.level_keys[0])
    for r, v in table.items():
        if level is not None and not pd.isna(level) and math.isclose(float(level), r):
            return v
    return math.nan


def n_values(values: pd.Series) -> int:
    """How many different values a column holds, an unset option (None / NaN) counting as one
    value: a sweep that sets ``loss_options.self_weight`` and one that leaves it at the default
    are two conditions. (``astype(str).nunique()`` drops NaN in pandas 3 and would count one.)"""
    return values.map(lambda v: "\0unset" if _missing(v) else str(v)).nunique()


def _condition_keys(runs: pd.DataFrame, config_cols: Sequence[str]) -> tuple[list[str], str | None]:
    """(condition columns, the bias-level column to use as x axis or None)."""

    def varies(c: str) -> bool:
        return n_values(runs[c]) > 1

    level_cols: list[str] = []
    for ds in runs["dataset"].dropna().unique():
        spec = find_spec(str(ds))
        for k in spec.level_keys if spec is not None else ():
            if k in runs and runs[k].notna().any() and k not in level_cols:
                level_cols.append(k)
    keys = [c for c in ("dataset", "method") if c in runs and (c == "method" or varies(c))]

    def informative(c: str) -> bool:
        # Options that follow from the method (mode "auto", augment's default, ...) would only
        # repeat it: keep an option only if it varies for some dataset and method.
        return bool((runs.groupby(keys, dropna=False)[c].agg(n_values) > 1).any())

    keys += [
        c
        for c in config_cols
        if c not in keys
        and c not in level_cols
        and c not in _NOT_CONDITIONS
        and varies(c)
        and informative(c)
    ]
    keys += level_cols
    numeric = [k for k in level_cols if pd.api.types.is_numeric_dtype(runs[k])]
    level = next((k for k in numeric if varies(k)), numeric[0] if numeric else None)
    return keys, level


def _label(row: pd.Series, keys: Sequence[str]) -> str:
    """``contex`` or, with more condition keys, ``contex (mode=joint, temperature=0.1)``."""
    if not keys:
        return "all runs"
    # An option the run's dataset does not take is empty there: it is not printed.
    rest = ", ".join(f"{k}={_fmt(row[k])}" for k in keys[1:] if not _missing(row[k]))
    return _fmt(row[keys[0]]) + (f" ({rest})" if rest else "")


# How what a run read is written in tables (PROTOCOLS §6 notation, with the validation kind of §8).
SUPERVISION_MARK = {NO_BIAS_LABELS: "—", VAL_BIAS_LABELS: "V", TRAIN_BIAS_LABELS: "B"}


def supervision_mark(kind: Any) -> str:
    """``"—"``, ``"V"`` or ``"B"`` for a supervision kind (an earlier name is mapped; ``"?"``
    for an unknown one or None)."""
    try:
        return SUPERVISION_MARK[supervision_kind(kind)]
    except ValueError:
        return "?"


def _run_marks(runs: pd.DataFrame) -> list[str]:
    """The supervision mark of each run from its own record (``results.load``'s ``supervision``
    column: the run's ``metrics.json``, for an older run what its recorded method and selection
    rule imply, :func:`debias.results.run_supervision_of`); ``"?"`` where nothing says."""
    kinds = runs["supervision"] if "supervision" in runs else [None] * len(runs)
    return [supervision_mark(k) if isinstance(k, str) else "?" for k in kinds]


def _per_run(
    df: pd.DataFrame, metrics: Sequence[ReportMetric] = METRICS
) -> tuple[pd.DataFrame, dict[str, set[str]]]:
    """One row per run with a column per report metric (in %), and the sources used."""
    runs = df.drop_duplicates("run_key").set_index("run_key")
    runs["supervision"] = _run_marks(runs)
    sources: dict[str, set[str]] = {}
    lookup = df.set_index(["run_key", "split", "metric"])["value"]
    for m in read_first(metrics):
        label = m.label
        if m.derived:
            a, b = m.derived
            runs[label] = runs[a] - runs[b]
            runs[f"source:{label}"] = None
            sources[label] = {f"{a} − {b}"} if runs[label].notna().any() else set()
            continue
        sources[label] = set()
        vals, used = [], []
        for key in runs.index:
            v, src = math.nan, None
            for split, name in m.sources:
                if (key, split, name) in lookup.index:
                    v = 100 * float(lookup.loc[(key, split, name)])
                    src = f"{split}/{name}"
                    sources[label].add(src)
                    break
            vals.append(v)
            used.append(src)
        runs[label] = vals
        runs[f"source:{label}"] = used
    return runs.reset_index(), sources


def table_metrics(datasets: Sequence[str]) -> tuple[str, ...]:
    """The metrics a results table shows for runs on ``datasets``: their specs' table_metrics
    when they agree, else DEFAULT_TABLE_METRICS. A label the vocabulary lacks is an error."""
    specs = [find_spec(str(d)) for d in datasets]
    chosen = {(s.table_metrics if s else None) or DEFAULT_TABLE_METRICS for s in specs}
    shown = chosen.pop() if len(chosen) == 1 else DEFAULT_TABLE_METRICS
    for label in shown:
        metric(label)
    return shown


@dataclass
class SummaryInfo:
    """What :func:`summarize` found besides the summary rows.

    Attributes:
        keys: the condition columns (``method``, the options that vary, the bias level).
        level: the bias-level column to use as x axis, or None.
        sources: per metric label, the ``split/metric`` sources its runs' values came from.
        per_run: one row per run: its options, ``label``, ``supervision`` and a column per
            metric label (in %).
        table_metrics: the labels the results table shows (:func:`table_metrics`).
    """

    keys: list[str]
    level: str | None
    sources: dict[str, list[str]]
    per_run: pd.DataFrame
    table_metrics: tuple[str, ...]


def summarize(
    df: pd.DataFrame,
    groups: pd.DataFrame | None = None,
    metrics: Sequence[ReportMetric] = METRICS,
) -> tuple[pd.DataFrame, SummaryInfo]:
    """Summary rows (condition x metric) from :func:`debias.results.load` output.

    Returns ``(summary, info)``: ``summary`` columns are the condition keys, ``label``,
    ``metric``, ``source``, ``n``, ``seeds``, ``mean_pct``, ``std_pct``,
    ``ci95_half_width_pct`` (the t half-width, unclipped), ``ci95_low_pct``, ``ci95_high_pct``
    (the interval, clipped to [0, 100]), ``interval`` (what the interval is) and
    ``published_rebias_vanilla_pct`` (unbiased metric of CE runs at the ReBias rho values, else
    NaN); ``info`` (:class:`SummaryInfo`) holds the condition keys, the bias-level key, the
    metric sources and the per-run table. ``metrics``: the vocabulary's entries to read
    (:data:`~debias.report.vocabulary.METRICS`; the representation section passes its own).
    ``groups`` (:func:`debias.results.load_groups`) gives one-seed conditions their bootstrap
    interval over test images; without it they have none.
    """
    if df.empty:
        raise ValueError("no finished runs to summarize (no metrics.json found)")
    df = df.copy()
    df["run_key"] = df["sweep"].astype(str) + "::" + df["run"].astype(str)
    per_run, sources = _per_run(df, metrics)
    fixed = {"sweep", "run", "status", "run_key", "supervision", *results.RESULT_COLUMNS}
    config_cols = [c for c in df.columns if c not in fixed]
    keys, level = _condition_keys(per_run, config_cols)
    per_run["label"] = per_run.apply(lambda r: _label(r, [k for k in keys if k != level]), axis=1)
    order = [m.label for m in read_first(metrics)]
    summary = _summary_rows(per_run, keys, order, sources, groups)
    labels_order = {lab: i for i, lab in enumerate(dict.fromkeys(per_run["label"]))}
    summary["_lab"] = summary["label"].map(labels_order)
    summary["_met"] = summary["metric"].map({m: i for i, m in enumerate(order)})
    # Conditions keep the sweep's own order (first appearance), bias levels strongest first.
    sort_cols = ["_lab"] + ([level] if level else []) + ["_met"]
    asc = [True] + ([False] if level else []) + [True]
    summary = summary.sort_values(sort_cols, ascending=asc, kind="stable")
    summary = summary.drop(columns=["_lab", "_met"]).reset_index(drop=True)
    info = SummaryInfo(
        keys=keys,
        level=level,
        sources={k: sorted(v) for k, v in sources.items()},
        per_run=per_run,
        table_metrics=table_metrics(per_run["dataset"].dropna().unique()),
    )
    return summary, info


def _summary_rows(
    per_run: pd.DataFrame,
    keys: Sequence[str],
    order: Sequence[str],
    sources: dict[str, set[str]],
    groups: pd.DataFrame | None,
) -> pd.DataFrame:
    """One row per (condition, metric in ``order``), in the order of the sweep's runs; a
    metric no run of the condition has gives no row."""
    rows = []
    for _, g in per_run.groupby(list(keys), dropna=False, sort=False):
        head = {k: g[k].iloc[0] for k in keys} | {
            "label": g["label"].iloc[0],
            "supervision": g["supervision"].iloc[0],
        }
        seeds = ",".join(str(s) for s in sorted(g["seed"].dropna().unique())) if "seed" in g else ""
        for label in order:
            stats = _interval(mean_ci(g[label].tolist()), g, label, groups)
            if stats["n"] == 0:
                continue
            pub = _published(g.iloc[0]) if label == "unbiased" else math.nan
            rows.append(
                head
                | {
                    "metric": label,
                    "source": "; ".join(sorted(sources[label])),
                    "seeds": seeds,
                }
                | stats
                | {"published_rebias_vanilla_pct": pub}
            )
    return pd.DataFrame(rows)


def _clip(v: float) -> float:
    return v if math.isnan(v) else min(100.0, max(0.0, v))


def _interval(
    stats: dict[str, float], runs: pd.DataFrame, label: str, groups: pd.DataFrame | None
) -> dict[str, Any]:
    """:func:`mean_ci` stats in % with the interval a reader should see: the t-interval clipped
    to [0, 100] (n >= 2; n = 2 marked wide), else a bootstrap over the one run's test images."""
    n, low, high = stats["n"], stats["ci95_low"], stats["ci95_high"]
    kind = f"95% t-interval over {n} seeds"
    if n == 2:
        kind += " (t = 12.7: wide)"
    elif n == 1:
        low, high = _bootstrap_one(runs[runs[label].notna()].iloc[0], label, groups)
        kind = "95% bootstrap over test images (1 seed)" if not math.isnan(low) else "none"
    return {
        "n": n,
        "mean_pct": stats["mean"],
        "std_pct": stats["std"],
        "ci95_half_width_pct": stats["ci95_half_width"],
        "ci95_low_pct": _clip(low),
        "ci95_high_pct": _clip(high),
        "interval": kind if n else "",
    }


def _bootstrap_one(run: pd.Series, label: str, groups: pd.DataFrame | None) -> tuple[float, float]:
    """A one-seed run's 95% stratified bootstrap interval (%) of ``label`` from its saved group
    counts on the split the number came from; NaN when they are not there."""
    from debias.metrics import BOOTSTRAP_METRICS, bootstrap_from_groups

    src = run.get(f"source:{label}")
    if groups is None or not src or groups.empty:
        return math.nan, math.nan
    split, metric = src.split("/", 1)
    mine = groups[
        (groups["sweep"].astype(str) + "::" + groups["run"].astype(str) == run["run_key"])
        & (groups["split"] == split)
    ]
    if mine.empty or metric not in BOOTSTRAP_METRICS:
        return math.nan, math.nan
    low, high = bootstrap_from_groups(mine, n_boot=N_BOOT, seed=0)[metric]
    return 100 * low, 100 * high


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "–" if math.isnan(v) else f"{v:g}"
    return "–" if v is None else str(v)


WORST_GROUPS = 3


def worst_groups(groups: pd.DataFrame, k: int = WORST_GROUPS) -> pd.DataFrame:
    """The ``k`` lowest-accuracy groups per condition ``label``, counts pooled over seeds.

    ``groups``: :func:`debias.results.load_groups` rows of one split with a ``label`` column.
    Returns ``label, y_name, b_name, aligned, n, correct, accuracy_pct`` and the exact 95%
    interval ``ci95_low_pct, ci95_high_pct`` of the pooled proportion (Clopper–Pearson).
    """
    from debias.metrics import clopper_pearson

    keys = ["label", "y", "b"]
    names = [c for c in ("y_name", "b_name") if c in groups]
    pooled = groups.groupby(keys, sort=False, dropna=False).agg(
        n=("n", "sum"), correct=("correct", "sum"), aligned=("aligned", "first"),
        **{c: (c, "first") for c in names},
    ).reset_index()  # fmt: skip
    for c, code in (("y_name", "y"), ("b_name", "b")):
        if c not in pooled:
            pooled[c] = pooled[code].astype(str)
    pooled["accuracy_pct"] = 100 * pooled["correct"] / pooled["n"]
    low, high = clopper_pearson(pooled["correct"].to_numpy(), pooled["n"].to_numpy())
    pooled["ci95_low_pct"], pooled["ci95_high_pct"] = 100 * low, 100 * high
    pooled = pooled.sort_values(["accuracy_pct", "n"], ascending=[True, False], kind="stable")
    out = pooled.groupby("label", sort=False).head(k)
    order = {lab: i for i, lab in enumerate(dict.fromkeys(groups["label"]))}
    out = out.sort_values("label", key=lambda s: s.map(order), kind="stable")
    cols = ["label", "y_name", "b_name", "aligned", "n", "correct", "accuracy_pct"]
    return out[cols + ["ci95_low_pct", "ci95_high_pct"]].reset_index(drop=True)
