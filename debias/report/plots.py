"""Report figures (seaborn on plain ``matplotlib.figure.Figure`` objects, so no GUI backend or
pyplot state is touched: they render headless with Agg and display fine in notebooks).

Each function returns the Figure; pass ``path`` to also save it as PNG.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

__all__ = [
    "combined_val_accuracy",
    "plot_accuracy_vs_bias",
    "plot_convergence",
    "plot_group_heatmap",
]

_DPI = 120


def _save(fig: Figure, path: str | Path | None) -> Figure:
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=_DPI, bbox_inches="tight")
    return fig


def _fmt_level(v) -> str:
    return f"{v:g}" if isinstance(v, (int, float, np.floating)) else str(v)


def plot_accuracy_vs_bias(
    summary: pd.DataFrame,
    *,
    level: str | None,
    metrics: Sequence[str],
    titles: Mapping[str, str] | None = None,
    published: Mapping[float, float] | None = None,
    published_label: str = "ReBias Vanilla (published)",
    styles: Mapping[str, str] | None = None,
    path: str | Path | None = None,
) -> Figure:
    """Mean accuracy (%) per condition against the bias level, with the 95% t-interval as a band.

    ``styles`` maps a condition label to a matplotlib line style (the report draws methods that
    read training bias labels dashed, the others solid).

    ``summary`` is the report's summary table (columns ``label``, ``level`` column, ``metric``,
    ``mean``, ``ci95_low``, ``ci95_high``); one panel per metric. Without a bias level the panels
    are bar charts per condition. ``published`` ({level: % }) is drawn, dashed, in the panel of
    the first metric.
    """
    import seaborn as sns

    n = len(metrics)
    ncols = min(n, 2)
    nrows = int(np.ceil(n / ncols))
    fig = Figure(figsize=(5.2 * ncols, 3.8 * nrows))
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    labels = list(dict.fromkeys(summary["label"]))
    palette = dict(
        zip(labels, sns.color_palette("tab10" if len(labels) <= 10 else "tab20", len(labels)))
    )
    styles = styles or {}
    with sns.axes_style("whitegrid"):
        for ax, metric in zip(axes, metrics):
            ax.set_axisbelow(True)
            ax.grid(True, alpha=0.3)
            d = summary[summary["metric"] == metric]
            if level is None or level not in d:
                sns.barplot(
                    data=d,
                    x="label",
                    y="mean",
                    hue="label",
                    palette=palette,
                    ax=ax,
                    errorbar=None,
                    legend=False,
                )
                err = np.vstack([d["mean"] - d["ci95_low"], d["ci95_high"] - d["mean"]])
                ax.errorbar(
                    range(len(d)),
                    d["mean"],
                    yerr=np.nan_to_num(err),
                    fmt="none",
                    ecolor="black",
                    capsize=4,
                )
                ax.set_xlabel("")
            else:
                levels = sorted(d[level].dropna().unique())
                pos = {v: i for i, v in enumerate(levels)}
                for lab in labels:
                    s = d[d["label"] == lab].sort_values(level)
                    if s.empty:
                        continue
                    x = s[level].map(pos).to_numpy(float)
                    ax.plot(
                        x,
                        s["mean"],
                        marker="o",
                        color=palette[lab],
                        linestyle=styles.get(lab, "-"),
                        label=lab,
                    )
                    ax.fill_between(
                        x, s["ci95_low"], s["ci95_high"], color=palette[lab], alpha=0.2, linewidth=0
                    )
                    # Error bars too: a band needs two neighbouring intervals to show at all.
                    yerr = np.vstack([s["mean"] - s["ci95_low"], s["ci95_high"] - s["mean"]])
                    ax.errorbar(
                        x,
                        s["mean"],
                        yerr=np.nan_to_num(yerr),
                        fmt="none",
                        ecolor=palette[lab],
                        capsize=3,
                        alpha=0.7,
                    )
                if published and metric == metrics[0]:
                    pts = [(pos[v], published[v]) for v in levels if v in published]
                    if pts:
                        ax.plot(*zip(*pts), "k--", marker="x", label=published_label)
                ax.set_xticks(range(len(levels)), [_fmt_level(v) for v in levels])
                ax.set_xlabel(f"{level} (training bias; stronger to the right)")
            ax.set_ylim(0, 100)
            ax.set_ylabel("accuracy (%)")
            ax.set_title((titles or {}).get(metric, metric))
        for ax in axes[n:]:
            ax.set_visible(False)
        if level is not None:
            handles, names = axes[0].get_legend_handles_labels()
            fig.legend(
                handles,
                names,
                loc="lower center",
                ncol=min(len(names), 4),
                bbox_to_anchor=(0.5, -0.02 - 0.04 * (len(names) // 5)),
                frameon=False,
            )
    fig.suptitle("mean over seeds; band and bars: 95% t-interval (none for n = 1)", fontsize=10)
    fig.tight_layout(rect=(0, 0.06, 1, 0.97))
    return _save(fig, path)


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
    fig = Figure(figsize=(4.6 * ncols, 4.0 * nrows))
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for i, (ax, lab) in enumerate(zip(axes, labels)):
        g = groups[groups["label"] == lab]
        table = 100 * g.groupby(["y", "b"])["accuracy"].mean().unstack("b")
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
        ax.set_title(f"{lab} (n seeds={g['run'].nunique()})", fontsize=10)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
    for ax in axes[len(labels) :]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return _save(fig, path)


def combined_val_accuracy(history: pd.DataFrame) -> pd.Series:
    """Validation accuracy per epoch: the online probe's while pretraining (``probe/val/...``),
    the classifier's otherwise (``val/accuracy``)."""
    val = history["val/accuracy"] if "val/accuracy" in history else pd.Series(np.nan, history.index)
    if "probe/val/accuracy" in history:
        val = val.fillna(history["probe/val/accuracy"])
    return val


