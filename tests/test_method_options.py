"""Components own their options: a method declares every hyper-parameter it reads (the shared
ones, temperature, lambda_con and the linear stage's, included), configs written flat load
equal, and a loss's own signature says whether it takes a temperature (no branch on a method's
name)."""

from __future__ import annotations

import pytest
import torch.nn.functional as F
from torch import nn

from debias.losses import LOSSES, ContrastiveLoss, register_loss
from debias.methods import ERM, METHODS, HParam, register_method, resolve_hparams
from debias.methods.contrastive import contrastive_loss_options
from debias.train import TrainConfig


def config(**kw) -> TrainConfig:
    return TrainConfig(**{"out": "unused", "dataset": "digits", "rho": 0.9, "epochs": 1, **kw})


class WeightedCE(ERM):
    """Owns a ``lambda_con`` of its own and nothing of the contrastive options: ``L = λ·CE``."""

    name = "toy-weighted-ce"
    hparams = {"lambda_con": HParam(1.0, "weight of the loss", low=0.0, shortcut="strict")}

    def loss(self, out, batch, stage):
        ce = F.cross_entropy(out["logits"].float(), batch.y)
        return {"ce": ce, "loss": self.hp["lambda_con"] * ce}


def test_a_method_owns_the_shared_options_it_declares_and_no_other():
    register_method(WeightedCE)
    try:
        cfg = config(method="toy-weighted-ce", lambda_con=0.5)  # the flat shortcut
        assert cfg.method_options == {"lambda_con": 0.5} and cfg.lambda_con == 0.5
        assert cfg == config(method="toy-weighted-ce", method_options={"lambda_con": 0.5})
        with pytest.raises(ValueError, match="'toy-weighted-ce' takes no temperature, got temp"):
            config(method="toy-weighted-ce", temperature=0.2)
        with pytest.raises(ValueError, match="lambda_con given twice, 0.5 and method_options"):
            config(method="toy-weighted-ce", lambda_con=0.5, method_options={"lambda_con": 2})
    finally:
        METHODS.pop("toy-weighted-ce", None)
    # the built-in ones: ce owns none of them, a contrastive method all of them
    with pytest.raises(ValueError, match=r"'ce' takes no lambda_con, got lambda_con=0.5; it "):
        config(method="ce", lambda_con=0.5)
    with pytest.raises(ValueError, match="applies to mode 'joint' only"):
        config(method="supcon", lambda_con=0.5)
    assert config(method="supcon", mode="joint", lambda_con=0.5).lambda_con == 0.5
    # the linear stage's options are shared: a sweep's base sets them for every run, and a
    # method without a linear stage ignores them (as it always has)
    assert config(method="ce", linear_epochs=2).method_options == {}
    supcon = config(method="supcon", linear_epochs=2, linear_lr=0.01)
    assert supcon.method_options == {"linear_epochs": 2, "linear_lr": 0.01}
    assert [(s.name, s.epochs, s.lr) for s in _stages(supcon)][1] == ("linear", 2, 0.01)


def _stages(cfg):
    from debias.methods.base import Context

    cls = METHODS[cfg.method]
    method = cls.__new__(cls)  # the stages read only the config and the hyper-parameters
    method.ctx, method.cfg = Context(cfg, 2, 2, None, None, "cpu", None), cfg
    method.hp = resolve_hparams(cfg.method, cfg.method_options)
    return method.stages()


def test_a_config_written_flat_loads_equal_to_todays():
    """Run folders and sweep YAMLs wrote temperature, lambda_con and the linear stage's options
    as top-level keys: they read back as the method's options, equal to today's config."""
    from debias.train import runfolder

    for method, mode, flat, owned in [
        ("supcon", "two-stage", {"temperature": 0.1, "linear_epochs": 2}, {"temperature": 0.1,
                                                                           "linear_epochs": 2}),
        ("supcon", "joint", {"lambda_con": 0.5}, {"lambda_con": 0.5}),
        ("ce", "ce", {"linear_epochs": 2}, {}),
        ("jtt", "ce", {}, {}),
    ]:  # fmt: skip
        today = config(method=method, mode=mode, method_options=owned)
        written = today.to_dict() | {  # what a run wrote before: every option flat
            "temperature": None, "base_temperature": None, "lambda_con": 1.0,
            "linear_epochs": 10, "linear_lr": 1e-3, **flat, "method_options": {},
        }  # fmt: skip
        assert TrainConfig.from_dict(written) == today, method
        assert runfolder.config_diff(written, today) == {}, method
        assert runfolder.config_diff(written | {"linear_lr": 0.5}, today) == (
            {"method_options": ({**owned, "linear_lr": 0.5}, owned)} if method == "supcon" else {}
        )


class NoTemperature(ContrastiveLoss):
    """A toy loss without a temperature: ``1 - mean cos(z_i^1, z_i^2)``."""

    def forward(self, features, labels=None, bias=None):
        z = nn.functional.normalize(features.float(), dim=-1)
        return 1 - (z[:, 0] * z[:, 1]).sum(-1).mean()


def test_the_temperature_goes_to_the_losses_that_take_one_and_the_others_refuse_it():
    register_loss("toy-notemp", NoTemperature)
    try:
        with pytest.raises(ValueError, match="'toy-notemp' takes no temperature, got temp"):
            config(method="toy-notemp", temperature=0.2, base_temperature=0.3)
        assert contrastive_loss_options(config(method="toy-notemp"), "toy-notemp") == {}
    finally:
        METHODS.pop("toy-notemp", None)  # the method made from the loss, then the loss
        LOSSES.pop("toy-notemp", None)
    cfg = config(method="supcon", temperature=0.2, loss_options={"base_temperature": 0.5})
    assert contrastive_loss_options(cfg, "supcon") == {"temperature": 0.2, "base_temperature": 0.5}
    # CACR has no temperature: setting one would change nothing, so it is an error
    with pytest.raises(
        ValueError, match=r"'cacr' takes no temperature.*supcon, simclr, contex, bi"
    ):
        config(method="cacr", temperature=0.2, loss_options={"tau_neg": 2.0})
    cacr = config(method="cacr", loss_options={"tau_neg": 2.0})
    assert contrastive_loss_options(cacr, "cacr") == {"tau_neg": 2.0}
