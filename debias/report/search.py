"""The report of a random-search sweep (:mod:`debias.sweep.search`): every method under every
selection rule, side by side (``debias report`` on a search sweep folder).

For each (grid point, method) whose draws have all finished and each rule of
:mod:`debias.sweep.selection`:

* ``val_accuracy`` and ``val_worst_group``: the draw the rule picks, its drawn values, and its
  re-runs (``rerun/``, fresh seeds) summarised as the sweep report does
  (:func:`debias.report.summary.summarize`: mean over seeds and the 95% Student t-interval
  ``mean ± t_{0.975, n−1}·s/√n``), with how far the defaults (draw 0) are from the picked draw
  in phase 1 (same seed): ``Δ = v(draw 0) − v(picked)`` in percentage points, on the rule's own
  validation metric and on the test metric the ranking uses;
* paired comparisons of the re-runs under each rerun rule, on the same seeds: every method
  against CE and ConTeX against SupCon (:func:`debias.report.compare.paired_tables`), each
  method at the values its own rule picked;
* ``test_oracle``: the draw with the best *test* worst-group accuracy and that draw's own
  numbers (one seed, not re-run). It is an **oracle (upper bound)**: it reads the test split,
  so it is printed only in its own labelled table and figure panel, never as a method's result.

A row's supervision mark is its runs' (``—``, ``V``, ``B``; :mod:`debias.report.summary`), raised
to ``V`` under ``val_worst_group``, which reads the validation bias labels to choose.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from debias import results
from debias._markdown import markdown_table
from debias.methods.base import run_supervision, supervision_kind
from debias.report import plots, vocabulary
from debias.report.compare import paired_tables
from debias.report.markdown import paired_markdown, summary_cell
from debias.report.report import _check_report_folder
from debias.report.summary import summarize, supervision_mark, table_metrics
from debias.sweep.selection import (
    ORACLE_LABEL,
    RERUN_RULES,
    RULES,
    complete,
    group_keys,
    search_frame,
    select_all,
)
from debias.train.runfolder import REPORT_FILES, check_out_path, claim_folder

__all__ = ["SearchData", "is_search_sweep", "load_search", "make_search_report"]

# The test metrics of the ranking figure and of the defaults' gap: the first one present.
RANK_METRICS = ("unbiased", "worst-group")


def is_search_sweep(path: str | Path) -> bool:
    """Whether ``path`` is a sweep folder whose ``sweep.json`` has a ``search`` block."""
    try:
        manifest = json.loads((Path(path) / "sweep.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and bool(manifest.get("spec", {}).get("search"))


@dataclass
class SearchData:
    """A search sweep loaded once: its runs, the rules' choices and the re-run summaries."""

    source: Path
    manifest: dict[str, Any]
    frame: pd.DataFrame  # debias.sweep.selection.search_frame
    keys: list[str]  # the grid keys and "method"
    chosen: pd.DataFrame  # select_all under every rule, on the complete groups
    summary: pd.DataFrame  # summarize() of each rerun rule's re-runs, with a "rule" column
    paired: pd.DataFrame  # paired_tables() of each rerun rule's re-runs, with a "rule" column
    metrics: tuple[str, ...]  # the table metrics (debias.report.summary.table_metrics)
    waiting: list[str]  # groups whose draws have not all finished


def _metric_column(frame: pd.DataFrame, label: str) -> str | None:
    """The ``split/metric`` column of a report metric label (its first source present)."""
    for split, key in vocabulary.metric(label).sources:
        if f"{split}/{key}" in frame and frame[f"{split}/{key}"].notna().any():
            return f"{split}/{key}"
    return None


def load_search(sweep_dir: str | Path) -> SearchData:
    """Read a search sweep folder (see the module docstring)."""
    root = Path(sweep_dir)
    manifest = json.loads((root / "sweep.json").read_text())
    frame = search_frame(root)
    if frame.empty:
        raise ValueError(f"{root}: a search sweep without draw runs in its sweep.json")
    keys = group_keys(frame, manifest["spec"].get("grid", {}))
    ready = complete(frame, keys)
    draws = frame[frame["phase"] == "draw"]
    waiting = sorted(set(draws["run"].str.rsplit("/", n=1).str[0]) - set(
        ready["run"].str.rsplit("/", n=1).str[0]))  # fmt: skip
    chosen = select_all(ready, keys) if len(ready) else pd.DataFrame()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # unfinished runs are listed as waiting instead
        df = results.load(root) if frame["done"].any() else pd.DataFrame()
    summary, paired = _rerun_summary(df, frame, chosen, keys)
    metrics = table_metrics(df["dataset"].dropna().unique()) if len(df) else ()
    return SearchData(root, manifest, frame, keys, chosen, summary, paired, metrics, waiting)


