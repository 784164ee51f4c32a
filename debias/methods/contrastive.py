"""Contrastive methods: a loss of :mod:`debias.losses` trained in one of two protocols.

- ``two-stage`` (SupContrast / ConTeX): pretrain encoder + projection head with the
  contrastive loss (stage ``pretrain``, with an online linear probe on detached features so
  convergence is visible), then fit a linear classifier on frozen features (stage ``linear``).
  ``L_pretrain = L_con(z) + CE(probe(sg(f)), y)`` — the probe term does not reach the encoder.
- ``joint`` (BiasCon): ``L = CE(f(x), y) + λ·L_con(z)`` on both views of the same batch.

The supervision of each method is that of its loss: BiasCon and FairKL read bias labels, the
others do not (SimCLR reads no labels at all, but its linear stage reads targets).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from debias.losses import LOSSES, check_loss_options, get_loss, loss_parameters
from debias.methods.base import (
    BIAS_LABELS,
    LINEAR,
    PRETRAIN,
    TARGET_ONLY,
    TRAIN,
    Batch,
    EncoderWithHeads,
    Method,
    Stage,
)
from debias.models import LinearProbe, ProjectionHead

TWO_STAGE, JOINT = "two-stage", "joint"


def contrastive_loss_options(cfg, loss_name: str | None = None) -> dict[str, Any]:
    """The keyword arguments of the run's contrastive loss: ``loss_options``, and each field of
    :attr:`Contrastive.loss_fields` that is set and that the loss takes (its ``__init__``
    says so: CACR takes no temperature). ``loss_name``: default ``cfg.method``."""
    takes = loss_parameters(loss_name or cfg.method)
    kw = dict(cfg.loss_options)
    for name in Contrastive.loss_fields:
        if name in takes and getattr(cfg, name) is not None:
            kw.setdefault(name, getattr(cfg, name))
    return kw


class Contrastive(Method):
    """Base of the contrastive methods; ``loss_name`` picks the loss of :mod:`debias.losses`."""

    loss_name = ""
    modes = (TWO_STAGE, JOINT)
    config_options = ("temperature", "base_temperature", "loss_options", "lambda_con")
    # The TrainConfig fields handed to the loss as the keyword argument of that name.
    loss_fields = ("temperature", "base_temperature")

    @classmethod
    def check_config(cls, cfg) -> None:
        """``lambda_con`` only in mode joint; ``loss_options`` a mapping the loss takes
        (checked here, not when the loss is built after the data has loaded)."""
        if cfg.mode != JOINT and cfg.lambda_con != 1.0:
            raise ValueError(
                f"lambda_con={cfg.lambda_con} applies to mode 'joint' only, not {cfg.mode!r}"
            )
        if cls.loss_name:
            if not isinstance(cfg.loss_options, dict):
                raise ValueError(f"loss_options must be a mapping, got {cfg.loss_options!r}")
            check_loss_options(cls.loss_name, cfg.loss_options)
            cls._check_loss_fields(cfg)

    @classmethod
    def _check_loss_fields(cls, cfg) -> None:
        """A :attr:`loss_fields` option set for a loss that does not take it would change
        nothing (CACR has no temperature): an error, not a silent no-op."""
        takes = loss_parameters(cls.loss_name)
        unused = [n for n in cls.loss_fields if getattr(cfg, n) is not None and n not in takes]
        if unused:
            raise ValueError(
                f"method {cfg.method!r}: its loss {cls.loss_name!r} takes no "
                f"{', '.join(unused)} (it takes: {', '.join(takes)}; give those with "
                "--loss-option NAME=VALUE)"
            )

    def build(self):
        cfg, ctx = self.cfg, self.ctx
        self.model = ctx.build_model()
        self.criterion = get_loss(self.loss_name, **contrastive_loss_options(cfg, self.loss_name))
        head = ProjectionHead(self.model.feature_dim).to(ctx.device)
        if cfg.mode == JOINT:
            return EncoderWithHeads(self.model, head, None, use_fc=True)
        probe = LinearProbe(self.model.feature_dim, ctx.num_classes).to(ctx.device)
        # The classifier of a two-stage run is fitted on frozen features afterwards.
        self.model.fc.requires_grad_(False)
        return EncoderWithHeads(self.model, head, probe, use_fc=False)

    def stages(self) -> list[Stage]:
        cfg = self.cfg
        milestones = tuple(cfg.lr_milestones)
        if cfg.mode == JOINT:
            return [Stage("train", cfg.epochs, TRAIN, views=2, milestones=milestones)]
        return [
            Stage("pretrain", cfg.epochs, PRETRAIN, views=2, milestones=milestones),
            Stage("linear", cfg.linear_epochs, LINEAR),
        ]

    def record(self) -> dict[str, Any]:
        """The loss with every argument as resolved (e.g. ConTeX's ``self_weight``)."""
        return {"loss": {"name": self.loss_name, **self.criterion.settings()}}

    def loss(self, out: dict[str, torch.Tensor], batch: Batch, stage: Stage):
        bsz = len(batch.y)
        z = torch.stack([out["z"][:bsz], out["z"][bsz:]], dim=1)  # [B, V=2, D]
        y2 = batch.y.repeat(2)
        terms = {"contrastive": self.criterion(z, labels=batch.y, bias=batch.bias)}
        if self.cfg.mode == JOINT:
            terms["ce"] = F.cross_entropy(out["logits"].float(), y2)
            terms["loss"] = terms["ce"] + self.cfg.lambda_con * terms["contrastive"]
        else:
            terms["probe_ce"] = F.cross_entropy(out["probe"].float(), y2)
            terms["loss"] = terms["contrastive"] + terms["probe_ce"]
        return terms


_PAPERS = {
    "supcon": "SupCon (Khosla et al. 2020, HobbitLong/SupContrast)",
    "simclr": "SimCLR / NT-Xent (Chen et al. 2020)",
    "contex": "ConTeX (Deng & Yang, IEEE TMM 2025, arXiv 2512.02152, hdeng26/Contex)",
    "cacr": "CACR (Zheng et al., TMLR 2023, JegZheng/CACR-SSL)",
    "biascon": "BiasCon (Hong & Yang, NeurIPS 2021, grayhong/bias-contrastive-learning)",
    "fairkl": "FairKL (Barbano et al., ICLR 2023)",
}


def contrastive_method(loss_name: str) -> type[Contrastive]:
    """The method class of one registered contrastive loss."""
    loss_cls = LOSSES[loss_name]
    return type(
        f"{loss_cls.__name__.removesuffix('Loss')}Method",
        (Contrastive,),
        {
            "name": loss_name,
            "loss_name": loss_name,
            "loss_cls": loss_cls,  # the loss it was made for (the registry remakes it on a new one)
            "supervision": BIAS_LABELS if loss_cls.requires_bias else TARGET_ONLY,
            "paper": _PAPERS.get(loss_name, loss_cls.__name__),
            "__doc__": f"{_PAPERS.get(loss_name, loss_name)} in the two-stage or joint "
            f"protocol.\n\n{loss_cls.__doc__ or ''}",
        },
    )
