"""Optimisers and lr schedules (debias.optim) against transcriptions of the official code:
SupContrast's util.py (adjust_learning_rate, warmup_learning_rate) and torch's MultiStepLR as
BiasCon and FairKL step it; the lr at every epoch (and every warm-up batch)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from debias.optim import LRScheduler, Schedule, make_optimizer
from debias.train.config import TrainConfig


# -- transcribed from HobbitLong/SupContrast util.py (epoch 1-based, batch_id 0-based) --------
def _supcon_adjust(args, epoch):
    lr = args.learning_rate
    if args.cosine:
        eta_min = lr * (args.lr_decay_rate**3)
        lr = eta_min + (lr - eta_min) * (1 + math.cos(math.pi * epoch / args.epochs)) / 2
    else:
        steps = np.sum(epoch > np.asarray(args.lr_decay_epochs))
        if steps > 0:
            lr = lr * (args.lr_decay_rate**steps)
    return lr


def _supcon_lr(args, epoch, batch_id, total_batches):
    """The lr main_supcon.py trains batch ``batch_id`` of ``epoch`` with."""
    lr = _supcon_adjust(args, epoch)
    if args.warm and epoch <= args.warm_epochs:
        p = (batch_id + (epoch - 1) * total_batches) / (args.warm_epochs * total_batches)
        lr = args.warmup_from + p * (args.warmup_to - args.warmup_from)
    return lr


def _supcon_args(**kw):
    args = SimpleNamespace(
        learning_rate=0.5, lr_decay_rate=0.1, lr_decay_epochs=[7, 9], epochs=12, cosine=True,
        warm=False, warm_epochs=3, warmup_from=0.01,
    )  # fmt: skip
    for k, v in kw.items():
        setattr(args, k, v)
    # main_supcon.py parse_option(): warmup_to from the schedule at warm_epochs
    if args.cosine:
        eta_min = args.learning_rate * (args.lr_decay_rate**3)
        args.warmup_to = (
            eta_min
            + (args.learning_rate - eta_min)
            * (1 + math.cos(math.pi * args.warm_epochs / args.epochs))
            / 2
        )
    else:
        args.warmup_to = args.learning_rate
    return args


def _lrs_seen(schedule: Schedule, batches: int) -> list[list[float]]:
    """The lr of every step of every epoch, as GradientStage and train_epoch drive it."""
    net = torch.nn.Linear(2, 1)
    opt = make_optimizer(net.parameters(), "sgd", lr=schedule.lr)
    sched = LRScheduler(opt, schedule)
    seen = []
    for _ in range(schedule.epochs):
        epoch = []
        for b in range(batches):
            sched.step_batch(b, batches)
            epoch.append(opt.param_groups[0]["lr"])
        seen.append(epoch)
        sched.step()
    return seen


@pytest.mark.parametrize("warm", [False, True])
@pytest.mark.parametrize("cosine", [True, False])
def test_schedules_match_supcontrast_at_every_epoch_and_warmup_batch(cosine, warm):
    args = _supcon_args(cosine=cosine, warm=warm)
    schedule = Schedule(
        "cosine" if cosine else "multistep", lr=0.5, epochs=12,
        milestones=() if cosine else (7, 9), gamma=0.1,
        warmup_epochs=3 if warm else 0, warmup_from=0.01,
    )  # fmt: skip
    batches = 4
    seen = _lrs_seen(schedule, batches)
    want = [
        [_supcon_lr(args, e + 1, b, batches) for b in range(batches)] for e in range(args.epochs)
    ]
    np.testing.assert_allclose(seen, want, rtol=1e-12)
    # facts of the official schedule, not only agreement: cosine ends at eta_min = lr*0.1**3
    if cosine and not warm:
        assert seen[-1][0] == pytest.approx(0.5e-3)
        assert seen[0][0] < 0.5  # epoch 1 already decayed (e = 1 in the cosine)
    if warm:
        assert seen[0][0] == pytest.approx(0.01)
        assert seen[2][-1] < args.warmup_to and seen[3][0] == pytest.approx(_supcon_adjust(args, 4))


def test_multistep_matches_torch_multisteplr_as_biascon_and_fairkl_step_it():
    """grayhong/bias-contrastive-learning and EIDOSLAB/unbiased-contrastive-learning: Adam /
    SGD with ``MultiStepLR(milestones, gamma=0.1)`` stepped once per epoch; 80 epochs,
    milestones 26 and 53 (80 // 3, 2 * 80 // 3)."""
    net = torch.nn.Linear(2, 1)
    ref_opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    ref = torch.optim.lr_scheduler.MultiStepLR(ref_opt, milestones=[26, 53], gamma=0.1)
    want = []
    for _ in range(80):
        want.append(ref_opt.param_groups[0]["lr"])
        ref_opt.step()
        ref.step()
    seen = _lrs_seen(Schedule("multistep", 1e-3, 80, (26, 53), 0.1), batches=1)
    np.testing.assert_allclose([e[0] for e in seen], want, rtol=1e-12)
    assert want[25] == pytest.approx(1e-3) and want[26] == pytest.approx(1e-4)
    assert want[53] == pytest.approx(1e-5)


def test_constant_and_resume_from_a_multisteplr_checkpoint():
    seen = _lrs_seen(Schedule("constant", 0.3, 5), batches=2)
    assert seen == [[0.3, 0.3]] * 5
    # a checkpoint written before debias.optim holds MultiStepLR's state ("last_epoch")
    net = torch.nn.Linear(2, 1)
    opt = make_optimizer(net.parameters(), "adam", lr=1.0)
    sched = LRScheduler(opt, Schedule("multistep", 1.0, 6, (2, 4), 0.5))
    sched.load_state_dict({"milestones": {2: 1, 4: 1}, "last_epoch": 3, "gamma": 0.5})
    assert opt.param_groups[0]["lr"] == 0.5 and sched.state_dict() == {"epoch": 3}


def test_optimizers_are_the_named_torch_ones():
    net = torch.nn.Linear(2, 1)
    sgd = make_optimizer(net.parameters(), "sgd", lr=0.1, weight_decay=1e-4, momentum=0.9,
                         nesterov=True)  # fmt: skip
    assert isinstance(sgd, torch.optim.SGD)
    assert (sgd.defaults["momentum"], sgd.defaults["nesterov"]) == (0.9, True)
    assert sgd.defaults["weight_decay"] == 1e-4
    assert isinstance(make_optimizer(net.parameters(), "adam", lr=0.1), torch.optim.Adam)
    assert isinstance(make_optimizer(net.parameters(), "adamw", lr=0.1), torch.optim.AdamW)
    with pytest.raises(ValueError, match="expected one of adam, adamw, sgd"):
        make_optimizer(net.parameters(), "lamb", lr=0.1)


def test_the_default_is_a_constant_lr_and_schedules_are_asked_for():
    """Issue 36: no schedule unless one is asked for (it was x0.1 at each quarter)."""
    cfg = TrainConfig(out="x", rho=0.99, epochs=8)
    assert (cfg.lr_milestones, cfg.lr_schedule) == ([], "constant")
    cfg = TrainConfig(out="x", rho=0.99, epochs=8, lr_milestones=[2, 4])
    assert cfg.lr_schedule == "multistep"
    with pytest.raises(ValueError, match="multistep needs lr_milestones"):
        TrainConfig(out="x", rho=0.99, lr_schedule="multistep")
    with pytest.raises(ValueError, match="apply to the multistep schedule only"):
        TrainConfig(out="x", rho=0.99, epochs=8, lr_schedule="cosine", lr_milestones=[2])
    with pytest.raises(ValueError, match="warmup_epochs 8"):
        TrainConfig(out="x", rho=0.99, epochs=8, warmup_epochs=8)
    with pytest.raises(ValueError, match="nesterov=True applies to optimizer sgd only"):
        TrainConfig(out="x", rho=0.99, nesterov=True)


@pytest.mark.filterwarnings("ignore:aligned pair")
def test_a_run_logs_and_records_its_schedule(tmp_path):
    from debias.train import train

    lines = []
    cfg = dict(
        out=str(tmp_path / "r"), rho=0.99, model="smallconvnet", epochs=3, batch_size=32,
        max_steps=2, train_limit=256, eval_limit=64, val_size=200, progress=False,
        device="cpu", represent=False, optimizer="sgd", lr=0.1, lr_milestones=[1], lr_gamma=0.5,
    )  # fmt: skip
    done = train(cfg, log=lines.append)
    assert "train: sgd, lr 0.1 x0.5 after epochs 1" in lines
    assert done["config"]["lr_schedule"] == "multistep"
    import pandas as pd

    history = pd.read_csv(tmp_path / "r" / "history.csv")
    assert list(history["lr"]) == pytest.approx([0.1, 0.05, 0.05])
