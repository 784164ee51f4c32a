"""PNG plots of an embedding audit, drawn from the report's tables.

Each function takes the DataFrames it draws (not the report), so this module depends on
nothing else in :mod:`debias.audit`; :meth:`AuditReport.save` calls them. Figures are built with
``matplotlib.figure.Figure`` and saved through the Agg canvas directly, so saving a report never
switches the pyplot backend of a user's notebook and works headless.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def _palette(n: int) -> str:
    return "tab10" if n <= 10 else "husl"


def _save(fig: Figure, path: Path) -> Path:
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path


def plot_projection(proj: pd.DataFrame | None, method: str, path: Path) -> Path | None:
    """Two panels of the 2-D projection ``proj`` (columns ``x1, x2, y, b``; ``method`` names it):
    coloured by target, coloured by bias. None (nothing written) when there is no projection."""
    import seaborn as sns

    if proj is None or len(proj) == 0:
        return None
    fig = Figure(figsize=(11, 5))
    method = method.upper()
    for ax, col, title in zip(fig.subplots(1, 2), ("y", "b"), ("target", "bias")):
        hue = proj[col].astype(str)
        order = sorted(proj[col].unique())
        sns.scatterplot(
            x=proj["x1"], y=proj["x2"], hue=hue, hue_order=[str(v) for v in order],
            palette=_palette(len(order)), s=6, linewidth=0, alpha=0.7, ax=ax,
        )  # fmt: skip
        ax.set_title(f"{method} of L2-normalised Z, coloured by {title}")
        ax.set_xlabel(f"{method} 1")
        ax.set_ylabel(f"{method} 2")
        ax.legend(title=col, markerscale=2, fontsize=7, loc="best")
    return _save(fig, path)


# Above this many groups one bar per group stops being readable: draw (y, b) heatmaps instead.
MAX_GROUP_BARS = 30


def plot_groups(groups: pd.DataFrame, path: Path) -> Path:
    """Per ``(y, b)`` group target-probe accuracy and k-NN purity, aligned vs conflicting, from
    ``groups`` (the report's table): bars (probe accuracy with its exact 95% interval) up to
    :data:`MAX_GROUP_BARS` groups, else one target-by-bias heatmap per metric with the aligned
    cells outlined, which stays readable at 100 groups and more."""
    if len(groups) > MAX_GROUP_BARS:
        return _group_heatmaps(groups, path)
    import seaborn as sns

    g = groups.copy()
    g["group"] = [f"{y},{b}" for y, b in zip(g["y"], g["b"])]
    g["kind"] = np.where(g["aligned"], "aligned", "conflicting")
    long = pd.melt(
        g, id_vars=["group", "kind", "n"], value_vars=["probe_accuracy", "knn_purity"],
        var_name="metric", value_name="value",
    )  # fmt: skip
    fig = Figure(figsize=(max(6.0, 0.35 * len(g) + 3), 7))
    axes = fig.subplots(2, 1, sharex=True)
    for ax, metric, title in zip(
        axes, ("probe_accuracy", "knn_purity"), ("target-probe accuracy", "k-NN target purity")
    ):
        sub = long[long["metric"] == metric]
        sns.barplot(
            data=sub, x="group", y="value", hue="kind", hue_order=["aligned", "conflicting"],
            order=list(g["group"]), dodge=False, ax=ax,
        )  # fmt: skip
        if metric == "probe_accuracy" and "probe_ci_low" in g:
            err = np.vstack([g[metric] - g["probe_ci_low"], g["probe_ci_high"] - g[metric]])
            ax.errorbar(range(len(g)), g[metric], yerr=np.nan_to_num(err), fmt="none",
                        ecolor="black", capsize=2, lw=0.8)  # fmt: skip
            title += " (bars: exact 95% interval)"
        ax.set_ylim(0, 1.05)
        ax.set_ylabel(metric.replace("_", " "))
        ax.set_title(f"{title} per (target, bias) group")
        ax.legend(fontsize=8, loc="lower right")
    axes[-1].set_xlabel("group (y, b)")
    axes[-1].tick_params(axis="x", rotation=90, labelsize=7)
    return _save(fig, path)


def _group_heatmaps(groups: pd.DataFrame, path: Path) -> Path:
    import seaborn as sns
    from matplotlib.patches import Rectangle

    fig = Figure(figsize=(13, 6))
    axes = fig.subplots(1, 2)
    for ax, metric, title in zip(
        axes, ("probe_accuracy", "knn_purity"), ("target-probe accuracy", "k-NN target purity")
    ):
        table = groups.pivot(index="y", columns="b", values=metric)
        big = table.size > 144
        sns.heatmap(table, ax=ax, vmin=0, vmax=1, cmap="viridis", annot=not big, fmt=".2f",
                    annot_kws={"fontsize": 6}, cbar_kws={"label": metric.replace("_", " ")})  # fmt: skip
        rows, cols = list(table.index), list(table.columns)
        for y, b in zip(groups.loc[groups["aligned"], "y"], groups.loc[groups["aligned"], "b"]):
            ax.add_patch(Rectangle((cols.index(b), rows.index(y)), 1, 1, fill=False,
                                   edgecolor="white", lw=1.5))  # fmt: skip
        ax.set_title(f"{title} per group (outlined: bias-aligned)", fontsize=10)
        ax.set_xlabel("bias b")
        ax.set_ylabel("target y")
        ax.tick_params(labelsize=6 if big else 8)
    fig.tight_layout()
    return _save(fig, path)


def plot_leakage(by_class: pd.DataFrame, overall: float, path: Path) -> Path:
    """Bias leakage within each class (``by_class``, indexed by ``y``: ``leakage, chance`` and,
    when measured, ``ci_low, ci_high, null_mean``) with its 95% interval, its permutation
    baseline, the nominal chance level and the ``overall`` leakage."""
    by = by_class.reset_index()
    fig = Figure(figsize=(max(5.0, 0.5 * len(by) + 2), 4))
    ax = fig.subplots()
    x = np.arange(len(by))
    ax.bar(x, by["leakage"].fillna(0.0), color="tab:red", alpha=0.8, label="leakage")
    if "ci_low" in by:  # the 95% bootstrap interval and the permutation baseline
        err = np.stack([by["leakage"] - by["ci_low"], by["ci_high"] - by["leakage"]])
        ax.errorbar(
            x, by["leakage"], yerr=np.nan_to_num(err), fmt="none", ecolor="black", capsize=3
        )
        ax.scatter(
            x, by["null_mean"], color="tab:green", marker="D", s=25, zorder=4,
            label="permutation baseline (bias shuffled)",
        )  # fmt: skip
    ax.scatter(x, by["chance"], color="black", marker="_", s=300, label="nominal chance", zorder=3)
    ax.axhline(overall, color="tab:blue", ls="--", lw=1, label="overall leakage")
    for xi, val in zip(x, by["leakage"]):
        if np.isnan(val):
            ax.text(xi, 0.02, "NaN", ha="center", fontsize=7, rotation=90)
    ax.set_xticks(x, [str(v) for v in by["y"]])
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("target class y")
    ax.set_ylabel("balanced accuracy of bias probe")
    ax.set_title("Bias leakage within each class")
    ax.legend(fontsize=8, loc="lower right")
    return _save(fig, path)
