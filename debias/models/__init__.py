"""Encoders and heads.

Every classifier here exposes the same three things so training, probing and auditing never
special-case a model:

- ``model.features(x) -> [B, feature_dim]``: the representation (the vector audits look at);
- ``model.fc``: the linear classifier on top of it;
- ``model(x) == model.fc(model.features(x))``: logits.
"""

from __future__ import annotations

from debias.models.convnets import LeNet, SimpleConvNet, SmallConvNet
from debias.models.facenet import NarrowResNet
from debias.models.heads import LinearProbe, ProjectionHead
from debias.models.pretrained import TorchvisionEncoder, WeightsNotFoundError
from debias.models.registry import (
    MODELS,
    build_model,
    check_weights,
    model_preprocessing,
    register_model,
)
from debias.models.resnet import ResNet18

__all__ = [
    "MODELS",
    "LeNet",
    "LinearProbe",
    "NarrowResNet",
    "ProjectionHead",
    "ResNet18",
    "SimpleConvNet",
    "SmallConvNet",
    "TorchvisionEncoder",
    "WeightsNotFoundError",
    "build_model",
    "check_weights",
    "model_preprocessing",
    "register_model",
]
