"""The per-epoch validation read-out (``represent_every``): how much of the target the encoder's
features hold, epoch by epoch, measured on the validation split alone.

The ``representation`` section that ends a run (:mod:`debias.train.represent`) fits a DFR head
on the validation split and scores it on the test splits. Choosing a budget (how many epochs
until the representation stops improving, issue 33) must not read a test split, so this
read-out stays inside the validation split by cross-fitting:

1. the validation rows are cut at random (seeded by the run's seed, the same cut every epoch)
   into two halves A and B;
2. a DFR head (:func:`debias.audit.dfr.fit_dfr`: the official protocol, its C tuned inside the
   half it is fitted on, ``refits`` refits, standardised with that half's own features) is
   fitted on A and predicts B, and one fitted on B predicts A;
3. every validation image then has an out-of-fold prediction, scored with the run's group
   metrics: ``readout/val/accuracy``, ``readout/val/unbiased_accuracy``,
   ``readout/val/worst_group_accuracy`` in ``history.csv``.

It reads the validation split's target and bias labels (as the DFR head does) and nothing of
any test split; it never enters the run's selection (``select`` takes ``val/...`` metrics of
the classifier only).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from debias.audit.dfr import DFRError, fit_dfr
from debias.metrics import group_report

PREFIX = "readout/val/"
METRICS = ("accuracy", "unbiased_accuracy", "worst_group_accuracy")
READS = (
    "the validation split's target and bias labels (a DFR head fitted on each half of it and "
    "scored on the other half); no label of any test split"
)


def halves(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two disjoint sorted halves of ``range(n)`` (a seeded shuffle cut in the middle)."""
    order = np.random.RandomState(seed).permutation(n)
    return np.sort(order[: n // 2]), np.sort(order[n // 2 :])


def cross_fit_predictions(
    features: np.ndarray, targets: np.ndarray, bias: np.ndarray, *, seed: int, refits: int
) -> np.ndarray:
    """Out-of-fold DFR predictions of every row: each half predicted by a head fitted on the
    other (steps 1-2 of the module docstring). Raises :class:`DFRError` when a half cannot
    be group-balanced."""
    pred = np.empty(len(targets), dtype=np.int64)
    a, b = halves(len(targets), seed)
    for fit, score in ((a, b), (b, a)):
        head = fit_dfr(
            features[fit], targets[fit], bias[fit], features[fit], seed=seed, refits=refits
        )
        pred[score] = head.predict(features[score])
    return pred


def val_readout(
    features: np.ndarray, targets: np.ndarray, bias: np.ndarray, aligned: Any, *, seed: int,
    refits: int, derived_aligned: bool = False,
) -> dict[str, float | str]:  # fmt: skip
    """The history entries of one read-out (module docstring): ``readout/val/<metric>``, or
    ``readout/val/skipped`` with the reason when the validation split is too small for it.
    ``aligned`` / ``derived_aligned``: the split's aligned pairs, as the run's reports take them
    (:func:`debias.metrics.group_report`).

    Example::

        row = val_readout(Z_val, y_val, b_val, ds.aligned_groups, seed=0, refits=3)
        row["readout/val/unbiased_accuracy"]     # a float in [0, 1]
    """
    targets = np.asarray(targets, dtype=np.int64)
    bias = np.asarray(bias, dtype=np.int64)
    try:
        pred = cross_fit_predictions(
            np.asarray(features, dtype=np.float64), targets, bias, seed=seed, refits=refits
        )
    except DFRError as exc:
        return {f"{PREFIX}skipped": str(exc)}
    rep = group_report(
        targets, pred, bias, aligned=aligned, derived_aligned=derived_aligned
    ).to_dict()
    return {f"{PREFIX}{m}": float(rep[m]) for m in METRICS}
