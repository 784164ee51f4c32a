"""The sweep report: mean ± 95% CI over seeds per method x bias level, with figures.

:func:`summarize` turns :func:`debias.results.load` rows into the summary table; :func:`make_report`
writes ``report.md``, ``summary.csv`` and three PNG figures.

Statistics. For a condition (every option that varies across the sweep except ``seed``, e.g.
method x rho) with per-seed values ``v_1..v_n`` (in %):
``mean = (1/n) Σ v_i``, ``s = sqrt(Σ (v_i − mean)² / (n − 1))`` and the 95% Student
t-interval ``mean ± t_{0.975, n−1} · s / sqrt(n)``, clipped to [0, 100]. With ``n = 2``,
``t_{0.975, 1} = 12.7``: the interval is marked "n=2, wide" and not drawn in figures. With
``n = 1`` the interval is a stratified bootstrap over the run's test images (its saved group
counts, :func:`debias.metrics.bootstrap_from_groups`), labelled as such: it shows how much the
test sample alone moves the number, not how much another seed would.

Units: ``metrics.json``, :class:`~debias.metrics.GroupReport` and :mod:`debias.results` hold
fractions in [0, 1]; everything this module writes is in % (columns ``*_pct``, headers "(%)")
or percentage points for differences (``*_pp``).

Reported metrics (each from the run's ``metrics.json``, i.e. at the epoch its selection rule
picked; test splits are never used for selection):

* unbiased: ``test/unbiased_accuracy``: mean of the group accuracies on the unbiased test split;
* worst-group: ``test/worst_group_accuracy``: min group accuracy on it;
* bias-conflicting: ``test_conflicting/accuracy`` (Biased-MNIST's rho = 0 test split), else
  ``test/conflicting_accuracy`` (mean accuracy of the conflicting groups; faces);
* biased: ``test_biased/accuracy`` (the rho = 1 split), else ``test/aligned_accuracy``
  (bias-aligned groups; faces).
"""

from __future__ import annotations

import datetime as _dt
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from debias import results
from debias._markdown import markdown_table as _md_table
from debias.data.registry import REBIAS_VANILLA, find_spec
from debias.methods.base import (
    NO_BIAS_LABELS,
    TRAIN_BIAS_LABELS,
    VAL_BIAS_LABELS,
    run_supervision,
    supervision_kind,
)
from debias.report import plots
from debias.report.compare import paired_differences
from debias.train.config import RUNTIME_FIELDS
from debias.train.runfolder import RunFolderError, check_out_path, is_run_folder

__all__ = [
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
]

# label -> candidate (split, metric) sources, first present wins (per run).
METRIC_LABELS: dict[str, tuple[tuple[str, str], ...]] = {
    "accuracy": (("test", "accuracy"),),
    "unbiased": (("test", "unbiased_accuracy"),),
    "worst-group": (("test", "worst_group_accuracy"),),
    "bias-conflicting": (("test_conflicting", "accuracy"), ("test", "conflicting_accuracy")),
    "biased": (("test_biased", "accuracy"), ("test", "aligned_accuracy")),
    "EO mean gap": (("test", "equalized_odds_mean_gap"),),
    "EO max gap": (("test", "equalized_odds_max_gap"),),
}
# Per-run metrics computed from two others: label -> (minuend, subtrahend). The gap between
# average and worst-group accuracy is the faces issue's measure of a shortcut.
DERIVED_METRICS: dict[str, tuple[str, str]] = {
    "accuracy − worst-group": ("accuracy", "worst-group")
}
# Metrics that are differences of rates: percentage points, not percent.
POINTS = frozenset({"EO mean gap", "EO max gap", "accuracy − worst-group"})
# The columns a results table shows: its dataset's (DatasetSpec.table_metrics, PROTOCOLS §5),
# else DEFAULT_TABLE_METRICS.
DEFAULT_TABLE_METRICS = (
    "accuracy",
    "unbiased",
    "worst-group",
    "accuracy − worst-group",
    "bias-conflicting",
    "EO mean gap",
    "EO max gap",
)
# REBIAS_VANILLA (PROTOCOLS §1) is the Biased-MNIST spec's published CE reference.
PUBLISHED_COLUMN = "ReBias Vanilla unbiased, published"
# Bootstrap replicates for a one-seed condition's interval over test images.
N_BOOT = 2000
_REPLICATE = ("seed",)
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


def _condition_keys(runs: pd.DataFrame, config_cols: Sequence[str]) -> tuple[list[str], str | None]:
    """(condition columns, the bias-level column to use as x axis or None)."""

    def varies(c: str) -> bool:
        return runs[c].astype(str).nunique() > 1

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
        return bool(
            (runs.groupby(keys, dropna=False)[c].agg(lambda s: s.astype(str).nunique()) > 1).any()
        )

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
SUPERVISION_NOTE = (
    "*supervision*, what each run read besides the images and the training targets: **—** = no "
    "bias labels of any split; **V** = bias labels of the validation split only, to fit part of "
    "the model (DFR refits its last layer there) or to select the reported epoch (a run "
    "selected on a validation metric that needs groups, such as worst-group accuracy); **B** = "
    "the bias labels of the training split. Test-split bias labels are only used to compute the "
    "metrics. Compare a B or V run with a — run knowing that it was given more."
)


