"""Heads put on top of an encoder's features, and the encoder + linear classifier shape."""

from __future__ import annotations

import torch
from torch import nn


class ProjectionHead(nn.Module):
    """The SupContrast projection MLP: ``Linear(d, d) → ReLU → Linear(d, out_dim)``.

    Contrastive losses act on the projection; the classifier (linear probe) reads the encoder's
    features before it, as in SupCon, SimCLR and ConTeX.
    """

    def __init__(self, in_dim: int, out_dim: int = 128, hidden_dim: int | None = None) -> None:
        super().__init__()
        hidden = hidden_dim or in_dim
        self.net = nn.Sequential(
            nn.Linear(in_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out_dim)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class LinearProbe(nn.Linear):
    """A linear classifier on frozen (detached) features."""

    def __init__(self, in_dim: int, num_classes: int) -> None:
        super().__init__(in_dim, num_classes)


class EncoderClassifier(nn.Module):
    """An ``encoder`` whose output is the feature and a linear ``fc`` on it: the models'
    interface (:mod:`debias.models`) for a subclass that sets ``encoder``, ``feature_dim``
    and ``fc`` in its ``__init__``. ``logits = fc(encoder(x))``."""

    encoder: nn.Module
    fc: nn.Linear
    feature_dim: int

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))
