"""FairKL regulariser with ε-SupInfoNCE (Barbano et al., ICLR 2023), PROTOCOLS §4."""

from __future__ import annotations

import math

import torch

from debias.losses.base import (
    TemperatureScaledLoss,
    check_positive,
    flatten_views,
    group_ids,
    masked_logsumexp,
    normalize,
)
from debias.losses.supcon import supcon_per_anchor

__all__ = ["FairKLLoss", "fairkl_regularizer"]


def _masked_mean(sim: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (sim * mask).sum() / mask.sum().clamp_min(1)


def fairkl_regularizer(
    z: torch.Tensor,
    labels: torch.Tensor,
    bias: torch.Tensor,
    *,
    temperature: float = 1.0,
    kld: float = 1.0,
    attract_repel: bool = True,
) -> torch.Tensor:
    r"""The FairKL term of the official code, on ``B`` L2-normalised rows ``z`` ``[B, D]``.

    With ``s = z zᵀ/T`` (``T`` = ``temperature``, official 1.0) over all ``B×B`` pairs including
    ``i = j``, masks ``pos`` (same label), ``al`` (same bias), ``cf = ¬al``:

    * ``μ_{pa} = mean s`` over ``pos ∧ al``, ``μ_{pc}`` over ``pos ∧ cf``, ``μ_{na}`` over
      ``¬pos ∧ al``, ``μ_{nc}`` over ``¬pos ∧ cf`` (mean over the pairs in the mask);
    * ``σ_m = std(s ⊙ m)``: the unbiased std of the *zero-filled* ``B×B`` matrix, as the
      official ``torch.std(similarity * mask)`` computes it;

    .. math::

        R = (\mu_{pc}-\mu_{pa})^2 + (\mu_{na}-\mu_{nc})^2
            + \mathrm{kld}\,\big[(\sigma_{pa}-\sigma_{pc})^2 + (\sigma_{na}-\sigma_{nc})^2\big]
            \;\underbrace{-\;\mu_{pc} + \mu_{na}}_{\texttt{attract\_repel}}

    The first line is the official code's Gaussian "KL": the paper matches
    ``N(μ_a, σ_a²)`` and ``N(μ_c, σ_c²)`` of the aligned and conflicting similarities; the code
    matches their first two moments with squared differences (zero iff both match, which is
    what the KL's minimiser requires) instead of the closed-form KL. The last two terms are in
    the official return value too (pull bias-conflicting positives together, push bias-aligned
    negatives apart); ``attract_repel=False`` leaves them out, giving the pure
    distribution-matching part (0 when the aligned and conflicting statistics match).
    """
    sim = (z @ z.T) / temperature
    pos = labels[:, None] == labels[None, :]
    aligned = bias[:, None] == bias[None, :]
    masks = {
        "pa": pos & aligned,
        "pc": pos & ~aligned,
        "na": ~pos & aligned,
        "nc": ~pos & ~aligned,
    }
    mu = {name: _masked_mean(sim, mask) for name, mask in masks.items()}
    sd = {name: torch.std(sim * mask) for name, mask in masks.items()}
    reg = (mu["pc"] - mu["pa"]) ** 2 + (mu["na"] - mu["nc"]) ** 2
    reg = reg + kld * ((sd["pa"] - sd["pc"]) ** 2 + (sd["na"] - sd["nc"]) ** 2)
    if attract_repel:
        reg = reg - mu["pc"] + mu["na"]
    return reg


class FairKLLoss(TemperatureScaledLoss):
    r"""``α·ε-SupInfoNCE`` (or ``α·SupCon``) ``+ λ·FairKL``, as trained in the FairKL paper.

    Contrastive term, ``base="supinfonce"`` (default; official ``EpsilonSupInfoNCE``,
    ``form='out'``), ``s_ik = z_i·z_k/τ`` over all ``V·B`` rows, ``ω = e^{−ε}``:

    .. math::

        l(i) = -\frac{1}{|P(i)|}\sum_{p\in P(i)}\Big[s_{ip}
               - \log\big(\omega e^{s_{ip}} + \sum_{n\in N(i)} e^{s_{in}}\big)\Big],\qquad
        \mathcal{L}_{con} = \frac{\tau}{\tau_{base}}\cdot\frac{1}{VB}\sum_i l(i)

    (each positive competes only with itself and the different-label rows; ε = 0 is their
    default). ``base="supcon"`` uses :class:`~debias.losses.SupConLoss` instead. Official
    detail not copied: ``+1e-6`` inside that log as a NaN guard; we use ``logaddexp`` of exact
    ``logsumexp``\ s, which needs no guard.

    Regulariser: :func:`fairkl_regularizer` on the normalised features of **view 0** only
    (the official training script passes ``feats[:, 0]``) with its own temperature 1.0.
    Difference from the official script: it regularises the encoder features and
    contrasts the projection-head output; this loss sees one tensor and uses it for both.

    .. math::

        \mathcal{L} = \alpha\,\mathcal{L}_{con} + \lambda\, R_{FairKL}

    Args:
        lambda_fairkl: λ ≥ 0, default 1.0 (official flag ``--lambd``; 0 disables the term).
        temperature: τ, default 0.1 (official ``--temp``). base_temperature: default 0.07
            (official ``EpsilonSupInfoNCE`` default).
        epsilon: ε ≥ 0 of ε-SupInfoNCE, default 0.
        alpha: weight of the contrastive term, default 1.0 (official ``--alpha``).
        kld: weight of the std-matching part of the regulariser, default 1.0 (official).
        fairkl_temperature: temperature of the regulariser's similarities, default 1.0.
        base: ``"supinfonce"`` (default) or ``"supcon"``.
        gather: gather features across ranks under ``torch.distributed``.

    Call: ``loss(features [B, V, D], labels [B], bias [B]) -> scalar``, ``B >= 2`` (a batch
    of one image is a ValueError: the regulariser's std of a single similarity is undefined).
    """

    requires_labels = True
    requires_bias = True
    # With one image the regulariser's unbiased std over its single similarity is undefined.
    min_batch = 2
    # Positives are the other images of the label: one view is FairKL's own recipe.
    min_views = 1

    def __init__(
        self,
        lambda_fairkl: float = 1.0,
        temperature: float = 0.1,
        base_temperature: float = 0.07,
        *,
        epsilon: float = 0.0,
        alpha: float = 1.0,
        kld: float = 1.0,
        fairkl_temperature: float = 1.0,
        base: str = "supinfonce",
        gather: bool = True,
    ) -> None:
        super().__init__(temperature, base_temperature, gather=gather)
        for name, value in (("lambda_fairkl", lambda_fairkl), ("epsilon", epsilon), ("kld", kld)):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0; got {value!r}")
        if base not in ("supinfonce", "supcon"):
            raise ValueError(f"base must be 'supinfonce' or 'supcon'; got {base!r}")
        self.lambda_fairkl = float(lambda_fairkl)
        self.epsilon = float(epsilon)
        self.alpha = float(alpha)
        self.kld = float(kld)
        self.fairkl_temperature = check_positive("fairkl_temperature", fairkl_temperature)
        self.base = base

    def contrastive(self, z: torch.Tensor, row_labels: torch.Tensor, n_labels: int) -> torch.Tensor:
        """The contrastive term on flattened normalised rows ``z`` with label ids ``row_labels``
        (``0..n_labels-1``)."""
        tau = self.temperature
        if self.base == "supcon":
            return self.reduce(supcon_per_anchor(z, row_labels, n_labels, tau))
        logits = (z / tau) @ z.T
        same = row_labels[:, None] == row_labels[None, :]
        if n_labels > 1:
            lse_neg = masked_logsumexp(logits, same)  # over N(i)
        else:  # no different-label row at all: the sum over N(i) is empty
            lse_neg = logits.new_full((z.shape[0],), float("-inf"))
        pos = same.clone().fill_diagonal_(False)  # `same` is saved by masked_fill: no in-place
        denom = torch.logaddexp(logits - self.epsilon, lse_neg[:, None])
        log_prob = (logits - denom).masked_fill(~pos, 0.0)
        mean_log_prob = log_prob.sum(dim=1) / pos.sum(dim=1).clamp_min(1)
        return self.reduce(-mean_log_prob)

    def compute(
        self, features: torch.Tensor, labels: torch.Tensor | None, bias: torch.Tensor | None
    ) -> torch.Tensor:
        assert labels is not None and bias is not None
        views = features.shape[1]
        zn = normalize(features)
        label_ids, n_labels = group_ids(labels)
        loss = self.alpha * self.contrastive(flatten_views(zn), label_ids.repeat(views), n_labels)
        if self.lambda_fairkl > 0:
            reg = fairkl_regularizer(
                zn[:, 0], labels, bias, temperature=self.fairkl_temperature, kld=self.kld
            )
            loss = loss + self.lambda_fairkl * reg
        return loss
