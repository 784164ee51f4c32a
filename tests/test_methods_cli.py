"""``debias methods``: every method with the shared hyper-parameters listed once, and
``debias methods NAME``: one method's help, hyper-parameters with defaults, and source."""

from __future__ import annotations

from debias.cli import main
from debias.methods import METHODS
from debias.methods.describe import shared_hparams
from debias.train.config import TrainConfig, search_spaces


def test_the_overview_lists_each_shared_hyper_parameter_once(capsys):
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    for name in METHODS:
        assert f"\n{name:<10} supervision" in f"\n{out}", name
    assert out.count("linear_epochs = 10:") == 1 and out.count(" temperature = None:") == 1
    assert "methods: supcon, simclr, contex, cacr, biascon, fairkl" in out  # linear_epochs
    assert "methods: supcon, simclr, contex, biascon, fairkl\n" in out  # no temperature in cacr
    shared = shared_hparams()
    assert {"temperature", "base_temperature", "lambda_con", "linear_epochs", "linear_lr",
            "linear_optimizer", "stream_sampler", "projection"} <= set(shared)  # fmt: skip
    for name in shared:  # each described once, in the shared section, not once per method
        assert out.count(f"\n             {name} = ") == 1, name
    # a method's own hyper-parameters stay under it
    assert out.index("step_size = 0.01") > out.index("\ngroupdro ")


def test_one_method_in_full(capsys):
    assert main(["methods", "contex"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("contex     supervision none")
    assert "hdeng26/Contex" in out and "SupConTupletLoss" in out  # paper, official code
    assert "linear_epochs = 10: two-stage: epochs of the linear classifier" in out
    assert "temperature = None" in out and "code: debias/losses/contex.py (ConTeXLoss)" in out
    assert main(["methods", "groupdro", "jtt"]) == 0
    out = capsys.readouterr().out
    assert "step_size = 0.01" in out and "upweight = 50" in out
    assert "code: debias/methods/groupdro.py (GroupDRO)" in out


def test_an_unknown_method_name_is_one_line_with_a_hint(capsys):
    assert main(["methods", "contx"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "unknown method 'contx' (did you mean 'contex'?)" in err


def test_every_training_search_space_holds_the_default():
    for name, space in search_spaces().items():
        default = getattr(TrainConfig, name)
        assert space.low <= default < space.high, (name, default, space.describe())
    assert search_spaces()["batch_size"].describe() == "log-uniform integer on [64, 512)"
