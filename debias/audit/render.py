"""Views and renderings of an embedding audit: scalars, a tidy table, text, Markdown, JSON, CSV,
PNG. The computing lives in :mod:`debias.audit.audit` (as fairlearn keeps ``_metric_frame.py``
apart from ``_plotter.py``).

:class:`AuditRendering` is the base class of :class:`~debias.audit.audit.AuditReport`: it reads
the report's fields (declared below) and never computes a measurement. This module imports
nothing from the audit but :mod:`debias.audit.plots` (which imports nothing of the audit), so
there is no import cycle.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from debias._markdown import markdown_table

#: Scalar fields of :class:`debias.metrics.GroupReport` copied into the tidy table.
REPORT_FIELDS = (
    "accuracy",
    "unbiased_accuracy",
    "worst_group_accuracy",
    "aligned_accuracy",
    "conflicting_accuracy",
    "balanced_accuracy",
    "equalized_odds_mean_gap",
    "equalized_odds_max_gap",
)


def json_safe(obj: Any) -> Any:
    """``obj`` with NaN -> None, numpy -> Python, DataFrames -> lists of records, keys -> str."""
    if isinstance(obj, pd.DataFrame):
        return [json_safe(r) for r in obj.reset_index().to_dict(orient="records")]
    if isinstance(obj, (pd.Series, dict)):
        return {str(key): json_safe(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [json_safe(v) for v in obj.tolist()]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return None if not np.isfinite(obj) else float(obj)
    if obj is None or isinstance(obj, str):
        return obj
    if obj is pd.NA:
        return None
    return str(obj)


def _fmt(v: Any) -> str:
    if isinstance(v, (float, np.floating)):
        return "NaN" if np.isnan(v) else f"{v:.4f}"
    if v is None or v is pd.NA:
        return ""
    return str(v)


def frame_markdown(df: pd.DataFrame, *, index: bool = False) -> str:
    """``df`` as a Markdown table, floats to 4 decimals."""
    if index:
        df = df.reset_index()
    return markdown_table(df.columns, ([_fmt(v) for v in row] for row in df.itertuples(False)))


class AuditRendering:
    """What an audit report shows: :meth:`overall`, :meth:`table`, :meth:`summary`,
    :meth:`to_dict`, :meth:`to_markdown` and :meth:`save` (see
    :class:`~debias.audit.audit.AuditReport` for the fields)."""

    # The fields (n, dim, groups, geometry, ...) are declared once, on AuditReport.

    def overall(self) -> dict[str, float]:
        """The overall scalars: sizes, leakage, target-probe metrics (``probe_*``), geometry."""
        out: dict[str, float] = {
            "n": float(self.n),
            "dim": float(self.dim),
            "bias_leakage": self.bias_leakage,
            "bias_leakage_chance": self.bias_leakage_chance,
            **{
                f"bias_leakage_{k}": float(v)
                for k, v in self.bias_leakage_test.items()
                if k != "leaking"
            },
            "bias_leakage_within_class_mean": float(self.bias_leakage_by_class["leakage"].mean()),
        }
        for name in REPORT_FIELDS:
            value = getattr(self.target_report, name, None)
            if value is not None:
                out[f"probe_{name}"] = float(value)
        out.update({name: float(value) for name, value in self.geometry.items()})
        return out

    def table(self) -> pd.DataFrame:
        """Tidy DataFrame of every scalar: columns ``metric, scope, y, b, n, value``.

        ``scope`` is ``overall``, ``class`` (per target ``y``), ``bias`` (per bias value ``b``)
        or ``group`` (per ``(y, b)``); ``y``/``b`` are missing where they do not apply.
        """
        rows: list[dict[str, Any]] = []
        for metric, value in self.overall().items():
            rows.append(
                {"metric": metric, "scope": "overall", "y": None, "b": None, "n": self.n,
                 "value": value}
            )  # fmt: skip
        names = {"leakage": "bias_leakage", "chance": "bias_leakage_chance"}
        names |= {c: f"bias_leakage_{c}" for c in ("ci_low", "ci_high", "null_mean", "null_max")}
        for y, r in self.bias_leakage_by_class.iterrows():
            for column, metric in names.items():
                if column in r:
                    rows.append(
                        {"metric": metric, "scope": "class", "y": y, "b": None, "n": r["n"],
                         "value": r[column]}
                    )  # fmt: skip
        for r in self.bias_groups.itertuples(index=False):
            for metric in ("alignment", "uniformity"):
                rows.append(
                    {"metric": metric, "scope": "bias", "y": None, "b": r.b, "n": r.n,
                     "value": getattr(r, metric)}
                )  # fmt: skip
        for r in self.groups.itertuples(index=False):
            for metric in ("probe_accuracy", "knn_purity", "alignment", "uniformity"):
                rows.append(
                    {"metric": metric, "scope": "group", "y": r.y, "b": r.b, "n": r.n,
                     "value": getattr(r, metric)}
                )  # fmt: skip
        df = pd.DataFrame(rows)
        df["y"] = df["y"].astype("Int64")
        df["b"] = df["b"].astype("Int64")
        df["n"] = df["n"].astype("int64")
        df["value"] = df["value"].astype(float)
        return df

    # -- text ---------------------------------------------------------------------------------
    def summary(self) -> str:
        """A few human-readable lines: leakage, target probe, geometry, k-NN purity."""
        lines = [
            f"Embedding audit: N={self.n}, D={self.dim}, classes={self.num_classes}, "
            f"bias values={self.num_bias}",
            f"Bias leakage (linear probe, {self.settings.get('cv', '?')}-fold balanced accuracy): "
            f"{self.bias_leakage:.4f}{self._interval(self.bias_leakage_test)} (nominal chance "
            f"{self.bias_leakage_chance:.4f})",
            f"  {self.leakage_verdict()}",
        ]
        lines += self._leakage_by_class_lines()
        lines.append(self._target_probe_line())
        geo = self.geometry
        lines.append(
            f"Geometry (L2-normalised): alignment {geo['alignment']:.4f}, uniformity "
            f"{geo['uniformity']:.4f}; mean cosine within class across bias "
            f"{geo['cos_same_class_diff_bias']:.4f} vs within bias across classes "
            f"{geo['cos_diff_class_same_bias']:.4f}"
        )
        lines.append(
            f"k-NN purity (k={self.settings.get('knn_k', '?')}): {geo['knn_purity']:.4f} "
            f"overall, worst group {geo['knn_purity_worst_group']:.4f}, aligned "
            f"{geo['knn_purity_aligned']:.4f}, conflicting {geo['knn_purity_conflicting']:.4f}"
        )
        lines += [f"Note: {note}" for note in self.notes]
        return "\n".join(lines)

    @staticmethod
    def _interval(test: Any) -> str:
        low, high = test.get("ci_low", np.nan), test.get("ci_high", np.nan)
        return "" if low is None or np.isnan(low) else f" [{low:.3f}, {high:.3f}]"

    def leakage_verdict(self) -> str:
        """Whether the leakage exceeds its permutation baseline, in one sentence."""
        t = self.bias_leakage_test
        permutations = self.settings.get("permutations", 0)
        if not t or t.get("leaking") is None:
            return "no permutation baseline (permutations=0): the leakage is not judged"
        verdict = (
            "LEAKING: the interval's lower end is above every permuted draw"
            if t["leaking"]
            else "not distinguishable from the permutation baseline"
        )
        return (
            f"permutation baseline (bias shuffled within class, {permutations} draws): mean "
            f"{t['null_mean']:.4f}, max {t['null_max']:.4f}; p = {t['p_value']:.3f}; {verdict}"
        )

    def _leakage_by_class_lines(self) -> list[str]:
        by = self.bias_leakage_by_class

        def judged(r: Any) -> str:
            if np.isnan(r.leakage):
                return "NaN"
            mark = {True: ", leaking", False: ""}.get(r.leaking, "")
            return (
                f"{r.leakage:.3f}{self._interval(r._asdict())} (baseline {r.null_mean:.3f}{mark})"
            )

        parts = [f"y={y}: {judged(r)}" for y, r in zip(by.index, by.itertuples(index=False))]
        lines = ["  within class (95% interval, permutation baseline): " + "; ".join(parts)]
        for y, r in by[by["leakage"].isna()].iterrows():
            lines.append(f"    y={y}: NaN because {r.reason}")
        return lines

    def _target_probe_line(self) -> str:
        target, groups = self.target_report, self.groups
        worst = (
            groups.loc[groups["probe_accuracy"].idxmin()]
            if groups["probe_accuracy"].notna().any()
            else None
        )
        where = "" if worst is None else f" (y={int(worst.y)}, b={int(worst.b)}, n={int(worst.n)})"
        ci = getattr(target, "ci", {}) or {}

        def num(name: str) -> str:
            value = getattr(target, name, float("nan"))
            low, high = ci.get(name, (None, None))
            return f"{value:.4f}" + ("" if low is None else f" [{low:.3f}, {high:.3f}]")

        return (
            f"Target probe (95% bootstrap intervals): accuracy {num('accuracy')}, unbiased "
            f"{num('unbiased_accuracy')}, worst-group {num('worst_group_accuracy')}"
            + where
            + f", aligned {num('aligned_accuracy')}, conflicting {num('conflicting_accuracy')}"
        )

    def __str__(self) -> str:
        return self.summary()

    # -- documents ----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (NaN -> None, numpy -> Python, DataFrames -> lists of records)."""
        mf = self.metric_frame
        mf_dict = None
        if mf is not None:
            mf_dict = {"overall": json_safe(mf.overall), "by_group": json_safe(mf.by_group)}
        target = self.target_report
        return json_safe(
            {
                "overall": self.overall(),
                "bias_leakage": self.bias_leakage,
                "bias_leakage_chance": self.bias_leakage_chance,
                "bias_leakage_test": self.bias_leakage_test,
                "bias_leakage_by_class": self.bias_leakage_by_class,
                "target_report": target.to_dict() if hasattr(target, "to_dict") else None,
                "metric_frame": mf_dict,
                "groups": self.groups,
                "bias_groups": self.bias_groups,
                "geometry": self.geometry,
                "timings": self.timings,
                "settings": self.settings,
                "notes": self.notes,
            }
        )

    def to_markdown(self) -> str:
        """The ``audit.md`` text: summary, then every table as Markdown."""
        scalars = self.overall()
        overall = pd.DataFrame(
            {
                "metric": list(scalars),
                "value": [
                    str(int(v)) if name in ("n", "dim") else _fmt(v) for name, v in scalars.items()
                ],
            }
        )
        timings = pd.DataFrame(
            {"stage": list(self.timings), "seconds": list(self.timings.values())}
        )
        settings = pd.DataFrame(
            {"setting": list(self.settings), "value": [str(v) for v in self.settings.values()]}
        )
        parts = [
            "# Embedding fairness audit",
            "",
            "```",
            self.summary(),
            "```",
            "",
            f"**Bias leakage:** {self.bias_leakage:.4f}{self._interval(self.bias_leakage_test)} "
            f"(nominal chance {self.bias_leakage_chance:.4f}); {self.leakage_verdict()}",
            "",
            "## Overall",
            frame_markdown(overall),
            "",
            "## Bias leakage within each target class",
            "Balanced accuracy of a linear probe predicting the bias from Z among samples of one "
            "class: the information a shortcut can use. ci_low/ci_high: 95% bootstrap interval; "
            "null_mean/null_max: the same probe on shuffled bias labels; leaking: ci_low > "
            "null_max.",
            "",
            frame_markdown(self.bias_leakage_by_class, index=True),
            "",
            "## Per (target, bias) group",
            "Target-probe accuracy (out-of-fold), k-NN target purity, alignment (mean squared "
            "distance between pairs of the group) and uniformity (log mean exp(-2 d^2)).",
            "",
            frame_markdown(self.groups),
            "",
            "## Per bias value",
            frame_markdown(self.bias_groups),
            "",
            "## Timings (s)",
            frame_markdown(timings),
            "",
            "## Settings",
            frame_markdown(settings),
            "",
        ]
        return "\n".join(parts)

    def save_plots(self, directory: str | os.PathLike) -> list[Path]:
        """Write ``projection.png`` (when there is a projection), ``groups.png`` and
        ``leakage.png`` into ``directory``; return the paths written."""
        # Imported here: matplotlib is only needed by those who save plots.
        from debias.audit import plots

        out = Path(directory)
        method = str(self.settings.get("projection", "pca"))
        written = [
            plots.plot_projection(self.projection, method, out / "projection.png"),
            plots.plot_groups(self.groups, out / "groups.png"),
            plots.plot_leakage(self.bias_leakage_by_class, self.bias_leakage, out / "leakage.png"),
        ]
        return [p for p in written if p is not None]

    def save(self, directory: str | os.PathLike, *, plots: bool = True) -> list[Path]:
        """Write ``audit.md``, ``audit.csv`` (:meth:`table`), ``groups.csv``, ``audit.json`` and,
        with ``plots``, PNGs (projection, per-group bars, leakage by class). Returns the paths."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        text = self.to_markdown()
        pngs: list[Path] = []
        if plots:
            pngs = self.save_plots(out)
            text += "\n## Plots\n\n" + "\n".join(f"![{p.stem}]({p.name})" for p in pngs) + "\n"
        written = [out / "audit.md", out / "audit.csv", out / "groups.csv", out / "audit.json"]
        written[0].write_text(text)
        self.table().to_csv(written[1], index=False)
        self.groups.to_csv(written[2], index=False)
        written[3].write_text(json.dumps(self.to_dict(), indent=2))
        return written + pngs
