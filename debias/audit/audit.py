"""Audit an embedding for shortcut bias: leakage, a target probe, geometry, k-NN purity.

Question 1, does the representation carry the bias attribute? A linear probe (standardise +
logistic regression) predicts the bias from ``Z``; its cross-validated balanced accuracy is the
*bias leakage*. Overall leakage is confounded by the target when bias and target are correlated
(predicting y already predicts b), so it is also measured *within each target class*: that is the
information a classifier can use as a shortcut.

Question 2, does the representation treat groups differently? A linear probe of the target gives
out-of-fold predictions, summarised per ``(y, b)`` group by :func:`debias.metrics.group_report`
and per bias value by a fairlearn ``MetricFrame``; the geometry of each group (alignment,
uniformity, cross-group cosine) and its k-NN target purity come from :mod:`debias.audit.geometry`.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import accuracy_score

from debias._types import Group
from debias.audit import geometry
from debias.audit.probe import (
    BOOTSTRAP,
    LEAKAGE_COLUMNS,
    MIN_GROUP,
    PERMUTATIONS,
    leakage_test,
    linear_probe_predict,
)
from debias.audit.render import AuditRendering

__all__ = ["AuditReport", "audit_embeddings", "linear_probe_predict"]


# -- input checking ---------------------------------------------------------------------------
def _as_matrix(Z: Any) -> np.ndarray:
    if isinstance(Z, torch.Tensor):
        Z = Z.detach().cpu().float().numpy()
    try:
        Z = np.asarray(Z, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"Z must be a numeric array [N, D]; got {type(Z).__name__}") from exc
    if Z.ndim != 2 or Z.shape[0] == 0 or Z.shape[1] == 0:
        raise ValueError(f"Z must be a non-empty 2-D array [N, D]; got shape {Z.shape}")
    bad = ~np.isfinite(Z)
    if bad.any():
        raise ValueError(
            f"Z contains {int(bad.sum())} NaN/inf value(s) in {int(bad.any(1).sum())} row(s); "
            "expected finite embeddings (drop or fix those rows first)"
        )
    if Z.shape[0] > 1 and not np.ptp(Z, axis=0).any():
        # A collapsed encoder: every probe would be at chance and every distance 0.
        what = "all zeros" if not Z.any() else "the same vector"
        raise ValueError(
            f"Z is constant: all {Z.shape[0]} rows are {what} (a collapsed or untrained "
            "encoder?); there is nothing to audit"
        )
    return Z


def _as_labels(x: Any, name: str, n: int) -> np.ndarray:
    # Imported here: debias.metrics pulls in fairlearn, which `import debias.audit` need not.
    from debias.metrics._inputs import as_labels

    labels = as_labels(x, name)
    if len(labels) != n:
        raise ValueError(f"length mismatch: Z has {n} rows but {name} has {len(labels)} labels")
    return labels


def _check_options(
    *,
    cv: Any,
    max_samples: int | None,
    rare_bias: str,
    projection: str | None,
    knn_queries: int | None,
    max_pairs: int | None,
    threads: int | None,
    permutations: int = PERMUTATIONS,
) -> None:
    if not isinstance(cv, (int, np.integer)) or cv < 2:
        raise ValueError(f"cv must be an integer >= 2; got {cv!r}")
    if max_samples is not None and max_samples < 2 * cv:
        raise ValueError(f"max_samples must be None or >= 2 * cv = {2 * cv}; got {max_samples}")
    if rare_bias not in ("nan", "drop"):
        raise ValueError(f"rare_bias must be 'nan' or 'drop'; got {rare_bias!r}")
    if projection not in ("pca", "tsne", None):
        raise ValueError(f"projection must be 'pca', 'tsne' or None; got {projection!r}")
    for name, v in (("knn_queries", knn_queries), ("max_pairs", max_pairs), ("threads", threads)):
        if v is not None and v < 1:
            raise ValueError(f"{name} must be None or >= 1; got {v}")
    if not isinstance(permutations, (int, np.integer)) or permutations < 0:
        raise ValueError(f"permutations must be an integer >= 0; got {permutations!r}")


def _aligned_pairs(aligned_groups: Iterable[Group] | None) -> tuple[Group, ...] | None:
    from debias.metrics._inputs import as_aligned

    pairs = as_aligned(aligned_groups)
    return None if pairs is None else tuple(sorted(pairs))


def _subsample(
    X: np.ndarray, y: np.ndarray, b: np.ndarray, *, max_samples: int | None, seed: int,
    notes: list[str],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    n_all = X.shape[0]
    if max_samples is None or n_all <= max_samples:
        return X, y, b
    keep = np.sort(np.random.default_rng(seed).choice(n_all, size=max_samples, replace=False))
    notes.append(f"audited a seeded random subsample of {max_samples} of {n_all} rows")
    return X[keep], y[keep], b[keep]


def _check_label_counts(
    y: np.ndarray, b: np.ndarray, *, cv: int, knn_k: int
) -> tuple[np.ndarray, np.ndarray]:
    """``(classes, bias_values)`` present, after checking the audit can measure them."""
    n = len(y)
    bias_values = np.unique(b)
    classes = np.unique(y)
    if len(bias_values) < 2:
        raise ValueError(
            f"bias has a single value ({int(bias_values[0])}); the audit needs at least 2 bias "
            "values to measure leakage and group differences"
        )
    if len(classes) < 2:
        raise ValueError(
            f"targets has a single value ({int(classes[0])}); the target probe needs at least 2 "
            "classes"
        )
    for name, labels in (("bias", b), ("targets", y)):
        # StratifiedKFold needs at least one label with cv samples to build cv folds.
        if np.bincount(labels - labels.min()).max() < cv:
            raise ValueError(
                f"too few samples for cv={cv}: no {name} value has {cv} samples "
                f"(N={n}); pass a smaller cv or more rows"
            )
    if not 1 <= knn_k < n:
        raise ValueError(f"knn_k must be between 1 and N - 1 = {n - 1}; got {knn_k}")
    return classes, bias_values


# -- probes -----------------------------------------------------------------------------------
def _class_row(
    c: int, idx: np.ndarray, b: np.ndarray, *, cv: int, rare_bias: str
) -> tuple[dict[str, Any], np.ndarray]:
    """The class's row before its probe (``reason`` set when it cannot run) and its rows."""
    need = max(cv, MIN_GROUP)
    values, counts = np.unique(b[idx], return_counts=True)
    dropped = values[counts < need]
    if rare_bias == "drop" and len(dropped) and len(values) - len(dropped) >= 2:
        # Measure leakage among the bias values that can fill every fold; say which were left.
        idx = idx[~np.isin(b[idx], dropped)]
        values, counts = values[counts >= need], counts[counts >= need]
    row: dict[str, Any] = {
        "y": int(c), "n": len(idx), "bias_values": len(values), "chance": 1.0 / len(values),
        "leakage": float("nan"), **dict.fromkeys(LEAKAGE_COLUMNS, float("nan")), "reason": "",
    }  # fmt: skip
    row["leaking"] = None
    if rare_bias == "drop" and len(dropped) and counts.min() >= need:
        row["reason"] = (
            f"left out bias value(s) {[int(v) for v in dropped]} with fewer than {need} samples"
        )
    if len(values) < 2:
        row["reason"] = f"only bias value {int(values[0])} occurs in this class"
    elif counts.min() < need:
        rare = values[counts < need]
        row["reason"] = (
            f"bias value(s) {[int(v) for v in rare]} have fewer than {need} samples "
            f"(min {int(counts.min())}; a probe needs cv={cv} and at least {MIN_GROUP} images "
            "per bias value)"
        )
    return row, idx


