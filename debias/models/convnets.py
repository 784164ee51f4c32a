"""Convolutional encoders for Biased-MNIST (PROTOCOLS §1)."""

from __future__ import annotations

import torch
from torch import nn


def _conv_bn_relu(c_in: int, c_out: int, kernel_size: int, stride: int = 1) -> list[nn.Module]:
    return [
        nn.Conv2d(c_in, c_out, kernel_size=kernel_size, stride=stride, padding=kernel_size // 2),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    ]


class SimpleConvNet(nn.Module):
    """The ReBias Biased-MNIST network (clovaai/rebias ``models/mnist_models.py``).

    Four conv layers 3→16→32→64→128, kernel 7, padding 3, each followed by BatchNorm and ReLU, no
    pooling between them (every layer runs at full 28x28 resolution, hence about 0.4 GMAC per
    image), global average pooling, ``Linear(128 → num_classes)``. The 128-d pooled vector is the
    feature. Layer names (``extracter``, ``avgpool``, ``fc``) follow the original so its
    checkpoints load with ``load_state_dict``.
    """

    def __init__(self, num_classes: int = 10, kernel_size: int = 7, in_channels: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        widths = [in_channels, 16, 32, 64, 128]
        for c_in, c_out in zip(widths[:-1], widths[1:]):
            layers += _conv_bn_relu(c_in, c_out, kernel_size)
        self.extracter = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.feature_dim = 128
        self.fc = nn.Linear(self.feature_dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.avgpool(self.extracter(x)), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


class SmallConvNet(nn.Module):
    """A CPU-sized encoder for demos, tests and quick sweeps (ours, not from a paper).

    Three conv-BN-ReLU blocks 3→16→32→64 with kernel 3; the first two have stride 2
    (28→14→7), global average pooling, ``Linear(64 → num_classes)``. About 1.2 MMAC per 28x28
    image: over 300x cheaper than :class:`SimpleConvNet` (strided convolutions instead of
    max-pooling also halve the memory traffic, which is what bounds small convnets on a CPU), so
    an epoch of Biased-MNIST takes seconds on two cores. Like SimpleConvNet it has no
    colour-invariant inductive bias, so it takes the colour shortcut at high rho.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 3, width: int = 16) -> None:
        super().__init__()
        w = width
        self.extracter = nn.Sequential(
            *_conv_bn_relu(in_channels, w, 3, stride=2),
            *_conv_bn_relu(w, 2 * w, 3, stride=2),
            *_conv_bn_relu(2 * w, 4 * w, 3),
        )
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.feature_dim = 4 * w
        self.fc = nn.Linear(self.feature_dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.avgpool(self.extracter(x)), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))
