"""Group DRO (Sagawa et al., ICLR 2020; kohpangwei/group_DRO ``loss.py``)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from debias.methods.base import (
    BIAS_LABELS,
    Batch,
    HParam,
    Method,
    Stage,
    group_counts,
    group_index,
)
from debias.space import SUBPOPBENCH, LogUniform


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum over ranks under ``torch.distributed`` (identity otherwise)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        t = t.clone()
        dist.all_reduce(t)
    return t


def group_mean_losses(
    losses: torch.Tensor, groups: torch.Tensor, num_groups: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-group mean of ``losses`` and the group counts in the batch (an absent group: 0, 0),
    as group_DRO's ``compute_group_avg``."""
    onehot = F.one_hot(groups, num_groups).to(losses.dtype)  # [B, G]
    count = onehot.sum(0)
    return (onehot.T @ losses) / count.clamp(min=1), count


class GroupDRO(Method):
    """Online group distributionally robust optimisation.

    Per step, with ℓ_g the mean cross-entropy of the batch rows of group g (0 when g is absent)::

        q_g ← q_g · exp(η · (ℓ_g + C / √n_g)),   q ← q / Σ_g q_g,   L = Σ_g q_g · ℓ_g

    q starts uniform over the groups present in the training split (groups with n_g = 0 keep
    q_g = 0: on Biased-MNIST not every (digit, colour) pair exists at high rho), n_g are
    training counts, η is ``step_size`` and C ``generalization_adjustment``; q is updated with
    detached losses, so no gradient flows through it. Reads bias labels.

    Source: kohpangwei/group_DRO ``loss.py`` (``LossComputer.compute_robust_loss``, defaults
    ``robust_step_size`` 0.01 and ``generalization_adjustment`` 0). Where the code and the
    paper differ: with C > 0 the official code adds C/√n_g *in place* to the group losses, so
    its reported robust loss includes the constant; its gradient is the same as here. Under
    ``torch.distributed`` the group losses that update q are summed over ranks so every rank
    keeps the same q.
    """

    name = "groupdro"
    supervision = BIAS_LABELS
    paper = "Group DRO (Sagawa et al. 2020, kohpangwei/group_DRO)"
    hparams = {
        "step_size": HParam(
            0.01,
            "η, step size of the group weights",
            "robust_step_size",
            low=0,
            search=LogUniform(1e-3, 1e-1, source=f"{SUBPOPBENCH} L65: groupdro_eta 10**U(-3, -1)"),
        ),
        # No range: SubpopBench does not search C (its GroupDRO has none).
        "generalization_adjustment": HParam(
            0.0, "C in C/√n_g added to each group's loss for the q update", "group_DRO", low=0
        ),
    }

    def build(self):
        net = super().build()
        ctx = self.ctx
        self.num_groups = ctx.num_classes * ctx.num_bias
        counts = group_counts(ctx.train_targets, ctx.train_bias, ctx.num_classes, ctx.num_bias)
        present = (counts > 0).float()
        self.q = (present / present.sum()).to(ctx.device)
        c = self.hp["generalization_adjustment"]
        self.adjustment = (c / counts.clamp(min=1).sqrt() * present).to(ctx.device)
        return net

    def loss(self, out: dict[str, torch.Tensor], batch: Batch, stage: Stage):
        per_sample = F.cross_entropy(out["logits"].float(), batch.y, reduction="none")
        groups = group_index(batch.y, batch.bias, self.ctx.num_bias)
        group_loss, count = group_mean_losses(per_sample, groups, self.num_groups)
        self._update_q(group_loss.detach(), count)
        return {"ce": per_sample.mean().detach(), "loss": group_loss @ self.q}

    @torch.no_grad()
    def _update_q(self, group_loss: torch.Tensor, count: torch.Tensor) -> None:
        sums = all_reduce_sum(torch.stack([group_loss * count, count]))
        mean = sums[0] / sums[1].clamp(min=1)
        self.q = self.q * torch.exp(self.hp["step_size"] * (mean + self.adjustment))
        self.q = self.q / self.q.sum()

    def extra_state(self) -> dict[str, Any]:
        return {"q": self.q.detach().cpu()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.q = state["q"].to(self.ctx.device)