def _leakage_by_class(
    X: np.ndarray, y: np.ndarray, b: np.ndarray, *, cv: int, seed: int, max_iter: int,
    notes: list[str], rare_bias: str = "nan", permutations: int = PERMUTATIONS,
) -> pd.DataFrame:  # fmt: skip
    rows = []
    by_note: dict[str, list[int]] = {}
    for c in np.unique(y):
        row, idx = _class_row(c, np.flatnonzero(y == c), b, cv=cv, rare_bias=rare_bias)
        if row["reason"] == "" or row["reason"].startswith("left out"):
            class_notes: list[str] = []
            # Within one class, shuffling within class is a plain shuffle of the bias labels.
            row.update(
                leakage_test(
                    X[idx], b[idx], np.zeros(len(idx)), cv=cv, seed=seed, max_iter=max_iter,
                    notes=class_notes, what="within-class leakage probe",
                    permutations=permutations,
                )
            )  # fmt: skip
            for note in class_notes:
                by_note.setdefault(note, []).append(int(c))
        rows.append(row)
    # One note per kind of warning, listing the classes, instead of one per class.
    notes.extend(f"{note} (classes {classes})" for note, classes in by_note.items())
    return pd.DataFrame(rows).set_index("y")


def _small_group_note(y: np.ndarray, b: np.ndarray) -> str | None:
    """A note when the smallest ``(y, b)`` group present has fewer than :data:`MIN_GROUP`
    images: numbers resting on such groups are flagged, not trusted."""
    _, counts = np.unique(np.stack([y, b], 1), axis=0, return_counts=True)
    if counts.min() >= MIN_GROUP:
        return None
    return (
        f"small groups: {int((counts < MIN_GROUP).sum())} of {len(counts)} (target, bias) "
        f"groups hold fewer than {MIN_GROUP} images (smallest {int(counts.min())}); numbers "
        "resting on them are a handful of images' worth, and within-class probes on them are "
        "not run"
    )


