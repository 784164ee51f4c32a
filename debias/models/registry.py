"""Model registry: names used by the CLI and sweep configs."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

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


def build_model(name: str, num_classes: int, *, weights: str | None = None) -> nn.Module:
    """Build a registered model by name (``simpleconvnet``, ``smallconvnet``, ``narrowresnet``,
    ``resnet18``)."""
    try:
        factory = MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; expected one of {sorted(MODELS)}") from None
    if weights is not None and name != "resnet18":
        raise ValueError(f"pretrained weights are only supported for resnet18, not {name!r}")
    return factory(num_classes, weights=weights)
