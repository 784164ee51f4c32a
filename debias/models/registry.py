"""Model registry: names used by the CLI and sweep configs."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from debias._hints import did_you_mean
from debias.models.convnets import LeNet, SimpleConvNet, SmallConvNet
from debias.models.facenet import NarrowResNet
from debias.models.resnet import ResNet18


def _simple(num_classes: int, weights: str | None = None) -> nn.Module:
    return SimpleConvNet(num_classes=num_classes)


def _small(num_classes: int, weights: str | None = None) -> nn.Module:
    return SmallConvNet(num_classes=num_classes)


def _lenet(num_classes: int, weights: str | None = None) -> nn.Module:
    return LeNet(num_classes=num_classes)


def _narrow_resnet(num_classes: int, weights: str | None = None) -> nn.Module:
    return NarrowResNet(num_classes=num_classes)


def _resnet18(num_classes: int, weights: str | None = None) -> nn.Module:
    return ResNet18(num_classes=num_classes, weights=weights)


MODELS: dict[str, Callable[..., nn.Module]] = {
    "simpleconvnet": _simple,
    "smallconvnet": _small,
    "lenet": _lenet,
    "narrowresnet": _narrow_resnet,
    "resnet18": _resnet18,
}
# Built-in models without pretrained weights (a registered factory decides for itself).
_NO_WEIGHTS = frozenset({"simpleconvnet", "smallconvnet", "lenet", "narrowresnet"})


def register_model(
    name: str, factory: Callable[..., nn.Module], *, replace: bool = False
) -> Callable[..., nn.Module]:
    """Make ``factory(num_classes, weights=None) -> nn.Module`` available as
    ``TrainConfig(model=name)`` and ``--model NAME``.

    The module must expose what every debias classifier does (see :mod:`debias.models`):
    ``features(x) -> [B, feature_dim]``, an ``nn.Linear`` ``fc`` on top of it, ``feature_dim``,
    and ``forward(x) == fc(features(x))``. ``weights`` is ``TrainConfig.weights`` (None unless
    given). Returns ``factory``, so it works as a decorator via ``functools.partial``.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"register_model: name must be a non-empty string, got {name!r}")
    if not callable(factory):
        raise TypeError(f"register_model({name!r}): factory must be callable, got {factory!r}")
    if name in MODELS and not replace and MODELS[name] is not factory:
        raise ValueError(f"a model named {name!r} is registered already (replace=True)")
    MODELS[name] = factory
    return factory


def build_model(name: str, num_classes: int, *, weights: str | None = None) -> nn.Module:
    """Build a registered model by name (``simpleconvnet``, ``smallconvnet``, ``lenet``,
    ``narrowresnet``, ``resnet18``, or one added with :func:`register_model`)."""
    try:
        factory = MODELS[name]
    except KeyError:
        raise ValueError(
            f"unknown model {name!r}{did_you_mean(name, MODELS)}; expected one of {sorted(MODELS)}"
        ) from None
    if weights is not None and name in _NO_WEIGHTS:
        raise ValueError(f"pretrained weights are only supported for resnet18, not {name!r}")
    return factory(num_classes, weights=weights)