def _metric_frame(y: np.ndarray, pred: np.ndarray, b: np.ndarray):
    try:
        from debias.metrics import bias_metric_frame
    except ImportError:
        bias_metric_frame = None
    if bias_metric_frame is not None:
        return bias_metric_frame(y, pred, b)
    from fairlearn.metrics import MetricFrame, count

    return MetricFrame(
        metrics={"accuracy": accuracy_score, "count": count},
        y_true=y,
        y_pred=pred,
        sensitive_features=pd.Series(b, name="bias"),
    )


# -- the stages -------------------------------------------------------------------------------
def _bias_leakage(
    X: np.ndarray, y: np.ndarray, b: np.ndarray, *, rare_bias: str, cv: int, seed: int,
    max_iter: int, notes: list[str], permutations: int,
) -> tuple[dict[str, Any], pd.DataFrame]:  # fmt: skip
    """Overall bias leakage with its interval and permutation baseline (bias shuffled within
    each class), and the per-class table."""
    overall = leakage_test(
        X, b, y, cv=cv, seed=seed, max_iter=max_iter, notes=notes, what="leakage probe",
        permutations=permutations,
    )  # fmt: skip
    by_class = _leakage_by_class(
        X, y, b, cv=cv, seed=seed, max_iter=max_iter, notes=notes, rare_bias=rare_bias,
        permutations=permutations,
    )  # fmt: skip
    return overall, by_class


def _target_probe(
    X: np.ndarray, y: np.ndarray, b: np.ndarray, aligned: tuple[Group, ...] | None, *, cv: int,
    seed: int, max_iter: int, notes: list[str],
) -> tuple[Any, Any]:  # fmt: skip
    """``(group_report, metric_frame)`` of the target probe's out-of-fold predictions."""
    from debias.metrics import group_report

    pred_y = linear_probe_predict(
        X, y, cv=cv, seed=seed, max_iter=max_iter, notes=notes, what="target probe"
    )
    report = group_report(y, pred_y, b, aligned=aligned, bootstrap=BOOTSTRAP, seed=seed)
    return report, _metric_frame(y, pred_y, b)


def _group_geometry(
    z: torch.Tensor, y: np.ndarray, b: np.ndarray, *, max_pairs: int | None, seed: int
) -> pd.DataFrame:
    """Alignment and uniformity of every ``(y, b)`` group: columns ``y, b, alignment,
    uniformity``."""
    cells = pd.DataFrame({"y": y, "b": b}).groupby(["y", "b"], sort=True).indices
    rows = []
    for gi, ((gy, gb), idx) in enumerate(cells.items()):
        zi = z[torch.from_numpy(idx)]
        rows.append(
            {
                "y": int(gy),
                "b": int(gb),
                "alignment": geometry.alignment(zi, normalize=False),
                "uniformity": geometry.uniformity(
                    zi, max_pairs=max_pairs, seed=seed + 1 + gi, normalize=False
                ),
            }
        )
    return pd.DataFrame(rows)