def _reruns_of(frame: pd.DataFrame, row: pd.Series, keys: Sequence[str]) -> pd.DataFrame:
    """The finished re-runs of the draw a chosen ``row`` names."""
    mine = frame[(frame["phase"] == "rerun") & frame["done"] & (frame["draw"] == row["draw"])]
    return plots.rows_matching(mine, keys, [row[k] for k in keys])


def _rerun_summary(
    df: pd.DataFrame, frame: pd.DataFrame, chosen: pd.DataFrame, keys: Sequence[str]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """:func:`summarize` and :func:`paired_tables` of the re-runs of each rerun rule's picks,
    one block per rule (a ``rule`` column). The re-runs of every method share their seeds, so
    a method and CE under one rule are paired seed by seed, each at its own picked values."""
    blocks, paired = [], []
    for rule in RERUN_RULES:
        if chosen.empty:
            break
        picks = chosen[chosen["rule"] == rule]
        runs = [r for _, p in picks.iterrows() for r in _reruns_of(frame, p, keys)["run"]]
        if not runs:
            continue
        mine = df[df["run"].isin(runs)]
        summary, info = summarize(mine)
        blocks.append(summary.assign(rule=rule))
        pairs = paired_tables(info)
        if len(pairs):  # the mark of what the method read, raised by what the rule read
            kinds = mine.groupby("method")["supervision"].agg(lambda k: sorted(set(k)))
            marks = {m: _mark(k, rule) for m, k in kinds.items()}
            pairs = pairs.assign(supervision=pairs["method"].map(marks), rule=rule)
            paired.append(_in_method_order(pairs, list(dict.fromkeys(chosen["method"]))))
    return _stacked(blocks), _stacked(paired)


def _stacked(frames: list[pd.DataFrame]) -> pd.DataFrame:
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _in_method_order(pairs: pd.DataFrame, methods: Sequence[str]) -> pd.DataFrame:
    """``pairs`` with each (baseline, metric) block's rows in the sweep's method order (the
    rules' tables list methods that way; a block's own order follows the runs' folders)."""
    block = pairs.groupby(["baseline", "metric"], sort=False).ngroup()
    rank = pairs["method"].map({m: i for i, m in enumerate(methods)}).fillna(len(methods))
    order = pd.DataFrame({"block": block, "rank": rank}).sort_values(
        ["block", "rank"], kind="stable"
    )
    return pairs.loc[order.index].reset_index(drop=True)


# -- tables -----------------------------------------------------------------------------------
def _values_text(row: pd.Series) -> str:
    """``draw 3: lr=0.0004626, q=0.18`` (``draw 0: defaults``)."""
    values = json.loads(row["values"])
    if not values:
        return f"draw {int(row['draw'])}: defaults"
    shown = ", ".join(f"{k.removeprefix('method_options.')}={v:g}" for k, v in values.items())
    return f"draw {int(row['draw'])}: {shown}"


def _mark(kinds: Sequence[Any], rule: str) -> str:
    """The supervision mark of runs of ``kinds`` reported under ``rule``."""
    marks = set()
    for kind in kinds:
        try:
            marks.add(supervision_mark(run_supervision(supervision_kind(kind), RULES[rule].select)))
        except ValueError:
            marks.add("?")
    return "/".join(sorted(marks)) or "?"


def _gap(frame: pd.DataFrame, pick: pd.Series, keys: Sequence[str], column: str | None) -> str:
    """``v(draw 0) − v(picked draw)`` in pp on ``column`` (phase 1, one seed each)."""
    if column is None or column not in frame:
        return "–"
    group = plots.rows_matching(frame[frame["phase"] == "draw"], keys, [pick[k] for k in keys])
    default = group[group["draw"] == 0][column]
    picked = group[group["draw"] == pick["draw"]][column]
    if default.empty or picked.empty or default.isna().all() or picked.isna().all():
        return "–"
    return f"{100 * (float(default.iloc[0]) - float(picked.iloc[0])):+.1f}"


def _picked_row(data: SearchData, pick: pd.Series) -> pd.Series:
    draws = data.frame[data.frame["phase"] == "draw"]
    mine = plots.rows_matching(draws, data.keys, [pick[k] for k in data.keys])
    return mine[mine["draw"] == pick["draw"]].iloc[0]


def _by_group(data: SearchData, rules: Sequence[str]) -> pd.DataFrame:
    """The picks of ``rules``, a group's rules side by side (groups in the sweep's order)."""
    if data.chosen.empty:
        return data.chosen
    picks = data.chosen[data.chosen["rule"].isin(rules)]
    names = [tuple(t) for t in picks[data.keys].astype(str).itertuples(index=False, name=None)]
    first = {g: i for i, g in reversed(list(enumerate(names)))}
    return picks.assign(_g=[first[g] for g in names]).sort_values("_g", kind="stable")


def _run_value(run: pd.Series, frame: pd.DataFrame, label: str) -> float:
    """A run's value (fraction) of a report metric label, a derived one computed."""
    derived = vocabulary.metric(label).derived
    if derived:
        a, b = derived
        return _run_value(run, frame, a) - _run_value(run, frame, b)
    col = _metric_column(frame, label)
    v = run.get(col, math.nan) if col else math.nan
    return math.nan if pd.isna(v) else float(v)


def selection_table(data: SearchData) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the rerun rules' table: one row per (grid point, method, rule)."""
    rank = next((_metric_column(data.frame, m) for m in RANK_METRICS), None)
    rank_label = next((m for m in RANK_METRICS if _metric_column(data.frame, m)), "test")
    header = [*data.keys, "rule", "supervision", "selected", "re-run seeds (n)"]
    header += [f"{m} (%)" for m in data.metrics]
    header += ["defaults − selected, rule's val metric (pp)", f"… {rank_label} (pp, 1 seed)"]
    rows = []
    for _, pick in _by_group(data, RERUN_RULES).iterrows():
        reruns = _reruns_of(data.frame, pick, data.keys)
        cells = _summary_cells(data, pick)
        seeds = ",".join(str(int(s)) for s in sorted(reruns["seed"].dropna()))
        rows.append(
            [plots._fmt_level(pick[k]) for k in data.keys]
            + [pick["rule"], _mark(reruns["supervision"].dropna().tolist(), pick["rule"])]
            + [_values_text(_picked_row(data, pick)), f"{seeds or '–'} ({len(reruns)})"]
            + [cells.get(m, "–") for m in data.metrics]
            + [
                _gap(data.frame, pick, data.keys, RULES[pick["rule"]].column),
                _gap(data.frame, pick, data.keys, rank),
            ]
        )
    return header, rows


def _summary_cells(data: SearchData, pick: pd.Series) -> dict[str, str]:
    """``{metric: "65.0 ± 3.5"}`` of a pick's re-runs (from the rule's summary block)."""
    s = data.summary
    if s.empty:
        return {}
    s = s[s["rule"] == pick["rule"]]
    cols = [k for k in data.keys if k in s.columns]
    s = plots.rows_matching(s, cols, [pick[k] for k in cols])
    return {r["metric"]: summary_cell(r) for _, r in s.iterrows()}


def oracle_table(data: SearchData) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the oracle's table: every row's rule cell carries its label."""
    header = [*data.keys, "rule", "selected", *(f"{m} (%, 1 seed)" for m in data.metrics)]
    rows = []
    for _, pick in _by_group(data, ["test_oracle"]).iterrows():
        run = _picked_row(data, pick)
        values = [100 * _run_value(run, data.frame, m) for m in data.metrics]
        cells = ["–" if math.isnan(v) else f"{v:.1f}" for v in values]
        rows.append(
            [plots._fmt_level(pick[k]) for k in data.keys]
            + [RULES["test_oracle"].label, _values_text(run), *cells]
        )
    return header, rows


# -- figure -----------------------------------------------------------------------------------
def _ranking_points(data: SearchData, rule: str, metric: str) -> pd.DataFrame:
    """``label, mean, low, high`` per (grid point, method) under ``rule`` (% ; the oracle: its
    draw's one-seed value, no interval), best first."""
    rows = []
    if RULES[rule].oracle:
        for _, pick in _by_group(data, [rule]).iterrows():
            v = 100 * _run_value(_picked_row(data, pick), data.frame, metric)
            rows.append({"label": _group_label(data, pick), "mean": v, "low": v, "high": v})
    elif not data.summary.empty:
        s = data.summary[(data.summary["rule"] == rule) & (data.summary["metric"] == metric)]
        for _, r in s.iterrows():
            low, high = r["ci95_low_pct"], r["ci95_high_pct"]
            if int(r["n"]) < 3:  # as the sweep report: no interval drawn for 1 or 2 seeds
                low = high = r["mean_pct"]
            rows.append(
                {"label": _group_label(data, r), "mean": r["mean_pct"], "low": low, "high": high}
            )
    out = pd.DataFrame(rows, columns=["label", "mean", "low", "high"])
    return out.sort_values("mean", ascending=False, kind="stable").reset_index(drop=True)


def _group_label(data: SearchData, row: pd.Series) -> str:
    rest = [f"{k}={plots._fmt_level(row[k])}" for k in data.keys if k != "method" and k in row]
    return str(row["method"]) + (f" ({', '.join(rest)})" if len(rest) and _varies(data) else "")


def _varies(data: SearchData) -> bool:
    grid = [k for k in data.keys if k != "method"]
    return any(data.frame[k].astype(str).nunique() > 1 for k in grid)


def plot_ranking(data: SearchData, path: str | Path | None = None) -> Figure:
    """Methods ranked under each rule: one panel per (test metric, rule), best at the top; bars
    are the 95% t-interval over the re-run seeds (3 or more). The oracle's panels say that
    they are an upper bound read off the test split."""
    metrics = [m for m in RANK_METRICS if m in data.metrics] or list(data.metrics[:1])
    rules = list(RULES)
    n = max(1, data.frame.groupby(data.keys, dropna=False).ngroups)
    fig = Figure(figsize=(4.0 * len(rules), (0.32 * n + 1.3) * len(metrics)))
    axes = np.atleast_2d(fig.subplots(len(metrics), len(rules), squeeze=False))
    for i, metric in enumerate(metrics):
        for j, rule in enumerate(rules):
            ax, d = axes[i, j], _ranking_points(data, rule, metric)
            ys = np.arange(len(d))
            colour = "tab:grey" if RULES[rule].oracle else "tab:blue"
            ax.errorbar(d["mean"], ys, xerr=plots._bar_lengths(d["mean"], d["low"], d["high"]),
                        fmt="o", color=colour, ecolor="black", capsize=3)  # fmt: skip
            ax.set_yticks(ys, d["label"])
            ax.invert_yaxis()
            ax.set_xlim(0, 100)
            ax.grid(True, axis="x", alpha=0.3)
            ax.set_xlabel(f"test {metric} accuracy (%)")
            title = RULES[rule].label + (", 1 seed" if RULES[rule].oracle else ", re-run seeds")
            ax.set_title(title, fontsize=9)
    title = "methods ranked under each selection rule (bars: 95% t-interval over re-run seeds)"
    return plots._finish(fig, title, path, rect=(0, 0, 1, 0.96))


# -- the report -------------------------------------------------------------------------------
def _wall_time(root: Path) -> list[str]:
    """Sum of run times and first start to last finish, draws and re-runs apart, from
    ``sweep_status.json``."""
    try:
        rows = json.loads((root / "sweep_status.json").read_text())["runs"]
    except (OSError, ValueError, KeyError):
        return []
    lines = []
    for phase, mine in (
        ("draws", [r for r in rows if not str(r["run"]).startswith("rerun/")]),
        ("re-runs", [r for r in rows if str(r["run"]).startswith("rerun/")]),
    ):
        secs = [float(r["seconds"]) for r in mine if r.get("seconds") not in ("", None)]
        starts = [r["started"] for r in mine if r.get("started")]
        ends = [r["finished"] for r in mine if r.get("finished")]
        if not secs:
            continue
        span = ""
        if starts and ends:
            t = pd.Timestamp(max(ends)) - pd.Timestamp(min(starts))
            span = f", first start to last finish {_duration(t.total_seconds())}"
        lines.append(f"- {phase}: {len(secs)} run(s), {_duration(sum(secs))} of run time{span}")
    return lines


def _duration(seconds: float) -> str:
    """``"95 s"``, ``"51 min"`` or ``"1 h 29 min"``."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60} min"


def search_markdown(data: SearchData, figure: str | None = None) -> str:
    """The report page of a search sweep (see the module docstring)."""
    spec = data.manifest["spec"]
    search = spec["search"]
    md = [
        f"# Search report: {data.manifest.get('name', data.source.name)}",
        "",
        f"Source: `{data.source}`. Random search: {search['draws']} draws per method (draw 0 "
        f"at the defaults) with search seed {search['seed']}, drawn options "
        f"{search['options'] or 'none'}"
        + (", and each method's own hyper-parameters with a space" if search["method_options"]
           else "")
        + f"; the picks of {', '.join(search['rerun']['rules'])} re-run with seeds "
        f"{search['rerun']['seeds']}.",
        "",
        "## Selection rules",
        "",
        "The epoch inside each run is its own rule's (`select` of the run); across the draws:",
        "",
    ]  # fmt: skip
    md += [
        f"- `{r.label}`: {r.description} (`{r.column}`); reads {r.reads}." for r in RULES.values()
    ]
    md += ["", "## Results under each rule", "", markdown_table(*selection_table(data)), ""]
    md += [
        "Each metric cell: mean over the re-run seeds ± the 95% t-interval half-width "
        "(`debias report`'s convention: [low, high] when clipped, `n=2, wide`, `n=1, no CI`). "
        "*defaults − selected*: phase-1 numbers of draw 0 minus those of the selected draw "
        "(same seed), in percentage points; 0 when the defaults were selected.",
        "",
    ]
    for rule in RERUN_RULES:
        mine = data.paired[data.paired["rule"] == rule] if len(data.paired) else data.paired
        if len(mine):
            title = f"## Paired comparisons of the re-runs under `{rule}`"
            md += paired_markdown(mine.drop(columns="rule"), None, title)
            md += [""]
    md += [
        f"## `test_oracle` — {ORACLE_LABEL}, not a method's result",
        "",
        "The draw with the best test worst-group accuracy, with its own (phase-1, one-seed) "
        "numbers: it reads the test split to choose, so it only bounds what the rules above "
        "could reach with this search.",
        "",
        markdown_table(*oracle_table(data)),
        "",
    ]
    wall = _wall_time(data.source)
    if wall:
        md += ["## Wall time", "", *wall, ""]
    if figure:
        cap = f"Methods ranked under each rule (the test_oracle panels: {ORACLE_LABEL})"
        md += ["## Figure", "", f"![{cap}]({figure})", "", f"*{cap}.*", ""]
    if data.waiting:
        md += ["## Not selected yet", "", "Draws not all finished: " + ", ".join(data.waiting), ""]
    return "\n".join(md)


def _write_runs(sweep_dir: str | Path, out: Path) -> Path:
    """``runs.csv``, one row per run of the search (draws and re-runs), as a grid report writes
    it (:mod:`debias.report.tables`): what a reader recomputes the selection and tests from."""
    from debias.report.representation import load_representation_results
    from debias.report.tables import RUNS_CSV, runs_table

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the runs not finished are in runs.csv's status
        df = results.load(sweep_dir)
    rep = load_representation_results(df, sweep_dir) if len(df) else None
    runs_table(df, rep, sweep_dir).to_csv(out / RUNS_CSV, index=False)
    return out / RUNS_CSV


def make_search_report(sweep_dir: str | Path, out_dir: str | Path) -> dict[str, Path]:
    """Write ``report.md``, ``search_selection.csv`` (every rule's pick), ``search_summary.csv``
    (the re-run summaries, with their rule), ``search_paired.csv``, ``runs.csv`` (one row per
    run) and ``search_ranking.png``; returns their paths."""
    out = check_out_path(out_dir, "report folder")  # before Path(): Path("") is "."
    _check_report_folder(out)
    data = load_search(sweep_dir)
    claim_folder(out, names=REPORT_FILES, kind="report", what="report folder")
    paths = {
        "selection": out / "search_selection.csv",
        "summary": out / "search_summary.csv",
        "paired": out / "search_paired.csv",
    }
    chosen = data.chosen
    if len(chosen):
        chosen = chosen.assign(label=chosen["rule"].map(lambda r: RULES[r].label))
    chosen.to_csv(paths["selection"], index=False)
    data.summary.to_csv(paths["summary"], index=False)
    data.paired.to_csv(paths["paired"], index=False)
    paths["runs"] = _write_runs(sweep_dir, out)
    figure = None
    if len(data.chosen) and data.metrics:
        paths["ranking"] = out / "search_ranking.png"
        plot_ranking(data, paths["ranking"])
        figure = paths["ranking"].name
    paths["report"] = out / "report.md"
    paths["report"].write_text(search_markdown(data, figure))
    return paths
