"""Supervised contrastive loss (Khosla et al. 2020), PROTOCOLS §4."""

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

__all__ = ["SupConLoss", "supcon_per_anchor"]


def supcon_per_anchor(
    z: torch.Tensor,
    row_groups: torch.Tensor,
    n_groups: int,
    temperature: float,
    lse_all: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-anchor ``l(i) = −mean_{p∈P(i)} s_ip + log Σ_{k≠i} e^{s_ik}`` (unscaled).

    ``z`` is ``[N, D]`` normalised, ``row_groups`` the group id of each row; ``P(i)`` is every
    other row of the same group. Groups = labels gives SupCon, groups = image ids gives
    SimCLR's ``S(i)``. Rows whose group has no other member get ``−mean = 0`` (never happens
    with ``V >= 2`` views). ``lse_all`` (``log Σ_{k≠i} e^{s_ik}``) may be passed in when the
    caller already has it from its one similarity matmul.
    """
    lse = row_logsumexp(z, temperature)[0] if lse_all is None else lse_all
    sums = group_sums(z, row_groups, n_groups)
    pos_sum = sums[row_groups] - z
    count = torch.bincount(row_groups, minlength=n_groups)[row_groups] - 1
    return lse - positive_logit_mean(z, pos_sum, count, temperature)


class SupConLoss(TemperatureScaledLoss):
    r"""SupCon, "L_out" form, identical to SupContrast's ``SupConLoss(contrast_mode='all')``.

    .. math::

        l(i) = -\frac{1}{|P(i)|}\sum_{p \in P(i)}\Big[s_{ip} - \log\sum_{k \in A(i)} e^{s_{ik}}\Big],
        \qquad \mathcal{L} = \frac{\tau}{\tau_{base}} \cdot \frac{1}{VB}\sum_i l(i)

    with ``s_ik = z_i·z_k/τ`` on L2-normalised features, ``P(i)`` = same label, ``k ≠ i``
    (so it includes the other views of image ``i``), ``A(i)`` = all ``k ≠ i``.

    Matches HobbitLong/SupContrast ``losses.py`` to float64 precision in value and gradient
    (``tests/test_losses.py``). Implementation differences that do not change the math:
    the max subtracted before ``exp`` is the row max over ``A(i)`` (the official code takes a
    detached max over all columns, self included), the denominator and its gradient come from
    the fused :func:`~debias.losses.base.row_logsumexp`, and ``Σ_p s_ip`` comes from per-class
    feature sums instead of an ``[N, N]`` mask product.

    Args:
        temperature: τ, default 0.07 (SupContrast default).
        base_temperature: τ_base, default 0.07; the loss is scaled by ``τ/τ_base``.
        gather: gather features across ranks under ``torch.distributed`` (see base class).

    Call: ``loss(features [B, V, D], labels [B]) -> scalar``. Labels are required.
    """

    requires_labels = True

    def compute(
        self, features: torch.Tensor, labels: torch.Tensor | None, bias: torch.Tensor | None
    ) -> torch.Tensor:
        assert labels is not None
        views = features.shape[1]
        z = flatten_views(normalize(features))
        label_ids, n_labels = group_ids(labels)
        per_anchor = supcon_per_anchor(z, label_ids.repeat(views), n_labels, self.temperature)
        return self.reduce(per_anchor)
