"""Public registration: a user's own model and loss train with ``train()`` without editing the
package (this file is "outside the package": it only uses the public names)."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import quiet
from torch import nn

import debias
from debias.cli import main
from debias.losses import LOSSES, ContrastiveLoss, get_loss
from debias.methods import METHODS, TARGET_ONLY
from debias.models import MODELS, build_model
from debias.train import TrainConfig, train


class TinyNet(nn.Module):
    """A toy classifier with the interface debias needs: features, fc, feature_dim."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.feature_dim = 16
        self.body = nn.Sequential(nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(48, 16))
        self.fc = nn.Linear(16, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


class AlignLoss(ContrastiveLoss):
    """A toy loss: 1 - mean cosine similarity of each image's two views."""

    requires_labels = False

    def forward(self, features, labels=None, bias=None):
        z = nn.functional.normalize(features.float(), dim=-1)
        return 1 - (z[:, 0] * z[:, 1]).sum(-1).mean()


@pytest.fixture
def registered():
    saved = dict(MODELS), dict(LOSSES), dict(METHODS)
    debias.register_model("tinynet", lambda num_classes, weights=None: TinyNet(num_classes))
    debias.register_loss("align", AlignLoss)
    yield
    for reg, old in zip((MODELS, LOSSES, METHODS), saved):
        reg.clear()
        reg.update(old)


def cfg(out, **kw) -> TrainConfig:
    base = dict(out=str(out), dataset="digits", rho=0.95, model="smallconvnet", epochs=1,
                batch_size=32, max_steps=2, lr_milestones=[], progress=False, device="cpu")  # fmt: skip
    return TrainConfig(**(base | kw))


def test_a_registered_model_trains(registered, tmp_path):
    assert isinstance(build_model("tinynet", 10), TinyNet)
    res = train(cfg(tmp_path / "m", model="tinynet"), log=quiet)
    weights = torch.load(tmp_path / "m" / "model.pt", weights_only=False)["model"]
    assert set(weights) == set(TinyNet(10).state_dict())
    assert res["splits"]["test"]["n"] == json.loads((tmp_path / "m" / "metrics.json").read_text())["splits"]["test"]["n"]  # fmt: skip


def test_a_registered_loss_is_a_contrastive_method_that_trains(registered, tmp_path):
    assert isinstance(get_loss("align"), AlignLoss)
    method = METHODS["align"]
    assert method.supervision == TARGET_ONLY and method.modes == ("two-stage", "joint", "online")
    lines = []
    res = train(cfg(tmp_path / "l", method="align", linear_epochs=1), log=lines.append)
    assert res["method"]["name"] == "align" and res["selection"]["stage"] == "linear"
    import pandas as pd

    hist = pd.read_csv(tmp_path / "l" / "history.csv")
    contrastive = hist["train_contrastive"].iloc[0]
    assert 0.0 <= contrastive <= 2.0  # 1 - cosine: the toy loss is what ran
    assert hist["train_loss"].iloc[0] > contrastive  # plus the online probe's cross-entropy
    # and through the CLI, by name, after registration
    rc = main(["train", "--dataset", "digits", "--rho", "0.95", "--model", "tinynet",
               "--method", "align", "--mode", "joint", "--epochs", "1", "--max-steps", "2",
               "--batch-size", "32", "--device", "cpu", "--quiet", "--out", str(tmp_path / "c")])  # fmt: skip
    assert rc == 0


def test_registration_errors():
    with pytest.raises(ValueError, match="registered already"):
        debias.register_model("lenet", lambda n, weights=None: TinyNet(n))
    with pytest.raises(ValueError, match="a loss or method named 'groupdro' is registered"):
        debias.register_loss("groupdro", AlignLoss)
    with pytest.raises(TypeError, match="expected an nn.Module subclass"):
        debias.register_loss("x", object)
    with pytest.raises(ValueError, match=r"unknown model 'lenett' \(did you mean 'lenet'\?\)"):
        build_model("lenett", 10)
    assert "x" not in LOSSES and "x" not in METHODS
    assert debias.register_dataset.__module__ == "debias.data.registry"
    assert debias.register_method.__module__ == "debias.methods"
