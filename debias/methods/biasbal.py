"""Bias-balanced softmax (BiasBal; Hong & Yang, NeurIPS 2021)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from debias.methods.base import BIAS_LABELS, Batch, HParam, Method, Stage, group_counts


def conditional_prior(
    y: torch.Tensor, b: torch.Tensor, num_classes: int, num_bias: int
) -> torch.Tensor:
    """``P(y | b) = n(y, b) / n(b)`` from training counts, as a ``[num_bias, num_classes]`` table
    (row b; a bias value absent from training gets a uniform row)."""
    counts = group_counts(y, b, num_classes, num_bias).view(num_classes, num_bias).T
    totals = counts.sum(1, keepdim=True)
    uniform = torch.full_like(counts, 1.0 / num_classes)
    return torch.where(totals > 0, counts / totals.clamp(min=1), uniform)


class BiasBalancedSoftmax(Method):
    """Cross-entropy on logits shifted by the training prior of the target given the bias.

    ``L = mean_i CE(f(x_i) + log(P(· | b_i) + ε), y_i)`` with ``P(y | b) = n(y, b) / n(b)``
    from the training split (:func:`conditional_prior`) and ``ε = 1e-9``. At test time the
    plain logits ``f(x)`` are used: the shift teaches the model the *bias-balanced* posterior.
    Reads bias labels. Source: grayhong/bias-contrastive-learning ``debias/losses/bbloss.py``
    (``logits += log(confusion_matrix[biases] + min_prob)``, ``min_prob = 1e-9``) and
    ``get_confusion_matrix`` (row b holds ``n(y, b) / n(b)``).
    """

    name = "biasbal"
    supervision = BIAS_LABELS
    paper = "BiasBal (Hong & Yang 2021, grayhong/bias-contrastive-learning)"
    hparams = {
        "min_prob": HParam(
            1e-9, "ε added to the prior before the log", "bbloss.py min_prob", low=0
        ),
    }

    def build(self):
        net = super().build()
        ctx = self.ctx
        prior = conditional_prior(ctx.train_targets, ctx.train_bias, ctx.num_classes, ctx.num_bias)
        self.log_prior = torch.log(prior + self.hp["min_prob"]).to(ctx.device)
        return net

    def loss(self, out: dict[str, torch.Tensor], batch: Batch, stage: Stage):
        logits = out["logits"].float()
        ce = F.cross_entropy(logits, batch.y)
        balanced = F.cross_entropy(logits + self.log_prior[batch.bias], batch.y)
        return {"ce": ce.detach(), "loss": balanced}