def supervision_mark(kind: Any) -> str:
    """``"—"``, ``"V"`` or ``"B"`` for a supervision kind (an earlier name is mapped; ``"?"``
    for an unknown one or None)."""
    try:
        return SUPERVISION_MARK[supervision_kind(kind)]
    except ValueError:
        return "?"


def supervision_of(method: Any, select: str = "last") -> str:
    """The mark of a registered method's runs selected by ``select`` (``"?"`` for a method not
    registered here). Tables read each run's own record instead (:func:`_run_marks`)."""
    from debias.methods import METHODS

    cls = METHODS.get(str(method))
    return supervision_mark(run_supervision(cls.supervision, select)) if cls is not None else "?"


def _run_marks(runs: pd.DataFrame) -> list[str]:
    """The supervision mark of each run: its metrics.json record (``results.load``'s
    ``supervision`` column), else what its method and selection rule imply."""
    marks = []
    for _, r in runs.iterrows():
        kind = r.get("supervision")
        if isinstance(kind, str):
            marks.append(supervision_mark(kind))
        else:
            select = r.get("select")
            marks.append(
                supervision_of(r.get("method"), select if isinstance(select, str) else "last")
            )
    return marks


def _per_run(
    df: pd.DataFrame, labels: dict[str, tuple[tuple[str, str], ...]] = METRIC_LABELS
) -> tuple[pd.DataFrame, dict[str, set[str]]]:
    """One row per run with a column per report metric (in %), and the sources used."""
    runs = df.drop_duplicates("run_key").set_index("run_key")
    runs["supervision"] = _run_marks(runs)
    sources: dict[str, set[str]] = {m: set() for m in labels}
    lookup = df.set_index(["run_key", "split", "metric"])["value"]
    for label, candidates in labels.items():
        vals, used = [], []
        for key in runs.index:
            v, src = math.nan, None
            for split, metric in candidates:
                if (key, split, metric) in lookup.index:
                    v = 100 * float(lookup.loc[(key, split, metric)])
                    src = f"{split}/{metric}"
                    sources[label].add(src)
                    break
            vals.append(v)
            used.append(src)
        runs[label] = vals
        runs[f"source:{label}"] = used
    for label, (a, b) in DERIVED_METRICS.items():
        runs[label] = runs[a] - runs[b]
        runs[f"source:{label}"] = None
        sources[label] = {f"{a} − {b}"} if runs[label].notna().any() else set()
    return runs.reset_index(), sources


def all_metrics(labels: dict[str, Any] = METRIC_LABELS) -> list[str]:
    """Every metric label the summary has rows for: the read ones, then the derived ones."""
    return [*labels, *DERIVED_METRICS]


def unit(metric: str) -> str:
    """``"pp"`` (percentage points) for a difference of rates, else ``"%"``."""
    return "pp" if metric in POINTS else "%"


def table_metrics(datasets: Sequence[str]) -> tuple[str, ...]:
    """The metrics a results table shows for runs on ``datasets``: their specs' table_metrics
    when they agree, else DEFAULT_TABLE_METRICS."""
    specs = [find_spec(str(d)) for d in datasets]
    chosen = {(s.table_metrics if s else None) or DEFAULT_TABLE_METRICS for s in specs}
    return chosen.pop() if len(chosen) == 1 else DEFAULT_TABLE_METRICS


