"""Training methods behind one interface (:class:`Method`), and their registry.

Supervision (what a method reads besides images and training targets): ``none``, ``val_bias``
(bias labels of the validation split only) or ``train_bias`` (of the training split).

=============  ===========  ==========================================================
name           supervision  what it does
=============  ===========  ==========================================================
ce             none         cross-entropy (ERM, the Vanilla baseline)
supcon         none         SupCon, two-stage (pretrain + linear) or joint with CE
simclr         none         SimCLR / NT-Xent (labels only in the linear stage)
contex         none         ConTeX, context-enriched contrastive loss
cacr           none         CACR, contrastive attraction and repulsion
biascon        train_bias   BiasCon: positives with the same label and a different bias
fairkl         train_bias   FairKL: aligned/conflicting similarity distributions matched
reweight       train_bias   CE weighted by 1 / n(y, b)
resample       train_bias   CE on batches drawn ∝ 1 / n(y, b)
groupdro       train_bias   Group DRO, exponentiated-gradient weights over groups
biasbal        train_bias   bias-balanced softmax, logits + log P(y | b)
lff            none         Learning from Failure, GCE-biased model reweights a second one
jtt            none         Just Train Twice, errors of an ERM model upsampled
dfr            val_bias     DFR: ERM, then its last layer refitted on group-balanced val
=============  ===========  ==========================================================

Add your own with :func:`register_method` (see the README, "Add your own method").
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from typing import Any

from debias._hints import did_you_mean
from debias.losses import LOSSES, NAME_TAKEN
from debias.methods.base import (
    BIAS_LABELS,
    LINEAR,
    NO_BIAS_LABELS,
    PRETRAIN,
    REFIT,
    SUPERVISION,
    TARGET_ONLY,
    TRAIN,
    TRAIN_BIAS_LABELS,
    VAL_BIAS_LABELS,
    Batch,
    Context,
    EncoderWithHeads,
    HParam,
    Method,
    Stage,
    StageHelper,
    run_supervision,
    supervision_kind,
)
from debias.methods.biasbal import BiasBalancedSoftmax
from debias.methods.contrastive import Contrastive, contrastive_method
from debias.methods.dfr import DFR
from debias.methods.erm import ERM
from debias.methods.groupdro import GroupDRO
from debias.methods.jtt import JTT
from debias.methods.lff import LfF
from debias.methods.resample import GroupResample
from debias.methods.reweight import GroupReweight
from debias.methods.stages import STAGE_KINDS, StageRunner

__all__ = [
    "BIAS_LABELS",
    "DFR",
    "LINEAR",
    "METHODS",
    "NO_BIAS_LABELS",
    "PRETRAIN",
    "REFIT",
    "STAGE_KINDS",
    "SUPERVISION",
    "TARGET_ONLY",
    "TRAIN",
    "TRAIN_BIAS_LABELS",
    "VAL_BIAS_LABELS",
    "Batch",
    "BiasBalancedSoftmax",
    "Context",
    "Contrastive",
    "ERM",
    "EncoderWithHeads",
    "GroupDRO",
    "GroupResample",
    "GroupReweight",
    "HParam",
    "JTT",
    "LfF",
    "Method",
    "Stage",
    "StageHelper",
    "StageRunner",
    "get_method",
    "register_method",
    "methods_taking",
    "resolve_hparams",
    "run_supervision",
    "supervision_kind",
]


class _Methods(MutableMapping[str, type[Method]]):
    """The method registry: the registered classes, and one contrastive method for every loss
    of :data:`debias.losses.LOSSES` (made when asked for, again when its loss is replaced), so
    that ``register_loss`` needs nothing from this package."""

    def __init__(self) -> None:
        self._classes: dict[str, type[Method]] = {}

    def __getitem__(self, name: str) -> type[Method]:
        cls = self._classes.get(name)
        loss = LOSSES.get(name)
        made = cls is not None and getattr(cls, "loss_cls", None) is not None
        if loss is not None and (cls is None or (made and cls.loss_cls is not loss)):
            cls = self._classes[name] = contrastive_method(name)
        if cls is None:
            raise KeyError(name)
        return cls

    def __setitem__(self, name: str, cls: type[Method]) -> None:
        self._classes[name] = cls

    def __delitem__(self, name: str) -> None:
        del self._classes[name]

    def __iter__(self) -> Iterator[str]:
        yield from self._classes
        yield from (n for n in list(LOSSES) if n not in self._classes)

    def __len__(self) -> int:
        return len(self._classes) + sum(n not in self._classes for n in LOSSES)

    def clear(self) -> None:
        """Forget every registered class; the methods made from losses stay (they follow
        :data:`~debias.losses.LOSSES`). MutableMapping's ``popitem`` loop would never end: each
        loss name reappears as soon as its method is deleted."""
        self._classes.clear()

    def taken(self, name: str) -> bool:
        """``name`` is a method that is not made from a loss."""
        cls = self._classes.get(name)
        return cls is not None and getattr(cls, "loss_cls", None) is None


METHODS = _Methods()
NAME_TAKEN.append(METHODS.taken)


def register_method(cls: type[Method], *, replace: bool = False) -> type[Method]:
    """Make ``cls`` available as ``TrainConfig(method=cls.name)`` and ``--method NAME``.

    Usable as a class decorator. Checks what the trainer relies on: a name, a supervision of
    :data:`SUPERVISION` (an earlier name, ``"target"`` or ``"bias"``, is mapped to its kind),
    :class:`HParam` defaults, a ``loss`` method.
    """
    if not (isinstance(cls, type) and issubclass(cls, Method)):
        raise TypeError(f"register_method expects a Method subclass, got {cls!r}")
    if not cls.name or not isinstance(cls.name, str):
        raise ValueError(f"{cls.__name__}.name must be a non-empty string")
    try:
        cls.supervision = supervision_kind(cls.supervision)
    except ValueError as exc:
        raise ValueError(f"{cls.__name__}.{exc}") from None
    bad = [k for k, v in cls.hparams.items() if not isinstance(v, HParam)]
    if bad:
        raise TypeError(f"{cls.__name__}.hparams {bad}: values must be HParam(default, help)")
    _check_search_spaces(cls)
    if cls.loss is Method.loss:
        raise TypeError(f"{cls.__name__} must implement loss(out, batch, stage)")
    if cls.name in METHODS and not replace and METHODS[cls.name] is not cls:
        raise ValueError(f"a method named {cls.name!r} is registered already (replace=True)")
    METHODS[cls.name] = cls
    return cls


def _check_search_spaces(cls: type[Method]) -> None:
    """A declared search space is a :mod:`debias.space` distribution whose every value the
    hyper-parameter accepts (its ends for a range, each value for a choice)."""
    from debias.space import Choice, LogUniform, Uniform

    for key, hp in cls.hparams.items():
        space = hp.search
        if space is None:
            continue
        if not isinstance(space, (LogUniform, Uniform, Choice)):
            raise TypeError(
                f"{cls.__name__}.hparams[{key!r}].search: expected LogUniform, Uniform or "
                f"Choice from debias.space, got {space!r}"
            )
        ends = space.values if isinstance(space, Choice) else (space.low,)
        for v in ends:
            try:
                hp.parse(key, int(v) if getattr(space, "integer", False) else v)
            except ValueError as exc:
                raise ValueError(f"{cls.__name__}.hparams[{key!r}].search: {exc}") from None


def get_method(name: str) -> type[Method]:
    """The registered method class called ``name`` (with a "did you mean" when unknown)."""
    try:
        return METHODS[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown method {name!r}{did_you_mean(name, METHODS)}; expected one of "
            f"{sorted(METHODS)}"
        ) from None


def methods_taking(hparam: str) -> list[str]:
    """The registered methods that declare hyper-parameter ``hparam``, in registry order."""
    return [n for n, c in METHODS.items() if hparam in c.hparams]


def resolve_hparams(name: str, options: dict[str, Any] | None) -> dict[str, Any]:
    """The method's hyper-parameters: its defaults updated with ``options``, each parsed.

    An option the method does not take is an error naming the ones it does take.
    """
    cls = get_method(name)
    options = dict(options or {})
    unknown = sorted(set(options) - set(cls.hparams))
    if unknown:
        takes = ", ".join(sorted(cls.hparams)) or "none"
        hints = [f"{key!r}{did_you_mean(key, cls.hparams)}" for key in unknown]
        raise ValueError(
            f"method {name!r} does not take option(s) {', '.join(hints)}; it takes: {takes}"
        )
    return {k: hp.parse(k, options.get(k, hp.default)) for k, hp in cls.hparams.items()}


register_method(ERM)
for _loss in LOSSES:  # listed in this order (``debias methods``); any other loss after them
    register_method(METHODS[_loss])
for _cls in (GroupReweight, GroupResample, GroupDRO, BiasBalancedSoftmax, LfF, JTT, DFR):
    register_method(_cls)
