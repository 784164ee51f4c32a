"""ConTeX, context-enriched contrastive loss (Deng & Yang, IEEE TMM 2025), PROTOCOLS §4."""

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
from debias.losses.simclr import image_ids
from debias.losses.supcon import supcon_per_anchor

__all__ = ["ConTeXLoss"]


class ConTeXLoss(TemperatureScaledLoss):
    r"""ConTeX: a label term whose denominator holds only different-label rows, plus NT-Xent.

    .. math::

        l_a(i) &= -\frac{1}{|P(i)|}\sum_{p \in P(i)}\Big[s_{ip}
                  - \log\sum_{n \in N(i)} e^{s_{in}}\Big] \\
        l_b(i) &= -\frac{1}{|S(i)|}\sum_{p \in S(i)}\Big[s_{ip}
                  - \log\sum_{k \in A(i)} e^{s_{ik}}\Big] \\
        \mathcal{L} &= \frac{\tau}{\tau_{base}}\cdot\frac{1}{VB}\sum_i
                       \tfrac12\big(l_a(i) + l_b(i)\big)

    ``P(i)`` = same label, ``k ≠ i`` (this *includes* the other views of image ``i``, as in the
    official code), ``N(i)`` = different label, ``S(i)`` = other views of image ``i``, ``A(i)`` =
    all ``k ≠ i``. Same-label rows are never in the ``l_a`` denominator, so they are never pushed
    apart; ``l_a`` can be negative, which is expected.

    Official code: hdeng26/Contex ``losses.py``, class ``SupConTupletLoss`` (selected by
    ``--loss_type -1`` in its ``main_supcon.py``; it returns ``(loss, self_loss, class_loss)`` and
    we return ``loss``). Its ``mean_log_prob_pos`` is ``l_a``, its ``triplet_loss`` is ``l_b``, and
    ``loss = −(τ/τ_base)·(triplet_loss + mean_log_prob_pos)/2`` averaged over all ``V·B`` anchors,
    which is the formula above; ``tests/test_losses.py`` checks value and gradient against a
    transcription to float64 precision. One deliberate difference (PROTOCOLS §4): when a batch
    has a single label, no anchor has a different-label row, the official code takes
    ``log 0`` and returns NaN; here ``l_a`` is absent and every anchor contributes ``½·l_b``
    (finite value and gradient). Numerics: both denominators come from one
    similarity matmul and one ``exp`` pass with the row max over ``A(i)`` (the official code
    uses the max over all columns; same math). Where ``e^{−2/τ}`` could underflow the dtype
    (τ below ≈ 0.025 in float32) each set gets its own ``logsumexp`` max instead, so the
    different-label sum never becomes ``log 0`` as it would in the official code.

    Args:
        temperature: τ, default 0.07 (official default).
        base_temperature: τ_base, default 0.07 (official default).
        gather: gather features across ranks under ``torch.distributed``.

    Call: ``loss(features [B, V, D], labels [B]) -> scalar``. Labels are required.
    """

    requires_labels = True

    def compute(
        self, features: torch.Tensor, labels: torch.Tensor | None, bias: torch.Tensor | None
    ) -> torch.Tensor:
        assert labels is not None
        batch, views = features.shape[0], features.shape[1]
        tau = self.temperature
        z = flatten_views(normalize(features))
        label_ids, n_labels = group_ids(labels)
        row_labels = label_ids.repeat(views)
        # One similarity matmul gives both denominators: A(i) for l_b and N(i) for l_a.
        lse_all, lse_diff = row_logsumexp(z, tau, row_labels if n_labels > 1 else None, n_labels)
        l_b = supcon_per_anchor(z, image_ids(batch, views, z.device), batch, tau, lse_all=lse_all)
        if lse_diff is None:
            # No anchor has a different-label row (it is all or none): l_a is absent.
            per_anchor = 0.5 * l_b
        else:
            pos_sum = group_sums(z, row_labels, n_labels)[row_labels] - z
            count = torch.bincount(row_labels, minlength=n_labels)[row_labels] - 1
            l_a = lse_diff - positive_logit_mean(z, pos_sum, count, tau)
            per_anchor = 0.5 * (l_a + l_b)
        return self.reduce(per_anchor)
