"""Group-balanced importance weighting (SubpopBench ``ReWeighting``; group_DRO
``--reweight_groups`` does the same by sampling, see :mod:`debias.methods.resample`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from debias.methods.base import BIAS_LABELS, Batch, Method, Stage, group_counts, group_index


def balanced_group_weights(
    y: torch.Tensor, b: torch.Tensor, num_classes: int, num_bias: int
) -> torch.Tensor:
    """``w_g = N / (G · n_g)`` for every non-empty (target, bias) group ``g`` (0 for empty ones).

    N training samples in G non-empty groups: every group carries the same total weight N/G and
    the mean weight over the training set is 1, so the loss keeps the scale of plain CE.
    """
    counts = group_counts(y, b, num_classes, num_bias)
    present = counts > 0
    return torch.where(present, len(y) / (present.sum() * counts.clamp(min=1)), 0.0)


class GroupReweight(Method):
    """Cross-entropy with each sample weighted by the inverse size of its training group.

    ``L = (1/|B|) Σ_i w_{g(i)} · CE(f(x_i), y_i)``, ``w_g = N / (G · n(y, b))`` with ``n(y, b)``
    counted on the training split (:func:`balanced_group_weights`). Reads bias labels.
    Source: SubpopBench ``ReWeighting`` (YyzHarry/SubpopBench ``learning/algorithms.py``).
    """

    name = "reweight"
    supervision = BIAS_LABELS
    paper = "group reweighting (SubpopBench ReWeighting)"

    def build(self):
        net = super().build()
        ctx = self.ctx
        self.weights = balanced_group_weights(
            ctx.train_targets, ctx.train_bias, ctx.num_classes, ctx.num_bias
        ).to(ctx.device)
        return net

    def loss(self, out: dict[str, torch.Tensor], batch: Batch, stage: Stage):
        ce = F.cross_entropy(out["logits"].float(), batch.y, reduction="none")
        w = self.weights[group_index(batch.y, batch.bias, self.ctx.num_bias)]
        return {"ce": ce.mean(), "loss": (w * ce).mean()}
