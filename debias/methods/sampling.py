"""BiasCon's sampled contrastive stream, as a component any method can use.

Source: grayhong/bias-contrastive-learning ``debias/datasets/biased_mnist.py``
(``get_color_mnist(..., ratio=10, given_y=True)``) and ``debias/datasets/utils.py``
(``get_confusion_matrix``): each training sample gets the weight

    w_i = 1 / P(b_i | y_i),   P(b | y) = n(y, b) / n(y)   (training counts),

clipped from above at ``ratio`` times the smallest weight (``clip_max_ratio``:
``np.clip(w, None, w.min() * ratio)``), and a ``WeightedRandomSampler(w, len(w),
replacement=True)`` draws the contrastive loader's images (batches of 64, two views each).
"""

from __future__ import annotations

import torch

from debias.methods.base import group_counts


def inverse_bias_weights(
    targets: torch.Tensor, bias: torch.Tensor, num_classes: int, num_bias: int,
    clip: float | None = 10.0,
) -> torch.Tensor:  # fmt: skip
    """``[N]`` sampling weights ``1 / P(b_i | y_i)``, clipped at ``clip`` × the smallest
    (``None`` or 0: unclipped, BiasCon's ``ratio=-1``)."""
    counts = group_counts(targets, bias, num_classes, num_bias).view(num_classes, num_bias)
    p_b_given_y = counts / counts.sum(1, keepdim=True).clamp(min=1)
    weights = 1.0 / p_b_given_y[targets, bias].double()
    if clip:
        weights = weights.clamp(max=float(weights.min()) * clip)
    return weights


def draw_stream(
    weights: torch.Tensor, steps: int, batch: int, generator: torch.Generator
) -> torch.Tensor:
    """``[steps, batch]`` rows drawn with replacement with probability ∝ ``weights``
    (``WeightedRandomSampler``'s ``torch.multinomial(weights, n, replacement=True)``)."""
    rows = torch.multinomial(weights.cpu(), steps * batch, replacement=True, generator=generator)
    return rows.view(steps, batch)
