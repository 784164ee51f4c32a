"""Batched inference over a whole-tensor dataset."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from debias.data.base import TensorImageDataset


@torch.no_grad()
def encode(
    model: nn.Module,
    dataset: TensorImageDataset,
    *,
    batch_size: int = 1024,
    fn: Callable[[nn.Module, torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Apply ``fn(model, x)`` (default ``model.features``) to the whole dataset in eval mode.

    The model's train/eval mode is restored afterwards, so this is safe to call mid-training.
    """
    fn = fn or (lambda m, x: m.features(x))
    was_training = model.training
    model.eval()
    try:
        out = [
            fn(model, dataset.normalize(dataset.images[i : i + batch_size]))
            for i in range(0, len(dataset), batch_size)
        ]
    finally:
        model.train(was_training)
    return torch.cat(out) if out else torch.empty(0)


def predict(
    model: nn.Module, dataset: TensorImageDataset, *, batch_size: int = 1024
) -> torch.Tensor:
    """Arg-max class predictions of ``model`` on ``dataset`` (int64, on the CPU)."""
    logits = encode(model, dataset, batch_size=batch_size, fn=lambda m, x: m(x))
    return logits.argmax(1).cpu()
