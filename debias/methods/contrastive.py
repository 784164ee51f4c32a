"""Contrastive methods: a loss of :mod:`debias.losses` trained in one of two protocols.

- ``two-stage`` (SupContrast / ConTeX): pretrain encoder + projection head with the
  contrastive loss (stage ``pretrain``, with an online linear probe on detached features so
  convergence is visible), then fit a linear classifier on frozen features (stage ``linear``).
  ``L_pretrain = L_con(z) + CE(probe(sg(f)), y)`` — the probe term does not reach the encoder.
- ``joint`` (BiasCon): ``L = w_ce·CE(f(x), y) + λ·L_con(z)``, on both views of the same
  batch; or, with ``stream_batch_size``, CE on the plain (one-view, unaugmented) batch and
  ``L_con`` on a second stream of ``stream_batch_size`` images × 2 views drawn per step,
  uniformly or (``stream_sampler: bias-balanced``) with weights ``1/P(b|y)`` clipped at
  ``sampler_clip``× the smallest (:mod:`debias.methods.sampling`); ``bb_logits`` adds
  ``log P(y|b)`` to the CE logits (BC+BB). Published BiasCon: ``w_ce = 0.01``, stream 64.
- ``online`` (FairKL): ``L_con`` trains the encoder on ``n_views`` views; the classifier's
  head learns from the detached features at the same steps with its own optimiser
  (``head_optimizer`` at ``head_lr``): ``CE(fc(sg(f)), y)``, no gradient into the encoder.

Every protocol takes ``projection`` (``mlp``: SupContrast's ``Linear → ReLU → Linear(128)``;
``linear``; ``none``: the encoder's feature itself, BiasCon's and FairKL's) and
``last_activation: tanh`` (FairKL's SimpleConvNet: the encoder's last ReLU becomes Tanh).

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
from debias.methods.biasbal import conditional_prior
from debias.methods.sampling import draw_stream, inverse_bias_weights
from debias.methods.stages import ONLINE as ONLINE_STAGE
from debias.models import LinearProbe, ProjectionHead

TWO_STAGE, JOINT, ONLINE = "two-stage", "joint", "online"
PROJECTIONS = ("mlp", "linear", "none")
ACTIVATIONS = ("relu", "tanh")
STREAM_SAMPLERS = ("uniform", "bias-balanced")
_BIASCON = "grayhong/bias-contrastive-learning train_biased_mnist_bc.py"
_FAIRKL = "EIDOSLAB/unbiased-contrastive-learning src/main_infonce.py"
_SUPLINEAR = "HobbitLong/SupContrast main_linear.py"


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
    modes = (TWO_STAGE, JOINT, ONLINE)
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
        "linear_optimizer": HParam(
            "adam", "two-stage: optimiser of the linear classifier (adam | adamw | sgd)",
            f"{_SUPLINEAR}: sgd, momentum 0.9", type=str,
        ),
        "linear_momentum": HParam(0.9, "two-stage: SGD momentum of the linear classifier",
                                  _SUPLINEAR, low=0.0),
        "linear_weight_decay": HParam(0.0, "two-stage: weight decay of the linear classifier",
                                      _SUPLINEAR, low=0.0),
        "linear_milestones": HParam(
            [], "two-stage: linear epochs after which its lr is multiplied by linear_gamma",
            f"{_SUPLINEAR}: 60, 75, 90 of 100", type=list,
        ),
        "linear_gamma": HParam(0.1, "two-stage: the linear lr multiplier at each milestone",
                               f"{_SUPLINEAR}: 0.2", low=0.0, low_open=True),
        "projection": HParam(
            "mlp", "projection head the loss reads: mlp | linear | none (the feature itself)",
            "SupContrast mlp; BiasCon none; FairKL identity", type=str,
        ),
        "last_activation": HParam(
            "relu", "the encoder's last activation: relu | tanh (the last ReLU module)",
            f"{_FAIRKL} (SupConSimpleConvNet train_on_head: Tanh)", type=str,
        ),
        "n_views": HParam(2, "augmented views per image the loss contrasts (1 or 2)",
                          f"{_FAIRKL} --n_views 1", low=1),
        "ce_weight": HParam(1.0, "joint: weight of the cross-entropy term", f"{_BIASCON} --weight 0.01",
                            low=0.0),
        "stream_batch_size": HParam(
            None, "joint: images of a second, contrastive stream per step (unset: the CE "
            "batch's own views)", f"{_BIASCON} --cbs 64", type=int, low=2,
        ),
        "stream_sampler": HParam(
            "uniform", "joint: how the stream draws images: uniform | bias-balanced "
            "(1/P(b|y), reads training bias labels)", f"{_BIASCON} --ratio 10", type=str,
        ),
        "sampler_clip": HParam(10.0, "bias-balanced stream: weights clipped at this x the smallest",
                               f"{_BIASCON} --ratio 10", low=1.0),
        "bb_logits": HParam(False, "joint: add log P(y|b) to the CE logits (BC+BB; reads "
                            "training bias labels)", f"{_BIASCON} --bb 1"),
        "head_optimizer": HParam("adam", "online: optimiser of the classifier head (adam | "
                                 "adamw | sgd)", f"{_FAIRKL} --mlp_optimizer adam", type=str),
        "head_lr": HParam(1e-3, "online: learning rate of the classifier head",
                          f"{_FAIRKL} --mlp_lr 0.001", low=0.0, low_open=True),
    }  # fmt: skip
    # The hyper-parameters handed to the loss as the keyword argument of that name.
    loss_fields = ("temperature", "base_temperature")
    # Hyper-parameters only one protocol reads: set in another mode, an error. (The linear
    # stage's are "shared" shortcuts, which a sweep's base sets for every run; a joint run
    # ignores them, as it always has.)
    mode_options = {
        JOINT: ("lambda_con", "ce_weight", "stream_batch_size", "stream_sampler", "bb_logits"),
        ONLINE: ("head_optimizer", "head_lr"),
    }
    choices = {
        "projection": PROJECTIONS, "last_activation": ACTIVATIONS,
        "stream_sampler": STREAM_SAMPLERS, "linear_optimizer": ("adam", "adamw", "sgd"),
        "head_optimizer": ("adam", "adamw", "sgd"),
    }  # fmt: skip

    @classmethod
    def supervision_of(cls, hp: dict[str, Any]) -> str:
        """The loss's kind, raised to the training bias labels by a bias-balanced stream or
        BB logits."""
        if hp.get("stream_sampler") == "bias-balanced" or hp.get("bb_logits"):
            return BIAS_LABELS
        return cls.supervision

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
        for name, allowed in cls.choices.items():
            value = cfg.method_options.get(name)
            if value is not None and value not in allowed:
                raise ValueError(
                    f"method option {name}={value!r}: expected one of {', '.join(allowed)}"
                )
        views = cfg.method_options.get("n_views", 2)
        if views not in (1, 2):
            raise ValueError(f"method option n_views={views!r}: expected 1 or 2")
        if cls.loss_name and views < LOSSES[cls.loss_name].min_views:
            raise ValueError(
                f"method {cls.name!r}: its loss needs n_views=2 (two views of each image), got "
                f"n_views={views} (FairKL's recipe has one view; --method-option n_views=2 runs "
                "it with two, a labelled change of the recipe)"
            )
        ms = cfg.method_options.get("linear_milestones", [])
        if not isinstance(ms, (list, tuple)) or not all(isinstance(m, int) and m > 0 for m in ms):
            raise ValueError(
                f"method option linear_milestones={ms!r}: expected a list of epochs >= 1"
            )
        if cls.loss_name:
            if not isinstance(cfg.loss_options, dict):
                raise ValueError(f"loss_options must be a mapping, got {cfg.loss_options!r}")
            check_loss_options(cls.loss_name, cfg.loss_options)

    def build(self):
        cfg, ctx, hp = self.cfg, self.ctx, self.hp
        self.model = self.prepare_model(ctx.build_model(), hp)
        self.criterion = get_loss(self.loss_name, **contrastive_loss_options(cfg, self.loss_name))
        head = _projection(hp["projection"], self.model.feature_dim).to(ctx.device)
        if hp["bb_logits"]:
            prior = conditional_prior(
                ctx.train_targets, ctx.train_bias, ctx.num_classes, ctx.num_bias
            )
            self.log_prior = torch.log(prior + 1e-9).to(ctx.device)  # bbloss.py min_prob
        if cfg.mode == JOINT:
            return EncoderWithHeads(self.model, head, None, use_fc=True)
        if cfg.mode == ONLINE:
            # The classifier's own fc is the online head: it reads detached features.
            return EncoderWithHeads(self.model, head, self.model.fc, use_fc=False)
        probe = LinearProbe(self.model.feature_dim, ctx.num_classes).to(ctx.device)
        # The classifier of a two-stage run is fitted on frozen features afterwards.
        self.model.fc.requires_grad_(False)
        return EncoderWithHeads(self.model, head, probe, use_fc=False)

    def stages(self) -> list[Stage]:
        cfg, hp = self.cfg, self.hp
        milestones = tuple(cfg.lr_milestones)
        views = hp["n_views"]
        if cfg.mode == JOINT:
            views = 1 if hp["stream_batch_size"] else views
            return [Stage("train", cfg.epochs, TRAIN, views=views, milestones=milestones)]
        if cfg.mode == ONLINE:
            return [Stage("train", cfg.epochs, ONLINE_STAGE, views=views, milestones=milestones)]
        linear = {
            "optimizer": hp["linear_optimizer"], "momentum": hp["linear_momentum"],
            "weight_decay": hp["linear_weight_decay"],
            "milestones": tuple(hp["linear_milestones"]), "gamma": hp["linear_gamma"],
        }  # fmt: skip
        return [
            Stage("pretrain", cfg.epochs, PRETRAIN, views=views, milestones=milestones),
            Stage("linear", hp["linear_epochs"], LINEAR, lr=hp["linear_lr"], optim=linear),
        ]

    @classmethod
    def prepare_model(cls, model: torch.nn.Module, hp: dict[str, Any]) -> torch.nn.Module:
        """``last_activation: tanh``: the model's last ReLU becomes Tanh (FairKL)."""
        if hp.get("last_activation") == "tanh":
            _last_relu_to_tanh(model)
        return model

    def trainable(self, stage: Stage) -> list[torch.nn.Parameter]:
        """Online: everything but the classifier head (it has an optimiser of its own)."""
        params = super().trainable(stage)
        if stage.kind == ONLINE_STAGE:
            head = {id(p) for p in self.model.fc.parameters()}
            params = [p for p in params if id(p) not in head]
        return params

    def online_head(self, stage: Stage):
        """The online protocol's head, its optimiser's name and lr (:class:`OnlineStage`)."""
        return self.model.fc, self.hp["head_optimizer"], self.hp["head_lr"]

    def stream_rows(self, stage: Stage, steps: int, generator: torch.Generator):
        """Joint with ``stream_batch_size``: the contrastive stream, two views per image."""
        size = self.hp["stream_batch_size"]
        if self.cfg.mode != JOINT or not size:
            return None
        if not hasattr(self, "_stream_weights"):
            ctx = self.ctx
            if self.hp["stream_sampler"] == "bias-balanced":
                self._stream_weights = inverse_bias_weights(
                    ctx.train_targets.cpu(), ctx.train_bias.cpu(), ctx.num_classes,
                    ctx.num_bias, self.hp["sampler_clip"],
                )  # fmt: skip
            else:
                self._stream_weights = torch.ones(len(ctx.train_targets), dtype=torch.double)
        return draw_stream(self._stream_weights, steps, size, generator), 2

    def record(self) -> dict[str, Any]:
        """The loss with every argument as resolved (e.g. ConTeX's ``self_weight``)."""
        return {"loss": {"name": self.loss_name, **self.criterion.settings()}}

    def loss(self, out: dict[str, torch.Tensor], batch: Batch, stage: Stage):
        con = batch.extra if batch.extra is not None else batch
        z_out = out["extra"]["z"] if batch.extra is not None else out["z"]
        terms = {"contrastive": self.criterion(_views(z_out, con), labels=con.y, bias=con.bias)}
        y = batch.y.repeat(batch.views)
        if self.cfg.mode == JOINT:
            logits = out["logits"].float()
            if self.hp["bb_logits"]:
                logits = logits + self.log_prior[batch.bias.repeat(batch.views)]
            terms["ce"] = F.cross_entropy(logits, y)
            terms["loss"] = (
                self.hp["ce_weight"] * terms["ce"] + self.hp["lambda_con"] * terms["contrastive"]
            )
        else:
            terms["probe_ce"] = F.cross_entropy(out["probe"].float(), y)
            terms["loss"] = terms["contrastive"] + terms["probe_ce"]
        return terms


def _views(z: torch.Tensor, batch: Batch) -> torch.Tensor:
    """``[B, V, D]`` from view-major rows ``[V·B, D]``."""
    return z.view(batch.views, len(batch.y), -1).transpose(0, 1).contiguous()


def _projection(kind: str, dim: int) -> torch.nn.Module:
    """The projection head: SupContrast's MLP, one linear layer, or none (the feature)."""
    if kind == "mlp":
        return ProjectionHead(dim)
    if kind == "linear":
        return torch.nn.Linear(dim, 128)
    return torch.nn.Identity()


def _last_relu_to_tanh(model: torch.nn.Module) -> None:
    """FairKL's SimpleConvNet (``train_on_head``): the encoder's last activation is Tanh.
    Replaces the model's last ``nn.ReLU`` module (registration order)."""
    relus = [(n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.ReLU)]
    if not relus:
        raise ValueError(
            f"last_activation=tanh: model {type(model).__name__} has no nn.ReLU module to replace"
        )
    name = relus[-1][0]
    parent = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
    setattr(parent, name.rpartition(".")[2], torch.nn.Tanh())


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