def _bias_value_geometry(
    z: torch.Tensor, y: np.ndarray, b: np.ndarray, bias_values: np.ndarray, *,
    max_pairs: int | None, seed: int,
) -> pd.DataFrame:  # fmt: skip
    """Per bias value: ``b, n, alignment`` (same-target pairs inside it), ``uniformity``."""
    rows = []
    for bi, v in enumerate(bias_values):
        idx = np.flatnonzero(b == v)
        zi = z[torch.from_numpy(idx)]
        rows.append(
            {
                "b": int(v),
                "n": len(idx),
                "alignment": geometry.alignment(zi, y[idx], normalize=False),
                "uniformity": geometry.uniformity(
                    zi, max_pairs=max_pairs, seed=seed + 10_007 + bi, normalize=False
                ),
            }
        )
    return pd.DataFrame(rows)


def _overall_geometry(
    z: torch.Tensor, y: np.ndarray, b: np.ndarray, *, max_pairs: int | None, seed: int
) -> dict[str, float]:
    geo: dict[str, float] = {
        "alignment": geometry.alignment(z, y, normalize=False),
        "uniformity": geometry.uniformity(z, max_pairs=max_pairs, seed=seed, normalize=False),
    }
    geo.update(geometry.cross_group_cosine(z, y, b, normalize=False))
    return geo


def _group_table(
    knn: pd.DataFrame,
    target_report: Any,
    geo_groups: pd.DataFrame,
    aligned: tuple[Group, ...] | None,
) -> pd.DataFrame:
    """One row per ``(y, b)`` group: k-NN purity, aligned flag, probe accuracy with its exact
    95% interval (``probe_ci_low`` / ``probe_ci_high``, Clopper–Pearson), geometry."""
    probe_groups = target_report.groups[["y", "b", "accuracy", "ci_low", "ci_high"]].rename(
        columns={"accuracy": "probe_accuracy", "ci_low": "probe_ci_low", "ci_high": "probe_ci_high"}
    )
    groups = knn.rename(columns={"queries": "knn_queries"})
    groups["aligned"] = (
        [(int(r.y), int(r.b)) in set(aligned) for r in groups.itertuples()]
        if aligned is not None
        else (groups["y"] == groups["b"]).to_numpy()
    )
    groups = groups.merge(
        probe_groups.astype({"y": "int64", "b": "int64"}), on=["y", "b"], how="left"
    )
    groups = groups.merge(geo_groups, on=["y", "b"], how="left")
    return groups[
        ["y", "b", "n", "aligned", "probe_accuracy", "probe_ci_low", "probe_ci_high",
         "knn_purity", "knn_queries", "alignment", "uniformity"]
    ]  # fmt: skip


def _knn_summary(groups: pd.DataFrame) -> dict[str, float]:
    """Population-weighted k-NN purity, its worst group, and the aligned / conflicting means."""
    measured = groups["knn_purity"].notna()
    sizes = groups.loc[measured, "n"].to_numpy(float)
    purity = groups.loc[measured, "knn_purity"].to_numpy(float)
    return {
        "knn_purity": float((sizes * purity).sum() / sizes.sum()),
        "knn_purity_worst_group": float(purity.min()),
        "knn_purity_aligned": float(groups.loc[measured & groups["aligned"], "knn_purity"].mean()),
        "knn_purity_conflicting": float(
            groups.loc[measured & ~groups["aligned"], "knn_purity"].mean()
        ),
    }


