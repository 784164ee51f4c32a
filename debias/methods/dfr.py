"""Deep Feature Reweighting as a method (Kirichenko, Izmailov & Wilson, ICLR 2023)."""

from __future__ import annotations

from typing import Any

import torch

from debias.audit.dfr import REFITS, fit_dfr, scaler_rows
from debias.methods.base import REFIT, VAL_BIAS_LABELS, HParam, Stage, StageHelper
from debias.methods.erm import ERM


class DFR(ERM):
    """ERM, then its last layer refitted on group-balanced validation data (DFR on validation).

    1. Stage ``train``: plain cross-entropy, exactly the ``ce`` method (same seed, same
       encoder): ``L = mean_i CE(f(x_i), y_i)``.
    2. Stage ``dfr`` (kind ``refit``: one epoch, no gradient step): the official DFR protocol
       on the frozen features ``φ`` of that encoder (:func:`debias.audit.dfr.fit_dfr`): the
       validation split halved, an L1 logistic regression (liblinear) fitted on the
       group-balanced, standardised second half for each ``C`` of the official grid, ``C``
       chosen by worst-group accuracy on the first half, then ``refits`` fits on
       group-balanced subsamples of the whole validation split, coefficients averaged. The
       averaged head, its standardisation folded in (``W = coef/σ``, ``b = intercept − W·μ``),
       replaces the classifier's ``fc``: the run's numbers are those of
       ``argmax(W·φ(x) + b)``.

    Supervision: reads the target and bias labels of the **validation** split (to balance its
    groups and to choose ``C``), none of the training split's bias labels, nothing of the test
    splits. Compare it with methods that read no bias labels knowing that. Source:
    PolinaKirichenko/deep_feature_reweighting ``dfr_evaluate_spurious.py`` (how SubpopBench's
    ``DFR`` differs: :mod:`debias.audit.dfr`). The standardisation uses a seeded 5,000 training
    rows (:data:`debias.audit.dfr.SCALER_ROWS`; the official code uses all), so a ``dfr`` run
    and the ``representation`` section of the ``ce`` run with the same seed fit the same head.
    """

    name = "dfr"
    supervision = VAL_BIAS_LABELS
    paper = (
        "DFR (Kirichenko, Izmailov & Wilson, ICLR 2023, PolinaKirichenko/deep_feature_reweighting)"
    )
    hparams = {
        "refits": HParam(
            REFITS,
            "group-balanced refits of the last layer, averaged",
            "official dfr_on_validation_eval num_retrains=20",
            low=1,
        ),
    }

    def build(self):
        net = super().build()
        self._fitted: dict[str, Any] = {}
        return net

    def stages(self) -> list[Stage]:
        return [*super().stages(), Stage("dfr", 1, REFIT)]

    def start_stage(self, stage: Stage, helper: StageHelper) -> None:
        if stage.kind != REFIT:
            return
        val, seed = helper.val, self.cfg.seed
        if val is None:
            raise ValueError(
                f"dfr fits its last layer on the validation split; dataset "
                f"{self.cfg.dataset!r} has none"
            )
        rows = torch.from_numpy(scaler_rows(len(self.ctx.train_targets), seed))
        head = fit_dfr(
            helper.features("val"), val.targets, val.bias, helper.features("train", rows),
            seed=seed, refits=self.hp["refits"],
        )  # fmt: skip
        if len(head.classes) != self.ctx.num_classes:
            raise ValueError(
                f"dfr: the validation split holds classes {head.classes.tolist()}, not all "
                f"{self.ctx.num_classes}; the refitted head would miss some"
            )
        weight, bias = head.linear()
        fc = self.model.fc
        with torch.no_grad():
            fc.weight.copy_(weight.to(fc.weight))
            fc.bias.copy_(bias.to(fc.bias))
        self._fitted = head.record()
        helper.log(
            f"dfr: C={head.C:g} (worst-group accuracy on the scoring half of val), "
            f"{head.refits} refits of {head.groups} groups x {head.per_group} images"
        )

    def record(self) -> dict[str, Any]:
        return {"fitted": dict(self._fitted)} if self._fitted else {}

    def extra_state(self) -> dict[str, Any]:
        return {"fitted": dict(self._fitted)}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self._fitted = dict(state.get("fitted", {}))