def summarize(
    df: pd.DataFrame,
    groups: pd.DataFrame | None = None,
    labels: dict[str, tuple[tuple[str, str], ...]] = METRIC_LABELS,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Summary rows (condition x metric) from :func:`debias.results.load` output.

    Returns ``(summary, info)``: ``summary`` columns are the condition keys, ``label``,
    ``metric``, ``source``, ``n``, ``seeds``, ``mean_pct``, ``std_pct``,
    ``ci95_half_width_pct`` (the t half-width, unclipped), ``ci95_low_pct``, ``ci95_high_pct``
    (the interval, clipped to [0, 100]), ``interval`` (what the interval is) and
    ``published_rebias_vanilla_pct`` (unbiased metric of CE runs at the ReBias rho values, else
    NaN); ``info`` holds the condition keys, the bias-level key and the metric sources.
    ``labels`` maps each metric label to its candidate ``(split, metric)`` sources
    (:data:`METRIC_LABELS`; the representation section passes its own).
    ``groups`` (:func:`debias.results.load_groups`) gives one-seed conditions their bootstrap
    interval over test images; without it they have none.
    """
    if df.empty:
        raise ValueError("no finished runs to summarize (no metrics.json found)")
    df = df.copy()
    df["run_key"] = df["sweep"].astype(str) + "::" + df["run"].astype(str)
    per_run, sources = _per_run(df, labels)
    fixed = {"sweep", "run", "status", "run_key", "supervision", *results.RESULT_COLUMNS}
    config_cols = [c for c in df.columns if c not in fixed]
    keys, level = _condition_keys(per_run, config_cols)
    per_run["label"] = per_run.apply(lambda r: _label(r, [k for k in keys if k != level]), axis=1)
    rows = []
    # Conditions keep the sweep's own order (first appearance), bias levels strongest first.
    per_run["_order"] = range(len(per_run))
    grouped = per_run.groupby(keys, dropna=False, sort=False)
    for _, g in grouped:
        head = {k: g[k].iloc[0] for k in keys} | {
            "label": g["label"].iloc[0],
            "supervision": g["supervision"].iloc[0],
        }
        seeds = ",".join(str(s) for s in sorted(g["seed"].dropna().unique())) if "seed" in g else ""
        for label in all_metrics(labels):
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
                    "_order": g["_order"].min(),
                }
                | stats
                | {"published_rebias_vanilla_pct": pub}
            )
    summary = pd.DataFrame(rows)
    labels_order = {lab: i for i, lab in enumerate(dict.fromkeys(per_run["label"]))}
    summary["_lab"] = summary["label"].map(labels_order)
    summary["_met"] = summary["metric"].map({m: i for i, m in enumerate(all_metrics(labels))})
    sort_cols = ["_lab"] + ([level] if level else []) + ["_met"]
    asc = [True] + ([False] if level else []) + [True]
    summary = summary.sort_values(sort_cols, ascending=asc, kind="stable")
    summary = summary.drop(columns=["_order", "_lab", "_met"]).reset_index(drop=True)
    info = {
        "keys": keys,
        "level": level,
        "sources": {k: sorted(v) for k, v in sources.items()},
        "per_run": per_run,
        "table_metrics": table_metrics(per_run["dataset"].dropna().unique()),
    }
    return summary, info


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


# -- markdown ---------------------------------------------------------------------------------
def format_ci(
    mean: float, half: float, n: int, low: float = math.nan, high: float = math.nan
) -> str:
    """A summary cell (%, one decimal) that says what its interval is.

    ``"65.0 ± 3.5"`` (n >= 3 inside [0, 100]); ``"98.0 [92.1, 100.0]"`` when the t-interval is
    clipped; ``"65.0 [1.5, 100.0] (n=2, wide)"``; ``"72.0 [69.1, 74.8] (n=1, bootstrap over
    test images)"`` with a one-seed interval ``low, high``, else ``"72.0 (n=1, no CI)"``.
    """
    if n == 0 or math.isnan(mean):
        return "–"
    if n == 1:
        if math.isnan(low):
            return f"{mean:.1f} (n=1, no CI)"
        return f"{mean:.1f} [{_clip(low):.1f}, {_clip(high):.1f}] (n=1, bootstrap over test images)"
    if math.isnan(half):
        return f"{mean:.1f} (n={n}, no CI)"
    low, high = _clip(mean - half), _clip(mean + half)
    if n == 2:
        return f"{mean:.1f} [{low:.1f}, {high:.1f}] (n=2, wide)"
    if low == mean - half and high == mean + half:
        return f"{mean:.1f} ± {half:.1f}"
    return f"{mean:.1f} [{low:.1f}, {high:.1f}]"


def summary_cell(r: pd.Series) -> str:
    """:func:`format_ci` of one summary row (``mean_pct``, ``ci95_*``, ``n``): a table cell."""
    return format_ci(
        r["mean_pct"], r["ci95_half_width_pct"], int(r["n"]), r["ci95_low_pct"], r["ci95_high_pct"]
    )


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "–" if math.isnan(v) else f"{v:g}"
    return "–" if v is None else str(v)


UNITS_NOTE = (
    " Units: % for accuracies; pp (percentage points) for differences of rates. Equalized odds"
    " across bias groups (PROTOCOLS §5; binary target): the mean gap is FSCL's"
    " (|ΔTPR| + |ΔTNR|)/2, the max gap is fairlearn's `equalized_odds_difference`,"
    " max(|ΔTPR|, |ΔFPR|)."
)


def _results_table(
    summary: pd.DataFrame,
    keys: Sequence[str],
    metrics: Sequence[str],
    names: dict[str, str] | None = None,
) -> str:
    """The results table; ``names`` renames metric columns (e.g. "DFR unbiased")."""
    names = names or {}
    with_pub = summary["published_rebias_vanilla_pct"].notna().any()
    header = [*keys, "supervision", "seeds (n)"]
    header += [f"{names.get(m, m)} ({unit(m)})" for m in metrics]
    if with_pub:
        header.append(f"{PUBLISHED_COLUMN} (%)")
    rows = []
    for _, g in summary.groupby(list(keys) + ["label"], dropna=False, sort=False):
        first = g.iloc[0]
        by = {r["metric"]: r for _, r in g.iterrows()}
        row = [_fmt(first[k]) for k in keys] + [
            first.get("supervision", "?"),
            f"{first['seeds']} ({int(first['n'])})",
        ]
        row += [summary_cell(by[m]) if m in by else "–" for m in metrics]
        if with_pub:
            pub = by["unbiased"]["published_rebias_vanilla_pct"] if "unbiased" in by else math.nan
            row.append("–" if math.isnan(pub) else f"{pub:.1f}")
        rows.append(row)
    return _md_table(header, rows)


def _pivot_table(summary: pd.DataFrame, level: str, metric: str = "unbiased") -> str:
    s = summary[summary["metric"] == metric]
    levels = sorted(s[level].dropna().unique(), reverse=True)
    rows = []
    for lab, g in s.groupby("label", sort=False):
        cells = []
        for lv in levels:
            r = g[g[level] == lv]
            cells.append(summary_cell(r.iloc[0]) if len(r) else "–")
        rows.append([lab, *cells])
    pub = s.dropna(subset=["published_rebias_vanilla_pct"])
    if len(pub):
        vals = dict(zip(pub[level], pub["published_rebias_vanilla_pct"]))
        rows.append(
            [
                f"*{PUBLISHED_COLUMN}*",
                *[f"*{vals[lv]:.1f}*" if lv in vals else "–" for lv in levels],
            ]
        )
    return _md_table(["condition", *[f"{level}={lv:g} (%)" for lv in levels]], rows)


def _selection_lines(df: pd.DataFrame) -> list[str]:
    sel = (
        df.drop_duplicates("run")
        .groupby(["selection_rule", "selection_description"], dropna=False)["run"]
        .count()
    )
    return [
        f"- `{rule}`: {desc} ({n} run{'s' if n != 1 else ''})" for (rule, desc), n in sel.items()
    ]


# Paired comparisons the report makes when both methods are in the sweep: every method against
# the cross-entropy baseline, and the seed paper's claim (ConTeX against SupCon).
PAIRED_BASELINE = "ce"
PAIRED_CLAIMS = (("contex", "supcon"),)
# (The gap only where the table shows it: on Biased-MNIST it would repeat the worst group.)
PAIRED_METRICS = ("unbiased", "worst-group", "accuracy − worst-group")
# Columns of a paired_differences row that are results, not condition options.
_PAIRED_OUTPUT = (
    "n", "mean_diff_pp", "ci95_low_pp", "ci95_high_pp", "p_value", "wins",
    "method_mean_pct", "baseline_mean_pct",
)  # fmt: skip


def paired_tables(info: dict[str, Any], metrics: Sequence[str] | None = None) -> pd.DataFrame:
    """Every paired comparison of the report (see :mod:`debias.report.compare`) on ``metrics``
    (default: the :data:`PAIRED_METRICS` the results table shows)."""
    per_run, keys = info["per_run"], info["keys"]
    if "method" not in per_run:
        return pd.DataFrame()
    if metrics is None:
        metrics = [m for m in PAIRED_METRICS if m in info["table_metrics"]]
    frames = []
    for metric in metrics:
        low = metric in POINTS
        frames.append(
            paired_differences(
                per_run, metric=metric, keys=keys, baseline=PAIRED_BASELINE, lower_is_better=low
            )
        )
        for a, b in PAIRED_CLAIMS:
            frames.append(
                paired_differences(
                    per_run, metric=metric, keys=keys, baseline=b, methods=[a], lower_is_better=low
                )
            )
    frames = [f for f in frames if len(f)]
    if not frames:
        return pd.DataFrame()
    out = pd.concat(frames, ignore_index=True)
    # A method's mark from its runs' records (joined when its runs read different kinds).
    marks = per_run.groupby("method")["supervision"].agg(lambda m: "/".join(sorted(set(m))))
    return out.assign(supervision=out["method"].map(marks))


def _fmt_diff(r: pd.Series) -> str:
    if math.isnan(r["ci95_low_pp"]):
        return f"{r['mean_diff_pp']:+.1f} (n={int(r['n'])}, no CI)"
    p = "–" if math.isnan(r["p_value"]) else f"{r['p_value']:.3f}"
    wide = ", n=2: wide" if int(r["n"]) == 2 else ""
    return (
        f"{r['mean_diff_pp']:+.1f} [{r['ci95_low_pp']:+.1f}, {r['ci95_high_pp']:+.1f}]{wide} "
        f"p={p}, {int(r['wins'])}/{int(r['n'])}"
    )


def _paired_columns(paired: pd.DataFrame, level: str | None) -> tuple[list[str], list[tuple]]:
    """The condition options that vary across the paired rows, and their value combinations
    (one table column each; the bias level strongest first)."""
    out = set(_PAIRED_OUTPUT) | {"method", "variant", "baseline", "metric", "supervision"}
    cols = [c for c in paired.columns if c not in out and paired[c].astype(str).nunique() > 1]
    combos = plots.condition_combos(paired, cols)
    if level in cols:
        i = cols.index(level)
        combos.sort(key=lambda t: -float(t[i]))
    return cols, combos


def _paired_markdown(
    paired: pd.DataFrame, level: str | None, title: str = "## Paired comparisons"
) -> list[str]:
    if paired.empty:
        return []
    md = [
        title,
        "",
        "Each cell: mean difference in percentage points over seeds run with the same seed and "
        "the same data, [95% t-interval of the differences], the two-sided paired t-test "
        "p-value, and in how many seeds the method was ahead (for a gap: in how many its gap "
        "was smaller, i.e. the difference negative). p-values are uncorrected for the "
        "number of comparisons; with 3 seeds the test has 2 degrees of freedom, so read the "
        "interval and the seed count first.",
        "",
    ]
    cols, combos = _paired_columns(paired, level)
    sub = "#" * (title.split(" ")[0].count("#") + 1)
    for (baseline, metric), g in paired.groupby(["baseline", "metric"], sort=False):
        what = f"{metric} accuracy" if unit(metric) == "%" else f"the {metric} gap"
        md += [f"{sub} {what}: method − {baseline} (percentage points)", ""]
        rows = []
        for (method, variant), gm in g.groupby(["method", "variant"], sort=False):
            cells = []
            for combo in combos:
                r = plots.rows_matching(gm, cols, combo)
                cells.append(_fmt_diff(r.iloc[0]) if len(r) else "–")
            name = f"{method} ({variant})" if variant else method
            rows.append([name, gm["supervision"].iloc[0], *cells])
        header = ["method", "supervision"] + (
            [", ".join(f"{c}={_fmt(v)}" for c, v in zip(cols, combo)) for combo in combos]
            if cols
            else ["difference"]
        )
        md += [_md_table(header, rows), ""]
    return md


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


def _worst_groups_markdown(groups: pd.DataFrame, level: str | None) -> list[str]:
    if groups is None or groups.empty or "correct" not in groups:
        return []
    note = ""
    if level is not None and level in groups:
        top = groups[level].max()
        groups, note = groups[groups[level] == top], f" at {level} = {top:g}"
    table = worst_groups(groups)
    rows = [
        [
            r.label, f"{r.y_name} / {r.b_name}", "aligned" if r.aligned else "conflicting",
            f"{int(r.correct)}/{int(r.n)}",
            f"{r.accuracy_pct:.1f} [{r.ci95_low_pct:.1f}, {r.ci95_high_pct:.1f}]",
        ]
        for r in table.itertuples()
    ]  # fmt: skip
    return [
        f"### Worst groups on the test split{note}",
        "",
        f"The {WORST_GROUPS} lowest-accuracy (target / bias) groups per condition, correct "
        "predictions pooled over seeds, with the exact 95% (Clopper–Pearson) interval of the "
        "pooled proportion: a group with 0 correct of 98 reads [0.0, 3.7], not a certain 0.",
        "",
        _md_table(
            ["condition", "group (target / bias)", "kind", "correct/n", "accuracy (%)"], rows
        ),
        "",
    ]


# The representation section's leakage metric (debias.report.representation.LEAKAGE).
REP_LEAKAGE = "bias leakage"


# -- the report -------------------------------------------------------------------------------
@dataclass
class SweepData:
    """Everything a report is made of, loaded once from the sweep folder(s)."""

    source: Any
    df: pd.DataFrame  # debias.results.load
    summary: pd.DataFrame  # summarize(df)[0]
    info: dict[str, Any]  # summarize(df)[1]
    groups: pd.DataFrame  # load_groups on the "test" split, with a "label" column
    history: pd.DataFrame | None  # load_history with a "label" column
    not_done: list[results.RunRecord]
    # summarize_representation(df): the runs' representation sections (DFR head, bias leakage)
    representation: tuple[pd.DataFrame, dict[str, Any]] | None = None


def load_sweep_data(sweep_dir: str | Path | Sequence[str | Path]) -> SweepData:
    """Load a sweep's results, summary, group accuracies and histories (labelled by condition)."""
    import warnings

    every = results.find_runs(sweep_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the incomplete runs are listed in the report instead
        df = results.load(sweep_dir)
        groups = results.load_groups(sweep_dir)
    summary, info = summarize(df, groups)
    per_run = info["per_run"]
    label_of = dict(zip(per_run["run_key"], per_run["label"]))

    def key(frame: pd.DataFrame) -> pd.Series:
        return frame["sweep"].astype(str) + "::" + frame["run"].astype(str)

    groups = groups[groups["split"] == "test"].copy()
    groups["label"] = key(groups).map(label_of)
    try:
        history = results.load_history(sweep_dir)
        history = history[key(history).isin(label_of)].copy()
        history["label"] = key(history).map(label_of)
    except FileNotFoundError:
        history = None
    from debias.report.representation import summarize_representation

    return SweepData(
        sweep_dir,
        df,
        summary,
        info,
        groups,
        history,
        [r for r in every if r.status != "done"],
        summarize_representation(df, sweep_dir),
    )


def make_figures(
    data: SweepData | str | Path | Sequence[str | Path], out_dir: str | Path | None = None
) -> dict[str, Figure]:
    """The report's figures: ``accuracy_vs_bias`` (several bias levels) or ``worst_group_gap``
    (one level, e.g. faces), ``group_heatmap`` and ``convergence``.

    ``data`` is a :class:`SweepData` or what :func:`load_sweep_data` takes; with ``out_dir``
    each figure is also saved there as ``<name>.png``.
    """
    if not isinstance(data, SweepData):
        data = load_sweep_data(data)
    level = data.info["level"]
    if level is not None and data.summary[level].nunique() < 2:
        level = None  # one bias level: nothing to draw a line against

    def path(name: str) -> Path | None:
        return None if out_dir is None else Path(out_dir) / f"{name}.png"

    figs = _accuracy_figure(data, level, path)
    if len(data.groups):
        figs["group_heatmap"] = _heatmap_figure(data, level, path("group_heatmap"))
    if data.history is not None and len(data.history):
        figs["convergence"] = _convergence_figure(data, level, path("convergence"))
    if data.representation is not None:
        figs["head_vs_dfr"] = _representation_figure(data, level, path("head_vs_dfr"))
    return figs


def _representation_metric(data: SweepData) -> str:
    """The metric the head-versus-DFR figure shows: unbiased accuracy across bias levels
    (Biased-MNIST), else worst-group accuracy (the faces' measure of a shortcut)."""
    level = data.info["level"]
    return "unbiased" if level is not None and data.summary[level].nunique() > 1 else "worst-group"


def _representation_figure(data: SweepData, level: str | None, path: Path | None) -> Figure:
    rep, _ = data.representation
    marks = data.summary.groupby("method")["supervision"].agg(lambda m: "/".join(sorted(set(m))))
    return plots.plot_head_vs_representation(
        data.summary,
        rep,
        metric=_representation_metric(data),
        panels=[level] if level is not None else _tasks(data),
        marks=marks.to_dict(),
        path=path,
    )


def _tasks(data: SweepData) -> list[str]:
    """Condition keys other than the method that vary in the sweep (e.g. the bias attribute or
    the protocol of a face sweep): what tells one task from another."""
    return [k for k in data.info["keys"] if k != "method" and data.summary[k].nunique() > 1]


def _convergence_figure(data: SweepData, level: str | None, path: Path | None) -> Figure:
    """Convergence with one column per bias level or else per task, lines labelled by what
    still varies inside a column, so a method keeps one colour in every column."""
    history, panel, tasks = data.history, level, _tasks(data)
    if panel is None and tasks:
        panel = tasks[0]
        inside = [k for k in data.info["keys"] if k != panel and history[k].nunique() > 1]
        history = history.assign(label=history.apply(lambda r: _label(r, inside), axis=1))
    return plots.plot_convergence(history, level=panel, path=path)


def _marked(summary: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, str]]:
    """Labels of runs that read bias labels suffixed " [B]" or " [V]", and a line style per
    label (dashed: B, dash-dotted: V)."""
    if "supervision" not in summary:
        return summary, {}
    labelled = summary.drop_duplicates("label")
    marks = dict(zip(labelled["label"], labelled["supervision"]))
    suffix = {
        SUPERVISION_MARK[TRAIN_BIAS_LABELS]: " [B]",
        SUPERVISION_MARK[VAL_BIAS_LABELS]: " [V]",
    }
    marked = summary.assign(label=summary["label"].map(lambda x: x + suffix.get(marks.get(x), "")))
    style = {" [B]": "--", " [V]": "-."}
    return marked, {
        lab: next((v for k, v in style.items() if lab.endswith(k)), "-") for lab in marked["label"]
    }


