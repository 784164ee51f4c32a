"""Judge a run's encoder, not only its head: the ``representation`` section of ``metrics.json``.

A run's own numbers (``metrics.json`` ``splits``) are those of its classifier, whose last layer
was fitted on the biased training split: a linear head there can read the bias even when the
features also carry the target. This module measures the frozen features
(``classifier.features(x)``, the input of the final linear layer, of the selected classifier)
in two ways, for any method:

* ``dfr``: a DFR head (:mod:`debias.audit.dfr`, the official protocol, averaging the run's
  ``represent_refits`` refits, by default the official 20) fitted on the validation split and
  scored on every test split with the run's own metrics. It reads the validation split's bias
  labels and nothing of the test splits.
* ``audit``: :func:`debias.audit.audit_embeddings`' bias leakage (overall and within each
  class) and target probe on a split where target and bias are independent: the ``test``
  split cut to equal ``(target, bias)`` group sizes (seeded). Biased-MNIST's test split
  (rho 0.1) is already near-uniform (about 100 images per cell) and the cut only evens it out;
  the faces' test splits (UTKFace, CelebA) follow the natural distribution, where target and
  bias are correlated (CelebA: blond hair and sex), so an uncut split would confound the
  overall leakage with the target.

:func:`represent` is what ``debias train`` runs at the end of a run (``represent=True``, the
default) and what ``debias evaluate RUN...`` runs on a finished one (:func:`debias.train.finished.evaluate_run`);
the run's own numbers are never changed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from debias.audit.dfr import REFITS as DFR_REFITS
from debias.audit.dfr import SOURCE, DFRError, fit_dfr, rule, scaler_rows
from debias.audit.probe import MIN_GROUP
from debias.data.base import TensorImageDataset
from debias.train.evaluate import encode

__all__ = [
    "AUDIT_ROWS",
    "AUDIT_SPLIT",
    "KEY",
    "REFITS",
    "SplitFeatures",
    "balanced_rows",
    "represent",
    "represent_features",
]

KEY = "representation"  # the metrics.json key
# DFR refits averaged by default: the official code's 20 (:data:`debias.audit.dfr.REFITS`);
# a run's ``represent_refits`` option sets another count. The refits are nearly all of the
# section's cost: each is one liblinear fit per class. `python bench/bench_dfr_refits.py`
# (Biased-MNIST rho .997, LeNet features of the 2,000 validation images, CPU seconds,
# 2026-12-07): the fit with 2 refits took 0.93 s (random encoder) / 2.11 s (one CE epoch), with
# 20 refits 5.82 / 14.58 s (6.2x / 6.9x): 4.9-12.5 s more per run, 15-38% of a CE-family
# CPU-protocol run (33 s) and 9-23% of a two-view one (54 s). The Biased-MNIST CPU sweeps set
# 3 refits (within 10% of a run, about 2.8 s); the CPU sweeps of 2026-12-04 and before
# averaged 2 (this constant's value then). Earlier measurement (rho .997): for CE (seeds 0-2)
# 5 refits moved the head's unbiased test accuracy by at most 0.05 points against 20; for
# ConTeX (seed 0) 1 / 2 / 3 / 5 / 20 refits gave 52.8 / 53.6 / 54.0 / 54.3 / 54.4% unbiased.
REFITS = DFR_REFITS
AUDIT_SPLIT = "test"
# At most this many audited rows (every group cut to the same size): the audit's probes cost
# about linearly in rows, and 5,000 keep Biased-MNIST's 100 groups at 50 images each.
AUDIT_ROWS = 5000
# Permuted refits of each leakage probe (the permutation baseline, debias.audit.probe). Each is
# one more fit of every leakage probe: on synthetic 5,000 x 128 features (10 classes, 10 bias
# values) the audit took 4.1 s without a baseline and 13.5 s with 5 draws (the audit's
# default), so the section, run at the end of every run, takes 3.
PERMUTATIONS = 3
FEATURES = (
    "classifier.features(x): the input of the run's final linear layer, from the selected "
    "classifier, on un-augmented images"
)
DFR_READS = (
    "the validation split's target and bias labels (to balance its groups and choose C); no "
    "label of any test split (they are only scored)"
)
AUDIT_RULE = (
    "the test split cut (seeded) to equal (target, bias) group sizes, at most "
    f"{AUDIT_ROWS} images, so that target and bias are independent in it; leakage = "
    "cross-validated balanced accuracy of a linear probe predicting the bias (chance: 1 / "
    "number of bias values), overall and within each class; target probe = the same probe "
    "predicting the target, scored per group (debias.audit.audit_embeddings); each leakage "
    "with a 95% bootstrap interval and a permutation baseline (the probe refitted on bias "
    "labels shuffled within class), leaking when the interval is above every permuted draw; "
    f"not run below {MIN_GROUP} images per group"
)


@dataclass
class SplitFeatures:
    """Frozen features ``Z [N, D]`` of one split with its labels."""

    Z: np.ndarray
    targets: np.ndarray
    bias: np.ndarray
    aligned_groups: tuple[tuple[int, int], ...]


def balanced_rows(targets: Any, bias: Any, *, max_rows: int | None, seed: int) -> np.ndarray:
    """Sorted rows cutting every ``(target, bias)`` group present to one size: the smallest
    group's, or ``max_rows // groups`` if smaller; each group's rows drawn at random (seeded)."""
    y, b = np.asarray(targets, dtype=np.int64), np.asarray(bias, dtype=np.int64)
    _, g = np.unique(np.stack([y, b], 1), axis=0, return_inverse=True)
    g = g.reshape(-1)
    counts = np.bincount(g)
    size = (
        int(counts.min()) if max_rows is None else min(int(counts.min()), max_rows // len(counts))
    )
    rng = np.random.default_rng(seed)
    picked = [
        rng.choice(np.flatnonzero(g == k), size=size, replace=False) for k in range(len(counts))
    ]
    return np.sort(np.concatenate(picked))


def _report_record(targets, pred, bias, aligned) -> dict[str, Any]:
    """A GroupReport as the run's ``splits`` entries are written."""
    from debias.metrics import group_report

    # The pairs were checked when the run evaluated these splits (a dataset's derived pairs may
    # name labels a split lacks, which is not an error).
    rep = group_report(targets, pred, bias, aligned=aligned, derived_aligned=True)
    return {**rep.to_dict(), "groups": rep.groups.to_dict(orient="records")}


