"""The report's figures from a loaded sweep (:class:`~debias.report.sweep_data.SweepData`);
the drawing itself is :mod:`debias.report.plots`.

``accuracy_vs_bias`` (several bias levels) or ``worst_group_gap`` (one level, e.g. faces),
``group_heatmap``, ``convergence`` and ``head_vs_dfr`` (runs with representation sections).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from debias.data.registry import REBIAS_VANILLA, find_spec
from debias.methods.base import TRAIN_BIAS_LABELS, VAL_BIAS_LABELS
from debias.report import plots
from debias.report.summary import SUPERVISION_MARK, _label
from debias.report.sweep_data import SweepData, load_sweep_data
from debias.report.vocabulary import unit

__all__ = ["figure_level", "heatmap_note", "make_figures"]


def figure_level(data: SweepData) -> str | None:
    """The bias level the figures draw against: the summary's, unless the sweep has one value
    of it (nothing to draw a line against)."""
    level = data.info.level
    return None if level is not None and data.summary[level].nunique() < 2 else level


def _heatmap_groups(data: SweepData) -> tuple[pd.DataFrame, str]:
    """The group heatmap's rows (the strongest bias level's) and what its caption adds."""
    groups, level = data.groups, figure_level(data)
    if level is None:
        return groups, ""
    top = groups[level].max()
    return groups[groups[level] == top], f" at the strongest bias, {level} = {top:g}"


def heatmap_note(data: SweepData) -> str:
    """What the group heatmap's title and caption say of its bias level (``""`` for none)."""
    return _heatmap_groups(data)[1]


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
    level = figure_level(data)

    def path(name: str) -> Path | None:
        return None if out_dir is None else Path(out_dir) / f"{name}.png"

    figs = _accuracy_figure(data, level, path)
    if len(data.groups):
        figs["group_heatmap"] = _heatmap_figure(data, path("group_heatmap"))
    if data.history is not None and len(data.history):
        figs["convergence"] = _convergence_figure(data, level, path("convergence"))
    if data.representation is not None:
        figs["head_vs_dfr"] = _representation_figure(data, level, path("head_vs_dfr"))
    return figs


def _representation_metric(data: SweepData) -> str:
    """The metric the head-versus-DFR figure shows: unbiased accuracy across bias levels
    (Biased-MNIST), else worst-group accuracy (the faces' measure of a shortcut)."""
    return "unbiased" if figure_level(data) is not None else "worst-group"


def _representation_figure(data: SweepData, level: str | None, path: Path | None) -> Figure:
    rep = data.representation.summary
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
    return [k for k in data.info.keys if k != "method" and data.summary[k].nunique() > 1]


def _convergence_figure(data: SweepData, level: str | None, path: Path | None) -> Figure:
    """Convergence with one column per bias level or else per task, lines labelled by what
    still varies inside a column, so a method keeps one colour in every column."""
    history, panel, tasks = data.history, level, _tasks(data)
    if panel is None and tasks:
        panel = tasks[0]
        inside = [k for k in data.info.keys if k != panel and history[k].nunique() > 1]
        history = history.assign(label=history.apply(lambda r: _label(r, inside), axis=1))
    return plots.plot_convergence(history, level=panel, path=path)


# The group headings of the results dot plot: what the methods read (the supervision column).
_READ_HEADINGS = {
    SUPERVISION_MARK[TRAIN_BIAS_LABELS]: "training bias labels [B]",
    SUPERVISION_MARK[VAL_BIAS_LABELS]: "validation bias labels only [V]",
}


def _marked(summary: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, str]]:
    """Labels of runs that read bias labels suffixed " [B]" or " [V]", and each label's group
    heading (what it read: no bias labels, validation or training bias labels), methods that
    read nothing first."""
    if "supervision" not in summary:
        return summary, {}
    labelled = summary.drop_duplicates("label")
    marks = dict(zip(labelled["label"], labelled["supervision"]))
    suffix = {k: f" [{k}]" for k in _READ_HEADINGS}
    marked = summary.assign(label=summary["label"].map(lambda x: x + suffix.get(marks.get(x), "")))
    heading = {
        lab + suffix.get(mark, ""): _READ_HEADINGS.get(mark, "no bias labels")
        for lab, mark in marks.items()
    }
    rank = {"no bias labels": 0, _READ_HEADINGS["V"]: 1, _READ_HEADINGS["B"]: 2}
    order = sorted(dict.fromkeys(marked["label"]), key=lambda lab: rank.get(heading[lab], 3))
    marked = marked.set_index("label", drop=False).loc[order].reset_index(drop=True)
    return marked, heading


def _chance(data: SweepData) -> float | None:
    """Chance accuracy (%): 100 / number of target classes on the test split (when the runs
    recorded their groups)."""
    if not len(data.groups) or "y" not in data.groups:
        return None
    return 100.0 / data.groups["y"].nunique()


def _accuracy_figure(data: SweepData, level: str | None, path) -> dict[str, Figure]:
    """Unbiased (and the other table metrics) against the bias level; with one level, the
    average-versus-worst-group dumbbells per method instead."""
    info, metrics = data.info, list(data.info.table_metrics)
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
    summary, headings = _marked(data.summary)
    titles = {
        m: f"{m}{' accuracy' if unit(m) == '%' else ' (pp)'} ({', '.join(info.sources[m])})"
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
        chance=_chance(data),
        groups=headings,
        path=path("accuracy_vs_bias"),
    )
    return {"accuracy_vs_bias": fig}


def _heatmap_figure(data: SweepData, path: Path | None) -> Figure:
    """Test accuracy per (target, bias) group at the strongest bias level."""
    groups, note = _heatmap_groups(data)
    # the datasets' own axis names (digit / background colour) when they agree
    axes = {getattr(find_spec(str(d)), "group_axes", None) for d in set(groups["dataset"])}
    named_axes = axes.pop() if len(axes) == 1 else None

    def named(option: str, fallback: str) -> str:
        values = groups[option].dropna().astype(str).unique() if option in groups else []
        return " / ".join(values) if len(values) else fallback

    return plots.plot_group_heatmap(
        groups,
        title=f"test-split accuracy per group (%){note}",
        ylabel=named_axes[0] if named_axes else f"target: {named('target', 'y')}",
        xlabel=named_axes[1] if named_axes else f"bias: {named('bias', 'b')}",
        path=path,
    )