def _accuracy_figure(data: SweepData, level: str | None, path) -> dict[str, Figure]:
    """Unbiased (and the other table metrics) against the bias level; with one level, the
    average-versus-worst-group dumbbells per method instead."""
    info, metrics = data.info, list(data.info["table_metrics"])
    if level is None and {"accuracy", "worst-group"} <= set(metrics) and "method" in data.summary:
        marks = data.summary.groupby("method")["supervision"].agg(lambda m: set(m))
        fig = plots.plot_worst_group_gap(
            data.summary,
            tasks=_tasks(data),
            bias_label_methods=[m for m, k in marks.items() if "B" in k],
            val_label_methods=[m for m, k in marks.items() if k == {"V"}],
            path=path("worst_group_gap"),
        )
        return {"worst_group_gap": fig}
    summary, styles = _marked(data.summary)
    titles = {
        m: f"{m}{' accuracy' if unit(m) == '%' else ' (pp)'} ({', '.join(info['sources'][m])})"
        for m in metrics
    }
    published = None
    if summary["published_rebias_vanilla_pct"].notna().any() and level == "rho":
        published = dict(REBIAS_VANILLA)
    fig = plots.plot_accuracy_vs_bias(
        summary,
        level=level,
        metrics=metrics,
        titles=titles,
        published=published,
        styles=styles,
        path=path("accuracy_vs_bias"),
    )
    return {"accuracy_vs_bias": fig}


