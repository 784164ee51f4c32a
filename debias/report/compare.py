"""Paired comparisons between methods on the same seeds and data (computing only; the report
renders them, :mod:`debias.report.markdown`).

For a condition (bias level and every other condition option but the method) and two methods
A and B run with the same seeds, the per-seed differences are ``d_s = v_A(s) − v_B(s)`` (in
percentage points). Reported: the number of pairs n, ``mean(d)``, its 95% Student t-interval
``mean ± t_{0.975, n−1} · sd(d) / √n``, the two-sided paired t-test p-value (``scipy.stats.
ttest_rel``; NaN when n < 2 or every difference is equal), and ``wins`` = #{s : d_s > 0}.
With 3 seeds the test has 2 degrees of freedom, so only large and consistent differences reach
p < 0.05.

Multiplicity: the *family* is every comparison of one :func:`paired_tables` call (one
``paired.csv``: each method against CE and each claim pair, on every paired metric and every
condition; the representation section's table and each search rule's table are families of
their own). ``p_holm`` is the Holm-adjusted p-value over the family's tests
(:func:`debias.metrics.multiplicity.holm_adjust`): ``p_holm < 0.05`` bounds the chance of one or
more false claims among all of them at 5%.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from debias.metrics.multiplicity import holm_adjust
from debias.report.vocabulary import PAIRED_METRICS, metric

if TYPE_CHECKING:
    from debias.report.summary import SummaryInfo

__all__ = [
    "PAIRED_BASELINE",
    "PAIRED_CLAIMS",
    "PAIRED_OUTPUT",
    "paired_differences",
    "paired_tables",
    "with_holm",
]

# Paired comparisons the report makes when both methods are in the sweep: every method against
# the cross-entropy baseline, and the seed paper's claim: ConTeX against SupCon and, under each
# published recipe, against that recipe's own loss (RECIPE_LOSS: BiasCon under biascon and
# bc+bb, FairKL under fairkl; issue 33).
PAIRED_BASELINE = "ce"
RECIPE_LOSS = "<the recipe's own loss>"
PAIRED_CLAIMS = (("contex", "supcon"), ("contex", RECIPE_LOSS))
# Columns of a paired_differences row that are results, not condition options.
PAIRED_OUTPUT = (
    "n", "mean_diff_pp", "ci95_low_pp", "ci95_high_pp", "p_value", "wins",
    "method_mean_pct", "baseline_mean_pct", "p_holm",
)  # fmt: skip

# Options that differ between two methods by construction, not a different condition.
_METHOD_BOUND = ("method", "mode", "augment", "method_options", "label", "supervision")
# Method options that belong to the loss even under one protocol: a two-view loss (ConTeX,
# SupCon) under FairKL's one-view recipe contrasts 2 views where FairKL contrasts 1 (the sweep
# YAMLs label that change); they are not a protocol difference that refuses the pair.
_LOSS_BOUND = ("method_options.n_views",)
# The training protocol besides the loss (issue 33): a method's runs under two of them are two
# variants, never pooled; two losses are compared only under one (``same_protocol``).
PROTOCOL = ("recipe", "mode", "augment", "views", "ce_views")
# Flattened option groups (``loss_options.self_weight``) that belong to one method: values of
# them split a method into variants (ConTeX with self_weight 0.5 and 0.7), each compared with
# the baseline on its own; they are never a condition to match the baseline on.
_VARIANT_PREFIXES = ("loss_options.", "method_options.")


def _missing(v: object) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _variant_columns(per_run: pd.DataFrame, keys: Sequence[str]) -> list[str]:
    return [k for k in keys if (k.startswith(_VARIANT_PREFIXES) or k in PROTOCOL) and k in per_run]


def _protocol_columns(per_run: pd.DataFrame) -> list[str]:
    """Every protocol column of the runs and their method options, keys or not (an option the
    report does not list because no method varies it can still differ between two methods)."""
    return [
        c
        for c in per_run
        if (c in PROTOCOL or c.startswith("method_options.")) and c not in _LOSS_BOUND
    ]


def _variants(rows: pd.DataFrame, cols: Sequence[str]) -> list[tuple[str, pd.DataFrame]]:
    """``(description, rows)`` per combination of the variant options that vary among ``rows``
    (``"self_weight=0.7"``; ``""`` for a method with one variant). An option a variant does not
    set is left out of its description."""
    text = {c: rows[c].map(lambda v: "nan" if _missing(v) else str(v)) for c in cols}
    cols = [c for c in cols if text[c].nunique() > 1]  # (astype(str) keeps NaN in pandas 3)
    if not cols:
        return [("", rows)]
    out = []
    for values, g in rows.groupby([text[c] for c in cols], sort=False):
        values = values if isinstance(values, tuple) else (values,)
        desc = ", ".join(
            f"{c.split('.', 1)[-1]}={v}" for c, v in zip(cols, values, strict=True) if v != "nan"
        )
        out.append((desc or "default", g))
    return out


def _warn_protocol_mismatch(
    per_run: pd.DataFrame, baseline: str, methods: Sequence[str] | None, match: Sequence[str]
) -> None:
    """Say so when two methods share no protocol (recipe, mode, views, method options): their
    comparison is refused, not made across protocols."""
    cols = [c for c in _protocol_columns(per_run) if c in match]
    if not cols:
        return
    text = per_run[cols].astype(str)
    protocols = {m: set(map(tuple, text[per_run["method"] == m].to_numpy())) for m in
                 [baseline, *(methods or [])]}  # fmt: skip
    for m in methods or []:
        if protocols[m] and protocols[baseline] and not protocols[m] & protocols[baseline]:
            warnings.warn(
                f"paired comparison {m} - {baseline} refused: no runs under one protocol "
                f"({', '.join(cols)} differ); compare losses under identical recipes",
                UserWarning,
                stacklevel=3,
            )


def _t_interval(d: np.ndarray) -> tuple[float, float, float]:
    from scipy import stats

    n = len(d)
    mean = float(d.mean())
    if n < 2:
        return mean, math.nan, math.nan
    sd = float(d.std(ddof=1))
    if sd == 0:
        return mean, 0.0, math.nan
    half = float(stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n))
    return mean, half, float(stats.ttest_rel(d, np.zeros_like(d)).pvalue)


def paired_differences(
    per_run: pd.DataFrame,
    *,
    metric: str,
    keys: Sequence[str],
    baseline: str,
    methods: Sequence[str] | None = None,
    replicate: str = "seed",
    lower_is_better: bool = False,
    same_protocol: bool = False,
) -> pd.DataFrame:
    """``method − baseline`` on ``metric`` for each condition, paired on ``replicate``.

    ``per_run`` has one row per run (``method``, ``replicate``, the condition ``keys`` and the
    ``metric`` column, in %). ``lower_is_better`` (a gap): ``wins`` counts the seeds where the
    method's value is below the baseline's. Returns one row per (condition, method variant)
    with ``variant`` (``""``, or e.g. ``"self_weight=0.7"`` when the method's loss or method
    options vary among its runs: each variant is compared on its own), ``n``,
    ``mean_diff_pp``, ``ci95_low_pp``, ``ci95_high_pp`` (percentage points), ``p_value``,
    ``wins``, ``baseline_mean_pct``, ``method_mean_pct``.
    """
    variant_cols = _variant_columns(per_run, keys)
    match = [k for k in keys if k not in _METHOD_BOUND and k not in variant_cols]
    if same_protocol:
        # Two losses under one protocol: recipe, mode, views and method options are matched
        # (a pair across protocols is refused), only the loss's own options are variants.
        variant_cols = [c for c in variant_cols if c.startswith("loss_options.")]
        match += [c for c in _protocol_columns(per_run) if c not in match]
        _warn_protocol_mismatch(per_run, baseline, methods, match)
    base = per_run[per_run["method"] == baseline]
    if base.empty:
        return pd.DataFrame()
    base = _variants(base, variant_cols)[0][1]  # a baseline with variants: its first one
    others = methods or [m for m in dict.fromkeys(per_run["method"]) if m != baseline]
    rows = []
    for method in others:
        mine = per_run[per_run["method"] == method]
        for variant, runs in _variants(mine, variant_cols) if len(mine) else []:
            head = {"method": method, "variant": variant, "baseline": baseline, "metric": metric}
            for cond, d, means in _paired(runs, base, match, replicate, metric):
                mean, half, p = _t_interval(d)
                rows.append(
                    cond
                    | head
                    | {
                        "n": len(d),
                        "mean_diff_pp": mean,
                        "ci95_low_pp": mean - half if not math.isnan(half) else math.nan,
                        "ci95_high_pp": mean + half if not math.isnan(half) else math.nan,
                        "p_value": p,
                        "wins": int((d < 0).sum() if lower_is_better else (d > 0).sum()),
                        "method_mean_pct": means[0],
                        "baseline_mean_pct": means[1],
                    }
                )
    return pd.DataFrame(rows)


def _paired(
    mine: pd.DataFrame, base: pd.DataFrame, match: Sequence[str], replicate: str, metric: str
):
    """Per condition of ``mine`` (one method variant): the condition's values, the per-seed
    differences against ``base`` and the two means (%), for conditions with a pair."""
    joined = mine.merge(base, on=[*match, replicate], suffixes=("", "_base"))
    for cond, g in joined.groupby(match, dropna=False, sort=False) if match else [((), joined)]:
        cond = cond if isinstance(cond, tuple) else (cond,)
        d = (g[metric] - g[f"{metric}_base"]).dropna().to_numpy(float)
        if len(d):
            yield (
                dict(zip(match, cond)),
                d,
                (float(g[metric].mean()), float(g[f"{metric}_base"].mean())),
            )


def paired_tables(info: SummaryInfo, metrics: Sequence[str] | None = None) -> pd.DataFrame:
    """Every paired comparison of the report on ``metrics`` (default: the vocabulary's paired
    metrics that the results table shows): each method against :data:`PAIRED_BASELINE` and
    each of :data:`PAIRED_CLAIMS`, with a ``supervision`` column (the method's runs' marks)."""
    per_run, keys = info.per_run, info.keys
    if "method" not in per_run:
        return pd.DataFrame()
    if metrics is None:
        metrics = [m for m in PAIRED_METRICS if m in info.table_metrics]
    frames = []
    for label in metrics:
        low = metric(label).lower_is_better
        frames.append(
            paired_differences(
                per_run, metric=label, keys=keys, baseline=PAIRED_BASELINE, lower_is_better=low
            )
        )
        for a, b in PAIRED_CLAIMS:
            for runs, baseline in _claim_baselines(per_run, a, b):
                frames.append(
                    paired_differences(
                        runs,
                        metric=label,
                        keys=keys,
                        baseline=baseline,
                        methods=[a],
                        lower_is_better=low,
                        same_protocol=True,
                    )  # fmt: skip
                )
    frames = [f for f in frames if len(f)]
    if not frames:
        return pd.DataFrame()
    out = pd.concat(frames, ignore_index=True)
    # A method's mark from its runs' records (joined when its runs read different kinds).
    marks = per_run.groupby("method")["supervision"].agg(lambda m: "/".join(sorted(set(m))))
    return with_holm(out.assign(supervision=out["method"].map(marks)))


def _claim_baselines(per_run: pd.DataFrame, method: str, baseline: str):
    """``(runs, baseline)`` of one claim pair: all runs and ``baseline``; for
    :data:`RECIPE_LOSS`, each published recipe's runs and its own loss (not when that loss is
    ``method`` itself or already a named claim baseline such as SupCon under supcontrast)."""
    if baseline != RECIPE_LOSS:
        yield per_run, baseline
        return
    if "recipe" not in per_run:
        return
    from debias.recipes import RECIPES

    named = {b for a, b in PAIRED_CLAIMS if a == method and b != RECIPE_LOSS}
    for recipe in dict.fromkeys(per_run["recipe"].dropna()):
        own = RECIPES[recipe].loss if recipe in RECIPES else None
        if own is not None and own != method and own not in named:
            yield per_run[per_run["recipe"] == recipe], own


def with_holm(paired: pd.DataFrame) -> pd.DataFrame:
    """``paired`` with ``p_holm``: its ``p_value`` column Holm-adjusted over all its rows, the
    family (module docstring); a row without a test (NaN) stays NaN and is not counted."""
    return paired.assign(p_holm=holm_adjust(paired["p_value"].to_numpy(float)))
