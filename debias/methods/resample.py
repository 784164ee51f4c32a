"""Group-balanced sampling (SubpopBench ``ReSample``, a ``WeightedRandomSampler``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from debias.methods.base import BIAS_LABELS, Batch, Method, Stage, group_counts, group_index


class GroupResample(Method):
    """Cross-entropy on batches drawn with probability ∝ ``1 / n(y, b)`` of each sample's group.

    Each epoch draws N training rows *with replacement*, row i with probability
    ``p_i = (1/n_{g(i)}) / Σ_j 1/n_{g(j)}``, so every non-empty group is drawn equally often
    in expectation; ``L = mean_i CE(f(x_i), y_i)`` on those rows. Reads bias labels.
    Source: SubpopBench ``ReSample`` (``WeightedRandomSampler(weights, len(train),
    replacement=True)``); group_DRO's ``--reweight_groups`` loader.
    """

    name = "resample"
    supervision = BIAS_LABELS
    paper = "group resampling (SubpopBench ReSample)"

    def build(self):
        net = super().build()
        ctx = self.ctx
        counts = group_counts(ctx.train_targets, ctx.train_bias, ctx.num_classes, ctx.num_bias)
        g = group_index(ctx.train_targets, ctx.train_bias, ctx.num_bias)
        # Sampling happens on the CPU generator so a run draws the same rows on any device.
        self.row_weights = (1.0 / counts[g]).cpu()
        return net

    def epoch_rows(self, stage: Stage, n: int, generator: torch.Generator) -> torch.Tensor:
        return torch.multinomial(self.row_weights, n, replacement=True, generator=generator)

    def loss(self, out: dict[str, torch.Tensor], batch: Batch, stage: Stage):
        ce = F.cross_entropy(out["logits"].float(), batch.y)
        return {"ce": ce, "loss": ce}
