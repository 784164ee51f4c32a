"""Contrastive losses (PROTOCOLS §4): values AND gradients against independent references.

Three kinds of reference live in this file:

* ``loop_*``: written from the PROTOCOLS formulas with explicit Python loops over anchors,
  nothing shared with ``debias.losses``;
* ``Official*`` / ``official_*``: transcriptions of the official code's forward passes
  (sources credited on each), only ``.cuda()`` replaced by the input's device;
* analytic values for hand-built feature geometries.

Everything that claims exactness runs in float64 and compares gradients with
``torch.autograd.grad`` as well as values.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from debias.losses import (
    LOSSES,
    BiasConLoss,
    CACRLoss,
    ConTeXLoss,
    FairKLLoss,
    SimCLRLoss,
    SupConLoss,
    fairkl_regularizer,
    get_loss,
)

DT = torch.float64
TOL = dict(rtol=1e-10, atol=1e-12)


def make_batch(b: int, v: int, d: int = 16, n_classes: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(b, v, d, generator=g, dtype=DT)
    labels = torch.randint(0, n_classes, (b,), generator=g)
    bias = torch.randint(0, 2, (b,), generator=g)
    return feats.requires_grad_(True), labels, bias


def value_and_grad(fn, feats):
    out = fn(feats)
    (grad,) = torch.autograd.grad(out, feats)
    return out.detach(), grad


def assert_same(fn_a, fn_b, feats, **tol):
    tol = tol or TOL
    va, ga = value_and_grad(fn_a, feats)
    vb, gb = value_and_grad(fn_b, feats)
    assert torch.isfinite(va) and torch.isfinite(ga).all()
    torch.testing.assert_close(va, vb, **tol)
    torch.testing.assert_close(ga, gb, **tol)


# =============================================================================================
# Loop references, straight from PROTOCOLS §4
# =============================================================================================
def _rows(feats):
    z = F.normalize(feats, dim=-1)
    b, v, _ = z.shape
    return torch.cat(torch.unbind(z, 1), 0), b, v


def _info_nce_term(s_i, positives, denominator):
    """−mean_{p∈positives}[s_ip − log Σ_{k∈denominator} e^{s_ik}]."""
    log_den = torch.logsumexp(s_i[denominator], 0)
    return -torch.stack([s_i[p] - log_den for p in positives]).mean()


def loop_supcon(feats, labels, tau=0.07, base=0.07, positives="label"):
    zf, b, v = _rows(feats)
    n = v * b
    per = []
    for i in range(n):
        s_i = (zf[i] * zf).sum(1) / tau
        a = [k for k in range(n) if k != i]
        if positives == "label":
            p = [k for k in a if labels[k % b] == labels[i % b]]
        else:  # other views of the same image
            p = [k for k in a if k % b == i % b]
        per.append(_info_nce_term(s_i, p, a))
    return tau / base * torch.stack(per).mean()


def loop_contex(feats, labels, tau=0.07, base=0.07, w=0.5):
    """ConTeX with weight w on l_a and 1 - w on l_b (the official ½ by default; the official
    history's ``self_weight`` otherwise); an anchor without a different-label row contributes
    (1 - w)·l_b."""
    zf, b, v = _rows(feats)
    n = v * b
    per = []
    for i in range(n):
        s_i = (zf[i] * zf).sum(1) / tau
        a = [k for k in range(n) if k != i]
        p = [k for k in a if labels[k % b] == labels[i % b]]
        neg = [k for k in a if labels[k % b] != labels[i % b]]
        same_img = [k for k in a if k % b == i % b]
        l_b = _info_nce_term(s_i, same_img, a)
        # No different-label row: l_a is absent, the anchor contributes (1 - w)·l_b.
        l_a = _info_nce_term(s_i, p, neg) if neg else torch.zeros((), dtype=feats.dtype)
        per.append(w * l_a + (1 - w) * l_b)
    return tau / base * torch.stack(per).mean()


def loop_biascon(feats, labels, bias, tau=0.07):
    zf, b, v = _rows(feats)
    n = v * b
    per = []
    for i in range(n):
        s_i = (zf[i] * zf).sum(1) / tau
        a = [k for k in range(n) if k != i]
        p = [k for k in a if labels[k % b] == labels[i % b] and bias[k % b] != bias[i % b]]
        # No positive: contributes 0 (kept in the graph so an all-zero batch still has a grad).
        per.append(_info_nce_term(s_i, p, a) if p else 0.0 * s_i.sum())
    return torch.stack(per).mean()


def _sqdist(a, b):
    return ((a - b) ** 2).sum()


def loop_cacr(feats, tau_pos=1.0, tau_neg=0.9, alpha=1.0, beta=1.0, symmetric=False, detach=False):
    z = F.normalize(feats, dim=-1)
    b, v, _ = z.shape

    def w_of(x):
        return x.detach() if detach else x

    ca = []
    for x in range(v):
        for i in range(b):
            d = torch.stack([_sqdist(z[i, x], z[i, u]) for u in range(v) if u != x])
            w = torch.softmax(tau_pos * w_of(d), 0)
            ca.append((w * alpha * d).sum())
    cr = []
    if symmetric:
        for x in range(v):
            for i in range(b):
                d = torch.stack(
                    [_sqdist(z[i, x], z[j, u]) for u in range(v) for j in range(b) if j != i]
                )
                w = torch.softmax(-tau_neg * w_of(d), 0)
                cr.append((w * -beta * d).sum())
    else:
        for x in range(v):
            for y in range(x + 1, v):
                pair = []
                for i in range(b):
                    d = torch.stack([_sqdist(z[i, x], z[j, y]) for j in range(b) if j != i])
                    w = torch.softmax(-tau_neg * w_of(d), 0)
                    pair.append((w * -beta * d).sum())
                cr.append(torch.stack(pair).mean())
    return torch.stack(ca).mean() + torch.stack(cr).mean()


def loop_cacr_supervised(feats, labels, tau_pos=1.0, tau_neg=0.9, alpha=1.0, beta=1.0):
    zf, b, v = _rows(feats)
    n = v * b
    ca, cr = [], []
    for i in range(n):
        pos = [k for k in range(n) if k != i and labels[k % b] == labels[i % b]]
        neg = [k for k in range(n) if labels[k % b] != labels[i % b]]
        d = torch.stack([_sqdist(zf[i], zf[k]) for k in pos])
        ca.append((torch.softmax(tau_pos * d, 0) * alpha * d).sum())
        if neg:
            d = torch.stack([_sqdist(zf[i], zf[k]) for k in neg])
            cr.append((torch.softmax(-tau_neg * d, 0) * -beta * d).sum())
        else:
            cr.append(torch.zeros((), dtype=feats.dtype))
    return torch.stack(ca).mean() + torch.stack(cr).mean()


def loop_supinfonce(feats, labels, tau=0.1, base=0.07, epsilon=0.0):
    zf, b, v = _rows(feats)
    n = v * b
    per = []
    for i in range(n):
        s_i = (zf[i] * zf).sum(1) / tau
        p = [k for k in range(n) if k != i and labels[k % b] == labels[i % b]]
        neg = [k for k in range(n) if labels[k % b] != labels[i % b]]
        terms = []
        for q in p:
            den = torch.logsumexp(torch.cat([(s_i[q] - epsilon).reshape(1), s_i[neg]]), 0)
            terms.append(s_i[q] - den)
        per.append(-torch.stack(terms).mean())
    return tau / base * torch.stack(per).mean()


# =============================================================================================
# Transcriptions of the official code (forward passes; comments trimmed)
# =============================================================================================
class OfficialSupConLoss(nn.Module):
    """HobbitLong/SupContrast ``losses.py`` (Yonglong Tian, 2020), ``SupConLoss``, verbatim."""

    def __init__(self, temperature=0.07, contrast_mode="all", base_temperature=0.07):
        super().__init__()
        self.temperature = temperature
        self.contrast_mode = contrast_mode
        self.base_temperature = base_temperature

    def forward(self, features, labels=None, mask=None):
        device = torch.device("cuda") if features.is_cuda else torch.device("cpu")
        if len(features.shape) < 3:
            raise ValueError("`features` needs to be [bsz, n_views, ...]")
        if len(features.shape) > 3:
            features = features.view(features.shape[0], features.shape[1], -1)
        batch_size = features.shape[0]
        if labels is not None and mask is not None:
            raise ValueError("Cannot define both `labels` and `mask`")
        elif labels is None and mask is None:
            mask = torch.eye(batch_size, dtype=torch.float32).to(device)
        elif labels is not None:
            labels = labels.contiguous().view(-1, 1)
            if labels.shape[0] != batch_size:
                raise ValueError("Num of labels does not match num of features")
            mask = torch.eq(labels, labels.T).float().to(device)
        else:
            mask = mask.float().to(device)
        contrast_count = features.shape[1]
        contrast_feature = torch.cat(torch.unbind(features, dim=1), dim=0)
        if self.contrast_mode == "one":
            anchor_feature = features[:, 0]
            anchor_count = 1
        elif self.contrast_mode == "all":
            anchor_feature = contrast_feature
            anchor_count = contrast_count
        else:
            raise ValueError(f"Unknown mode: {self.contrast_mode}")
        anchor_dot_contrast = torch.div(
            torch.matmul(anchor_feature, contrast_feature.T), self.temperature
        )
        logits_max, _ = torch.max(anchor_dot_contrast, dim=1, keepdim=True)
        logits = anchor_dot_contrast - logits_max.detach()
        mask = mask.repeat(anchor_count, contrast_count)
        logits_mask = torch.scatter(
            torch.ones_like(mask),
            1,
            torch.arange(batch_size * anchor_count).view(-1, 1).to(device),
            0,
        )
        mask = mask * logits_mask
        exp_logits = torch.exp(logits) * logits_mask
        log_prob = logits - torch.log(exp_logits.sum(1, keepdim=True))
        mean_log_prob_pos = (mask * log_prob).sum(1) / mask.sum(1)
        loss = -(self.temperature / self.base_temperature) * mean_log_prob_pos
        loss = loss.view(anchor_count, batch_size).mean()
        return loss


class OfficialConTeX(nn.Module):
    """hdeng26/Contex ``losses.py`` @ 69e9790, ``SupConTupletLoss`` (``--loss_type -1``), verbatim.

    Returns ``(loss, self_loss, class_loss)`` like the original.
    """

    def __init__(self, temperature=0.07, contrast_mode="all", base_temperature=0.07):
        super().__init__()
        self.temperature = temperature
        self.contrast_mode = contrast_mode
        self.base_temperature = base_temperature

    def forward(self, features, labels=None, mask=None):
        device = torch.device("cuda") if features.is_cuda else torch.device("cpu")
        if len(features.shape) < 3:
            raise ValueError("`features` needs to be [bsz, n_views, ...]")
        if len(features.shape) > 3:
            features = features.view(features.shape[0], features.shape[1], -1)
        batch_size = features.shape[0]
        if labels is not None and mask is not None:
            raise ValueError("Cannot define both `labels` and `mask`")
        elif labels is None and mask is None:
            mask = torch.eye(batch_size, dtype=torch.float32).to(device)
        elif labels is not None:
            labels = labels.contiguous().view(-1, 1)
            if labels.shape[0] != batch_size:
                raise ValueError("Num of labels does not match num of features")
            mask = torch.eq(labels, labels.T).float().to(device)
        else:
            mask = mask.float().to(device)
        contrast_count = features.shape[1]
        contrast_feature = torch.cat(torch.unbind(features, dim=1), dim=0)
        if self.contrast_mode == "one":
            anchor_feature = features[:, 0]
            anchor_count = 1
        elif self.contrast_mode == "all":
            anchor_feature = contrast_feature
            anchor_count = contrast_count
        else:
            raise ValueError(f"Unknown mode: {self.contrast_mode}")
        anchor_dot_contrast = torch.div(
            torch.matmul(anchor_feature, contrast_feature.T), self.temperature
        )
        logits_max, _ = torch.max(anchor_dot_contrast, dim=1, keepdim=True)
        logits = anchor_dot_contrast - logits_max.detach()
        mask = mask.repeat(anchor_count, contrast_count)
        logits_self_mask = torch.scatter(
            torch.ones_like(mask),
            1,
            torch.arange(batch_size * anchor_count).view(-1, 1).to(device),
            0,
        )
        logits_mask = torch.square(mask - 1)
        mask = mask * logits_self_mask
        exp_logits = torch.exp(logits) * logits_mask  # remove all positive pairs
        log_prob = logits - torch.log(exp_logits.sum(1, keepdim=True))
        mean_log_prob_pos = (mask * log_prob).sum(1) / mask.sum(1)
        # TRIPLET LOSS ADVANCE
        sim_mask = torch.eye(batch_size, dtype=torch.float32).to(device)
        sim_mask = sim_mask.repeat(anchor_count, contrast_count)
        sim_mask = sim_mask * logits_self_mask
        trip_mask = torch.scatter(
            torch.ones_like(mask),
            1,
            torch.arange(batch_size * anchor_count).view(-1, 1).to(device),
            0,
        )
        logits_neg = torch.exp(logits) * trip_mask
        log_self_diff = logits - torch.log(logits_neg.sum(1, keepdim=True))
        triplet_loss = (sim_mask * log_self_diff).sum(1) / sim_mask.sum(1)
        loss = -(self.temperature / self.base_temperature) * (triplet_loss + mean_log_prob_pos) / 2
        loss = loss.view(anchor_count, batch_size).mean()
        self_loss = -(self.temperature / self.base_temperature) * triplet_loss
        class_loss = -(self.temperature / self.base_temperature) * mean_log_prob_pos
        return (
            loss,
            self_loss.view(anchor_count, batch_size).mean(),
            class_loss.view(anchor_count, batch_size).mean(),
        )


# JegZheng/CACR-SSL small_scale_experiments/losses/__init__.py (Huangjie Zheng, Xu Chen),
# verbatim except `.cuda()` -> `.to(cost.device)` and the debiased branch dropped.
def official_cacr_loss1(latent_codes_list, alpha=1.0, tau_pos=1.0, choice="full"):
    loss1 = 0.0
    for x in range(len(latent_codes_list)):
        z_x = latent_codes_list[x]
        mask = list(range(len(latent_codes_list)))
        mask.pop(x)
        masked_z_x = torch.stack(latent_codes_list, dim=0)[mask]
        cost = (z_x - masked_z_x).norm(p=2, dim=-1).pow(2).transpose(1, 0).mul(alpha)
        dist = cost.mul(tau_pos / alpha)
        weights = torch.softmax(dist, dim=1)
        loss1 += (cost * weights).sum(1).mean()
    return loss1 / (len(latent_codes_list)), weights


def official_cacr_negative(z_x, z_y, beta=1.0, tau_neg=1.0):
    cost = torch.norm(z_x[:, None] - z_y, dim=-1).pow(2).mul(-beta)
    cost = cost.masked_select(
        ~torch.from_numpy(np.eye(cost.shape[0], dtype=bool)).to(cost.device)
    ).view(cost.shape[0], cost.shape[0] - 1)
    dist = cost.mul(tau_neg / beta)
    weights = torch.softmax(dist, dim=1)
    loss = (cost * weights).sum(1).mean()
    return loss, weights


def official_cacr_loss2(latent_codes_list, beta=1.0, tau_neg=1.0):
    loss2 = 0.0
    counter = 0
    for x in range(len(latent_codes_list)):
        z_x = latent_codes_list[x]
        for y in range(x + 1, len(latent_codes_list)):
            z_y = latent_codes_list[y]
            loss_for, weights = official_cacr_negative(z_x, z_y, beta=beta, tau_neg=tau_neg)
            loss2 += loss_for
            counter += 1
    return loss2 / counter, weights


class OfficialDebiasSupConLoss(nn.Module):
    """grayhong/bias-contrastive-learning ``debias/losses/bias_contrastive.py``, ``.cuda()`` removed."""

    def __init__(self, temperature=0.07, contrast_mode="all", base_temperature=0.07):
        super().__init__()
        self.temperature = temperature
        self.contrast_mode = contrast_mode
        self.base_temperature = base_temperature

    def forward(self, features, labels=None, biases=None, mask=None):
        batch_size = features.shape[0]
        labels = labels.contiguous().view(-1, 1)
        biases = biases.contiguous().view(-1, 1)
        label_mask = torch.eq(labels, labels.T)
        bias_mask = torch.ne(biases, biases.T)
        mask = label_mask & bias_mask
        mask = mask.float()
        contrast_count = features.shape[1]
        contrast_feature = torch.cat(torch.unbind(features, dim=1), dim=0)
        anchor_feature = contrast_feature
        anchor_count = contrast_count
        anchor_dot_contrast = torch.div(
            torch.matmul(anchor_feature, contrast_feature.T), self.temperature
        )
        logits_max, _ = torch.max(anchor_dot_contrast, dim=1, keepdim=True)
        logits = anchor_dot_contrast - logits_max.detach()
        mask = mask.repeat(anchor_count, contrast_count)
        logits_mask = torch.scatter(
            torch.ones_like(mask), 1, torch.arange(batch_size * anchor_count).view(-1, 1), 0
        )
        mask = mask * logits_mask
        exp_logits = torch.exp(logits) * logits_mask
        log_prob = logits - torch.log(exp_logits.sum(1, keepdim=True) + 1e-9)
        sum_mask = mask.sum(1)
        sum_mask[sum_mask == 0] = 1
        mean_log_prob_pos = (mask * log_prob).sum(1) / sum_mask
        loss = -mean_log_prob_pos
        loss = loss.mean()
        return loss


def official_fairkl(feat, labels, bias_labels, temperature=1.0, kld=1.0):
    """EIDOSLAB FairKL code (Barbano et al.), ``fairkl``; prints dropped."""
    bsz = feat.shape[0]
    if labels.shape[0] != bsz:
        raise ValueError("Num of labels does not match num of features")
    similarity = torch.div(torch.matmul(feat, feat.T), temperature)
    labels = labels.view(-1, 1)
    positive_mask = torch.eq(labels, labels.T)
    bias_labels = bias_labels.view(-1, 1)
    aligned_mask = torch.eq(bias_labels, bias_labels.T)
    conflicting_mask = ~aligned_mask
    pos_conflicting = positive_mask * conflicting_mask
    conflicting_sim = similarity * pos_conflicting
    mu_conflicting = conflicting_sim.sum() / max(pos_conflicting.sum(), 1)
    pos_aligned = positive_mask * aligned_mask
    aligned_sim = similarity * pos_aligned
    mu_aligned = aligned_sim.sum() / max(pos_aligned.sum(), 1)
    neg_aligned = (~positive_mask) * aligned_mask
    neg_aligned_sim = similarity * neg_aligned
    mu_neg_aligned = neg_aligned_sim.sum() / max(neg_aligned.sum(), 1)
    neg_conflicting = (~positive_mask) * conflicting_mask
    neg_conflicting_sim = similarity * neg_conflicting
    mu_neg_conflicting = neg_conflicting_sim.sum() / max(neg_conflicting.sum(), 1)
    mu_loss = torch.pow(mu_conflicting - mu_aligned, 2)
    mu_loss += torch.pow(mu_neg_aligned - mu_neg_conflicting, 2)
    var_aligned = torch.std(aligned_sim)
    var_conflicting = torch.std(conflicting_sim)
    kld_loss = torch.pow(var_aligned - var_conflicting, 2)
    var_neg_aligned = torch.std(neg_aligned_sim)
    var_neg_conflicting = torch.std(neg_conflicting_sim)
    kld_loss += torch.pow(var_neg_aligned - var_neg_conflicting, 2)
    return mu_loss + kld * kld_loss - mu_conflicting + mu_neg_aligned


def official_eps_supinfonce_out(
    features, labels, temperature=0.1, base_temperature=0.07, epsilon=0.0
):
    """EIDOSLAB ``EpsilonSupInfoNCE`` (form 'out', contrast_mode 'all'), forward + forward_out."""
    device = features.device
    omega = np.exp(-epsilon)
    batch_size = features.shape[0]
    n_views = features.shape[1]
    labels = labels.view(-1, 1)
    mask = torch.eq(labels, labels.T).bool()
    view_count = features.shape[1]
    features = torch.cat(torch.unbind(features, dim=1), dim=0)
    anchor_count = view_count
    mask = mask.repeat(anchor_count, view_count)
    inv_diagonal = torch.scatter(
        torch.ones_like(mask), 1, torch.arange(batch_size * n_views, device=device).view(-1, 1), 0
    ).bool()
    positive_mask = mask * inv_diagonal
    anchor_dot_contrast = torch.div(torch.matmul(features, features.T), temperature)
    logits_max, _ = torch.max(anchor_dot_contrast, dim=1, keepdim=True)
    logits = anchor_dot_contrast - logits_max.detach()
    # forward_out
    alignment = logits
    uniformity = torch.exp(logits) * inv_diagonal
    uniformity = omega * uniformity * positive_mask + (
        uniformity * (~positive_mask) * inv_diagonal
    ).sum(1, keepdim=True)
    uniformity = torch.log(uniformity + 1e-6)
    log_prob = alignment - uniformity
    log_prob = (positive_mask * log_prob).sum(1, keepdim=True) / torch.max(
        positive_mask.sum(1, keepdim=True), torch.ones_like(positive_mask.sum(1, keepdim=True))
    )
    loss = -(temperature / base_temperature) * log_prob
    return loss.mean()


# =============================================================================================
# Exactness against the loop references: values and gradients, V = 2, 3, 4, several B
# =============================================================================================
SHAPES = [(2, 2), (5, 2), (3, 3), (6, 3), (4, 4), (7, 4)]


@pytest.mark.parametrize("b,v", SHAPES)
def test_supcon_matches_loop(b, v):
    feats, labels, _ = make_batch(b, v, seed=b * 10 + v)
    assert_same(
        lambda f: SupConLoss(0.1, 0.07)(f, labels), lambda f: loop_supcon(f, labels, 0.1), feats
    )


@pytest.mark.parametrize("b,v", SHAPES)
def test_simclr_matches_loop(b, v):
    feats, _, _ = make_batch(b, v, seed=b * 10 + v + 1)
    assert_same(
        lambda f: SimCLRLoss(0.5, 0.07)(f),
        lambda f: loop_supcon(f, None, 0.5, 0.07, positives="image"),
        feats,
    )


@pytest.mark.parametrize("b,v", SHAPES)
def test_contex_matches_loop(b, v):
    feats, labels, _ = make_batch(b, v, seed=b * 10 + v + 2)
    assert_same(lambda f: ConTeXLoss(0.07)(f, labels), lambda f: loop_contex(f, labels), feats)


@pytest.mark.parametrize("b,v", SHAPES)
def test_biascon_matches_loop(b, v):
    feats, labels, bias = make_batch(b, v, n_classes=2, seed=b * 10 + v + 3)
    assert_same(
        lambda f: BiasConLoss(0.2)(f, labels, bias),
        lambda f: loop_biascon(f, labels, bias, 0.2),
        feats,
    )


@pytest.mark.parametrize("b,v", SHAPES)
@pytest.mark.parametrize("symmetric", [False, True])
def test_cacr_matches_loop(b, v, symmetric):
    feats, _, _ = make_batch(b, v, seed=b * 10 + v + 4)
    kw = dict(tau_pos=1.3, tau_neg=2.0, alpha=0.7, beta=1.5)
    assert_same(
        lambda f: CACRLoss(**kw, symmetric=symmetric)(f),
        lambda f: loop_cacr(f, **kw, symmetric=symmetric),
        feats,
    )


@pytest.mark.parametrize("b,v", [(5, 2), (4, 3)])
def test_cacr_detached_weights_matches_loop(b, v):
    feats, _, _ = make_batch(b, v, seed=b + v + 5)
    assert_same(
        lambda f: CACRLoss(detach_weights=True)(f), lambda f: loop_cacr(f, detach=True), feats
    )
    # Detaching changes the gradient, not the value: it must actually do something.
    v1, g1 = value_and_grad(lambda f: CACRLoss(detach_weights=True)(f), feats)
    v2, g2 = value_and_grad(lambda f: CACRLoss()(f), feats)
    torch.testing.assert_close(v1, v2, **TOL)
    assert not torch.allclose(g1, g2)


@pytest.mark.parametrize("b,v", [(6, 2), (5, 3), (4, 4)])
def test_cacr_supervised_matches_loop(b, v):
    feats, labels, _ = make_batch(b, v, seed=b + v + 6)
    loss = CACRLoss(tau_neg=2.0, supervised=True)
    assert loss.requires_labels and not CACRLoss.requires_labels
    assert_same(
        lambda f: loss(f, labels), lambda f: loop_cacr_supervised(f, labels, tau_neg=2.0), feats
    )


@pytest.mark.parametrize("b,v", [(5, 2), (6, 3), (4, 4)])
@pytest.mark.parametrize("epsilon", [0.0, 0.5])
def test_fairkl_supinfonce_matches_loop(b, v, epsilon):
    feats, labels, bias = make_batch(b, v, seed=b + v + 7)
    assert_same(
        lambda f: FairKLLoss(lambda_fairkl=0.0, epsilon=epsilon)(f, labels, bias),
        lambda f: loop_supinfonce(f, labels, 0.1, 0.07, epsilon),
        feats,
    )


@pytest.mark.parametrize("path", ["plain", "masked-groups"])
@pytest.mark.parametrize("b,v", [(5, 2), (4, 3)])
def test_unfused_paths_match_loop(monkeypatch, path, b, v):
    # The fused exp-sum is the default; the plain autograd path (used below τ ≈ 0.025 in
    # float32) and the masked per-group sum (used above MATMUL_MAX_GROUPS labels) must give
    # the same numbers.
    import debias.losses.base as base

    if path == "plain":
        monkeypatch.setattr(base, "FUSED", False)
    else:
        monkeypatch.setattr(base, "MATMUL_MAX_GROUPS", 0)
    feats, labels, bias = make_batch(b, v, n_classes=2, seed=b + v + 40)
    assert_same(lambda f: SupConLoss()(f, labels), lambda f: loop_supcon(f, labels), feats)
    assert_same(lambda f: ConTeXLoss()(f, labels), lambda f: loop_contex(f, labels), feats)
    assert_same(
        lambda f: BiasConLoss()(f, labels, bias), lambda f: loop_biascon(f, labels, bias), feats
    )


# =============================================================================================
# Exactness against the official code
# =============================================================================================
@pytest.mark.parametrize("b,v", SHAPES)
@pytest.mark.parametrize("tau", [0.07, 0.5])
def test_supcon_matches_official_supcontrast(b, v, tau):
    feats, labels, _ = make_batch(b, v, seed=b * 7 + v)
    official = OfficialSupConLoss(temperature=tau)
    assert_same(
        lambda f: SupConLoss(tau)(f, labels),
        lambda f: official(F.normalize(f, dim=-1), labels),
        feats,
    )


@pytest.mark.parametrize("b,v", SHAPES)
def test_simclr_matches_official_supcontrast_without_labels(b, v):
    feats, _, _ = make_batch(b, v, seed=b * 7 + v + 1)
    official = OfficialSupConLoss(temperature=0.5)
    assert_same(lambda f: SimCLRLoss(0.5)(f), lambda f: official(F.normalize(f, dim=-1)), feats)


@pytest.mark.parametrize("b,v", SHAPES)
@pytest.mark.parametrize("tau", [0.07, 0.2])
def test_contex_matches_official_contex(b, v, tau):
    feats, labels, _ = make_batch(b, v, seed=b * 7 + v + 2)
    # Two labels at least: the official code is NaN with a single label (see degenerate tests).
    labels[0], labels[1] = 0, 1
    official = OfficialConTeX(temperature=tau)
    assert_same(
        lambda f: ConTeXLoss(tau)(f, labels),
        lambda f: official(F.normalize(f, dim=-1), labels)[0],
        feats,
    )


class OfficialConTeXWeighted(OfficialConTeX):
    """hdeng26/Contex ``losses.py`` @ 69e9790, ``SupConTupletLoss2`` (``--loss_type -2``,
    ``--self_weight`` default 0.7): ``SupConTupletLoss`` line for line except its last loss line,
    ``loss = -(τ/τ_base)·((1 - w)·triplet_loss + w·mean_log_prob_pos)`` then the mean over
    anchors. The mean is linear, so that loss is ``(1 - w)·self_loss + w·class_loss`` of the
    transcribed ``SupConTupletLoss``'s other two outputs (same per-anchor terms, same masks)."""

    def __init__(
        self, temperature=0.07, contrast_mode="all", base_temperature=0.07, self_weight=0.7
    ):
        super().__init__(temperature, contrast_mode, base_temperature)
        self.self_weight = self_weight

    def forward(self, features, labels=None, mask=None):
        _, self_loss, class_loss = super().forward(features, labels, mask)
        w = self.self_weight
        return (1 - w) * self_loss + w * class_loss, self_loss, class_loss


@pytest.mark.parametrize("b,v", [(4, 2), (6, 2), (5, 3)])
@pytest.mark.parametrize("w", [0.7, 0.0, 1.0, 0.25])
def test_contex_self_weight_matches_loop_and_official_supcontupletloss2(b, v, w):
    feats, labels, _ = make_batch(b, v, seed=b * 13 + v)
    labels[0], labels[1] = 0, 1  # two labels at least: the official code is NaN with one
    ours = lambda f: ConTeXLoss(self_weight=w)(f, labels)  # noqa: E731
    assert_same(ours, lambda f: loop_contex(f, labels, w=w), feats)
    official = OfficialConTeXWeighted(self_weight=w)
    assert_same(ours, lambda f: official(F.normalize(f, dim=-1), labels)[0], feats)


def test_contex_self_weight_half_is_the_default_and_07_is_not():
    feats, labels, _ = make_batch(6, 2, seed=4)
    half, default = ConTeXLoss(self_weight=0.5)(feats, labels), ConTeXLoss()(feats, labels)
    assert half.item() == default.item()
    torch.testing.assert_close(default, loop_contex(feats, labels), **TOL)
    assert not torch.allclose(ConTeXLoss(self_weight=0.7)(feats, labels), default)


def test_contex_self_weight_single_label_and_bad_values():
    feats, _, _ = make_batch(4, 2, seed=21)
    same = torch.full((4,), 3)
    assert_same(
        lambda f: ConTeXLoss(self_weight=0.7)(f, same),
        lambda f: 0.3 * SimCLRLoss(0.07, 0.07)(f),
        feats,
    )
    for bad in (-0.1, 1.5, float("nan"), "0.7", True):
        with pytest.raises(ValueError, match="self_weight must be a number in"):
            ConTeXLoss(self_weight=bad)
    assert get_loss("contex", self_weight=0.7).settings()["self_weight"] == 0.7


def test_contex_official_is_nan_on_single_label_ours_is_not():
    feats, _, _ = make_batch(4, 2, seed=3)
    labels = torch.zeros(4, dtype=torch.long)
    off = OfficialConTeX()(F.normalize(feats, dim=-1), labels)[0]
    ours = ConTeXLoss()(feats, labels)
    assert not torch.isfinite(off)
    assert torch.isfinite(ours)


@pytest.mark.parametrize("b,v", [(2, 2), (6, 2), (5, 3), (4, 4)])
def test_cacr_matches_official_code(b, v):
    feats, _, _ = make_batch(b, v, seed=b * 7 + v + 3)
    kw = dict(alpha=0.8, beta=1.2)

    def official(f):
        z = F.normalize(f, dim=-1)
        codes = [z[:, i] for i in range(v)]
        l1, _ = official_cacr_loss1(codes, alpha=kw["alpha"], tau_pos=1.0)
        l2, _ = official_cacr_loss2(codes, beta=kw["beta"], tau_neg=0.9)
        return l1 + l2

    assert_same(lambda f: CACRLoss(1.0, 0.9, **kw)(f), official, feats, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("b,v", [(6, 2), (8, 3)])
def test_biascon_matches_official_code(b, v):
    # The official code adds 1e-9 inside log Σ exp (we do not); at τ = 0.5 that is < 1e-9
    # relative, far below the tolerance, so any real difference would still show.
    feats, labels, bias = make_batch(b, v, n_classes=2, seed=b * 7 + v + 4)
    official = OfficialDebiasSupConLoss(temperature=0.5)
    assert_same(
        lambda f: BiasConLoss(0.5)(f, labels, bias),
        lambda f: official(F.normalize(f, dim=-1), labels, biases=bias),
        feats,
        rtol=1e-7,
        atol=1e-9,
    )


@pytest.mark.parametrize("b", [6, 10])
@pytest.mark.parametrize("kld", [1.0, 0.3])
def test_fairkl_regularizer_matches_official(b, kld):
    feats, labels, bias = make_batch(b, 2, seed=b + 8)
    assert_same(
        lambda f: fairkl_regularizer(F.normalize(f[:, 0], dim=-1), labels, bias, kld=kld),
        lambda f: official_fairkl(F.normalize(f[:, 0], dim=-1), labels, bias, 1.0, kld=kld),
        feats,
    )


@pytest.mark.parametrize("b,v", [(6, 2), (5, 3)])
def test_fairkl_supinfonce_matches_official(b, v):
    # The official code adds 1e-6 inside its log as a NaN guard (we do not); at τ = 1 the
    # terms are >= e^-2, so the guard moves the value by ~1e-6 relative at most.
    feats, labels, bias = make_batch(b, v, seed=b + v + 9)
    assert_same(
        lambda f: FairKLLoss(0.0, temperature=1.0, epsilon=0.3)(f, labels, bias),
        lambda f: official_eps_supinfonce_out(F.normalize(f, dim=-1), labels, 1.0, 0.07, 0.3),
        feats,
        rtol=1e-5,
        atol=1e-7,
    )


def test_fairkl_total_is_alpha_contrastive_plus_lambda_regularizer():
    feats, labels, bias = make_batch(8, 2, seed=11)
    lam, alpha = 0.7, 0.4
    total = FairKLLoss(lam, alpha=alpha)(feats, labels, bias)
    con = FairKLLoss(0.0)(feats, labels, bias)
    reg = fairkl_regularizer(F.normalize(feats[:, 0], dim=-1), labels, bias)
    torch.testing.assert_close(total, alpha * con + lam * reg, **TOL)
    supcon_based = FairKLLoss(0.0, temperature=0.07, base="supcon")(feats, labels, bias)
    torch.testing.assert_close(supcon_based, SupConLoss(0.07)(feats, labels), **TOL)


# =============================================================================================
# Known values
# =============================================================================================
def aligned_orthogonal(b: int, v: int, d: int = 12) -> torch.Tensor:
    """Image i = e_i in every view (scaled, to check the internal normalisation)."""
    eye = torch.eye(b, d, dtype=DT)
    return (3.0 * eye[:, None, :].expand(b, v, d)).clone().requires_grad_(True)


@pytest.mark.parametrize("b,v", [(4, 2), (6, 3)])
def test_known_values_aligned_views_orthogonal_images(b, v):
    tau, base = 0.1, 0.07
    f = aligned_orthogonal(b, v)
    e = math.exp(1 / tau)
    # A(i): V-1 views at s = 1/τ, V(B-1) rows at s = 0.
    lse_all = math.log((v - 1) * e + v * (b - 1))
    nt_xent = lse_all - 1 / tau
    assert SimCLRLoss(tau, base)(f).item() == pytest.approx(tau / base * nt_xent, rel=1e-12)
    # All labels distinct: SupCon = SimCLR.
    distinct = torch.arange(b)
    assert SupConLoss(tau, base)(f, distinct).item() == pytest.approx(
        tau / base * nt_xent, rel=1e-12
    )
    # Two classes of m = B/2 images: P(i) = V-1 views (s = 1/τ) + V(m-1) rows (s = 0).
    m = b // 2
    two = torch.arange(b) % 2
    pos_mean = (v - 1) / tau / (v * m - 1)
    assert SupConLoss(tau, base)(f, two).item() == pytest.approx(
        tau / base * (lse_all - pos_mean), rel=1e-12
    )
    # ConTeX: l_a denominator = V(B-m) different-label rows at s = 0.
    l_a = math.log(v * (b - m)) - pos_mean
    assert ConTeXLoss(tau, base)(f, two).item() == pytest.approx(
        tau / base * 0.5 * (l_a + nt_xent), rel=1e-12
    )
    # BiasCon with bias = label (all aligned): nobody has a positive -> 0.
    assert BiasConLoss(tau)(f, two, two).item() == 0.0
    # BiasCon with bias = image index parity flipped per pair: positives = same class, other image.
    bias = torch.arange(b)
    assert BiasConLoss(tau)(f, two, bias).item() == pytest.approx(lse_all - 0.0, rel=1e-12)
    # CACR: views coincide (d = 0), images orthogonal (d = 2 for every negative): -2β.
    assert CACRLoss(beta=1.5)(f).item() == pytest.approx(-3.0, abs=1e-12)
    assert CACRLoss(beta=1.5, symmetric=True)(f).item() == pytest.approx(-3.0, abs=1e-12)


def test_identical_features_give_log_n_minus_one_and_zero_gradient():
    b, v = 4, 2
    n = b * v
    f = torch.ones(b, v, 5, dtype=DT, requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1])
    bias = torch.tensor([0, 1, 0, 1])
    cases = {
        "supcon": (SupConLoss(0.1, 0.1), math.log(n - 1)),
        "simclr": (SimCLRLoss(0.1, 0.1), math.log(n - 1)),
        # l_a: |N(i)| = 4 rows at the same similarity; l_b = log(N-1).
        "contex": (ConTeXLoss(0.1, 0.1), 0.5 * (math.log(4) + math.log(n - 1))),
        "biascon": (BiasConLoss(0.1), math.log(n - 1)),
        "cacr": (CACRLoss(), 0.0),
    }
    for name, (loss, expected) in cases.items():
        val, grad = value_and_grad(lambda x, loss=loss: loss(x, labels, bias), f)
        assert val.item() == pytest.approx(expected, abs=1e-12), name
        assert torch.isfinite(grad).all(), name
        # Every direction that changes a similarity is symmetric: the gradient vanishes.
        assert grad.abs().max().item() < 1e-10, name


# =============================================================================================
# Degenerate batches
# =============================================================================================
@pytest.mark.parametrize("b,v", [(4, 2), (5, 3)])
def test_contex_single_label_is_half_nt_xent(b, v):
    feats, _, _ = make_batch(b, v, seed=21)
    same = torch.full((b,), 7)
    tau, base = 0.07, 0.07
    assert_same(
        lambda f: ConTeXLoss(tau, base)(f, same),
        lambda f: 0.5 * SimCLRLoss(tau, base)(f),
        feats,
    )
    assert_same(lambda f: ConTeXLoss(tau, base)(f, same), lambda f: loop_contex(f, same), feats)


def test_binary_labels_batch_of_two_every_loss_finite_and_exact():
    feats, _, _ = make_batch(2, 2, seed=22)
    labels = torch.tensor([0, 1])
    bias = torch.tensor([1, 0])
    for name in LOSSES:
        val, grad = value_and_grad(lambda f, name=name: get_loss(name)(f, labels, bias), feats)
        assert torch.isfinite(val) and torch.isfinite(grad).all(), name
    assert_same(lambda f: SupConLoss()(f, labels), lambda f: loop_supcon(f, labels), feats)
    assert_same(lambda f: ConTeXLoss()(f, labels), lambda f: loop_contex(f, labels), feats)
    # Different label AND different bias: no image has a positive, BiasCon is exactly 0.
    assert BiasConLoss()(feats, labels, bias).item() == 0.0


def _references(labels, bias):
    """Each loss at its default settings next to an independent reference (loop or official)."""
    return {
        "supcon": (SupConLoss(), lambda f: loop_supcon(f, labels)),
        "simclr": (SimCLRLoss(), lambda f: loop_supcon(f, None, 0.5, 0.07, positives="image")),
        "contex": (ConTeXLoss(), lambda f: loop_contex(f, labels)),
        "biascon": (BiasConLoss(), lambda f: loop_biascon(f, labels, bias)),
        "cacr": (CACRLoss(supervised=True), lambda f: loop_cacr_supervised(f, labels)),
        "fairkl": (
            FairKLLoss(),
            lambda f: (
                loop_supinfonce(f, labels)
                + official_fairkl(F.normalize(f[:, 0], dim=-1), labels, bias)
            ),
        ),
    }


def test_single_label_batch_every_loss_matches_its_reference():
    # One label: no anchor has a different-label row (ConTeX's l_a and CACR's repulsion are
    # absent, ε-SupInfoNCE's N(i) is empty); each value and gradient still equals its reference.
    feats, _, _ = make_batch(6, 2, seed=23)
    labels = torch.zeros(6, dtype=torch.long)
    bias = torch.tensor([0, 1, 0, 1, 0, 1])
    references = _references(labels, bias)
    assert set(references) == set(LOSSES)
    for loss, reference in references.values():
        assert_same(lambda f, loss=loss: loss(f, labels, bias), reference, feats)


def test_contex_small_temperature_well_separated_classes_no_underflow():
    # Different-label rows ~2/τ = 200 below the row max: a max-subtracted exp underflows to 0
    # and the official code takes log 0. Per-set logsumexp stays exact.
    b, v, tau = 4, 2, 0.01
    base = torch.tensor([[1.0, 0.0], [1.0, 0.0], [-1.0, 0.0], [-1.0, 0.0]], dtype=DT)
    g = torch.Generator().manual_seed(0)
    f = (base[:, None, :] + 0.05 * torch.randn(b, v, 2, generator=g, dtype=DT)).requires_grad_(True)
    labels = torch.tensor([0, 0, 1, 1])
    assert_same(lambda x: ConTeXLoss(tau)(x, labels), lambda x: loop_contex(x, labels, tau), f)
    val = ConTeXLoss(tau)(f.float(), labels)
    assert torch.isfinite(val)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", sorted(LOSSES))
def test_half_precision_inputs_give_float32(dtype, name):
    feats, labels, bias = make_batch(16, 2, d=32, seed=24)
    low = feats.detach().to(dtype).requires_grad_(True)
    loss = get_loss(name)
    val = loss(low, labels, bias)
    assert val.dtype == torch.float32
    (grad,) = torch.autograd.grad(val, low)
    assert grad.dtype == dtype and torch.isfinite(grad.float()).all()
    # Same number as a float32 computation on the same (rounded) inputs.
    ref = loss(low.detach().float(), labels, bias)
    torch.testing.assert_close(val, ref, rtol=1e-6, atol=1e-6)


def test_autocast_does_not_lower_the_loss_precision():
    feats, labels, _ = make_batch(16, 2, d=32, seed=25)
    f32 = feats.detach().float()
    ref = ConTeXLoss()(f32, labels)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        val = ConTeXLoss()(f32, labels)
    assert val.dtype == torch.float32
    torch.testing.assert_close(val, ref, rtol=1e-6, atol=1e-6)


# =============================================================================================
# FairKL regulariser
# =============================================================================================
def test_fairkl_zero_when_aligned_and_conflicting_distributions_match():
    # Two classes, each with one bias-aligned and one bias-conflicting image, laid out
    # symmetrically: aligned and conflicting similarity sets (positives and negatives) are
    # identical, so the distribution-matching part is exactly 0.
    z = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]], dtype=DT)
    labels = torch.tensor([0, 0, 1, 1])
    bias = torch.tensor([0, 1, 1, 0])
    matched = fairkl_regularizer(z, labels, bias, attract_repel=False)
    assert matched.item() == pytest.approx(0.0, abs=1e-14)
    # The full official term adds -μ_pc + μ_na = -1 + 0 here.
    assert fairkl_regularizer(z, labels, bias).item() == pytest.approx(-1.0, abs=1e-14)