@dataclass
class AuditReport(AuditRendering):
    """Everything :func:`audit_embeddings` measured. See that function for definitions; the
    views and renderings (``overall``, ``table``, ``summary``, ``to_markdown``, ``to_dict``,
    ``save``) come from :class:`~debias.audit.render.AuditRendering`.

    Attributes:
        bias_leakage: cross-validated balanced accuracy of a linear probe predicting bias from Z.
        bias_leakage_chance: ``1 / (number of bias values present)``, the nominal chance.
        bias_leakage_test: the leakage's uncertainty (:mod:`debias.audit.probe`): ``ci_low,
            ci_high`` (95% stratified bootstrap), ``null_mean, null_max`` (the permutation
            baseline: the probe refitted on bias labels shuffled within class, ``permutations``
            draws), ``p_value`` and ``leaking`` (``ci_low > null_max``).
        bias_leakage_by_class: indexed by target ``y``: ``n, bias_values, chance, leakage,
            ci_low, ci_high, null_mean, null_max, p_value, leaking, reason`` (leakage NaN with
            a reason where it cannot be measured).
        target_report: :class:`debias.metrics.GroupReport` of the target probe's out-of-fold
            predictions.
        metric_frame: fairlearn ``MetricFrame`` of the same predictions grouped by bias.
        groups: one row per ``(y, b)`` group: ``n, aligned, probe_accuracy, probe_ci_low,
            probe_ci_high`` (exact 95% interval of the probe accuracy), ``knn_purity,
            knn_queries, alignment, uniformity``.
        bias_groups: one row per bias value: ``n, alignment, uniformity`` (alignment over
            same-target pairs inside the bias group, uniformity over all its pairs).
        geometry: overall scalars: ``alignment, uniformity``, the four ``cos_*`` means,
            ``knn_purity`` (population-weighted), ``knn_purity_worst_group``,
            ``knn_purity_aligned`` / ``knn_purity_conflicting`` (mean over groups).
        projection: 2-D coordinates (``x1, x2, y, b``) of a seeded subsample, for plots.
        timings: seconds per stage. settings: the arguments and sizes used. notes: warnings.
    """

    n: int
    dim: int
    num_classes: int
    num_bias: int
    bias_leakage: float
    bias_leakage_chance: float
    bias_leakage_by_class: pd.DataFrame
    target_report: Any
    metric_frame: Any
    groups: pd.DataFrame
    bias_groups: pd.DataFrame
    geometry: dict[str, float]
    bias_leakage_test: dict[str, Any] = field(default_factory=dict)
    projection: pd.DataFrame | None = None
    timings: dict[str, float] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


# -- the audit --------------------------------------------------------------------------------
@contextmanager
def _thread_limit(threads: int | None) -> Iterator[None]:
    if threads is None:
        yield
        return
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    try:
        with threadpool_limits(limits=int(threads)):
            yield
    finally:
        torch.set_num_threads(before)


def _stage(timings: dict[str, float], name: str, t0: float) -> float:
    now = time.perf_counter()
    timings[name] = round(now - t0, 4)
    return now


