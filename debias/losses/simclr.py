"""NT-Xent / SimCLR (Chen et al. 2020), PROTOCOLS §4."""

from __future__ import annotations

import torch

from debias.losses.base import TemperatureScaledLoss, flatten_views, normalize
from debias.losses.supcon import supcon_per_anchor

__all__ = ["SimCLRLoss", "image_ids"]


def image_ids(batch: int, views: int, device: torch.device | str) -> torch.Tensor:
    """Image index of every view-major row ``r = v·B + b`` → ``b``."""
    return torch.arange(batch, device=device).repeat(views)


class SimCLRLoss(TemperatureScaledLoss):
    r"""NT-Xent: SupCon with the positives restricted to the other views of the same image.

    .. math::

        l(i) = -\frac{1}{|S(i)|}\sum_{p \in S(i)}\Big[s_{ip} - \log\sum_{k \in A(i)} e^{s_{ik}}\Big],
        \qquad \mathcal{L} = \frac{\tau}{\tau_{base}} \cdot \frac{1}{VB}\sum_i l(i)

    ``S(i)`` = the ``V − 1`` other views of image ``i``, ``A(i)`` = all ``k ≠ i``. This is exactly
    SupContrast's ``SupConLoss`` called without labels (its SimCLR mode), including the
    ``τ/τ_base`` factor, so ``SimCLRLoss(τ)(f) == SupContrast.SupConLoss(τ)(f)``.

    Args:
        temperature: τ, default 0.5 (SimCLR's CIFAR setting and SupContrast's README for
            SimCLR; SimCLR on ImageNet uses 0.1).
        base_temperature: τ_base, default 0.07 (SupContrast). Set it equal to ``temperature``
            for the unscaled NT-Xent of the SimCLR paper.
        gather: gather features across ranks under ``torch.distributed``.

    ``labels`` and ``bias`` are accepted and ignored (self-supervised).
    """

    def __init__(
        self, temperature: float = 0.5, base_temperature: float = 0.07, *, gather: bool = True
    ) -> None:
        super().__init__(temperature, base_temperature, gather=gather)

    def compute(
        self, features: torch.Tensor, labels: torch.Tensor | None, bias: torch.Tensor | None
    ) -> torch.Tensor:
        batch, views = features.shape[0], features.shape[1]
        z = flatten_views(normalize(features))
        per_anchor = supcon_per_anchor(
            z, image_ids(batch, views, z.device), batch, self.temperature
        )
        return self.reduce(per_anchor)