def test_fairkl_positive_when_distributions_differ():
    # Bias-conflicting positives far apart, aligned positives identical.
    z = F.normalize(
        torch.tensor([[1.0, 0.0], [0.2, 1.0], [0.0, 1.0], [1.0, 0.3]], dtype=DT), dim=-1
    )
    labels = torch.tensor([0, 0, 1, 1])
    bias = torch.tensor([0, 1, 1, 0])
    assert fairkl_regularizer(z, labels, bias, attract_repel=False).item() > 1e-3
    feats, labels, bias = make_batch(10, 2, seed=26)
    z = F.normalize(feats[:, 0].detach(), dim=-1)
    assert fairkl_regularizer(z, labels, bias, attract_repel=False).item() > 0


# =============================================================================================
# Registry, flags, validation
# =============================================================================================
EXPECTED = {
    "supcon": (SupConLoss, True, False),
    "simclr": (SimCLRLoss, False, False),
    "contex": (ConTeXLoss, True, False),
    "cacr": (CACRLoss, False, False),
    "biascon": (BiasConLoss, True, True),
    "fairkl": (FairKLLoss, True, True),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_get_loss_builds_each_registered_loss(name):
    cls, needs_y, needs_b = EXPECTED[name]
    assert LOSSES[name] is cls
    loss = get_loss(name.upper())
    assert type(loss) is cls
    assert loss.requires_labels is needs_y and loss.requires_bias is needs_b


def test_get_loss_passes_kwargs_and_rejects_bad_ones():
    assert get_loss("supcon", temperature=0.2).temperature == 0.2
    assert get_loss("cacr", tau_neg=2.0, symmetric=True).symmetric
    with pytest.raises(
        ValueError,
        match=r"loss 'supcon' takes no option 'tau_neg'; it takes "
        r"temperature, base_temperature, gather \(tau_neg is an option of cacr\)",
    ):
        get_loss("supcon", tau_neg=2.0)
    with pytest.raises(ValueError, match="temperature"):
        get_loss("contex", temperature=0.0)


def test_get_loss_unknown_name_lists_valid_names():
    with pytest.raises(ValueError) as err:
        get_loss("triplet")
    for name in LOSSES:
        assert name in str(err.value)


@pytest.mark.parametrize("name", ["supcon", "contex", "biascon", "fairkl"])
def test_missing_labels_is_a_clear_error(name):
    feats, _, bias = make_batch(4, 2)
    with pytest.raises(ValueError, match="needs `labels`"):
        get_loss(name)(feats, None, bias)


def test_missing_bias_is_a_clear_error():
    feats, labels, _ = make_batch(4, 2)
    with pytest.raises(ValueError, match="needs `bias`"):
        BiasConLoss()(feats, labels)
    with pytest.raises(ValueError, match="needs `labels`"):
        CACRLoss(supervised=True)(feats)


def test_bad_shapes_are_clear_errors():
    feats, labels, _ = make_batch(4, 2)
    with pytest.raises(ValueError, match=r"\[B, V, D\]"):
        SupConLoss()(feats[:, 0], labels)
    with pytest.raises(ValueError, match="V >= 2"):
        SupConLoss()(feats[:, :1], labels)
    with pytest.raises(ValueError, match="labels"):
        SupConLoss()(feats, labels[:3])
    with pytest.raises(ValueError, match="floating"):
        SimCLRLoss()(torch.ones(4, 2, 3, dtype=torch.long))


def test_unlabelled_losses_ignore_labels_and_gather_is_a_noop_without_process_group():
    feats, labels, bias = make_batch(6, 2, seed=27)
    torch.testing.assert_close(SimCLRLoss()(feats, labels, bias), SimCLRLoss()(feats))
    torch.testing.assert_close(CACRLoss()(feats, labels, bias), CACRLoss()(feats))
    torch.testing.assert_close(
        ConTeXLoss(gather=True)(feats, labels), ConTeXLoss(gather=False)(feats, labels), **TOL
    )


def test_label_values_only_matter_through_equality():
    feats, labels, bias = make_batch(8, 3, seed=28)
    relabelled = labels * 1000 - 5
    for cls in (SupConLoss, ConTeXLoss):
        torch.testing.assert_close(cls()(feats, labels), cls()(feats, relabelled), **TOL)
    torch.testing.assert_close(
        BiasConLoss()(feats, labels, bias), BiasConLoss()(feats, relabelled, bias + 3), **TOL
    )
    torch.testing.assert_close(  # label and bias tensors of different dtypes
        BiasConLoss()(feats, labels, bias), BiasConLoss()(feats, labels, bias.int()), **TOL
    )


@pytest.mark.parametrize("name", sorted(LOSSES))
@pytest.mark.parametrize("side", ["labels", "bias"])
def test_float_labels_or_bias_are_a_clear_error_for_every_loss(name, side):
    # torch.rand labels would make every row its own class; BiasCon then returned 0 silently.
    feats, labels, bias = make_batch(16, 2)
    given = {"labels": labels, "bias": bias, side: torch.rand(16)}
    loss = get_loss(name)
    with pytest.raises(ValueError, match=f"{type(loss).__name__}: `{side}` must be an integer"):
        loss(feats, given["labels"], given["bias"])
    # Whole numbers in a float tensor are refused too: the dtype is the contract, not the values.
    given[side] = given[side].round()
    with pytest.raises(ValueError, match="float32"):
        loss(feats, given["labels"], given["bias"])


@pytest.mark.parametrize("name", sorted(LOSSES))
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_features_are_a_clear_error_naming_the_loss(name, bad):
    feats, labels, bias = make_batch(8, 2)
    feats = feats.detach().clone()
    feats[3, 1, 5] = bad
    feats[6, 0, 0] = bad
    loss = get_loss(name)
    with pytest.raises(
        ValueError, match=rf"{type(loss).__name__}: features hold 2 NaN/inf value\(s\) in 2 image"
    ):
        loss(feats, labels, bias)


@pytest.mark.parametrize("name", ["cacr", "fairkl"])
def test_batch_of_one_image_is_a_clear_error_for_cacr_and_fairkl(name):
    # CACR's repulsion has no negative and FairKL's std of one similarity is undefined: both
    # returned NaN before. The trainer never builds such a batch (it drops a last batch of 1).
    feats, labels, bias = make_batch(1, 2)
    loss = get_loss(name)
    with pytest.raises(ValueError, match=rf"{type(loss).__name__} needs a batch of B >= 2"):
        loss(feats, labels, bias)


@pytest.mark.parametrize("name", ["supcon", "simclr", "contex", "biascon"])
def test_batch_of_one_image_is_defined_for_the_other_losses(name):
    # One image, two views: the other view is the only positive and the only other row, so
    # s_ip = log Σ_{k∈A(i)} e^{s_ik} and every l(i) = 0 (ConTeX: l_a absent, ½·l_b = 0;
    # BiasCon: the other view has the same bias, no positive, 0).
    feats, labels, bias = make_batch(1, 2)
    val, grad = value_and_grad(lambda f: get_loss(name)(f, labels, bias), feats)
    assert val.item() == pytest.approx(0.0, abs=1e-12)
    assert grad.abs().max().item() < 1e-10