def _because(limited: str) -> str:
    return f" ({limited}; run without --eval-limit, or with a larger one)" if limited else ""


def _dfr_section(
    features: dict[str, SplitFeatures], scale: np.ndarray, seed: int, refits: int,
    limited: str = "",
) -> dict[str, Any]:  # fmt: skip
    out: dict[str, Any] = {"rule": rule(refits), "source": SOURCE, "reads": DFR_READS}
    if "val" not in features:
        return out | {"skipped": "the dataset has no validation split to fit DFR on"}
    val = features["val"]
    try:
        head = fit_dfr(val.Z, val.targets, val.bias, scale, seed=seed, refits=refits)
    except DFRError as exc:
        return out | {"skipped": f"{exc}{_because(limited)}"}
    tests = {name: f for name, f in features.items() if name not in ("train", "val")}
    splits = {
        name: _report_record(f.targets, head.predict(f.Z), f.bias, f.aligned_groups)
        for name, f in tests.items()
    }
    return out | head.record() | {"splits": splits}


def _too_small(f: SplitFeatures, rows: np.ndarray, limited: str) -> str:
    """Why the audit is not run on ``rows`` (cut to equal groups), "" when it can be."""
    _, counts = np.unique(np.stack([f.targets, f.bias], 1), axis=0, return_counts=True)
    per_group = len(rows) // len(counts)
    if per_group >= MIN_GROUP:
        return ""
    return (
        f"the {AUDIT_SPLIT} split ({len(f.targets)} images) has {len(counts)} (target, bias) "
        f"groups, the smallest with {int(counts.min())} image(s), so cut to equal group sizes "
        f"it keeps {per_group} per group; a leakage probe on fewer than {MIN_GROUP} images per "
        f"group measures a handful of images, not the encoder{_because(limited)}"
    )


def _audit_section(f: SplitFeatures, seed: int, limited: str = "") -> dict[str, Any]:
    from debias.audit import audit_embeddings

    rows = balanced_rows(f.targets, f.bias, max_rows=AUDIT_ROWS, seed=seed)
    out: dict[str, Any] = {"split": AUDIT_SPLIT, "rule": AUDIT_RULE, "n": len(rows)}
    if reason := _too_small(f, rows, limited):
        return out | {"skipped": reason}
    try:
        rep = audit_embeddings(
            f.Z[rows], f.targets[rows], f.bias[rows], aligned_groups=f.aligned_groups,
            seed=seed, projection=None, permutations=PERMUTATIONS,
        )  # fmt: skip
    except ValueError as exc:  # a single bias value: say so, keep the run
        return out | {"skipped": f"{exc}{_because(limited)}"}
    by_class = rep.bias_leakage_by_class.reset_index()
    return out | {
        "images_per_group": len(rows) // max(len(rep.groups), 1),
        "bias_leakage": rep.bias_leakage,
        "bias_leakage_chance": rep.bias_leakage_chance,
        # 95% interval, permutation baseline (bias shuffled within class) and the verdict
        **{f"bias_leakage_{k}": v for k, v in rep.bias_leakage_test.items()},
        "permutations": rep.settings["permutations"],
        "bias_leakage_by_class": by_class.to_dict(orient="records"),
        "target_probe": {
            **rep.target_report.to_dict(),
            "groups": rep.target_report.groups.to_dict(orient="records"),
        },
        "notes": list(rep.notes),
    }


