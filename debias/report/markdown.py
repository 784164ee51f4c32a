"""The report page: :func:`render_markdown` writes ``report.md`` from a loaded sweep
(:class:`~debias.report.sweep_data.SweepData`), section by section, and :func:`format_ci` /
:func:`summary_cell` write a summary cell (also for the README's table, ``docs/build_results``).

Units: % for rates, percentage points (pp) for differences of rates
(:mod:`debias.report.vocabulary`).
"""

from __future__ import annotations

import datetime as _dt
import math
import os
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from debias import results
from debias._markdown import markdown_table as _md_table
from debias.report import plots
from debias.report.compare import PAIRED_OUTPUT, PROTOCOL
from debias.report.figures import heatmap_note
from debias.report.representation import RepresentationSummary
from debias.report.representation import table_metrics as representation_metrics
from debias.report.summary import WORST_GROUPS, _clip, _fmt, n_values, worst_groups
from debias.report.sweep_data import SweepData
from debias.report.vocabulary import LEAKAGE, unit

__all__ = ["PUBLISHED_COLUMN", "format_ci", "render_markdown", "summary_cell"]

# The protocol options besides the recipe's name (which stays a column: it is the condition).
PROTOCOL_DETAILS = tuple(c for c in PROTOCOL if c != "recipe")

# The Biased-MNIST spec's published CE reference (REBIAS_VANILLA, PROTOCOLS §1), as a column.
PUBLISHED_COLUMN = "ReBias Vanilla unbiased, published"


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


UNITS_NOTE = (
    " Units: % for accuracies; pp (percentage points) for differences of rates. Equalized odds"
    " across bias groups (PROTOCOLS §5; binary target): the mean gap is FSCL's"
    " (|ΔTPR| + |ΔTNR|)/2, the max gap is fairlearn's `equalized_odds_difference`,"
    " max(|ΔTPR|, |ΔFPR|)."
)


