"""Learning from Failure (Nam et al., NeurIPS 2020; alinlab/LfF)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from debias.methods.base import TARGET_ONLY, Batch, HParam, Method, Stage
from debias.space import SUBPOPBENCH, Uniform


def generalized_ce(logits: torch.Tensor, y: torch.Tensor, q: float) -> torch.Tensor:
    """Per-sample generalised cross-entropy as LfF computes it: ``CE · (q · p_y^q)`` with the
    factor detached, i.e. the gradient of ``(1 - p_y^q) / q`` (Zhang & Sabuncu 2018), which
    emphasises samples the model already finds easy. Source: alinlab/LfF ``module/loss.py``."""
    p_y = F.softmax(logits, dim=1).gather(1, y[:, None]).squeeze(1)
    return F.cross_entropy(logits, y, reduction="none") * (p_y.detach() ** q) * q


class SampleLossEMA:
    """Per-sample exponential moving average of a loss, as alinlab/LfF ``util.EMA``.

    ``ema[i] ← α·ema[i] + (1 − α·seen[i])·loss_i`` (the first update sets ``ema[i] = loss_i``),
    and :meth:`class_max` gives ``max_{j: y_j = c} ema[j]`` over *all* training samples of each
    class c (never-updated ones count as 0), the official ``max_loss``.
    """

    def __init__(self, targets: torch.Tensor, num_classes: int, alpha: float) -> None:
        self.targets, self.num_classes, self.alpha = targets, num_classes, alpha
        self.value = torch.zeros(len(targets), device=targets.device)
        self.seen = torch.zeros(len(targets), device=targets.device)

    def update(self, loss: torch.Tensor, index: torch.Tensor) -> None:
        a = self.alpha
        self.value[index] = a * self.value[index] + (1 - a * self.seen[index]) * loss
        self.seen[index] = 1.0

    def class_max(self) -> torch.Tensor:
        out = torch.zeros(self.num_classes, device=self.value.device)
        return out.scatter_reduce(0, self.targets, self.value, reduce="amax", include_self=True)

    def state(self) -> dict[str, torch.Tensor]:
        return {"value": self.value.cpu(), "seen": self.seen.cpu()}

    def load(self, state: dict[str, torch.Tensor]) -> None:
        self.value = state["value"].to(self.targets.device)
        self.seen = state["seen"].to(self.targets.device)


class TwoClassifiers(nn.Module):
    """A biased and a debiased classifier trained side by side on the same batch."""

    def __init__(self, biased: nn.Module, debiased: nn.Module) -> None:
        super().__init__()
        self.biased, self.debiased = biased, debiased

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"logits_b": self.biased(x), "logits": self.debiased(x)}


class LfF(Method):
    """Learning from Failure: a deliberately biased model tells the debiased one what to learn.

    Per step on a batch (ℓ = per-sample CE, GCE = :func:`generalized_ce` with ``q``)::

        ema_b[i] ← EMA(ℓ(f_b(x_i), y_i)),  ema_d[i] ← EMA(ℓ(f_d(x_i), y_i))     (α = ema)
        l_b = ema_b[i] / max_{j: y_j = y_i} ema_b[j],   l_d likewise
        w_i = l_b / (l_b + l_d + 1e-8)
        L = mean_i GCE(f_b(x_i), y_i) + mean_i w_i · ℓ(f_d(x_i), y_i)

    Samples the biased model gets wrong (bias-conflicting ones) get weights near 1, the ones it
    finds easy near 0. The debiased model f_d is the one evaluated. Reads no bias labels.
    Source: alinlab/LfF ``train.py`` (the update order above, EMA then class-wise max),
    ``util.py`` (``EMA``, α = 0.7 in ``train.py``), ``module/loss.py`` (``GeneralizedCELoss``,
    q = 0.7). Two Adam optimizers with the same settings there; one Adam over both models here
    (Adam is per-parameter, so it is the same update).
    """

    name = "lff"
    supervision = TARGET_ONLY
    paper = "LfF (Nam et al. 2020, alinlab/LfF)"
    hparams = {
        "q": HParam(
            0.7,
            "q of the generalised CE of the biased model",
            "GeneralizedCELoss",
            low=0,
            search=Uniform(0.05, 0.95, source=f"{SUBPOPBENCH} L81: LfF_q U(0.05, 0.95)"),
        ),
        # No range: SubpopBench does not search the EMA (LfF's code fixes it at 0.7).
        "ema": HParam(0.7, "α of the per-sample loss EMA", "train.py EMA(alpha=0.7)", low=0),
    }

    def build(self):
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            raise ValueError(
                "method 'lff' keeps per-sample loss averages that are not synchronised across "
                "processes yet; run it in one process (without torchrun)"
            )
        ctx = self.ctx
        self.biased = ctx.build_model()
        self.model = ctx.build_model()
        targets = ctx.train_targets.to(ctx.device)
        self.ema_b = SampleLossEMA(targets, ctx.num_classes, self.hp["ema"])
        self.ema_d = SampleLossEMA(targets, ctx.num_classes, self.hp["ema"])
        return TwoClassifiers(self.biased, self.model)

    def loss(self, out: dict[str, torch.Tensor], batch: Batch, stage: Stage):
        y, idx = batch.y, batch.index
        logits_b, logits_d = out["logits_b"].float(), out["logits"].float()
        ce_d = F.cross_entropy(logits_d, y, reduction="none")
        self.ema_b.update(F.cross_entropy(logits_b, y, reduction="none").detach(), idx)
        self.ema_d.update(ce_d.detach(), idx)
        l_b = self.ema_b.value[idx] / self.ema_b.class_max()[y]
        l_d = self.ema_d.value[idx] / self.ema_d.class_max()[y]
        weight = l_b / (l_b + l_d + 1e-8)
        gce = generalized_ce(logits_b, y, self.hp["q"]).mean()
        debiased = (ce_d * weight).mean()
        return {
            "gce_biased": gce.detach(),
            "ce": ce_d.mean().detach(),
            "weight_mean": weight.mean(),
            "loss": gce + debiased,
        }

    def extra_state(self) -> dict[str, Any]:
        return {"ema_b": self.ema_b.state(), "ema_d": self.ema_d.state()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.ema_b.load(state["ema_b"])
        self.ema_d.load(state["ema_d"])
