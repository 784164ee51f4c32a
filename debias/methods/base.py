"""The one interface every training method implements (in the spirit of SubpopBench's
``Algorithm.update``): a method builds what it trains, names its stages, says what supervision
it reads, and turns one batch into loss terms. The training loop (:mod:`debias.train.loop`)
calls these and never branches on a method's name.

A method's life in a run::

    method = MyMethod(context, hparams)         # builds its networks (seeded by the trainer)
    for stage in method.stages():               # e.g. [train] or [pretrain, linear]
        method.start_stage(stage, helper)       # once per stage (JTT re-initialises here)
        runner = method.stage_runner(stage)     # what runs its epochs (debias.methods.stages)
        for each epoch of the stage:            # a gradient stage's runner.epoch does:
            rows = method.epoch_rows(stage, n, generator)   # None: a plain shuffle
            for batch in batches(rows):
                out = net(batch.x)              # net = method.net (DDP-wrapped when distributed)
                terms = method.loss(out, batch, stage)
                terms["loss"].backward(); step

Evaluation always reads ``method.classifier`` (``features()`` + ``fc``). Everything a resumed
run needs is in ``method.state_dict()``: the networks *and* the per-sample or per-group state
a method keeps (EMA losses, group weights, the error set).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import torch
from torch import nn

# The stage kinds are defined with their runners; re-exported here, where they always were.
from debias._types import group_code
from debias.methods.stages import LINEAR as LINEAR
from debias.methods.stages import PRETRAIN as PRETRAIN
from debias.methods.stages import REFIT as REFIT
from debias.methods.stages import STAGE_KINDS, StageRunner
from debias.methods.stages import TRAIN as TRAIN
from debias.space import Distribution

# What a method reads besides the images and the training split's target labels: three kinds,
# from least to most. Tables print them as "—", "V" and "B" (debias.report).
NO_BIAS_LABELS = "none"  # no bias labels of any split (target labels only)
VAL_BIAS_LABELS = "val_bias"  # bias labels of the validation split, none of the training split
TRAIN_BIAS_LABELS = "train_bias"  # bias labels of the training split
SUPERVISION = {
    NO_BIAS_LABELS: "no bias labels (target labels only)",
    VAL_BIAS_LABELS: "bias labels of the validation split only (none of the training split)",
    TRAIN_BIAS_LABELS: "target and bias labels of the training split",
}
# The earlier names of the first and last kind, kept for code that imports them.
TARGET_ONLY = NO_BIAS_LABELS
BIAS_LABELS = TRAIN_BIAS_LABELS
# What metrics.json files written before the validation kind existed say.
LEGACY_SUPERVISION = {"target": NO_BIAS_LABELS, "bias": TRAIN_BIAS_LABELS}


def supervision_kind(value: Any) -> str:
    """``value`` as one of the :data:`SUPERVISION` kinds (an earlier name is mapped)."""
    kind = LEGACY_SUPERVISION.get(value, value)
    if kind not in SUPERVISION:
        raise ValueError(
            f"supervision {value!r}: expected one of {list(SUPERVISION)} "
            f"(or an earlier name: {list(LEGACY_SUPERVISION)})"
        )
    return kind


def run_supervision(method_kind: str, select: str) -> str:
    """What a whole run reads: its method's kind, raised to :data:`VAL_BIAS_LABELS` when the
    run's epoch is selected on a validation metric that needs bias labels (worst-group,
    unbiased, ...; ``accuracy`` and ``balanced_accuracy`` need none)."""
    from debias.metrics.groups import BIAS_FREE_METRICS

    kind = supervision_kind(method_kind)
    metric = select.partition("/")[2]
    if kind == NO_BIAS_LABELS and select != "last" and metric not in BIAS_FREE_METRICS:
        return VAL_BIAS_LABELS
    return kind


@dataclass(frozen=True)
class Stage:
    """One named phase of a method.

    Attributes:
        name: written to ``history.csv`` (``train``, ``pretrain``, ``linear``, ``identify``...).
        epochs: how many epochs it lasts.
        kind: what runs it: a key of :data:`~debias.methods.stages.STAGE_KINDS`
            (:data:`TRAIN`, :data:`PRETRAIN`, :data:`LINEAR`, :data:`REFIT`), or a kind of the
            method's own, whose runner its :meth:`Method.stage_runner` returns.
        views: augmented views per image in a batch (2 for contrastive losses).
        milestones: epochs (within the stage) where the learning rate is multiplied by
            ``lr_gamma``.
        lr: the stage's own learning rate (the two-stage methods' ``linear_lr``), or None for
            the run's ``lr``.
        optim: a linear stage's optimiser settings (``optimizer``, ``momentum``,
            ``weight_decay``, ``milestones``, ``gamma``), or None for Adam at a constant lr.
    """

    name: str
    epochs: int
    kind: str = TRAIN
    views: int = 1
    milestones: tuple[int, ...] = ()
    lr: float | None = None  # the stage's own learning rate (a linear stage's); None: --lr
    # A linear stage's optimiser: optimizer, momentum, weight_decay, milestones, gamma (the
    # two-stage methods' linear_* options); None: Adam at ``lr``, constant.
    optim: dict[str, Any] | None = None


class Batch(NamedTuple):
    """One training batch as a method sees it.

    ``x`` holds ``views`` stacked view-major (row ``v·B + i``). ``bias`` is ``None`` unless the
    method's supervision is :data:`TRAIN_BIAS_LABELS`: no other method can read them.
    """

    index: torch.Tensor  # rows of the training split, [B]
    x: torch.Tensor  # [views·B, C, H, W]
    y: torch.Tensor  # [B]
    bias: torch.Tensor | None  # [B] or None
    views: int
    # A second batch of the same step from the method's own stream (Method.stream_rows; e.g.
    # BiasCon's sampled contrastive loader), with its own views; None without one.
    extra: Any = None


@dataclass
class Context:
    """What a method may know about the run when it builds itself.

    ``train_bias`` is ``None`` unless the method's supervision is :data:`TRAIN_BIAS_LABELS`.
    """

    cfg: Any  # the TrainConfig (read-only by convention)
    num_classes: int
    num_bias: int
    train_targets: torch.Tensor
    train_bias: torch.Tensor | None
    device: torch.device
    build_model: Callable[[], nn.Module]


@dataclass(frozen=True)
class HParam:
    """A documented hyper-parameter: default value, meaning, and where the default comes from.

    ``search``: where a random search draws it from (:mod:`debias.space`; its ``source`` says
    where the range comes from), ``None`` for a value a search leaves at its default.

    ``shortcut``: the option is also a top-level training option of that name (``--temperature``
    as well as ``--method-option temperature=...``; a config file's or sweep's flat
    ``temperature:`` key), for options several methods share and that configs have always
    written flat. ``"strict"``: a run whose method does not take it refuses a value other than
    the default (CACR has no temperature); ``"shared"``: such a run ignores it, so one sweep
    ``base`` can set it for the methods that take it (``linear_epochs`` for the two-stage ones).
    ``low_open``: ``low`` itself is not allowed (a temperature > 0). A ``None`` default means
    "not set" (the loss's own default) and stays allowed.
    """

    default: Any
    help: str
    source: str = ""
    type: type | None = None
    low: float | None = None  # smallest allowed value, for numbers
    search: Distribution | None = None
    shortcut: str | None = None
    low_open: bool = False

    def __post_init__(self) -> None:
        if self.shortcut not in (None, "strict", "shared"):
            raise ValueError(f"HParam shortcut {self.shortcut!r}: expected None, strict or shared")

    def parse(self, name: str, value: Any) -> Any:
        if value is None and self.default is None:
            return None
        kind = self.type or type(self.default)
        if kind is bool:
            if isinstance(value, bool):
                return value
            raise ValueError(f"method option {name}={value!r}: expected true or false")
        if kind in (int, float):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"method option {name}={value!r}: expected a number")
            if kind is int and float(value) != int(value):
                raise ValueError(f"method option {name}={value!r}: expected an integer")
            low = self.low
            too_low = low is not None and (value <= low if self.low_open else value < low)
            if value != value or too_low:
                bound = "" if low is None else f" {'>' if self.low_open else '>='} {low}"
                raise ValueError(f"method option {name}={value!r}: expected a number{bound}")
            return kind(value)
        return value


class EncoderWithHeads(nn.Module):
    """Encoder + optional projection head + optional online probe behind one ``forward``.

    DistributedDataParallel synchronises gradients only for computations that go through the
    wrapped module's ``forward``, so everything a training step needs is computed here.
    Outputs: ``feats``; ``logits`` when ``use_fc``; ``z`` (projection) with a head; ``probe``
    (online linear probe on detached features) with a probe.
    """

    def __init__(
        self,
        model: nn.Module,
        head: nn.Module | None = None,
        probe: nn.Module | None = None,
        use_fc: bool = True,
    ) -> None:
        super().__init__()
        self.model, self.head, self.probe, self.use_fc = model, head, probe, use_fc

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        feats = self.model.features(x)
        out = {"feats": feats}
        if self.use_fc:
            out["logits"] = self.model.fc(feats)
        if self.head is not None:
            out["z"] = self.head(feats)
        if self.probe is not None:
            # Detached: the probe watches the representation, it must not shape it.
            out["probe"] = self.probe(feats.detach())
        return out


class StageHelper:
    """What the trainer offers a method at the start of a stage (see :meth:`Method.start_stage`).

    ``predict_train()`` returns the current classifier's predictions on every training image,
    without augmentation (JTT builds its error set from it). ``features(split, rows=None)``
    returns the classifier's ``features()`` of the images of a split (``"train"``, ``"val"``;
    ``rows``: only those). ``val`` is the validation split with its target and bias labels,
    given only to a method whose supervision reads them (:data:`VAL_BIAS_LABELS` or
    :data:`TRAIN_BIAS_LABELS`; DFR fits its last layer there), None for the others and when the
    dataset has no validation split.
    """

    def __init__(
        self,
        predict_train: Callable[[], torch.Tensor],
        log: Callable[..., None],
        features: Callable[..., torch.Tensor] | None = None,
        val: Any = None,
    ):
        self.predict_train = predict_train
        self.log = log
        self.features = features
        self.val = val


class Method:
    """Base class of a training method. Subclasses set the class attributes and override
    :meth:`stages` and :meth:`loss` (and, where they need them, :meth:`start_stage`,
    :meth:`epoch_rows`, :meth:`extra_state`, :meth:`stage_runner`, :meth:`check_config`).

    Class attributes:
        name: the registry name (``debias train --method NAME``).
        supervision: :data:`NO_BIAS_LABELS`, :data:`VAL_BIAS_LABELS` (it reads the
            validation split's bias labels, e.g. DFR fitting its last layer there) or
            :data:`TRAIN_BIAS_LABELS`.
        hparams: ``{name: HParam}`` with the defaults of the paper or official code.
        modes: the ``TrainConfig.mode`` values it accepts; the first is the default.
        config_options: the ``TrainConfig`` options that only some methods read (those
            declared with ``only_for``: ``loss_options``) that this one reads; another one
            given to it is an error (a setting that changes nothing is never recorded as if it
            did). A method's own settings are ``hparams``, not config options.
        paper: one line naming the paper and the official code.
    """

    name: ClassVar[str] = ""
    supervision: ClassVar[str] = TARGET_ONLY
    hparams: ClassVar[dict[str, HParam]] = {}
    modes: ClassVar[tuple[str, ...]] = ("ce",)
    config_options: ClassVar[tuple[str, ...]] = ()
    paper: ClassVar[str] = ""

    @classmethod
    def check_config(cls, cfg: Any) -> None:
        """Reject a ``TrainConfig`` this method cannot run, with a one-line reason; called
        when the config is made (its ``config_options`` and hyper-parameters are checked
        there already), so that a sweep's dry run catches it before any data loads."""

    @classmethod
    def supervision_of(cls, hp: dict[str, Any]) -> str:
        """What a run of this method with hyper-parameters ``hp`` reads (a :data:`SUPERVISION`
        kind): the class's ``supervision`` unless an option makes it read more (a contrastive
        method's bias-balanced sampler reads the training bias labels)."""
        return cls.supervision

    @classmethod
    def prepare_model(cls, model: nn.Module, hp: dict[str, Any]) -> nn.Module:
        """The classifier as this method trains it, from a freshly built one (default: as
        built). Called on building and on rebuilding a finished run (``load_trained``), so a
        change without parameters (an activation) is not lost with the weights."""
        return model

    def __init__(self, ctx: Context, hp: dict[str, Any]) -> None:
        self.ctx = ctx
        self.cfg = ctx.cfg
        self.hp = hp
        self.net: nn.Module = self.build()

    # -- what subclasses provide ---------------------------------------------------------------
    def build(self) -> nn.Module:
        """The trained networks as one module (default: the encoder with its classifier)."""
        self.model = self.ctx.build_model()
        return EncoderWithHeads(self.model)

    def stages(self) -> list[Stage]:
        cfg = self.cfg
        return [Stage("train", cfg.epochs, TRAIN, milestones=tuple(cfg.lr_milestones))]

    def loss(
        self, out: dict[str, torch.Tensor], batch: Batch, stage: Stage
    ) -> dict[str, torch.Tensor]:
        """The loss terms of one batch; ``terms["loss"]`` is what is minimised."""
        raise NotImplementedError

    def start_stage(self, stage: Stage, helper: StageHelper) -> None:
        """Called once when ``stage`` begins (not again when a run resumes inside it)."""

    def stage_runner(self, stage: Stage) -> StageRunner:
        """What runs the epochs of ``stage``: the built-in runner of its kind. A method with a
        stage kind of its own returns its own :class:`~debias.methods.stages.StageRunner`."""
        try:
            return STAGE_KINDS[stage.kind]()
        except KeyError:
            raise ValueError(
                f"{type(self).__name__}: stage {stage.name!r} has kind {stage.kind!r}, which no "
                f"built-in runner runs ({sorted(STAGE_KINDS)}); return its StageRunner from "
                "stage_runner()"
            ) from None

    def epoch_rows(self, stage: Stage, n: int, generator: torch.Generator) -> torch.Tensor | None:
        """The training rows of one epoch, in order; ``None`` means a plain shuffle of all."""
        return None

    def stream_rows(
        self, stage: Stage, steps: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, int] | None:
        """A second stream of training rows next to the epoch's batches: ``(rows [steps, b],
        views)``, one row of ``b`` images (``views`` augmented views each) per step, seen by
        :meth:`loss` as ``batch.extra`` and ``out["extra"]`` (a second forward pass); ``None``
        (the default): no second stream."""
        return None

    def trainable(self, stage: Stage) -> list[nn.Parameter]:
        """Parameters the optimizer of ``stage`` updates."""
        return [p for p in self.net.parameters() if p.requires_grad]

    def extra_state(self) -> dict[str, Any]:
        """Per-sample or per-group state outside ``net`` that a resumed run needs."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Inverse of :meth:`extra_state`."""

    def record(self) -> dict[str, Any]:
        """Entries added to ``metrics.json``'s ``method`` record: what the method resolved or
        chose that a reader of its numbers needs (a contrastive method's loss with every
        argument, DFR's fitted head). JSON-ready values."""
        return {}

    # -- shared ---------------------------------------------------------------------------------
    @property
    def classifier(self) -> nn.Module:
        """The model evaluated and saved: ``features(x)`` and ``fc``; ``model(x)`` gives logits."""
        return self.model

    def state_dict(self) -> dict[str, Any]:
        return {"net": self.net.state_dict(), "extra": self.extra_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["net"])
        self.load_extra_state(state.get("extra", {}))

    def to(self, device: torch.device) -> Method:
        self.net.to(device)
        return self


def group_index(y: torch.Tensor, b: torch.Tensor, num_bias: int) -> torch.Tensor:
    """The flat group id ``g = y·num_bias + b`` of each sample
    (:func:`debias._types.group_code`)."""
    return group_code(y, b, num_bias)


def group_counts(y: torch.Tensor, b: torch.Tensor, num_classes: int, num_bias: int) -> torch.Tensor:
    """``n(y, b)`` of every (target, bias) group as a flat float tensor ``[C·B']``."""
    g = group_index(y, b, num_bias)
    return torch.bincount(g, minlength=num_classes * num_bias).float()
