"""Bias-contrastive loss, BiasCon (Hong & Yang, NeurIPS 2021), PROTOCOLS §4."""

from __future__ import annotations

import torch

from debias.losses.base import (
    TemperatureScaledLoss,
    flatten_views,
    group_ids,
    group_sums,
    normalize,
    positive_logit_mean,
    row_logsumexp,
)

__all__ = ["BiasConLoss"]


class BiasConLoss(TemperatureScaledLoss):
    r"""SupCon whose positives are same label *and different bias*.

    .. math::

        P_b(i) &= \{k \ne i : y_k = y_i,\ b_k \ne b_i\} \\
        l(i) &= -\frac{1}{|P_b(i)|}\sum_{p \in P_b(i)}\Big[s_{ip}
                - \log\sum_{k \in A(i)} e^{s_{ik}}\Big] \quad (l(i) = 0 \text{ if } P_b(i) = \emptyset) \\
        \mathcal{L} &= \frac{\tau}{\tau_{base}}\cdot\frac{1}{VB}\sum_i l(i)

    Choices, all from the official code (grayhong/bias-contrastive-learning,
    ``debias/losses/bias_contrastive.py``, ``DebiasSupConLoss``):

    * The denominator is ``A(i)``, all rows ``k ≠ i`` (the SupCon denominator).
    * The other views of image ``i`` are *not* positives (same bias), so a bias-aligned anchor
      whose class has no conflicting sample in the batch has no positive at all.
    * Such an anchor contributes 0 but still counts in the mean over all ``V·B`` anchors
      (official: ``sum_mask[sum_mask == 0] = 1``, then ``loss.mean()``): the ``has_positive``
      argument of :meth:`~debias.losses.base.TemperatureScaledLoss.reduce`.
    * No ``τ/τ_base`` factor in the official code: ``base_temperature=None`` (default) means
      ``τ_base = τ``, i.e. factor 1. Pass a number to get SupContrast's scaling.
    * The official code adds ``1e-9`` inside ``log Σ exp`` as a NaN guard; we compute the exact
      ``logsumexp``, which needs no guard (relative difference below 1e-9 unless every
      similarity sits ~20/τ below the row max).

    Args:
        temperature: τ, default 0.07 (official default).
        base_temperature: τ_base or ``None`` (no scaling, the official behaviour).
        gather: gather features across ranks under ``torch.distributed``.

    Call: ``loss(features [B, V, D], labels [B], bias [B]) -> scalar``. Both are required.
    """

    requires_labels = True
    requires_bias = True

    def __init__(
        self,
        temperature: float = 0.07,
        base_temperature: float | None = None,
        *,
        gather: bool = True,
    ) -> None:
        super().__init__(temperature, base_temperature, gather=gather)

    def compute(
        self, features: torch.Tensor, labels: torch.Tensor | None, bias: torch.Tensor | None
    ) -> torch.Tensor:
        assert labels is not None and bias is not None
        views = features.shape[1]
        tau = self.temperature
        z = flatten_views(normalize(features))
        lab, n_lab = group_ids(labels)
        grp, n_grp = group_ids(labels, bias)
        lab, grp = lab.repeat(views), grp.repeat(views)
        # Same label minus same (label, bias) group = same label and different bias; the anchor
        # itself sits in its own group, so it is excluded without a diagonal mask.
        pos_sum = group_sums(z, lab, n_lab)[lab] - group_sums(z, grp, n_grp)[grp]
        count = (
            torch.bincount(lab, minlength=n_lab)[lab] - torch.bincount(grp, minlength=n_grp)[grp]
        )
        lse = row_logsumexp(z, tau)[0]
        per_anchor = lse - positive_logit_mean(z, pos_sum, count, tau)
        return self.reduce(per_anchor, has_positive=count > 0)
