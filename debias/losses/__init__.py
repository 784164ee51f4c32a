"""Contrastive losses (PROTOCOLS §4): SupCon, SimCLR, ConTeX, CACR, BiasCon, FairKL.

Every loss is an ``nn.Module`` called as ``loss(features, labels=None, bias=None)`` with
``features`` ``[B, V, D]`` (``V >= 2`` views, L2-normalised inside the loss, rows flattened
view-major ``r = v·B + b``) and returns a scalar. ``requires_labels`` / ``requires_bias`` say
what the trainer must pass. :func:`get_loss` builds one by name.
"""

from __future__ import annotations

from typing import Any

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
    "BiasConLoss",
    "CACRLoss",
    "ConTeXLoss",
    "ContrastiveLoss",
    "FairKLLoss",
    "SimCLRLoss",
    "SupConLoss",
    "fairkl_regularizer",
    "gather_features",
    "get_loss",
]

LOSSES: dict[str, type[ContrastiveLoss]] = {
    "supcon": SupConLoss,
    "simclr": SimCLRLoss,
    "contex": ConTeXLoss,
    "cacr": CACRLoss,
    "biascon": BiasConLoss,
    "fairkl": FairKLLoss,
}


def get_loss(name: str, **kwargs: Any) -> ContrastiveLoss:
    """Build the loss registered as ``name`` (case-insensitive) with ``kwargs``.

    Raises ValueError for an unknown name (listing the valid ones) or an argument the loss
    does not take (listing the ones it does).
    """
    key = str(name).strip().lower()
    if key not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; valid names: {', '.join(sorted(LOSSES))}")
    cls = LOSSES[key]
    try:
        return cls(**kwargs)
    except TypeError as err:
        import inspect

        params = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
        raise ValueError(
            f"bad arguments for loss {key!r} ({err}); it accepts: {', '.join(params)}"
        ) from None
