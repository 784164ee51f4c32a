"""Contrastive losses (PROTOCOLS §4): SupCon, SimCLR, ConTeX, CACR, BiasCon, FairKL.

Every loss is an ``nn.Module`` called as ``loss(features, labels=None, bias=None)`` with
``features`` ``[B, V, D]`` (``V >= 2`` views, L2-normalised inside the loss, rows flattened
view-major ``r = v·B + b``) and returns a scalar. ``requires_labels`` / ``requires_bias`` say
what the trainer must pass. :func:`get_loss` builds one by name.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from debias._hints import did_you_mean
from debias.losses.base import ContrastiveLoss
from debias.losses.biascon import BiasConLoss
from debias.losses.cacr import CACRLoss
from debias.losses.contex import ConTeXLoss
from debias.losses.distributed import gather_features
from debias.losses.fairkl import FairKLLoss, fairkl_regularizer
from debias.losses.simclr import SimCLRLoss
from debias.losses.supcon import SupConLoss

__all__ = [
    "LOSSES",
    "NAME_TAKEN",
    "BiasConLoss",
    "CACRLoss",
    "ConTeXLoss",
    "ContrastiveLoss",
    "FairKLLoss",
    "SimCLRLoss",
    "SupConLoss",
    "check_loss_options",
    "fairkl_regularizer",
    "gather_features",
    "get_loss",
    "loss_parameters",
    "register_loss",
]

LOSSES: dict[str, type[ContrastiveLoss]] = {
    "supcon": SupConLoss,
    "simclr": SimCLRLoss,
    "contex": ConTeXLoss,
    "cacr": CACRLoss,
    "biascon": BiasConLoss,
    "fairkl": FairKLLoss,
}


# Callables ``taken(name) -> bool`` saying a name is used by something else than a loss (the
# methods registry adds one): this package is a leaf and imports nothing above it.
NAME_TAKEN: list[Callable[[str], bool]] = []


def register_loss(
    name: str, cls: type[ContrastiveLoss], *, replace: bool = False
) -> type[ContrastiveLoss]:
    """Make the contrastive loss ``cls`` available as ``get_loss(name)`` and as the training
    method ``name`` (``TrainConfig(method=name)``, two-stage or joint; the methods registry
    makes that method when it is asked for, see :mod:`debias.methods.contrastive`).

    ``cls`` is an ``nn.Module`` called as ``loss(features [B, V, D], labels=None, bias=None)``
    returning a scalar, with class attributes ``requires_labels`` / ``requires_bias`` (a loss
    with ``requires_bias`` makes a method that reads bias labels); subclass
    :class:`ContrastiveLoss` to get them. Names are lower case (``get_loss`` is
    case-insensitive).
    """
    if not isinstance(name, str) or not name or name != name.strip().lower():
        raise ValueError(f"register_loss: name must be a lower-case string, got {name!r}")
    if not (isinstance(cls, type) and issubclass(cls, torch.nn.Module)):
        raise TypeError(f"register_loss({name!r}): expected an nn.Module subclass, got {cls!r}")
    for attr in ("requires_labels", "requires_bias"):
        if not isinstance(getattr(cls, attr, None), bool):
            raise TypeError(f"register_loss({name!r}): {cls.__name__}.{attr} must be a bool")
    taken = (name in LOSSES and LOSSES[name] is not cls) or any(c(name) for c in NAME_TAKEN)
    if taken and not replace:
        raise ValueError(f"a loss or method named {name!r} is registered already (replace=True)")
    LOSSES[name] = cls
    return cls


def loss_parameters(name: str) -> list[str]:
    """The keyword arguments the loss registered as ``name`` takes (its ``__init__``'s)."""
    import inspect

    cls = LOSSES[str(name).strip().lower()]
    params = inspect.signature(cls.__init__).parameters.values()
    return [
        p.name
        for p in params
        if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]


def check_loss_options(name: str, options: Mapping[str, Any]) -> None:
    """ValueError naming the options the loss ``name`` does not take, what it takes, and which
    losses take them (``tau_neg`` is CACR's, not ConTeX's)."""
    takes = loss_parameters(name)
    unknown = [k for k in options if k not in takes]
    if not unknown:
        return
    elsewhere = {k: [n for n in LOSSES if k in loss_parameters(n)] for k in unknown}
    where = "; ".join(f"{k} is an option of {', '.join(v)}" for k, v in elsewhere.items() if v)
    raise ValueError(
        f"loss {name!r} takes no option {', '.join(map(repr, unknown))}; it takes "
        f"{', '.join(takes) or 'none'}{did_you_mean(unknown[0], takes)}"
        + (f" ({where})" if where else "")
    )


def get_loss(name: str, **kwargs: Any) -> ContrastiveLoss:
    """Build the loss registered as ``name`` (case-insensitive) with ``kwargs``.

    Raises ValueError for an unknown name (listing the valid ones) or an argument the loss
    does not take (:func:`check_loss_options`).
    """
    key = str(name).strip().lower()
    if key not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; valid names: {', '.join(sorted(LOSSES))}")
    check_loss_options(key, kwargs)
    try:
        return LOSSES[key](**kwargs)
    except TypeError as err:  # a value of the wrong kind that the loss did not check itself
        raise ValueError(f"loss {key!r}: bad option value(s) {kwargs}: {err}") from None
