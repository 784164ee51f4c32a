"""Stages are method code: a method with a stage kind of its own is one class, defined here,
outside the package, and trained end to end by the unchanged loop."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from conftest import quiet

from debias.methods import ERM, METHODS, STAGE_KINDS, Stage, StageRunner, register_method
from debias.train import encode, load_trained, train

PROTOTYPES = "prototypes"  # the stage kind only this test's method knows


class ToyPrototypes(ERM, StageRunner):
    """ERM, then a stage of its own kind: the last layer set to the class means of the frozen
    training features, ``W_c = mean_{i: y_i = c} φ(x_i)``, ``b = 0`` (no gradient step)."""

    name = "toy-prototypes"

    def stages(self) -> list[Stage]:
        return [*super().stages(), Stage("prototypes", 1, PROTOTYPES)]

    def stage_runner(self, stage: Stage) -> StageRunner:
        return self if stage.kind == PROTOTYPES else super().stage_runner(stage)

    # -- the stage (StageRunner) ---------------------------------------------------------------
    def enter(self, loop, stage, saved) -> None:
        self.entered = stage.name

    def epoch(self, loop, stage, epoch, final):
        feats = loop.encode("train")
        y = loop.train_set.targets
        means = torch.stack([feats[y == c].mean(0) for c in range(loop.train_set.num_classes)])
        with torch.no_grad():
            loop.model.fc.weight.copy_(means)
            loop.model.fc.bias.zero_()
        row = {"prototype_norm": float(means.norm())}
        return row | self.evaluate_classifier(loop, epoch, final)


def tiny(out, **kw):
    from test_train import tiny as train_tiny

    return train_tiny(out, **{"epochs": 1, "represent": False, **kw})


def test_a_method_with_a_stage_of_its_own_is_one_class(tmp_path):
    register_method(ToyPrototypes)
    try:
        res = train(tiny(tmp_path / "r", method="toy-prototypes"), log=quiet)
        model, splits, _ = load_trained(tmp_path / "r", device="cpu")
    finally:
        METHODS.pop("toy-prototypes", None)
    assert PROTOTYPES not in STAGE_KINDS
    assert [(s["name"], s["kind"]) for s in res["method"]["stages"]] == [
        ("train", "train"),
        ("prototypes", PROTOTYPES),
    ]
    assert res["selection"] == {
        "rule": "last", "description": "last epoch", "epoch": 2, "stage": "prototypes"
    }  # fmt: skip
    # The saved classifier is the stage's: fc = class means of the trained encoder's features.
    feats = encode(model, splits["train"])
    y = splits["train"].targets
    means = torch.stack([feats[y == c].mean(0) for c in range(splits["train"].num_classes)])
    torch.testing.assert_close(model.fc.weight, means, rtol=1e-5, atol=1e-6)
    assert torch.count_nonzero(model.fc.bias) == 0
    hist = pd.read_csv(tmp_path / "r" / "history.csv")
    assert list(hist["stage"]) == ["train", "prototypes"]
    assert "lr" not in hist or pd.isna(hist["lr"].iloc[1])  # no optimizer in that stage
    assert hist["prototype_norm"].iloc[1] == pytest.approx(float(means.norm()), rel=1e-5)
    # The run's numbers are the nearest-prototype classifier's: argmax φ(x)·W_cᵀ.
    test = splits["test"]
    pred = (encode(model, test) @ means.T).argmax(1)
    accuracy = int((pred == test.targets).sum()) / len(test)
    assert res["splits"]["test"]["accuracy"] == pytest.approx(accuracy, abs=1e-9)
    assert hist["test/accuracy"].iloc[1] == pytest.approx(accuracy, abs=1e-9)


def test_a_stage_kind_nobody_runs_is_a_clear_error():
    method = object.__new__(ERM)
    with pytest.raises(ValueError, match=r"stage 'odd' has kind 'nope'.*stage_runner\(\)"):
        method.stage_runner(Stage("odd", 1, "nope"))


def test_optimizer_sgd_with_momentum_is_subpopbench_sgd():
    """optimizer="sgd": torch.optim.SGD(lr, weight_decay, momentum) (SubpopBench's
    get_sgd_optim); one step from a known gradient checks the update, momentum included."""
    from debias.optim import make_optimizer

    w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = make_optimizer([w], "sgd", lr=0.1, weight_decay=0.01, momentum=0.9)
    assert isinstance(opt, torch.optim.SGD) and opt.param_groups[0]["momentum"] == 0.9
    for _ in range(2):
        opt.zero_grad()
        (w * torch.tensor([3.0, 4.0])).sum().backward()
        opt.step()
    # step 1: d = g + wd*w; buf = d; w -= lr*buf.  step 2: buf = 0.9*buf + d'; w -= lr*buf
    w0 = torch.tensor([1.0, -2.0])
    g = torch.tensor([3.0, 4.0])
    buf = g + 0.01 * w0
    w1 = w0 - 0.1 * buf
    buf = 0.9 * buf + g + 0.01 * w1
    torch.testing.assert_close(w.detach(), w1 - 0.1 * buf)
    assert isinstance(make_optimizer([w], "adam", lr=0.1), torch.optim.Adam)
