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
                       \big(w\,l_a(i) + (1 - w)\,l_b(i)\big)

    with ``w = self_weight``, ½ by default: ``½(l_a + l_b)``, the official loss.

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
    (finite value and gradient); with a weight it contributes ``(1 − w)·l_b``. Numerics: both denominators come from one
    similarity matmul and one ``exp`` pass with the row max over ``A(i)`` (the official code
    uses the max over all columns; same math). Where ``e^{−2/τ}`` could underflow the dtype
    (τ below ≈ 0.025 in float32) each set gets its own ``logsumexp`` max instead, so the
    different-label sum never becomes ``log 0`` as it would in the official code.

    The weight ``w``: the official repository's final code (``losses.py`` class ``contex`` at
    da878c3, and ``SupConTupletLoss`` at the commit transcribed) fixes ½ / ½. Its history also
    has ``SupConTupletLoss2`` (``--loss_type -2``, e.g. at 69e9790 and 0325cd8, 2023), the same
    code ending in ``loss = −(τ/τ_base)·((1 − w)·triplet_loss + w·mean_log_prob_pos)`` with
    ``--self_weight`` default 0.7, and public copies of that ``losses.py`` keep it. Despite its
    name, ``self_weight`` weighs the *label* term ``l_a`` (``mean_log_prob_pos``); ``1 − w``
    weighs the self term ``l_b``. The name is theirs, so their settings read the same here.

    Args:
        temperature: τ, default 0.07 (official default).
        base_temperature: τ_base, default 0.07 (official default).
        self_weight: ``w`` in [0, 1], the weight of ``l_a`` (default ½, the official loss;
            ``SupConTupletLoss2``'s default is 0.7).
        gather: gather features across ranks under ``torch.distributed``.

    Call: ``loss(features [B, V, D], labels [B]) -> scalar``. Labels are required.
    """

    requires_labels = True

    def __init__(
        self,
        temperature: float = 0.07,
        base_temperature: float | None = 0.07,
        *,
        self_weight: float = 0.5,
        gather: bool = True,
    ) -> None:
        super().__init__(temperature, base_temperature, gather=gather)
        w = float(self_weight) if isinstance(self_weight, (int, float)) else float("nan")
        if isinstance(self_weight, bool) or not 0.0 <= w <= 1.0:
            raise ValueError(
                f"self_weight must be a number in [0, 1] (the weight of the label term l_a; "
                f"1 - self_weight weighs the self term l_b); got {self_weight!r}"
            )
        self.self_weight = w

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
        w = self.self_weight
        if lse_diff is None:
            # No anchor has a different-label row (it is all or none): l_a is absent.
            per_anchor = (1.0 - w) * l_b
        else:
            pos_sum = group_sums(z, row_labels, n_labels)[row_labels] - z
            count = torch.bincount(row_labels, minlength=n_labels)[row_labels] - 1
            l_a = lse_diff - positive_logit_mean(z, pos_sum, count, tau)
            # At w = ½ this is ½·l_a + ½·l_b, bit for bit ½·(l_a + l_b): halving is exact.
            per_anchor = w * l_a + (1.0 - w) * l_b
        return self.reduce(per_anchor)
