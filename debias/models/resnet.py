"""ResNet-18 for 64x64 faces (PROTOCOLS §2)."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from debias.models.heads import EncoderClassifier


class ResNet18(EncoderClassifier):
    """torchvision ResNet-18 adapted to 64x64 input.

    The stem keeps its 7x7 convolution (so ImageNet weights load unchanged) but with stride 1
    instead of 2: at 64x64 the standard stride-2 stem plus max-pool would leave a 2x2 map before
    the last stage. Feature: the 512-d pooled vector; ``fc``: ``Linear(512 → num_classes)``.

    Args:
        num_classes: classifier outputs.
        weights: path to a local ``state_dict`` file (e.g. torchvision's
            ``resnet18-f37072fd.pth``); ``None`` trains from scratch. Downloading is deliberately
            not attempted here: offline machines cannot, and a silent fallback to random weights
            would change results.
    """

    def __init__(self, num_classes: int = 2, weights: str | os.PathLike | None = None) -> None:
        super().__init__()
        from torchvision.models import resnet18  # torchvision is heavy: import on use

        net = resnet18(weights=None)
        if weights is not None:
            path = Path(weights).expanduser()
            if not path.is_file():
                raise FileNotFoundError(
                    f"ResNet-18 weights file not found: {path}. Pass a local torchvision "
                    "state_dict (resnet18-f37072fd.pth); this toolkit never downloads weights, "
                    "omit the option to train from scratch."
                )
            state = torch.load(path, map_location="cpu", weights_only=True)
            state = {k: v for k, v in state.items() if not k.startswith("fc.")}
            missing, unexpected = net.load_state_dict(state, strict=False)
            if unexpected or set(missing) - {"fc.weight", "fc.bias"}:
                raise ValueError(
                    f"{path} is not a ResNet-18 state_dict: missing {missing}, unexpected {unexpected}"
                )
        net.conv1.stride = (1, 1)
        self.feature_dim = net.fc.in_features
        net.fc = nn.Identity()
        self.encoder = net
        self.fc = nn.Linear(self.feature_dim, num_classes)