def audit_embeddings(
    Z: np.ndarray | torch.Tensor,
    targets: np.ndarray | torch.Tensor,
    bias: np.ndarray | torch.Tensor,
    *,
    aligned_groups: Iterable[Group] | None = None,
    seed: int = 0,
    cv: int = 5,
    max_samples: int | None = None,
    knn_k: int = 10,
    knn_queries: int | None = 5_000,
    max_pairs: int | None = 250_000,
    probe_max_iter: int = 100,
    rare_bias: str = "nan",
    permutations: int = PERMUTATIONS,
    projection: str | None = "pca",
    plot_samples: int = 5_000,
    threads: int | None = 1,
) -> AuditReport:
    """Audit embeddings ``Z`` [N, D] for bias leakage and group differences.

    Returns an :class:`AuditReport`: ``bias_leakage`` (overall and per class, with chance),
    the target probe's ``target_report`` (a :class:`~debias.metrics.GroupReport`) and
    ``metric_frame`` (fairlearn), geometry and k-NN purity per group, the 2-D projection;
    ``summary()`` prints it, ``save(folder)`` writes ``audit.md``, CSVs and figures. Example::

        emb = embed(encoder, dataset)                     # or Embeddings.load("e.npz")
        report = audit_embeddings(emb.Z, emb.targets, emb.bias,
                                  aligned_groups=emb.aligned_groups)
        print(report.summary()); report.save("runs/audit")

    Definitions (``b`` = bias value, ``y`` = target, group ``g = (y, b)``):

    * **Bias leakage** = balanced accuracy ``(1/|B|) sum_b P(b_hat = b | b)`` of the out-of-fold
      predictions of a linear probe (StandardScaler + multinomial LogisticRegression, L-BFGS,
      ``probe_max_iter``) trained to predict ``b`` from ``Z`` with ``StratifiedKFold(cv)``
      shuffled by ``seed``. Chance is ``1/|B|``, ``|B|`` = bias values present. Within class
      ``y``, the same on the rows of ``y`` only; NaN with a reason when the class holds a single
      bias value or a bias value with fewer than ``max(cv, 5)`` samples. ``rare_bias="drop"``
      instead leaves such rare bias values out of that class's probe (chance becomes
      ``1/#kept``, the reason names them); useful at high bias rates, where most classes have a
      rare value.
    * **Its uncertainty** (:mod:`debias.audit.probe`): every leakage has a 95% stratified
      bootstrap interval and a permutation baseline, the same probe refitted ``permutations``
      times on the bias labels shuffled within each class (the chance level measured on this
      data); ``leaking`` is True when the interval's lower end is above every permuted draw.
      A note flags (target, bias) groups of fewer than 5 images.
    * **Target probe**: the same probe predicting ``y`` (folds stratified by ``y``); its
      out-of-fold predictions give ``target_report = group_report(y, y_hat, b, aligned,
      bootstrap=1000)`` (with 95% intervals) and ``metric_frame`` (fairlearn, by bias).
    * **Geometry** on ``z = Z/||Z||`` (see :mod:`debias.audit.geometry`): alignment
      ``mean ||z_i - z_j||^2`` over pairs ``i != j`` of the same target (within one ``(y, b)``
      group that is all its pairs); uniformity ``log mean_{i != j} exp(-2 ||z_i - z_j||^2)``
      over all pairs of the group; mean cosine within class across bias values vs within bias
      value across classes (exact).
    * **k-NN purity** per group: fraction of the ``knn_k`` cosine nearest neighbours (self
      excluded) with the query's target.

    What is subsampled (all seeded): with ``max_samples``, every stage runs on a uniform random
    subset of ``max_samples`` rows (otherwise leakage and probes use all rows); the uniformity of a
    set with more than ``max_pairs`` ordered pairs is computed on all pairs of a random subset of
    ``m`` of its points, ``m (m - 1) <= max_pairs`` (unbiased; alignment and the cosine means are
    exact); k-NN uses at most ``knn_queries`` query points, small groups whole (neighbours are
    searched among all rows); the projection is fitted and drawn on ``plot_samples`` rows. ``projection`` is
    ``"pca"``, ``"tsne"`` (slow: keep ``plot_samples`` to a few thousand) or None.

    ``threads`` caps the BLAS/OpenMP pools (threadpoolctl) and torch's intra-op threads for the
    duration of the audit (restored afterwards; None leaves them alone). The default 1 is
    measured: on the shared 2-core machine, one 80k x 512 probe fit took 3.6 s with 1 thread vs
    13-20 s with 2 (spin-waiting pools), and an 8k-row within-class fit 1.4 s vs 19-25 s.

    Raises:
        ValueError: Z not 2-D or with NaN/inf, length mismatch, fewer than 2 bias values or 2
            classes, or a bad setting.
    """
    X = _as_matrix(Z)
    y = _as_labels(targets, "targets", X.shape[0])
    b = _as_labels(bias, "bias", X.shape[0])
    _check_options(
        cv=cv, max_samples=max_samples, rare_bias=rare_bias, projection=projection,
        knn_queries=knn_queries, max_pairs=max_pairs, threads=threads, permutations=permutations,
    )  # fmt: skip
    aligned = _aligned_pairs(aligned_groups)
    notes: list[str] = []
    X, y, b = _subsample(X, y, b, max_samples=max_samples, seed=seed, notes=notes)
    classes, bias_values = _check_label_counts(y, b, cv=cv, knn_k=knn_k)
    small = _small_group_note(y, b)
    notes.extend([small] if small else [])
    probe = {"cv": cv, "seed": seed, "max_iter": probe_max_iter, "notes": notes}

    with _thread_limit(threads):
        timings: dict[str, float] = {}
        t = time.perf_counter()
        # 1. Bias leakage, overall and within class.
        leakage, by_class = _bias_leakage(
            X, y, b, rare_bias=rare_bias, permutations=permutations, **probe
        )
        t = _stage(timings, "leakage_probe", t)
        # 2. Target probe and its group metrics.
        target_report, metric_frame = _target_probe(X, y, b, aligned, **probe)
        t = _stage(timings, "target_probe", t)
        # 3. Geometry on the unit sphere.
        z = geometry.l2_normalize(X)
        geo_groups = _group_geometry(z, y, b, max_pairs=max_pairs, seed=seed)
        bias_groups = _bias_value_geometry(z, y, b, bias_values, max_pairs=max_pairs, seed=seed)
        geo = _overall_geometry(z, y, b, max_pairs=max_pairs, seed=seed)
        t = _stage(timings, "geometry", t)
        # 4. k-NN purity, then the per-group table.
        knn = geometry.knn_purity(
            z, y, b, k=knn_k, max_queries=knn_queries, seed=seed, normalize=False
        )
        t = _stage(timings, "knn", t)
        groups = _group_table(knn, target_report, geo_groups, aligned)
        geo.update(_knn_summary(groups))
        # 5. A 2-D projection of a subsample, for the plots.
        proj, projection_settings = None, {}
        if projection is not None:
            proj, projection_settings = _project(
                z, y, b, method=projection, samples=plot_samples, seed=seed
            )
            t = _stage(timings, "projection", t)

    settings = _settings(
        X, groups, aligned, projection_settings, cv=cv, seed=seed, max_samples=max_samples,
        knn_k=knn_k, knn_queries=knn_queries, max_pairs=max_pairs,
        probe_max_iter=probe_max_iter, rare_bias=rare_bias, permutations=permutations,
        threads=threads, projection=projection,
    )  # fmt: skip
    return AuditReport(
        n=int(X.shape[0]),
        dim=int(X.shape[1]),
        num_classes=len(classes),
        num_bias=len(bias_values),
        bias_leakage=leakage.pop("leakage"),
        bias_leakage_test=leakage,
        bias_leakage_chance=1.0 / len(bias_values),
        bias_leakage_by_class=by_class,
        target_report=target_report,
        metric_frame=metric_frame,
        groups=groups,
        bias_groups=bias_groups,
        geometry=geo,
        projection=proj,
        timings=timings,
        settings=settings,
        notes=notes,
    )


