"""Components own their options: a method names the shared options it reads, and a loss's own
signature says whether it takes a temperature (no branch on a method's name)."""

from __future__ import annotations

import pytest
import torch.nn.functional as F
from torch import nn

from debias.losses import LOSSES, ContrastiveLoss, register_loss
from debias.methods import ERM, METHODS, register_method
from debias.methods.contrastive import contrastive_loss_options
from debias.train import TrainConfig


def config(**kw) -> TrainConfig:
    return TrainConfig(**{"out": "unused", "dataset": "digits", "rho": 0.9, "epochs": 1, **kw})


class WeightedCE(ERM):
    """Reads the shared ``lambda_con`` and nothing else of the contrastive options:
    ``L = λ·CE``."""

    name = "toy-weighted-ce"
    config_options = ("lambda_con",)

    def loss(self, out, batch, stage):
        ce = F.cross_entropy(out["logits"].float(), batch.y)
        return {"ce": ce, "loss": self.cfg.lambda_con * ce}


def test_a_method_reads_the_shared_options_it_names_and_no_other():
    register_method(WeightedCE)
    try:
        assert config(method="toy-weighted-ce", lambda_con=0.5).lambda_con == 0.5
        with pytest.raises(ValueError, match="takes no contrastive-loss option, got temperature"):
            config(method="toy-weighted-ce", temperature=0.2)
    finally:
        METHODS.pop("toy-weighted-ce", None)
    # the built-in ones as before: ce reads none of them, a contrastive method all of them
    with pytest.raises(ValueError, match=r"'ce' takes no contrastive-loss option, got lambda_con"):
        config(method="ce", lambda_con=0.5)
    with pytest.raises(ValueError, match="applies to mode 'joint' only"):
        config(method="supcon", lambda_con=0.5)
    assert config(method="supcon", mode="joint", lambda_con=0.5).lambda_con == 0.5


class NoTemperature(ContrastiveLoss):
    """A toy loss without a temperature: ``1 - mean cos(z_i^1, z_i^2)``."""

    def forward(self, features, labels=None, bias=None):
        z = nn.functional.normalize(features.float(), dim=-1)
        return 1 - (z[:, 0] * z[:, 1]).sum(-1).mean()


def test_the_temperature_goes_to_the_losses_that_take_one_and_the_others_refuse_it():
    register_loss("toy-notemp", NoTemperature)
    try:
        with pytest.raises(ValueError, match="loss 'toy-notemp' takes no temperature, base_temp"):
            config(method="toy-notemp", temperature=0.2, base_temperature=0.3)
        assert contrastive_loss_options(config(method="toy-notemp"), "toy-notemp") == {}
    finally:
        METHODS.pop("toy-notemp", None)  # the method made from the loss, then the loss
        LOSSES.pop("toy-notemp", None)
    cfg = config(method="supcon", temperature=0.2, loss_options={"base_temperature": 0.5})
    assert contrastive_loss_options(cfg, "supcon") == {"temperature": 0.2, "base_temperature": 0.5}
    # CACR has no temperature: setting one would change nothing, so it is an error
    with pytest.raises(ValueError, match=r"loss 'cacr' takes no temperature \(it takes: tau_pos"):
        config(method="cacr", temperature=0.2, loss_options={"tau_neg": 2.0})
    cacr = config(method="cacr", loss_options={"tau_neg": 2.0})
    assert contrastive_loss_options(cacr, "cacr") == {"tau_neg": 2.0}
