"""The components the published contrastive recipes need, against transcriptions of the
official code on fixed inputs: BiasCon's sampler weights and clipping, its BB logit
adjustment, FairKL's online head on detached features (the encoder gets no CE gradient).
FairKL's regulariser itself is checked against its official code in tests/test_losses.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from debias.methods import Batch, Context, get_method, resolve_hparams
from debias.methods.sampling import draw_stream, inverse_bias_weights
from debias.models import build_model
from debias.train.config import TrainConfig


# -- transcribed: grayhong/bias-contrastive-learning debias/datasets/utils.py, biased_mnist.py ---
def _official_confusion(num_classes, targets, biases):
    confusion_matrix_org = torch.zeros(num_classes, num_classes)
    confusion_matrix_org_by = torch.zeros(num_classes, num_classes)
    for t, p in zip(targets, biases):
        confusion_matrix_org[p.long(), t.long()] += 1
        confusion_matrix_org_by[t.long(), p.long()] += 1
    confusion_matrix = confusion_matrix_org / confusion_matrix_org.sum(1).unsqueeze(1)
    confusion_matrix_by = confusion_matrix_org_by / confusion_matrix_org_by.sum(1).unsqueeze(1)
    return confusion_matrix_org, confusion_matrix, confusion_matrix_by


def _official_weights(targets, biases, ratio):
    _, _, by = _official_confusion(10, targets, biases)
    weights = [1 / by[c, b] for c, b in zip(targets, biases)]

    def clip_max_ratio(score):
        upper_bd = score.min() * ratio
        return np.clip(score, None, upper_bd)

    return clip_max_ratio(np.array(weights)) if ratio > 0 else np.array(weights)


def _official_bb(confusion_matrix, logits, labels, biases):  # debias/losses/bbloss.py
    prior = confusion_matrix[biases]
    logits = logits + torch.log(prior + 1e-9)
    return F.cross_entropy(logits, labels)


def _biased_labels(n=3000, rho=0.97, seed=0):
    gen = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 10, (n,), generator=gen)
    other = torch.randint(0, 10, (n,), generator=gen)
    b = torch.where(torch.rand(n, generator=gen) < rho, y, other)
    return y, b


@pytest.mark.parametrize("ratio", [10, 3, -1])
def test_sampler_weights_and_clipping_match_biascon(ratio):
    y, b = _biased_labels()
    ours = inverse_bias_weights(y, b, 10, 10, clip=ratio if ratio > 0 else None)
    np.testing.assert_allclose(ours.numpy(), _official_weights(y, b, ratio), rtol=1e-6)
    if ratio > 0:
        assert float(ours.max()) == pytest.approx(float(ours.min()) * ratio)
    else:
        assert float(ours.max()) > float(ours.min()) * 10  # rare groups weigh far more


def test_stream_draws_in_proportion_to_the_weights():
    y, b = _biased_labels(n=2000)
    w = inverse_bias_weights(y, b, 10, 10, clip=10)
    rows = draw_stream(w, steps=400, batch=64, generator=torch.Generator().manual_seed(0))
    assert rows.shape == (400, 64)
    conflicting = (y != b).double()
    expected = float((w * conflicting).sum() / w.sum())
    seen = float(conflicting[rows.flatten()].mean())
    assert abs(seen - expected) < 0.02 and seen > 3 * float(conflicting.mean())


def _method(mode, method="biascon", **opts):
    y, b = _biased_labels(n=512)
    cfg = TrainConfig(out="x", rho=0.99, model="lenet", method=method, mode=mode,
                      method_options=opts, views="none")  # fmt: skip
    cls = get_method(method)
    torch.manual_seed(0)
    ctx = Context(
        cfg=cfg, num_classes=10, num_bias=10, train_targets=y, train_bias=b,
        device=torch.device("cpu"), build_model=lambda: build_model("lenet", 10),
    )  # fmt: skip
    return cls(ctx, resolve_hparams(method, cfg.method_options)), y, b


def test_bb_logit_adjustment_matches_bbloss_and_the_weighted_objective():
    method, y, b = _method(
        "joint", ce_weight=0.01, stream_batch_size=8, bb_logits=True, projection="none"
    )
    assert method.supervision_of(method.hp) == "train_bias"
    idx = torch.arange(16)
    x = torch.randn(16, 3, 28, 28, generator=torch.Generator().manual_seed(1))
    extra_idx = torch.arange(100, 108)
    extra = Batch(extra_idx, torch.randn(16, 3, 28, 28), y[extra_idx], b[extra_idx], 2)
    batch = Batch(idx, x, y[idx], b[idx], 1, extra)
    out = method.net(batch.x)
    out["extra"] = method.net(extra.x)
    stage = method.stages()[0]
    assert stage.views == 1  # the CE stream: one plain view per image
    terms = method.loss(out, batch, stage)
    _, confusion, _ = _official_confusion(10, y, b)
    want = _official_bb(confusion, out["logits"].float(), y[idx], b[idx])
    torch.testing.assert_close(terms["ce"], want, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(terms["loss"], 0.01 * terms["ce"] + terms["contrastive"])
    # the contrastive term reads the stream's images (no projection head: the feature)
    con = method.criterion(
        torch.stack([out["extra"]["feats"][:8], out["extra"]["feats"][8:]], 1),
        labels=extra.y, bias=extra.bias,
    )  # fmt: skip
    torch.testing.assert_close(terms["contrastive"], con)


def test_online_head_reads_detached_features_and_the_encoder_gets_no_ce_gradient():
    method, y, b = _method("online", method="fairkl", n_views=1, projection="none",
                           last_activation="tanh")  # fmt: skip
    assert isinstance([m for m in method.model.modules() if isinstance(m, (torch.nn.Tanh,
                       torch.nn.ReLU))][-1], torch.nn.Tanh)  # fmt: skip
    stage = method.stages()[0]
    head_ids = {id(p) for p in method.model.fc.parameters()}
    assert not head_ids & {id(p) for p in method.trainable(stage)}  # its own optimiser
    idx = torch.arange(32)
    batch = Batch(idx, torch.randn(32, 3, 28, 28), y[idx], b[idx], 1)
    out = method.net(batch.x)
    terms = method.loss(out, batch, stage)
    encoder = [p for p in method.trainable(stage)]
    g_all = torch.autograd.grad(terms["loss"], encoder, retain_graph=True, allow_unused=True)
    g_con = torch.autograd.grad(terms["contrastive"], encoder, retain_graph=True,
                                allow_unused=True)  # fmt: skip
    for a, c in zip(g_all, g_con):
        if a is not None:
            torch.testing.assert_close(a, c)  # the CE term adds nothing to the encoder
    g_head = torch.autograd.grad(terms["probe_ce"], list(method.model.fc.parameters()))
    assert all(float(g.abs().sum()) > 0 for g in g_head)
    # the official procedure: CE backward, step fc, zero the encoder's grads, NCE backward
    ce = F.cross_entropy(method.model.fc(out["feats"]), batch.y)
    g_official = torch.autograd.grad(ce, list(method.model.fc.parameters()), retain_graph=True)
    for ours, theirs in zip(g_head, g_official):
        torch.testing.assert_close(ours, theirs)


def test_projection_choices_and_clear_errors():
    with pytest.raises(ValueError, match="projection='big': expected one of mlp, linear, none"):
        TrainConfig(out="x", rho=0.99, method="supcon", method_options={"projection": "big"})
    with pytest.raises(ValueError, match="applies to mode 'joint' only"):
        TrainConfig(out="x", rho=0.99, method="supcon", method_options={"ce_weight": 0.01})
    with pytest.raises(ValueError, match="n_views=3"):
        TrainConfig(out="x", rho=0.99, method="supcon", method_options={"n_views": 3})


@pytest.mark.filterwarnings("ignore:aligned pair")
def test_an_online_run_trains_the_head_and_rebuilds_with_its_tanh(tmp_path):
    from debias.train import load_trained, train

    done = train(dict(
        out=str(tmp_path / "r"), rho=0.99, recipe="fairkl", model="lenet", epochs=2,
        lr_milestones=[1], batch_size=32, max_steps=2, train_limit=256, eval_limit=64,
        val_size=200, progress=False, device="cpu", represent=False,
    ), log=lambda *a: None)  # fmt: skip
    assert [s["kind"] for s in done["method"]["stages"]] == ["online"]
    assert done["config"]["optimizer"] == "sgd" and done["supervision"] == "train_bias"
    model, splits, _ = load_trained(tmp_path / "r", device="cpu")
    acts = [m for m in model.modules() if isinstance(m, (torch.nn.ReLU, torch.nn.Tanh))]
    assert isinstance(acts[-1], torch.nn.Tanh)  # lost with the weights before prepare_model
    with torch.no_grad():
        x = splits["test"].images[:64].float().div(255).sub(0.5).div(0.5)
        pred = model(x).argmax(1)
    assert len(pred) == 64


def _two_stream_batch(ce_views):
    """One step's batches of a joint run with a stream (digits, BiasCon's recipe), rows 0-7."""
    import warnings

    from debias.methods import Stage
    from debias.methods.base import TRAIN
    from debias.train.loop import Trainer

    cfg = TrainConfig(out="x", dataset="digits", rho=0.99, recipe="biascon", model="lenet",
                      device="cpu", progress=False, ce_views=ce_views)  # fmt: skip
    trainer = Trainer(cfg, log=lambda *a, **k: None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the recipe's jitter on a colour bias
        trainer.load_data()
    trainer.reads_bias = True
    idx, gen = torch.arange(8), torch.Generator().manual_seed(0)
    stream = (torch.arange(16).view(2, 8), 2)
    batch = trainer.step_batch(idx, gen, Stage("train", 1, TRAIN, views=1), stream, 0)
    return batch, trainer.inputs(idx, None, two_view=False, augment=False)


def test_the_ce_batch_of_a_two_stream_run_takes_ce_views():
    """BiasCon's CE loader: the plain image on Biased-MNIST (ce_views none), a random flip on
    CelebA (flip); the stream keeps its own two augmented views either way."""
    batch, plain = _two_stream_batch("none")
    assert torch.equal(batch.x, plain)  # get_color_mnist(aug=False): ToTensor + Normalize
    assert batch.extra.x.shape == (16, *plain.shape[1:])
    assert not torch.allclose(batch.extra.x[:8], batch.extra.x[8:])  # two different views
    batch, plain = _two_stream_batch("flip")
    same = [torch.allclose(batch.x[i], plain[i], atol=1e-5) for i in range(8)]
    mirrored = [torch.allclose(batch.x[i], plain[i].flip(-1), atol=1e-5) for i in range(8)]
    assert all(a != b for a, b in zip(same, mirrored))  # each row: the image or its mirror
    assert 0 < sum(mirrored) < 8


def test_ce_views_without_a_second_stream_is_an_error():
    with pytest.raises(ValueError, match="ce_views='flip' applies to joint runs with a second"):
        TrainConfig(out="x", rho=0.99, method="biascon", mode="joint", ce_views="flip")
    with pytest.raises(ValueError, match="ce_views"):
        TrainConfig(out="x", rho=0.99, ce_views="nonesuch")
