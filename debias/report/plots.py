"""Report figures (seaborn on plain ``matplotlib.figure.Figure`` objects, so no GUI backend or
pyplot state is touched: they render headless with Agg and display fine in notebooks).

Each function returns the Figure; pass ``path`` to also save it as PNG.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

__all__ = [
    "combined_val_accuracy",
    "plot_accuracy_vs_bias",
    "plot_convergence",
    "plot_group_heatmap",
    "plot_head_vs_representation",
    "plot_worst_group_gap",
]

_DPI = 120


def _finish(
    fig: Figure,
    title: str | None,
    path: str | Path | None,
    *,
    fontsize: float = 9,
    rect: tuple[float, float, float, float] = (0, 0, 1, 1),
) -> Figure:
    """Title the figure, lay it out inside ``rect`` (room left for the title or a legend below)
    and save it."""
    if title:
        fig.suptitle(title, fontsize=fontsize)
    fig.tight_layout(rect=rect)
    return _save(fig, path)


def _save(fig: Figure, path: str | Path | None) -> Figure:
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=_DPI, bbox_inches="tight")
    return fig


def _fmt_level(v) -> str:
    return f"{v:g}" if isinstance(v, (int, float, np.floating)) else str(v)


def _bar_lengths(mean: Any, low: Any, high: Any) -> np.ndarray:
    """Error-bar lengths ``[[mean - low], [high - mean]]`` for matplotlib: no interval (NaN) is a
    zero-length bar, and so is the side of an interval that lies wholly on one side of its point
    (a percentile bootstrap of a worst group, i.e. of a minimum, need not contain the observed
    minimum; matplotlib refuses negative lengths)."""
    mean, low, high = (np.atleast_1d(np.asarray(v, dtype=float)) for v in (mean, low, high))
    return np.clip(np.nan_to_num(np.vstack([mean - low, high - mean])), 0.0, None)


def condition_palette(labels: Sequence[str]) -> dict[str, Any]:
    """One distinct colour per label: tab10 up to 10, tab20 up to 20, evenly spaced hues beyond
    (a sweep's 13 methods on tab10 would give three pairs of methods the same colour)."""
    import seaborn as sns

    name = "tab10" if len(labels) <= 10 else "tab20" if len(labels) <= 20 else "husl"
    return dict(zip(labels, sns.color_palette(name, len(labels))))


def plot_accuracy_vs_bias(
    summary: pd.DataFrame,
    *,
    level: str | None,
    metrics: Sequence[str],
    titles: Mapping[str, str] | None = None,
    published: Mapping[float, float] | None = None,
    published_label: str = "ReBias Vanilla (published)",
    chance: float | None = None,
    groups: Mapping[str, str] | None = None,
    path: str | Path | None = None,
) -> Figure:
    """Mean accuracy (%) per condition and bias level with its 95% interval, as a dot plot.

    One panel per metric; one row per condition (``label``), rows grouped under ``groups``
    (label -> group heading, e.g. what the method read: no bias labels / validation / training
    bias labels), so a reader finds a method by name; in each row one dot per bias level,
    coloured from light (weakest bias) to dark (strongest), with its interval as a horizontal
    bar: a t-interval over three or more seeds, a one-seed bootstrap interval, nothing for two
    seeds (t = 12.7 makes that interval span most of the axis and say nothing). ``chance``
    (%) is drawn as a dotted vertical line in every panel, with one bias level too;
    ``published`` ({level: %}) as black crosses on the row of the first condition whose
    summary rows carry a published number (CE), in the first panel.

    ``summary`` is the report's summary table (columns ``label``, the ``level`` column,
    ``metric``, ``n``, ``mean_pct``, ``ci95_low_pct``, ``ci95_high_pct``).
    """
    labels = list(dict.fromkeys(summary["label"]))
    rows, headings = _grouped_rows(labels, groups or {})
    levels = sorted(summary[level].dropna().unique()) if level in summary else [None]
    colours = _level_colours(len(levels))
    n = len(metrics)
    ncols = min(n, 2)
    nrows = int(np.ceil(n / ncols))
    height = 1.0 + 0.25 * (len(rows) + len(headings)) * (1 + 0.15 * (len(levels) - 1))
    fig = Figure(figsize=(6.2 * ncols, height * nrows))
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    for k, (ax, metric) in enumerate(zip(axes, metrics)):
        d = _drawn_intervals(summary[summary["metric"] == metric])
        _dot_panel(ax, d, level, levels, rows, colours)
        if published and k == 0 and level is not None:
            _published_marks(ax, summary, level, levels, rows, published, published_label)
        if chance is not None:
            ax.axvline(
                chance, color="grey", linestyle=":", linewidth=1.2, label=f"chance ({chance:.0f}%)"
            )
        _row_labels(ax, rows, headings, show=k % ncols == 0)
        ax.set_xlim(0, 100)
        ax.set_xlabel("accuracy (%)")
        ax.set_title((titles or {}).get(metric, metric), fontsize=10)
    for ax in axes[n:]:
        ax.set_visible(False)
    _dot_legend(fig, axes[0])
    title = (
        "mean over seeds, one dot per bias level; bars: 95% t-interval (n ≥ 3 seeds) or one-seed "
        "bootstrap over test images; none drawn for n = 2"
    )
    return _finish(fig, title, path, rect=(0, 0.05, 1, 0.97))


def _grouped_rows(
    labels: Sequence[str], groups: Mapping[str, str]
) -> tuple[dict[str, float], dict[str, float]]:
    """The y position of each label (top to bottom, grouped in first-seen group order) and of
    each group heading (none when there is a single group)."""
    order = list(dict.fromkeys(groups.get(lab, "") for lab in labels))
    rows: dict[str, float] = {}
    headings: dict[str, float] = {}
    y = 0.0
    for g in order:
        if len(order) > 1:
            headings[g] = y
            y += 1
        for lab in (lab for lab in labels if groups.get(lab, "") == g):
            rows[lab] = y
            y += 1
    return rows, headings


def _level_colours(n: int) -> list[Any]:
    """Light to dark: the weakest bias level lightest, the strongest darkest."""
    import seaborn as sns

    return sns.color_palette("rocket_r", n + 1)[1:] if n > 1 else ["#1f4e79"]


def _dot_panel(ax, d: pd.DataFrame, level: str | None, levels, rows, colours) -> None:
    """Per condition and level: the mean as a dot and its interval as a horizontal bar."""
    step = 0.6 / max(len(levels) - 1, 1)
    for j, lv in enumerate(levels):
        at = d if lv is None else d[d[level] == lv]
        at = at[at["label"].isin(rows)]
        if at.empty:
            continue
        offset = 0.0 if len(levels) == 1 else -0.3 + j * step
        ys = at["label"].map(rows).to_numpy(float) + offset
        ax.errorbar(
            at["mean_pct"], ys, xerr=_bar_lengths(at["mean_pct"], at["low"], at["high"]),
            fmt="o", color=colours[j], ecolor=colours[j], markersize=5, capsize=2, elinewidth=1.2,
            label="mean" if lv is None else f"{level} = {_fmt_level(lv)}",
        )  # fmt: skip
    ax.grid(True, axis="x", alpha=0.3)
    for y in rows.values():  # a faint rule between rows keeps a row's dots together
        ax.axhline(y + 0.5, color="0.92", linewidth=0.6, zorder=0)


def _published_marks(ax, summary, level: str, levels, rows, published, label: str) -> None:
    """The published numbers as crosses on the row of the condition they belong to (CE's)."""
    col = "published_rebias_vanilla_pct"
    owner = summary[summary[col].notna()]["label"] if col in summary else pd.Series(dtype=str)
    if owner.empty or owner.iloc[0] not in rows:
        return
    step = 0.6 / max(len(levels) - 1, 1)
    pts = [
        (published[v], rows[owner.iloc[0]] + (0.0 if len(levels) == 1 else -0.3 + j * step))
        for j, v in enumerate(levels)
        if v in published
    ]
    if pts:
        ax.plot(*zip(*pts), "kx", markersize=7, mew=1.6, label=label, zorder=5)


def _row_labels(ax, rows, headings, *, show: bool) -> None:
    ticks = list(rows.values()) + list(headings.values())
    names = list(rows) + [f"{h}:" for h in headings]
    ax.set_yticks(ticks, names if show else [""] * len(ticks), fontsize=8)
    for tick, name in zip(ax.get_yticklabels(), names):
        if name.endswith(":"):
            tick.set_fontweight("bold")
    for y in headings.values():
        ax.axhline(y - 0.5, color="0.6", linewidth=0.8)
    ax.set_ylim(max(ticks, default=0) + 0.6, -0.6)  # first row at the top


def _dot_legend(fig: Figure, ax) -> None:
    handles, names = ax.get_legend_handles_labels()
    if not handles:
        return
    fig.legend(handles, names, loc="lower center", ncol=min(len(names), 6), frameon=False)


def plot_worst_group_gap(
    summary: pd.DataFrame,
    *,
    tasks: Sequence[str] = (),
    bias_label_methods: Sequence[str] = (),
    val_label_methods: Sequence[str] = (),
    path: str | Path | None = None,
) -> Figure:
    """Average against worst-group accuracy per method: one dumbbell per method, one panel per
    task (each combination of the ``tasks`` columns, e.g. ``bias`` = race / age).

    The line from the worst-group mean (square) to the average-accuracy mean (circle) is the gap
    a shortcut opens; bars are the 95% intervals of :func:`debias.report.summarize` (none for
    two seeds, as in the other figures). Methods in
    ``bias_label_methods`` (they read training bias labels) are drawn in orange and marked [B],
    those in ``val_label_methods`` (validation bias labels only) in green and marked [V], the
    others in blue, so a reader sees at a glance which methods close the gap and what they were
    given.
    """
    d = _drawn_intervals(summary[summary["metric"].isin(["accuracy", "worst-group"])])
    combos, methods, fig, axes = _method_panels(d, tasks, (4.2, 1.2, 0.38, 1.6))
    for ax, combo in zip(axes, combos):
        mine = rows_matching(d, tasks, combo)
        for i, method in enumerate(methods):
            colour = "tab:orange" if method in bias_label_methods else "tab:blue"
            colour = "tab:green" if method in val_label_methods else colour
            _dumbbell(ax, mine[mine["method"] == method], i, colour)
        ax.set_title(", ".join(f"{t}={_fmt_level(v)}" for t, v in zip(tasks, combo)) or "all runs")
        ax.set_xlim(0, 100)
        ax.set_xlabel("test accuracy (%)")
        ax.grid(True, axis="x", alpha=0.3)
    axes[0].set_yticks(range(len(methods)))
    mark = {m: " [B]" for m in bias_label_methods} | {m: " [V]" for m in val_label_methods}
    axes[0].set_yticklabels([m + mark.get(m, "") for m in methods])
    axes[0].invert_yaxis()
    title = (
        "circle: average accuracy, square: worst-group accuracy (mean over seeds, bars: 95% "
        "interval); orange [B]: reads training bias labels"
    )
    if val_label_methods:
        title += "; green [V]: validation bias labels only"
    return _finish(fig, title, path, rect=(0, 0, 1, 0.95))


def plot_head_vs_representation(
    head: pd.DataFrame,
    representation: pd.DataFrame,
    *,
    metric: str,
    panels: Sequence[str] = (),
    marks: Mapping[str, str] | None = None,
    path: str | Path | None = None,
) -> Figure:
    """The run's own head (circle) against the DFR head on its frozen features (square), one
    row per method and one panel per combination of ``panels`` (e.g. rho, or a face task).

    ``head`` and ``representation`` are summaries (:func:`debias.report.summarize` and
    :func:`debias.report.representation.summarize_representation`); bars are their 95%
    intervals (none for two seeds). The arrow from circle to square is what retraining the last
    layer on group-balanced validation data recovers from the same encoder. ``marks``: a
    method's supervision mark, appended to its name unless it is "—".
    """
    both = pd.concat(
        [head.assign(_who="head"), representation.assign(_who="dfr")], ignore_index=True
    )
    d = _drawn_intervals(both[both["metric"] == metric])
    combos, methods, fig, axes = _method_panels(d, panels, (3.4, 1.4, 0.36, 1.7))
    for ax, combo in zip(axes, combos):
        mine = rows_matching(d, panels, combo)
        for i, method in enumerate(methods):
            rows = {r["_who"]: r for _, r in mine[mine["method"] == method].iterrows()}
            if len(rows) == 2:
                ax.annotate(
                    "", (rows["dfr"]["mean_pct"], i), (rows["head"]["mean_pct"], i),
                    arrowprops={"arrowstyle": "->", "color": "0.6", "lw": 1},
                )  # fmt: skip
            for who, marker, colour in (("head", "o", "tab:blue"), ("dfr", "s", "tab:red")):
                if who in rows:
                    r = rows[who]
                    err = _bar_lengths(r["mean_pct"], r["low"], r["high"])
                    ax.errorbar(
                        r["mean_pct"], i, xerr=err, fmt=marker, color=colour, capsize=2, ms=5
                    )
        ax.set_title(", ".join(f"{t}={_fmt_level(v)}" for t, v in zip(panels, combo)) or metric)
        ax.set_xlim(0, 100)
        ax.set_xlabel(f"test {metric} accuracy (%)")
        ax.grid(True, axis="x", alpha=0.3)
    marks = marks or {}
    axes[0].set_yticks(range(len(methods)))
    axes[0].set_yticklabels(
        [m + (f" [{marks[m]}]" if marks.get(m, "—") != "—" else "") for m in methods]
    )
    axes[0].invert_yaxis()
    title = (
        f"{metric} accuracy: blue circle = the run's own head, red square = DFR head refitted on "
        "group-balanced validation data (reads validation bias labels); mean over seeds, bars: "
        "95% interval"
    )
    return _finish(fig, textwrap.fill(title, 110), path, rect=(0, 0, 1, 0.92))


def _method_panels(
    d: pd.DataFrame, cols: Sequence[str], size: tuple[float, float, float, float]
) -> tuple[list[tuple], list[str], Figure, np.ndarray]:
    """One panel per combination of ``cols`` and one row per method, sharing the y axis:
    ``(combos, methods, fig, axes)``; ``size`` = (width per panel, extra width, height per
    method, extra height) in inches."""
    combos = condition_combos(d, cols)
    methods = list(dict.fromkeys(d["method"]))
    fig = Figure(figsize=(size[0] * len(combos) + size[1], size[2] * len(methods) + size[3]))
    axes = np.atleast_1d(fig.subplots(1, len(combos), sharey=True, squeeze=False)).ravel()
    return combos, methods, fig, axes


def condition_combos(df: pd.DataFrame, cols: Sequence[str]) -> list[tuple]:
    """The value combinations of ``cols`` in ``df``, in order of first appearance (one panel or
    table column each); ``[()]`` when ``cols`` is empty. :func:`rows_matching` selects one."""
    if not cols:
        return [()]
    rows = df[list(cols)].itertuples(index=False, name=None)
    # An unset option (NaN, None) is one value: NaN != NaN would make each row its own combo.
    return list(dict.fromkeys(tuple(None if _unset(v) else v for v in r) for r in rows))


def rows_matching(df: pd.DataFrame, cols: Sequence[str], values: Sequence[Any]) -> pd.DataFrame:
    """The rows of ``df`` whose ``cols`` equal ``values`` (compared as text, so 0.9 == "0.9";
    an unset value, NaN or None, matches an unset one); all rows when ``cols`` is empty."""
    if not cols:
        return df
    text = df[list(cols)].map(_as_text)
    return df[(text == [_as_text(v) for v in values]).all(axis=1)]


def _unset(v: Any) -> bool:
    return v is None or (isinstance(v, float) and np.isnan(v))


def _as_text(v: Any) -> str:
    return "\0unset" if _unset(v) else str(v)


def _dumbbell(ax, rows: pd.DataFrame, y: int, colour: str) -> None:
    by = {r["metric"]: r for _, r in rows.iterrows()}
    if "accuracy" not in by or "worst-group" not in by:
        return
    acc, worst = by["accuracy"], by["worst-group"]
    ax.plot([worst["mean_pct"], acc["mean_pct"]], [y, y], color=colour, alpha=0.5, lw=2)
    for r, marker in ((acc, "o"), (worst, "s")):
        err = _bar_lengths(r["mean_pct"], r["low"], r["high"])
        ax.errorbar(r["mean_pct"], y, xerr=err, fmt=marker, color=colour, capsize=2, ms=5)


def _drawn_intervals(d: pd.DataFrame) -> pd.DataFrame:
    """``d`` with ``low, high`` (bars) and ``band_low, band_high`` (bands) to draw: NaN where
    an interval is not drawn (two seeds: bars and band; one seed: band)."""
    n = d["n"].astype(int) if "n" in d else pd.Series(3, d.index)
    bars = n != 2
    band = n >= 3
    return d.assign(
        low=d["ci95_low_pct"].where(bars, d["mean_pct"]),
        high=d["ci95_high_pct"].where(bars, d["mean_pct"]),
        band_low=d["ci95_low_pct"].where(band),
        band_high=d["ci95_high_pct"].where(band),
    )


def _names_table(g: pd.DataFrame) -> pd.DataFrame:
    """Mean group accuracy (%) as a (y, b) table labelled by the group names where known."""
    table = 100 * g.groupby(["y", "b"])["accuracy"].mean().unstack("b")
    for axis, code, name in (("index", "y", "y_name"), ("columns", "b", "b_name")):
        if name in g:
            names = dict(zip(g[code], g[name].astype(str)))
            table = table.rename(**{axis: lambda v, names=names: names.get(v, str(v))})
    return table


def plot_group_heatmap(
    groups: pd.DataFrame,
    *,
    title: str = "",
    ylabel: str = "target y",
    xlabel: str = "bias b",
    path: str | Path | None = None,
) -> Figure:
    """Group accuracy (%) heatmaps, one panel per condition ``label``, mean over seeds.

    ``groups`` holds rows of :func:`debias.results.load_groups` for one split with an extra
    ``label`` column. On Biased-MNIST this is the 10x10 digit-by-colour table: the diagonal is
    the bias-aligned cells, the rest the bias-conflicting ones.
    """
    import seaborn as sns

    labels = list(dict.fromkeys(groups["label"]))
    ncols = min(len(labels), 3)
    nrows = int(np.ceil(len(labels) / ncols))
    fig = Figure(figsize=(5.0 * ncols, 4.6 * nrows))
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for i, (ax, lab) in enumerate(zip(axes, labels)):
        g = groups[groups["label"] == lab]
        table = _names_table(g)
        annot = table.size <= 144
        sns.heatmap(
            table,
            ax=ax,
            vmin=0,
            vmax=100,
            cmap="viridis",
            square=True,
            annot=annot,
            fmt=".0f",
            annot_kws={"fontsize": 6},
            cbar=i == len(labels) - 1,
            cbar_kws={"label": "accuracy (%)"},
        )
        # Long condition labels (face sweeps) wrap instead of running into the next panel.
        heading = textwrap.fill(f"{lab} (n seeds={g['run'].nunique()})", 38)
        ax.set_title(heading, fontsize=9)
        ax.tick_params(axis="x", labelrotation=90 if table.shape[1] > 4 else 0, labelsize=7)
        ax.tick_params(axis="y", labelrotation=0, labelsize=7)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
    for ax in axes[len(labels) :]:
        ax.set_visible(False)
    # Leave the suptitle its own strip above the (possibly two-line) panel titles.
    return _finish(fig, title, path, fontsize=11, rect=(0, 0, 1, 0.94 if title else 1))


def combined_val_accuracy(history: pd.DataFrame) -> pd.Series:
    """Validation accuracy per epoch: the online probe's while pretraining (``probe/val/...``),
    the classifier's otherwise (``val/accuracy``)."""
    val = history["val/accuracy"] if "val/accuracy" in history else pd.Series(np.nan, history.index)
    if "probe/val/accuracy" in history:
        val = val.fillna(history["probe/val/accuracy"])
    return val


def _epoch_ticks(ax: Any, epochs: pd.Series) -> None:
    """Whole epochs on the x axis: each one when there are few (a single epoch would otherwise
    get ticks 0.95, 0.96, ... written over each other), else an integer locator."""
    present = sorted(int(e) for e in epochs.dropna().unique())
    if 0 < len(present) <= 12:
        ax.set_xticks(present)
        ax.set_xlim(present[0] - 0.5, present[-1] + 0.5)
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def plot_convergence(
    history: pd.DataFrame,
    *,
    level: str | None = None,
    max_levels: int = 4,
    path: str | Path | None = None,
) -> Figure:
    """Train losses and validation accuracy per epoch, one line per condition ``label``.

    ``history`` is :func:`debias.results.load_history` with a ``label`` column. Columns of the
    figure are bias levels (the ``max_levels`` strongest), rows the quantities: the contrastive
    loss of ``pretrain`` stages (tens, or negative for some losses) and the loss of the other
    stages (``train``; ``linear`` = classifier on frozen features; cross-entropy scale, about 1)
    each get their own row and axis, so neither is flattened by the other; then validation
    accuracy (the online probe's while pretraining). Line style shows the stage; the band is
    ±1 s.d. over seeds.
    """
    import seaborn as sns

    h = history.copy()
    h["val accuracy (%)"] = 100 * combined_val_accuracy(h)
    pretrain = h["stage"].astype(str) == "pretrain"
    quantities = []
    if "train_loss" in h:
        # A pretrain step minimises the contrastive loss plus the online probe's cross-entropy
        # (train_loss); the contrastive term alone is its own column (train_contrastive).
        contrastive = (
            "train_contrastive" in h and h["train_contrastive"].where(pretrain).notna().any()
        )
        h["pretrain loss"] = h["train_contrastive" if contrastive else "train_loss"].where(pretrain)
        h["train loss"] = h["train_loss"].where(~pretrain)
        for col, name in (
            ("pretrain loss", "contrastive loss (pretrain)" if contrastive else "loss (pretrain)"),
            ("train loss", "train loss (train / linear)"),
        ):
            if h[col].notna().any():
                quantities.append((col, name))
    quantities.append(("val accuracy (%)", "val accuracy (%)"))
    levels = [None]
    if level is not None and level in h:
        levels = sorted(h[level].dropna().unique(), reverse=True)[:max_levels]
    fig = Figure(figsize=(4.4 * len(levels), 3.2 * len(quantities)))
    axes = fig.subplots(len(quantities), len(levels), squeeze=False)
    labels = list(dict.fromkeys(h["label"]))
    stages = [s for s in ("train", "pretrain", "linear") if s in set(h["stage"])]
    stages += sorted(set(h["stage"].astype(str)) - set(stages))
    palette = condition_palette(labels)
    legend_ax = None
    with sns.axes_style("whitegrid"):
        for j, lv in enumerate(levels):
            d = h if lv is None else h[h[level] == lv]
            for i, (col, name) in enumerate(quantities):
                ax = axes[i, j]
                ax.grid(True, alpha=0.3)
                if not d[col].notna().any():
                    ax.text(0.5, 0.5, "no such stage here", ha="center", va="center",
                            transform=ax.transAxes, color="grey")  # fmt: skip
                    ax.set_xticks([])
                    ax.set_yticks([])
                else:
                    draw_legend = legend_ax is None and j == len(levels) - 1
                    legend_ax = ax if draw_legend else legend_ax
                    # Fixed orders: same colour and dash per condition and stage in every panel,
                    # and a complete legend even where a panel lacks some conditions.
                    sns.lineplot(
                        data=d.rename(columns={"label": "condition"}),
                        x="epoch",
                        y=col,
                        hue="condition",
                        style="stage",
                        hue_order=labels,
                        style_order=stages,
                        palette=palette,
                        errorbar="sd",
                        marker="o",
                        ax=ax,
                        legend=draw_legend,
                    )
                ax.set_ylabel(name)
                _epoch_ticks(ax, d["epoch"])
                if i == 0:
                    ax.set_title("all runs" if lv is None else f"{level} = {_fmt_level(lv)}")
        if legend_ax is not None and legend_ax.get_legend() is not None:
            sns.move_legend(legend_ax, "upper left", bbox_to_anchor=(1.02, 1), fontsize=8)
    return _finish(fig, "convergence: mean over seeds, band ±1 s.d.", path, fontsize=10)
