"""Batched inference over a whole-tensor dataset."""

from __future__ import annotations

from collections.abc import Callable, Iterable

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
    rows: torch.Tensor | None = None,
    wrap: Callable[[range], Iterable[int]] | None = None,
) -> torch.Tensor:
    """Apply ``fn(model, x)`` (default ``model.features``) to the dataset in eval mode.

    ``rows`` restricts it to those rows (a rank's shard); ``wrap`` wraps the iterator over batch
    starts (a progress bar). The model's train/eval mode is restored afterwards, so this is safe
    to call mid-training.
    """
    fn = fn or (lambda m, x: m.features(x))
    rows = torch.arange(len(dataset)) if rows is None else rows
    starts = range(0, len(rows), batch_size)
    was_training = model.training
    model.eval()
    try:
        out = [
            fn(
                model,
                dataset.normalize(dataset.images[rows[i : i + batch_size].to(dataset.device)]),
            )
            for i in (wrap(starts) if wrap is not None else starts)
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