def represent_features(
    features: dict[str, SplitFeatures], scale: np.ndarray, *, seed: int, refits: int = REFITS,
    limited: str = "",
) -> dict[str, Any]:  # fmt: skip
    """The ``representation`` section from frozen features: ``features`` holds ``val``, the
    test splits and :data:`AUDIT_SPLIT`; ``scale`` are training-split features (the DFR
    refit's standardisation, :func:`debias.audit.dfr.scaler_rows`); ``refits`` DFR refits
    (:data:`REFITS`; the official code's are ``debias.audit.dfr.REFITS``); ``limited`` says
    what ``eval_limit`` did to the splits (added to the reason of a part that cannot run)."""
    section: dict[str, Any] = {"features": FEATURES, "seed": int(seed)}
    t0 = time.perf_counter()
    if limited:
        section["limited"] = limited
    section["dfr"] = _dfr_section(features, scale, seed, refits, limited)
    t1 = time.perf_counter()
    if AUDIT_SPLIT in features:
        section["audit"] = _audit_section(features[AUDIT_SPLIT], seed, limited)
    else:
        section["audit"] = {"skipped": f"the dataset has no {AUDIT_SPLIT!r} split"}
    section["timings"] = {"dfr": round(t1 - t0, 3), "audit": round(time.perf_counter() - t1, 3)}
    return section


def represent(
    classifier: nn.Module,
    splits: dict[str, TensorImageDataset],
    *,
    seed: int,
    batch_size: int = 1024,
    features: dict[str, torch.Tensor] | None = None,
    refits: int = REFITS,
    log: Callable[..., None] | None = None,
    limited: str = "",
) -> dict[str, Any]:
    """Encode every split with ``classifier.features`` (eval mode) and measure them (see the
    module docstring); ``features`` are splits' features already at hand (the trainer's last
    evaluation), used instead of encoding them again; ``refits``: DFR refits averaged.
    ``seconds`` says how long it took, ``timings`` per part."""
    t0 = time.perf_counter()
    known = features or {}

    def feats(name: str, rows: torch.Tensor | None = None) -> np.ndarray:
        if name in known:
            z = known[name] if rows is None else known[name][rows.to(known[name].device)]
        else:
            z = encode(classifier, splits[name], batch_size=batch_size, rows=rows)
        return z.float().cpu().numpy()

    labelled = {
        name: SplitFeatures(
            feats(name), ds.targets.cpu().numpy(), ds.bias.cpu().numpy(), ds.aligned_groups
        )
        for name, ds in splits.items()
        if name != "train"
    }
    scale = feats("train", torch.from_numpy(scaler_rows(len(splits["train"]), seed)))
    encoded = time.perf_counter() - t0
    section = represent_features(labelled, scale, seed=seed, refits=refits, limited=limited)
    section["timings"] = {"encode": round(encoded, 3), **section["timings"]}
    section["seconds"] = round(time.perf_counter() - t0, 3)
    if log is not None:
        log(_summary(section))
    return section


def _summary(section: dict[str, Any]) -> str:
    """One line: DFR test numbers and the leakage (or why they are missing)."""
    dfr, audit = section["dfr"], section["audit"]
    if "skipped" in dfr:
        parts = [f"DFR skipped ({dfr['skipped']})"]
    else:
        test = dfr["splits"].get(AUDIT_SPLIT, {})
        parts = [
            f"DFR head (C={dfr['C']:g}; reads validation bias labels) test unbiased "
            f"{100 * test.get('unbiased_accuracy', float('nan')):.1f}% worst-group "
            f"{100 * test.get('worst_group_accuracy', float('nan')):.1f}%"
        ]
    if "skipped" in audit:
        parts.append(f"audit skipped ({audit['skipped']})")
    else:
        verdict = {True: "leaking", False: "not above"}.get(audit.get("bias_leakage_leaking"))
        parts.append(
            f"bias leakage {100 * audit['bias_leakage']:.1f}% "
            f"[{100 * audit['bias_leakage_ci_low']:.1f}, {100 * audit['bias_leakage_ci_high']:.1f}]"
            f" (permutation baseline {100 * audit['bias_leakage_null_mean']:.1f}%, "
            f"nominal chance {100 * audit['bias_leakage_chance']:.1f}%: {verdict})"
        )
    return f"representation: {' | '.join(parts)} | {section['seconds']:.1f}s"
