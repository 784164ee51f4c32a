"""Just Train Twice (Liu et al., ICML 2021; anniesch/jtt)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from debias.methods.base import TARGET_ONLY, TRAIN, Batch, HParam, Method, Stage, StageHelper
from debias.space import SUBPOPBENCH, LogUniform


class JTT(Method):
    """Train once to find the errors, train again with the errors upsampled.

    1. Stage ``identify``: ERM (plain CE) for T = ``identify_epochs`` epochs.
    2. Error set E = training samples the identification model misclassifies (predictions on
       the un-augmented training images at the end of stage 1).
    3. Stage ``train``: a fresh model (re-initialised with seed ``seed + 2``; the same
       pretrained weights if any) trained with CE for ``epochs`` epochs on the training set
       with E appended ``upweight`` more times, i.e. each error sample appears
       ``1 + upweight`` times per epoch: ``L = mean over the upsampled epoch of CE``.

    Reads no bias labels in training (validation bias labels only through ``select``, which is
    recorded). Source: anniesch/jtt ``run_expt.py`` (``ConcatDataset([train_data,
    Subset(train_data, aug_indices * up_weight)])``, so the code's ``up_weight`` counts *extra*
    copies, as here), ``generate_downstream.py`` (error set from the epoch-T model); CelebA
    recipe T = 1, λ_up = 50 (PROTOCOLS §6). Tune T and ``upweight`` on validation
    worst-group accuracy.
    """

    name = "jtt"
    supervision = TARGET_ONLY
    paper = "JTT (Liu et al. 2021, anniesch/jtt)"
    hparams = {
        "identify_epochs": HParam(
            1, "T, epochs of the ERM identification model", "CelebA recipe T=1", low=1
        ),
        # No range for T: SubpopBench draws the first stage as a fraction U(0.2, 0.8) of the
        # steps (L77), which does not map onto whole epochs of a 3-epoch CPU run.
        "upweight": HParam(
            50,
            "extra copies of each error sample (λ_up)",
            "CelebA up_weight=50",
            low=0,
            # SubpopBench weighs an error sample jtt_lambda times (jtt_lambda - 1 extra copies
            # here): the same log scale, off by at most one copy.
            search=LogUniform(
                1, 10**2.5, integer=True, source=f"{SUBPOPBENCH} L78: jtt_lambda 10**U(0, 2.5)"
            ),
        ),
    }

    def build(self):
        net = super().build()
        self.errors = torch.zeros(len(self.ctx.train_targets), dtype=torch.bool)
        return net

    def stages(self) -> list[Stage]:
        cfg = self.cfg
        return [
            Stage("identify", self.hp["identify_epochs"], TRAIN),
            Stage("train", cfg.epochs, TRAIN, milestones=tuple(cfg.lr_milestones)),
        ]

    def start_stage(self, stage: Stage, helper: StageHelper) -> None:
        if stage.name != "train":
            return
        pred = helper.predict_train().cpu()
        self.errors = pred != self.ctx.train_targets.cpu()
        helper.log(
            f"jtt: error set of the identification model: {int(self.errors.sum())} of "
            f"{len(self.errors)} training images, each upsampled x{1 + self.hp['upweight']}"
        )
        torch.manual_seed(self.cfg.seed + 2)
        fresh = self.ctx.build_model()
        self.model.load_state_dict(fresh.state_dict())

    def epoch_rows(self, stage: Stage, n: int, generator: torch.Generator):
        if stage.name != "train":
            return None
        extra = torch.nonzero(self.errors).flatten().repeat(self.hp["upweight"])
        rows = torch.cat([torch.arange(n), extra])
        return rows[torch.randperm(len(rows), generator=generator)]

    def loss(self, out: dict[str, torch.Tensor], batch: Batch, stage: Stage):
        ce = F.cross_entropy(out["logits"].float(), batch.y)
        return {"ce": ce, "loss": ce}

    def extra_state(self) -> dict[str, Any]:
        return {"errors": self.errors.clone()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.errors = state["errors"].cpu()