def plot_convergence(
    history: pd.DataFrame,
    *,
    level: str | None = None,
    max_levels: int = 4,
    path: str | Path | None = None,
) -> Figure:
    """Train loss and validation accuracy per epoch, one line per condition ``label``.

    ``history`` is :func:`debias.results.load_history` with a ``label`` column. Columns of the
    figure are bias levels (the ``max_levels`` strongest), rows the two quantities. Line style
    shows the stage (``train``, ``pretrain`` = contrastive with online linear probe, ``linear``
    = classifier on frozen features); the band is ±1 s.d. over seeds.
    """
    import seaborn as sns

    h = history.copy()
    h["val accuracy (%)"] = 100 * combined_val_accuracy(h)
    levels = [None]
    if level is not None and level in h:
        levels = sorted(h[level].dropna().unique(), reverse=True)[:max_levels]
    fig = Figure(figsize=(4.4 * len(levels), 6.4))
    axes = fig.subplots(2, len(levels), squeeze=False)
    labels = list(dict.fromkeys(h["label"]))
    stages = [s for s in ("train", "pretrain", "linear") if s in set(h["stage"])]
    stages += sorted(set(h["stage"].astype(str)) - set(stages))
    palette = dict(zip(labels, sns.color_palette("tab10", len(labels))))
    with sns.axes_style("whitegrid"):
        for j, lv in enumerate(levels):
            d = h if lv is None else h[h[level] == lv]
            for i, (col, name) in enumerate(
                (("train_loss", "train loss"), ("val accuracy (%)", "val accuracy (%)"))
            ):
                ax = axes[i, j]
                ax.grid(True, alpha=0.3)
                if col in d and d[col].notna().any():
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
                        legend=(i == 0 and j == len(levels) - 1),
                    )
                ax.set_ylabel(name)
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
                if i == 0:
                    ax.set_title("all runs" if lv is None else f"{level} = {_fmt_level(lv)}")
        if axes[0, -1].get_legend() is not None:
            sns.move_legend(axes[0, -1], "upper left", bbox_to_anchor=(1.02, 1), fontsize=8)
    fig.suptitle("convergence: mean over seeds, band ±1 s.d.", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)