def _heatmap_figure(data: SweepData, level: str | None, path: Path | None) -> Figure:
    """Test accuracy per (target, bias) group at the strongest bias level."""
    groups, note = data.groups, ""
    if level is not None:
        top = groups[level].max()
        groups = groups[groups[level] == top]
        note = f" at the strongest bias, {level} = {top:g}"
    # the datasets' own axis names (digit / background colour) when they agree
    axes = {getattr(find_spec(str(d)), "group_axes", None) for d in set(groups["dataset"])}
    named_axes = axes.pop() if len(axes) == 1 else None

    def named(option: str, fallback: str) -> str:
        values = groups[option].dropna().astype(str).unique() if option in groups else []
        return " / ".join(values) if len(values) else fallback

    data.info["heatmap_note"] = note
    return plots.plot_group_heatmap(
        groups,
        title=f"test-split accuracy per group (%){note}",
        ylabel=named_axes[0] if named_axes else f"target: {named('target', 'y')}",
        xlabel=named_axes[1] if named_axes else f"bias: {named('bias', 'b')}",
        path=path,
    )


def make_report(
    sweep_dir: str | Path | Sequence[str | Path],
    out_dir: str | Path,
    *,
    notes: str | Path | None = None,
) -> dict[str, Path]:
    """Write ``report.md``, ``summary.csv``, ``paired.csv`` and the figures for a sweep; returns
    their paths.

    Keys of the returned dict: ``report``, ``summary``, ``paired``, ``accuracy_vs_bias``,
    ``group_heatmap`` and ``convergence`` (the last two only when group records / histories
    exist). ``notes``: a Markdown file (or text) appended after the comparisons, for the
    reader-facing conclusions a person writes from the numbers.
    """
    out = Path(out_dir)
    _check_report_folder(out)
    data = load_sweep_data(sweep_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {"summary": out / "summary.csv"}
    data.summary[[c for c in data.summary.columns if c != "label"]].to_csv(
        paths["summary"], index=False
    )
    paired = paired_tables(data.info)
    if len(paired):
        paths["paired"] = out / "paired.csv"
        paired.to_csv(paths["paired"], index=False)
    if data.representation is not None:
        from debias.report.representation import representation_paired

        rep, rep_info = data.representation
        paths["representation"] = out / "representation.csv"
        rep[[c for c in rep.columns if c != "label"]].to_csv(paths["representation"], index=False)
        rep_paired = representation_paired(rep_info)
        if len(rep_paired):
            paths["representation_paired"] = out / "representation_paired.csv"
            rep_paired.to_csv(paths["representation_paired"], index=False)
    for name in make_figures(data, out):
        paths[name] = out / f"{name}.png"
    text = ""
    if notes is not None:
        text = Path(notes).read_text() if Path(str(notes)).is_file() else str(notes)
    paths["report"] = out / "report.md"
    paths["report"].write_text(_markdown(data, paths, out, text))
    return paths


def _check_report_folder(out: Path) -> None:
    """A report never goes into a training run's folder: its files would sit beside the
    checkpoint, outlive a ``--force`` retrain that replaces the run, and describe another model."""
    check_out_path(out, "report folder")
    if is_run_folder(out):
        raise RunFolderError(
            f"report folder {out} is a training run's folder; report.md, summary.csv and the "
            "figures would mix with the run's files and outlive a --force retrain. Use a folder "
            f"of its own, e.g. {out / 'report'} (the default for `debias report {out}`)"
        )


def _markdown(data: SweepData, paths: dict[str, Path], out: Path, notes: str = "") -> str:
    """The report page, section by section."""
    info, level = data.info, data.info["level"]
    md = _header_markdown(data)
    md += _selection_markdown(data.df)
    md += _results_markdown(data)
    md += _worst_groups_markdown(data.groups, level)
    md += _paired_markdown(paired_tables(info), level)
    md += _representation_markdown(data)
    if notes:
        md += [notes.strip(), ""]
    md += _figures_markdown(paths, out, info.get("heatmap_note", ""))
    md += _not_done_markdown(data.not_done)
    return "\n".join(md)


def _header_markdown(data: SweepData) -> list[str]:
    import debias

    df, not_done = data.df, data.not_done
    names = sorted(df["sweep"].unique())
    n_done = (
        df["run"].nunique() if len(names) == 1 else df[["sweep", "run"]].drop_duplicates().shape[0]
    )
    return [
        f"# Sweep report: {', '.join(names)}",
        "",
        f"Source: `{data.source}`. {n_done} finished run(s)"
        + (f", {len(not_done)} not finished (listed at the end)" if not_done else "")
        + f". Generated {_generated_at()} by debias {debias.__version__}.",
        "",
    ]


def _generated_at() -> str:
    """Now, or the time ``SOURCE_DATE_EPOCH`` (seconds, UTC) fixes: the reproducible-builds
    convention, so that a report regenerated from the same runs is byte-identical."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    if not epoch:
        return _dt.datetime.now().isoformat(timespec="seconds")
    try:
        at = _dt.datetime.fromtimestamp(int(epoch), _dt.timezone.utc)
    except (ValueError, OverflowError, OSError):
        raise ValueError(
            f"SOURCE_DATE_EPOCH={epoch!r} is not a time; expected whole seconds since 1970 (UTC)"
        ) from None
    return at.replace(tzinfo=None).isoformat(timespec="seconds")


def _selection_markdown(df: pd.DataFrame) -> list[str]:
    md = ["## How the numbers were selected", ""]
    md += [
        "Each number is taken at the epoch chosen by the run's own selection rule "
        "(recorded in its `metrics.json`):"
    ]
    md += _selection_lines(df)
    md += [
        "",
        "Test data is never used for selection: rules are `last` (the final epoch) or "
        "`val/<metric>` on the validation split, which is held out of the training images "
        "and disjoint from every test split (PROTOCOLS §1).",
        "",
        "Each cell is the mean over seeds ± the half-width of the 95% Student t-interval, "
        "t(0.975, n−1)·s/√n with s the sample standard deviation (n−1 denominator), written "
        "[low, high] where it is clipped to [0, 100]. With two seeds t(0.975, 1) = 12.7, so the "
        "interval is marked `n=2, wide` (and not drawn in the figures). With a single seed the "
        "interval is a 95% stratified bootstrap over the run's test images (`n=1, bootstrap "
        "over test images`): it shows how much the test sample moves the number, not how much "
        "another seed would; for worst-group accuracy, a minimum over groups, it is biased low "
        "and can end below the observed value. Accuracies in % (`metrics.json` holds fractions).",
        "",
    ]
    return md


def _results_markdown(data: SweepData) -> list[str]:
    df, summary, info = data.df, data.summary, data.info
    keys, level = info["keys"], info["level"]
    metrics = info["table_metrics"]
    md = ["## Results", "", _results_table(summary, keys, metrics), ""]
    md += [
        "Metric sources (split/metric in `metrics.json`): "
        + "; ".join(
            f"**{m}** = {', '.join(f'`{s}`' for s in info['sources'][m]) or '–'}" for m in metrics
        )
        + "."
        + (UNITS_NOTE if any(unit(m) == "pp" for m in metrics) else ""),
        "",
    ]
    if summary["published_rebias_vanilla_pct"].notna().any():
        ce = df[(df["method"] == "ce")].drop_duplicates("run")
        models = ", ".join(sorted(ce["model"].astype(str).unique()))
        epochs = ", ".join(sorted(ce["epochs"].astype(str).unique()))
        md += [
            f"*{PUBLISHED_COLUMN}*: published numbers, not run here: ReBias (Bahng et al., "
            "ICML 2020) Table 1, Vanilla = cross-entropy, SimpleConvNet, 80 epochs, mean of 3 "
            f"runs, unbiased test accuracy. The CE runs of this sweep use model {models}, "
            f"epochs {epochs}: the comparison is like-for-like only when these match.",
            "",
        ]
    md += [SUPERVISION_NOTE, ""]
    if level is not None and summary[level].nunique() > 1:
        md += [f"### Unbiased accuracy by {level}", "", _pivot_table(summary, level), ""]
    return md


REPRESENTATION_NOTE = (
    "Every run ends by measuring its frozen encoder (`metrics.json` → `representation`, "
    "`debias evaluate RUN` adds it to an older run). **DFR head**: the official deep feature "
    "reweighting protocol (Kirichenko, Izmailov & Wilson, ICLR 2023; "
    "`dfr_evaluate_spurious.py`): the features standardised, an L1 logistic regression with C "
    "chosen by worst-group accuracy on half of the validation split, then refitted on "
    "group-balanced subsamples of the whole validation split (refits averaged), scored on the "
    "test splits with the run's own metrics. It reads the validation split's bias labels and "
    "nothing of the test splits, so every DFR number has read at least **V**; the supervision "
    "column still says what the *method* read to train the encoder. **Bias leakage**: "
    "cross-validated balanced accuracy of a linear probe predicting the bias attribute from the "
    "same features, on the test split cut to equal (target, bias) group sizes; lower = less of "
    "the bias is linearly readable."
)


def _representation_markdown(data: SweepData) -> list[str]:
    from debias.report.representation import representation_paired, table_metrics

    if data.representation is None:
        return []
    rep, info = data.representation
    level = info["level"]
    chance = ", ".join(f"{d}: {c:.0f}%" for d, c in info["chance"].items())
    md = ["## Representation: what a fair head reads from the encoder", "", REPRESENTATION_NOTE, ""]
    md += [f"Bias leakage chance level (1 / number of bias values): {chance}.", ""]
    if info["missing"]:
        md += [
            f"{len(info['missing'])} finished run(s) have no representation section and are "
            "left out here: " + ", ".join(f"`{r}`" for r in info["missing"][:8]) + ".",
            "",
        ]
    metrics = table_metrics(info)
    rep = rep.assign(published_rebias_vanilla_pct=math.nan)  # published numbers: the head's only
    names = {m: f"DFR {m}" for m in metrics if m != REP_LEAKAGE}
    md += [_results_table(rep, info["keys"], metrics, names), ""]
    if level is not None and rep[level].nunique() > 1:
        md += [f"### DFR unbiased accuracy by {level}", "", _pivot_table(rep, level), ""]
    title = "### Paired comparisons on the representation (DFR head)"
    return md + _paired_markdown(representation_paired(info), level, title)


def _figures_markdown(paths: dict[str, Path], out: Path, heat_note: str) -> list[str]:
    md = ["## Figures", ""]
    captions = {
        "worst_group_gap": "Average (circle) and worst-group (square) test accuracy per method "
        "and task, 95% intervals over seeds; the line between them is the gap a shortcut opens "
        "(orange [B]: the method reads training bias labels)",
        "accuracy_vs_bias": "Accuracy against the bias level per condition (band: 95% "
        "t-interval over ≥ 3 seeds; bars without band: one-seed bootstrap; no interval drawn "
        "for 2 seeds; dashed lines and [B]: methods that read training bias labels)",
        "group_heatmap": f"Test accuracy per (target, bias) group{heat_note}, mean over seeds",
        "convergence": "Training loss per epoch (a contrastive pretraining loss and the "
        "train / linear stages' loss on separate axes) and validation accuracy (probe during "
        "pretraining)",
        "head_vs_dfr": "The run's own head (circle) against the DFR head refitted on its frozen "
        "features with group-balanced validation data (square), per method: what the encoder "
        "holds beyond what its head reads (the DFR head reads validation bias labels)",
    }
    for key, cap in captions.items():
        if key in paths:
            rel = Path(paths[key]).relative_to(out)
            md += [f"![{cap}]({rel.as_posix()})", "", f"*{cap}.*", ""]
    return md


def _not_done_markdown(not_done: list[results.RunRecord]) -> list[str]:
    if not not_done:
        return []
    rows = [[r.run, r.status, r.error or "–"] for r in not_done]
    return ["## Runs not included", "", _md_table(["run", "status", "error"], rows), ""]
