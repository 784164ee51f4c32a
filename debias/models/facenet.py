"""A CPU-sized face encoder: a narrow four-stage ResNet (PROTOCOLS §2-3 at laptop scale)."""

from __future__ import annotations

import torch
from torch import nn


class _BasicBlock(nn.Module):
    """ResNet's basic block (two 3x3 conv-BN, identity or 1x1-conv shortcut, ReLU after the sum)."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class NarrowResNet(nn.Module):
    """A narrow 8-layer ResNet for 64x64 faces on a CPU (ours, not from a paper).

    Architecture (``width`` w = 16): stem ``conv3x3(3 -> w, stride 2)``-BN-ReLU (64 -> 32), then
    three stages of one basic block each, every stage halving the resolution and doubling the
    width: ``w -> 2w`` (16x16), ``2w -> 4w`` (8x8), ``4w -> 8w`` (4x4), 1x1-conv shortcuts;
    global average pooling; the feature is the ``8w`` = 128-d pooled vector; ``fc`` is
    ``Linear(128 -> num_classes)``. 7 conv layers on the main path plus ``fc``.

    Cost with w = 16 (multiply-accumulates of the convolutions and ``fc``, counted in
    tests/test_models.py): 11.45 MMAC per 64x64 image and 2.86 MMAC per 32x32 image (the network
    is fully convolutional; the MAC count scales with the pixel count), 0.30 M parameters.
    :class:`~debias.models.resnet.ResNet18` with its stride-1 stem needs 592 MMAC per 64x64 image
    and has 11.2 M parameters: this network is about 50x cheaper at the same input size.

    Image size. The CPU sweeps (``sweeps/utkface_cpu.yaml``, ``sweeps/celeba_cpu.yaml``) run it
    on 32x32 faces, where it still learns: one UTKFace run (target gender, bias race, 4,420
    training images, 10 epochs, 1 thread on 2 shared cores) took 49 s of epochs and reached
    73.3 % test accuracy, 73.5 % unbiased and 58.9 % worst-group (the race shortcut shows).
    At 64x64 a run costs about 4x as much.

    Why it stands in for ResNet-18: the same building block (basic residual block with batch
    norm), the same stage structure (resolution halved and width doubled per stage, global
    pooling, linear head on a pooled feature), trained from scratch exactly as the protocols
    train ResNet-18 when no ImageNet weights are given. Gender from a 64x64 face is an easy
    target, and what the face benchmarks measure (the race/age shortcut at bias rate 0.9, the
    minority Blond_Hair/Male group) is a property of the data that a small residual network
    picks up as readily as a large one. Its numbers are not ResNet-18's: absolute accuracies are
    a few points lower, and pretrained-weights results (the published anchors) are out of reach.
    """

    def __init__(self, num_classes: int = 2, in_channels: int = 3, width: int = 16) -> None:
        super().__init__()
        w = width
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, w, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(w),
            nn.ReLU(inplace=True),
        )
        self.stages = nn.Sequential(
            _BasicBlock(w, 2 * w, stride=2),
            _BasicBlock(2 * w, 4 * w, stride=2),
            _BasicBlock(4 * w, 8 * w, stride=2),
        )
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.feature_dim = 8 * w
        self.fc = nn.Linear(self.feature_dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.avgpool(self.stages(self.stem(x))), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))
