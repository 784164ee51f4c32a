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
    HParam,
    Method,
    Stage,
)
from debias.models import LinearProbe, ProjectionHead

TWO_STAGE, JOINT = "two-stage", "joint"


def contrastive_loss_options(cfg, loss_name: str | None = None) -> dict[str, Any]:
    """The keyword arguments of the run's contrastive loss: ``loss_options``, and each of
    :attr:`Contrastive.loss_fields` that the run sets (``--temperature``, or
    ``--method-option temperature=...``) and that the loss takes (its ``__init__`` says so: CACR
    takes no temperature). ``loss_name``: default ``cfg.method``."""
    takes = loss_parameters(loss_name or cfg.method)
    kw = dict(cfg.loss_options)
    for name in Contrastive.loss_fields:
        value = cfg.method_options.get(name)
        if name in takes and value is not None:
            kw.setdefault(name, value)
    return kw


_LINEAR = "this toolkit's default (SupContrast's main_linear.py: 100 epochs of SGD at lr 0.1)"


class Contrastive(Method):
    """Base of the contrastive methods; ``loss_name`` picks the loss of :mod:`debias.losses`.

    Hyper-parameters (also top-level options, ``--temperature`` etc., as configs have always
    written them): the loss's ``temperature`` and ``base_temperature`` (unset: the loss's own
    defaults), the joint protocol's weight ``lambda_con`` (``L = CE + λ·L_con``), and the
    two-stage protocol's linear classifier: ``linear_epochs`` epochs of Adam at ``linear_lr``.
    """

    loss_name = ""
    modes = (TWO_STAGE, JOINT)
    config_options = ("loss_options",)
    hparams = {
        "temperature": HParam(
            None, "InfoNCE temperature tau (unset: the loss's default)",
            "each loss's own default: SupCon, ConTeX, BiasCon 0.07, FairKL 0.1, SimCLR 0.5",
            type=float, low=0.0, low_open=True, shortcut="strict",
        ),
        "base_temperature": HParam(
            None, "SupContrast scale tau/tau_base (unset: the loss's default)",
            "HobbitLong/SupContrast losses.py", type=float, low=0.0, low_open=True,
            shortcut="strict",
        ),
        "lambda_con": HParam(
            1.0, "joint mode: weight of the contrastive term",
            "BiasCon's joint objective CE + lambda * L_con", low=0.0, shortcut="strict",
        ),
        "linear_epochs": HParam(
            10, "two-stage: epochs of the linear classifier", _LINEAR, low=1, shortcut="shared"
        ),
        "linear_lr": HParam(
            1e-3, "two-stage: Adam learning rate of the linear classifier", _LINEAR,
            low=0.0, low_open=True, shortcut="shared",
        ),
    }  # fmt: skip
    # The hyper-parameters handed to the loss as the keyword argument of that name.
    loss_fields = ("temperature", "base_temperature")
    # Hyper-parameters only one protocol reads: set in another mode, an error. (The linear
    # stage's are "shared" shortcuts, which a sweep's base sets for every run; a joint run
    # ignores them, as it always has.)
    mode_options = {JOINT: ("lambda_con",)}

    @classmethod
    def check_config(cls, cfg) -> None:
        """Each protocol's own hyper-parameters only in that mode; ``loss_options`` a mapping
        the loss takes (checked here, not when the loss is built after the data has loaded)."""
        for mode, names in cls.mode_options.items():
            given = [f"{n}={cfg.method_options[n]}" for n in names if n in cfg.method_options]
            if given and cfg.mode != mode:
                raise ValueError(
                    f"{', '.join(given)} applies to mode {mode!r} only, not {cfg.mode!r}"
                )
        if cls.loss_name:
            if not isinstance(cfg.loss_options, dict):
                raise ValueError(f"loss_options must be a mapping, got {cfg.loss_options!r}")
            check_loss_options(cls.loss_name, cfg.loss_options)

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
            Stage("linear", self.hp["linear_epochs"], LINEAR, lr=self.hp["linear_lr"]),
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
            terms["loss"] = terms["ce"] + self.hp["lambda_con"] * terms["contrastive"]
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
    """The method class of one registered contrastive loss. Its hyper-parameters are
    :class:`Contrastive`'s less the :attr:`~Contrastive.loss_fields` its loss does not take
    (CACR has no temperature, so ``--temperature`` with it is an error, not a no-op)."""
    loss_cls = LOSSES[loss_name]
    takes = loss_parameters(loss_name)
    hparams = {
        k: hp for k, hp in Contrastive.hparams.items()
        if k not in Contrastive.loss_fields or k in takes
    }  # fmt: skip
    return type(
        f"{loss_cls.__name__.removesuffix('Loss')}Method",
        (Contrastive,),
        {
            "name": loss_name,
            "loss_name": loss_name,
            "loss_cls": loss_cls,  # the loss it was made for (the registry remakes it on a new one)
            "hparams": hparams,
            "supervision": BIAS_LABELS if loss_cls.requires_bias else TARGET_ONLY,
            "paper": _PAPERS.get(loss_name, loss_cls.__name__),
            "__doc__": f"{_PAPERS.get(loss_name, loss_name)} in the two-stage or joint "
            f"protocol.\n\n{loss_cls.__doc__ or ''}",
        },
    )