def _settings(
    X: np.ndarray, groups: pd.DataFrame, aligned: tuple[Group, ...] | None,
    projection_settings: dict[str, Any], **given: Any,
) -> dict[str, Any]:  # fmt: skip
    """The audit's settings as recorded: the arguments given, the sizes used."""
    g = given
    return {
        "cv": int(g["cv"]),
        "seed": int(g["seed"]),
        "max_samples": g["max_samples"],
        "rows_used": int(X.shape[0]),
        "knn_k": int(g["knn_k"]),
        "knn_queries": g["knn_queries"],
        "knn_queries_used": int(groups["knn_queries"].sum()),
        "max_pairs": g["max_pairs"],
        "probe_max_iter": int(g["probe_max_iter"]),
        "rare_bias": g["rare_bias"],
        "permutations": int(g["permutations"]),
        "bootstrap": BOOTSTRAP,
        "min_group": MIN_GROUP,
        "smallest_group": int(groups["n"].min()),
        "threads": g["threads"],
        "projection": g["projection"],
        "aligned_groups": "b == y" if aligned is None else [list(x) for x in aligned],
        **projection_settings,
    }


def _project(
    z: torch.Tensor, y: np.ndarray, b: np.ndarray, *, method: str, samples: int, seed: int
) -> tuple[pd.DataFrame, dict[str, Any]]:
    n = z.shape[0]
    rng = np.random.default_rng(seed)
    idx = np.arange(n) if n <= samples else np.sort(rng.choice(n, size=samples, replace=False))
    zs = z[torch.from_numpy(idx)].numpy()
    extra: dict[str, Any] = {"projection_samples": len(idx)}
    if method == "pca" or zs.shape[1] <= 2:
        from sklearn.decomposition import PCA

        n_components = min(2, zs.shape[1])
        pca = PCA(n_components=n_components, random_state=seed).fit(zs)
        xy = pca.transform(zs)
        extra["pca_explained_variance"] = [
            round(float(v), 4) for v in pca.explained_variance_ratio_
        ]
    else:
        from sklearn.manifold import TSNE

        perplexity = float(min(30.0, max(2.0, (len(idx) - 1) / 3)))
        xy = TSNE(
            n_components=2, init="pca", perplexity=perplexity, random_state=seed
        ).fit_transform(zs)
    if xy.shape[1] == 1:
        xy = np.concatenate([xy, np.zeros_like(xy)], axis=1)
    return pd.DataFrame({"x1": xy[:, 0], "x2": xy[:, 1], "y": y[idx], "b": b[idx]}), extra
