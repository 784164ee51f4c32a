"""Model registry: names used by the CLI and sweep configs."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from debias._hints import did_you_mean
from debias.models.convnets import LeNet, SimpleConvNet, SmallConvNet
from debias.models.facenet import NarrowResNet
from debias.models.pretrained import TorchvisionEncoder
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


def _torchvision(arch: str) -> Callable[..., nn.Module]:
    def factory(num_classes: int, weights: str | None = None) -> nn.Module:
        return TorchvisionEncoder(arch, num_classes, pretrained=weights)

    return factory


# registry name -> torchvision architecture, at its native stem and resolution; "resnet18" is
# taken by the 64x64 variant with a stride-1 stem (debias.models.resnet).
TORCHVISION_MODELS = {
    "tv_resnet18": "resnet18",
    "resnet34": "resnet34",
    "resnet50": "resnet50",
    "vit_b_16": "vit_b_16",
}

MODELS: dict[str, Callable[..., nn.Module]] = {
    "simpleconvnet": _simple,
    "smallconvnet": _small,
    "lenet": _lenet,
    "narrowresnet": _narrow_resnet,
    "resnet18": _resnet18,
    **{name: _torchvision(arch) for name, arch in TORCHVISION_MODELS.items()},
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
    ``narrowresnet``, ``resnet18``, the torchvision backbones of :data:`TORCHVISION_MODELS`,
    or one added with :func:`register_model`).

    Example:
        >>> build_model("resnet50", 2, weights="IMAGENET1K_V2").feature_dim  # doctest: +SKIP
        2048
    """
    try:
        factory = MODELS[name]
    except KeyError:
        raise ValueError(
            f"unknown model {name!r}{did_you_mean(name, MODELS)}; expected one of {sorted(MODELS)}"
        ) from None
    if weights is not None and name in _NO_WEIGHTS:
        raise ValueError(
            f"pretrained weights are only supported for resnet18 and "
            f"{', '.join(TORCHVISION_MODELS)}, not {name!r}"
        )
    return factory(num_classes, weights=weights)


def model_preprocessing(name: str, weights: str | None) -> dict | None:
    """The input preprocessing that belongs to model ``name`` with ``weights`` (resize, crop,
    mean, std from torchvision's ``weights.transforms()``), without building it; None when the
    model has none of its own (random init, the CPU encoders, a user's model)."""
    from debias.models.pretrained import preprocessing

    arch = TORCHVISION_MODELS.get(name)
    return preprocessing(arch, weights) if arch is not None else None


def check_weights(name: str, weights: str | None) -> None:
    """Fail now, in one line, if the pretrained weights of a torchvision model are not on this
    machine (before a run spends minutes decoding its data)."""
    from debias.models.pretrained import weights_path

    arch = TORCHVISION_MODELS.get(name)
    if arch is not None and weights is not None:
        weights_path(arch, weights)