SUPERVISION_NOTE = (
    "*supervision*, what each run read besides the images and the training targets: **—** = no "
    "bias labels of any split; **V** = bias labels of the validation split only, to fit part of "
    "the model (DFR refits its last layer there) or to select the reported epoch (a run "
    "selected on a validation metric that needs groups, such as worst-group accuracy); **B** = "
    "the bias labels of the training split. Test-split bias labels are only used to compute the "
    "metrics. Compare a B or V run with a — run knowing that it was given more."
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


def _fmt_diff(r: pd.Series) -> str:
    if math.isnan(r["ci95_low_pp"]):
        return f"{r['mean_diff_pp']:+.1f} (n={int(r['n'])}, no CI)"
    p = "–" if math.isnan(r["p_value"]) else f"{r['p_value']:.3f}"
    holm = r.get("p_holm", math.nan)
    p += "" if math.isnan(holm) else f" (Holm {holm:.3f})"
    wide = ", n=2: wide" if int(r["n"]) == 2 else ""
    return (
        f"{r['mean_diff_pp']:+.1f} [{r['ci95_low_pp']:+.1f}, {r['ci95_high_pp']:+.1f}]{wide} "
        f"p={p}, {int(r['wins'])}/{int(r['n'])}"
    )


def _family_line(paired: pd.DataFrame) -> str:
    """What the Holm adjustment of a paired table set is over (:mod:`debias.report.compare`)."""
    tests = int(paired["p_value"].notna().sum())
    if "p_holm" not in paired:
        return "p-values are uncorrected for the number of comparisons."
    return (
        f"Multiplicity: the family is the {tests} paired test{'s' if tests != 1 else ''} of the "
        "tables of this section "
        "(every method against the baseline and each claim pair, on every metric and condition "
        "below). Beside each raw p-value, in brackets, its Holm-adjusted value over that family "
        "(Holm 1979: with the m raw p-values sorted ascending, p̃(i) = min(1, max over j ≤ i of "
        "(m − j + 1)·p(j))); a difference is claimed at the 5% level only where the Holm value "
        "is below 0.05, which bounds the chance of any false claim in the family at 5%."
    )


def _paired_columns(paired: pd.DataFrame, level: str | None) -> tuple[list[str], list[tuple]]:
    """The condition options that vary across the paired rows, and their value combinations
    (one table column each; the bias level strongest first)."""
    out = set(PAIRED_OUTPUT) | {"method", "variant", "baseline", "metric", "supervision"}
    # A claim pair's protocol options (mode, views, method options) were matched between its
    # two methods and are implied by its recipe: they are not columns of their own (the CE
    # rows leave them unset, which would split every column in two).
    out |= {c for c in paired.columns if _protocol_detail(c)}
    cols = [c for c in paired.columns if c not in out and n_values(paired[c]) > 1]
    combos = plots.condition_combos(paired, cols)
    if level in cols:
        i = cols.index(level)
        combos.sort(key=lambda t: -float(t[i]))
    return cols, combos


def _protocol_detail(column: str) -> bool:
    return column in PROTOCOL_DETAILS or column.startswith(("method_options.", "loss_options."))


def paired_markdown(
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
        "was smaller, i.e. the difference negative). With 3 seeds the test has 2 degrees of "
        "freedom, so read the interval and the seed count first.",
        "",
        _family_line(paired),
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


def render_markdown(data: SweepData, paths: dict[str, Path], out: Path, notes: str = "") -> str:
    """The report page, section by section; ``paths`` are the files written into ``out`` (the
    figures it links), ``notes`` Markdown placed after the comparisons."""
    level = data.info.level
    md = _header_markdown(data)
    md += limits_markdown(data.df)
    md += _selection_markdown(data.df)
    md += _results_markdown(data)
    md += _worst_groups_markdown(data.groups, level)
    md += paired_markdown(data.paired, level)
    md += _representation_markdown(data)
    if notes:
        md += [notes.strip(), ""]
    heat_note = heatmap_note(data) if "group_heatmap" in paths else ""
    md += _figures_markdown(paths, out, heat_note, _convergence_note(data))
    md += _not_done_markdown(data.not_done)
    return "\n".join(md)


def _sources(source: object) -> str:
    """The sweep folder(s) a report read, as code spans (``a``, ``b``), not a Python list repr."""
    many = isinstance(source, (list, tuple))
    return ", ".join(f"`{Path(s).as_posix()}`" for s in (source if many else [source]))


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
        f"Source: {_sources(data.source)}{_prior_sentence(data.prior)}. {n_done} finished run(s)"
        + (f", {len(not_done)} not finished (listed at the end)" if not_done else "")
        + f". Generated {data.generated or _generated_at()} by debias "
        + f"{data.version or debias.__version__}.",
        "",
    ]


def limits_markdown(df: pd.DataFrame) -> list[str]:
    """A warning naming the runs made with smoke-test limits (``train_limit``, ``eval_limit``,
    ``max_steps``), whose numbers are not comparable to full runs; nothing when there are none."""
    from debias.train.limits import LIMITS, limits_text

    cols = [c for c in LIMITS if c in df.columns]
    runs = df.drop_duplicates(["sweep", "run"])
    limited = runs[runs[cols].notna().any(axis=1)] if cols else runs.iloc[:0]
    if limited.empty:
        return []
    md = [
        f"**Limited runs.** {len(limited)} of {len(runs)} run(s) were made with smoke-test "
        "limits, so every number of theirs below is measured on less than the protocol's data:",
        "",
    ]
    kinds = limited.groupby([limited[c].astype("string") for c in cols], dropna=False)
    for values, group in kinds:
        limits = {c: int(v) for c, v in zip(cols, values) if not pd.isna(v)}
        names = ", ".join(f"`{r}`" for r in group["run"].head(5))
        more = f" and {len(group) - 5} more" if len(group) > 5 else ""
        md.append(f"- {names}{more}: {limits_text(limits)}.")
    return md + [""]


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
    keys, level, metrics = info.keys, info.level, info.table_metrics
    md = ["## Results", "", _results_table(summary, keys, metrics), ""]
    md += [
        "Metric sources (split/metric in `metrics.json`): "
        + "; ".join(
            f"**{m}** = {', '.join(f'`{s}`' for s in info.sources[m]) or '–'}" for m in metrics
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
    if data.representation is None:
        return []
    rep, info = data.representation.summary, data.representation.info
    level, missing = info.level, data.representation.missing
    chance = ", ".join(f"{d}: {c:.0f}%" for d, c in data.representation.chance.items())
    md = ["## Representation: what a fair head reads from the encoder", "", REPRESENTATION_NOTE, ""]
    md += [f"Bias leakage chance level (1 / number of bias values): {chance}.", ""]
    md += _leakage_baseline_markdown(data.representation)
    if missing:
        md += [
            f"{len(missing)} finished run(s) have no representation section and are "
            "left out here: " + ", ".join(f"`{r}`" for r in missing[:8]) + ".",
            "",
        ]
    metrics = representation_metrics(info)
    rep = rep.assign(published_rebias_vanilla_pct=math.nan)  # published numbers: the head's only
    names = {m: f"DFR {m}" for m in metrics if m != LEAKAGE}
    md += [_results_table(rep, info.keys, metrics, names), ""]
    if level is not None and rep[level].nunique() > 1:
        md += [f"### DFR unbiased accuracy by {level}", "", _pivot_table(rep, level), ""]
    title = "### Paired comparisons on the representation (DFR head)"
    return md + paired_markdown(data.representation.paired, level, title)


def _leakage_baseline_markdown(rep: RepresentationSummary) -> list[str]:
    """The leakage's chance level measured on the data, and how many runs exceed it (runs whose
    section predates the permutation baseline have neither)."""
    if not rep.baseline:
        return []
    base = ", ".join(f"{d}: {c:.1f}%" for d, c in rep.baseline.items())
    above = ", ".join(f"{d}: {k} of {n}" for d, (k, n) in rep.leaking.items())
    return [
        "Bias leakage permutation baseline (the same probe on bias labels shuffled within "
        f"class, mean over runs): {base}. Runs whose leakage is above its baseline (95% interval "
        f"above every permuted draw): {above}.",
        "",
    ]


def _prior_sentence(prior: dict | None) -> str:
    """What a report over several sessions took from the earlier session's table."""
    if not prior:
        return ""
    return (
        f" and the per-run table of an earlier session, `{prior['table']}` ({prior['runs']} "
        f"finished run(s) taken from it; {prior['finished_in_both']} finished both there and "
        "here, this session's kept)"
    )


def _convergence_note(data: SweepData) -> str:
    """One line under the convergence figure when some runs came from a prior table."""
    if not data.prior or not data.prior["runs"]:
        return ""
    return (
        f"The convergence figure draws this session's runs only: the {data.prior['runs']} run(s) "
        f"taken from `{data.prior['table']}` have no history in it (the table holds none)."
    )


def _figures_markdown(
    paths: dict[str, Path], out: Path, heat_note: str, convergence_note: str = ""
) -> list[str]:
    md = ["## Figures", ""]
    captions = {
        "worst_group_gap": "Average (circle) and worst-group (square) test accuracy per method "
        "and task, 95% intervals over seeds; the line between them is the gap a shortcut opens "
        "(orange [B]: the method reads training bias labels)",
        "accuracy_vs_bias": "Accuracy per condition (one row each, grouped by what it read: no "
        "bias labels, validation [V] or training bias labels [B]) and bias level (one dot each, "
        "lighter = weaker bias), with 95% interval bars (t-interval over ≥ 3 seeds, one-seed "
        "bootstrap; none for 2 seeds); dotted line: chance",
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
            if key == "convergence" and convergence_note:
                md += [convergence_note, ""]
    return md


def _not_done_markdown(not_done: list[results.RunRecord]) -> list[str]:
    if not not_done:
        return []
    rows = [[r.run, r.status, r.error or "–"] for r in not_done]
    return ["## Runs not included", "", _md_table(["run", "status", "error"], rows), ""]
