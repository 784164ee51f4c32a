"""Contrastive attraction and contrastive repulsion, CACR (Zheng et al., TMLR 2023), PROTOCOLS §4."""

from __future__ import annotations

import math

import torch

from debias.losses.base import ContrastiveLoss, flatten_views, group_ids, normalize

__all__ = ["CACRLoss"]


def _finite(name: str, value: float, *, nonneg: bool) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number; got {value!r}") from None
    if not math.isfinite(v) or (nonneg and v < 0):
        raise ValueError(
            f"{name} must be a finite number{' >= 0' if nonneg else ''}; got {value!r}"
        )
    return v


def _weighted_cost(cost: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """``Σ_k softmax_k(logits)·cost_k`` over the last dim (``-inf`` logits = not in the set)."""
    return (torch.softmax(logits, dim=-1) * cost).sum(dim=-1)


def _fill_diag_(t: torch.Tensor, value: float) -> torch.Tensor:
    t.diagonal(dim1=-2, dim2=-1).fill_(value)
    return t


class CACRLoss(ContrastiveLoss):
    r"""CACR: attraction weighted towards far positives, repulsion towards close negatives.

    Squared distances on L2-normalised features, ``d(i,k) = ‖z_i − z_k‖² = 2 − 2 z_i·z_k``.

    Default = the official small-scale pairing (JegZheng/CACR-SSL
    ``small_scale_experiments/losses/__init__.py``: ``our_loss1`` + ``our_loss2``), ``V`` views
    ``z^v`` of ``B`` images:

    .. math::

        \mathcal{L}_{CA} &= \frac1V\sum_v\frac1B\sum_i\sum_{u\ne v}
            w^+_{iu}\,\alpha\,d(z_i^v, z_i^u), \qquad
            w^+_{i\cdot} = \mathrm{softmax}_{u \ne v}\big(\tau^+ d(z_i^v, z_i^u)\big) \\
        \mathcal{L}_{CR} &= \binom{V}{2}^{-1}\sum_{x<y}\frac1B\sum_i\sum_{j\ne i}
            w^-_{ij}\,(-\beta)\,d(z_i^x, z_j^y), \qquad
            w^-_{i\cdot} = \mathrm{softmax}_{j \ne i}\big(-\tau^- d(z_i^x, z_j^y)\big) \\
        \mathcal{L} &= \mathcal{L}_{CA} + \mathcal{L}_{CR}

    Anchors of the last view get no repulsion term: that is the official code. The weights are
    *not* detached (the official code back-propagates through them). Official parameterisation
    ``cost = α·d``, ``softmax(cost·τ⁺/α)`` is the same as ``softmax(τ⁺·d)`` for α ≠ 0; ours also
    works for α = 0. Distances use ``2 − 2 z·z`` (one batched matmul) instead of the official
    ``‖z_x − z_y‖²`` on a ``[B, B, D]`` difference tensor: equal to float64 rounding for
    normalised features, and equal gradients (the normalisation removes the radial part).

    Options:
        symmetric: repulsion for *every* row (all views) against all rows of other images in
            all views, ``w⁻ = softmax`` over that set; ``L_CR`` = mean over the ``V·B`` anchors.
            Attraction unchanged.
        detach_weights: compute ``w⁺``, ``w⁻`` from detached distances (weights act as
            constants in the gradient).
        supervised: **our extension, not in the paper**: positives = every other row with the
            same label (all views, including the anchor's own other views), negatives = every
            row with a different label; both softmaxes over those sets, both terms averaged over
            all ``V·B`` anchors. With a single label in the batch there is no negative and
            ``L_CR = 0``. Requires labels; ``symmetric`` is implied.

    Args:
        tau_pos: τ⁺ ≥ 0, default 1.0 (official). tau_neg: τ⁻ ≥ 0, default 0.9 (official CIFAR-10;
            2.0 on other sets). alpha, beta: α, β, default 1.0.
        gather: gather features across ranks under ``torch.distributed``.

    Call: ``loss(features [B, V, D], labels=None, bias=None) -> scalar``, ``B >= 2`` (a batch
    of one image has no negatives, so ``L_CR`` is a softmax over an empty set: ValueError).
    """

    # Negatives are other images: with one image the repulsion softmax has an empty set.
    min_batch = 2

    def __init__(
        self,
        tau_pos: float = 1.0,
        tau_neg: float = 0.9,
        alpha: float = 1.0,
        beta: float = 1.0,
        *,
        symmetric: bool = False,
        detach_weights: bool = False,
        supervised: bool = False,
        gather: bool = True,
    ) -> None:
        super().__init__(gather=gather)
        self.tau_pos = _finite("tau_pos", tau_pos, nonneg=True)
        self.tau_neg = _finite("tau_neg", tau_neg, nonneg=True)
        self.alpha = _finite("alpha", alpha, nonneg=False)
        self.beta = _finite("beta", beta, nonneg=False)
        self.symmetric = bool(symmetric)
        self.detach_weights = bool(detach_weights)
        self.supervised = bool(supervised)
        # Instance attribute: the trainer must pass labels to the supervised variant only.
        self.requires_labels = self.supervised

    def _weight_input(self, d: torch.Tensor) -> torch.Tensor:
        """The distances the softmax weights are computed from (detached if asked)."""
        return d.detach() if self.detach_weights else d

    def compute(
        self, features: torch.Tensor, labels: torch.Tensor | None, bias: torch.Tensor | None
    ) -> torch.Tensor:
        z = normalize(features)  # [B, V, D]
        if self.supervised:
            assert labels is not None
            return self._supervised(z, labels)
        batch, views = z.shape[0], z.shape[1]
        inf = float("inf")

        # Attraction: per image, the V x V distances between its views; a row's own entry is
        # not a positive.
        d_views = 2.0 - 2.0 * torch.einsum("bvd,bud->bvu", z, z)
        pos_logits = _fill_diag_(self.tau_pos * self._weight_input(d_views), -inf)
        l_ca = self.alpha * _weighted_cost(d_views, pos_logits).mean()

        if self.symmetric:
            zf = flatten_views(z)
            d = 2.0 - 2.0 * (zf @ zf.T)
            img = torch.arange(batch, device=z.device).repeat(views)
            neg_logits = (-self.tau_neg * self._weight_input(d)).masked_fill(
                img[:, None] == img[None, :], -inf
            )
        else:
            # One batched matmul over the V(V-1)/2 view pairs x < y: [P, B, B].
            xs, ys = torch.triu_indices(views, views, 1, device=z.device)
            zx, zy = z[:, xs].transpose(0, 1), z[:, ys].transpose(0, 1)
            d = 2.0 - 2.0 * torch.bmm(zx, zy.transpose(1, 2))
            neg_logits = _fill_diag_(-self.tau_neg * self._weight_input(d), -inf)
        l_cr = -self.beta * _weighted_cost(d, neg_logits).mean()
        return l_ca + l_cr

    def _supervised(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        views = z.shape[1]
        inf = float("inf")
        zf = flatten_views(z)
        d = 2.0 - 2.0 * (zf @ zf.T)
        label_ids, n_labels = group_ids(labels)
        row_labels = label_ids.repeat(views)
        same = row_labels[:, None] == row_labels[None, :]
        pos_logits = _fill_diag_(
            (self.tau_pos * self._weight_input(d)).masked_fill(~same, -inf), -inf
        )
        l_ca = self.alpha * _weighted_cost(d, pos_logits).mean()
        if n_labels == 1:  # no different-label row anywhere (all or none): no repulsion
            return l_ca
        neg_logits = (-self.tau_neg * self._weight_input(d)).masked_fill(same, -inf)
        return l_ca - self.beta * _weighted_cost(d, neg_logits).mean()
