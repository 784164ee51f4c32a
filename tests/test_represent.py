"""The representation section (DFR head + bias audit of the frozen features), `debias evaluate`,
the `dfr` method, and the three supervision kinds in the records and the report."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from debias import results
from debias.audit.dfr import C_GRID
from debias.cli import main
from debias.data import registry
from debias.data.base import TensorImageDataset
from debias.methods import SUPERVISION
from debias.report import summarize
from debias.train import train
from debias.train.checkpoint import strict_json
from debias.train.represent import (
    KEY,
    REFITS,
    SplitFeatures,
    balanced_rows,
    represent_features,
)


def quiet(*_):
    pass


# -- a small dataset DFR can balance: binary digits on two background colours -------------------
def _binary_digits(*, rho=None, data_seed=0, **_):
    """Target: digit >= 5; bias: red or green background, aligned with the target in a
    fraction rho of the training images, at random (p = 0.5) in val and test, always in
    test_biased. Every fourth training image is held out for val: every (y, b) group has tens
    of images there, so DFR can balance them."""
    from debias.data.digits import digits_splits

    (tr_x, tr_y), (te_x, te_y) = digits_splits(seed=data_seed)
    colours = torch.tensor([[255, 0, 0], [0, 200, 0]], dtype=torch.uint8)

    def make(x, digit, aligned_fraction, seed):
        y = (digit >= 5).long()
        aligned = torch.rand(len(y), generator=torch.Generator().manual_seed(seed))
        b = torch.where(aligned < aligned_fraction, y, 1 - y)
        img = colours[b][:, :, None, None].expand(-1, 3, 28, 28).clone()
        img[(x > 0)[:, None].expand(-1, 3, -1, -1)] = 255
        return TensorImageDataset(
            img, y, b, aligned_groups=[(0, 0), (1, 1)], num_classes=2, num_bias=2
        )

    val = torch.arange(len(tr_y)) % 4 == 0
    return {
        "train": make(tr_x[~val], tr_y[~val], rho, 1),
        "val": make(tr_x[val], tr_y[val], 0.5, 2),
        "test": make(te_x, te_y, 0.5, 3),
        "test_biased": make(te_x, te_y, 1.0, 4),
    }


@pytest.fixture
def binary_digits():
    registry.register_dataset(
        "binary-digits", _binary_digits, options={"rho": None}, colour_bias=True, replace=True
    )
    yield "binary-digits"


def tiny(out, dataset, **kw):
    from test_train import tiny as train_tiny

    return train_tiny(out, **{"dataset": dataset, "rho": 0.95, "epochs": 2, **kw})


def _without_times(section):
    return {k: v for k, v in section.items() if k not in ("seconds", "timings")}


def same(a, b) -> bool:
    """Equality that treats NaN as equal to NaN and to the null metrics.json writes for it."""
    return json.dumps(strict_json(a), sort_keys=True) == json.dumps(strict_json(b), sort_keys=True)


# -- the section on synthetic features ------------------------------------------------------------
def _features(encodes: str, n_per_group: int, seed: int, k=4, d=16):
    """``k`` classes x ``k`` bias values, ``n_per_group`` images each; the features encode only
    the target (``"target"``) or only the bias (``"bias"``) linearly, plus noise."""
    y = np.repeat(np.arange(k), k * n_per_group)
    b = np.tile(np.repeat(np.arange(k), n_per_group), k)
    means = 3.0 * np.random.RandomState(0).randn(k, d)  # one direction per value, every split
    z = means[y if encodes == "target" else b] + np.random.RandomState(seed).randn(len(y), d)
    return SplitFeatures(z.astype(np.float32), y, b, tuple((c, c) for c in range(k)))


@pytest.mark.parametrize("encodes", ["bias", "target"])
def test_bias_encoded_gives_high_leakage_and_low_dfr_and_the_reverse(encodes):
    features = {
        "val": _features(encodes, 20, seed=1),
        "test": _features(encodes, 30, seed=2),
        "test_conflicting": _features(encodes, 10, seed=3),
    }
    scale = _features(encodes, 40, seed=4).Z
    section = represent_features(features, scale, seed=0)
    dfr, audit = section["dfr"], section["audit"]
    leak, chance = audit["bias_leakage"], audit["bias_leakage_chance"]
    assert chance == 0.25 and set(dfr["splits"]) == {"test", "test_conflicting"}
    test = dfr["splits"]["test"]
    if encodes == "bias":
        # The bias is read off the features; a head fitted on balanced data cannot find the digit.
        assert leak > 0.95
        assert test["unbiased_accuracy"] < 0.45 and test["worst_group_accuracy"] < 0.3
        assert audit["target_probe"]["unbiased_accuracy"] < 0.45
    else:
        assert leak < 0.4
        assert test["unbiased_accuracy"] > 0.95 and test["worst_group_accuracy"] > 0.85
    assert dfr["C"] in C_GRID and dfr["refits"] == REFITS and dfr["images_per_group"] == 20
    assert (
        "validation split's bias labels" in dfr["rule"]
        and "no label of any test split" in dfr["reads"]
    )
    assert "deep_feature_reweighting" in dfr["source"]
    assert audit["n"] == 16 * 30 and audit["split"] == "test"


def test_balanced_rows_cut_every_group_to_the_smallest_and_cap_the_total():
    y = np.array([0] * 10 + [0] * 3 + [1] * 7 + [1] * 20)
    b = np.array([0] * 10 + [1] * 3 + [0] * 7 + [1] * 20)
    rows = balanced_rows(y, b, max_rows=None, seed=0)
    assert len(rows) == 12 and list(rows) == sorted(rows)
    pairs = list(zip(y[rows], b[rows]))
    assert all(pairs.count(g) == 3 for g in [(0, 0), (0, 1), (1, 0), (1, 1)])
    assert len(balanced_rows(y, b, max_rows=8, seed=0)) == 8


def test_a_validation_split_dfr_cannot_balance_is_recorded_not_raised():
    few = _features("target", 1, seed=1)  # one image per group: a half misses some
    section = represent_features({"val": few, "test": _features("target", 30, 2)}, few.Z, seed=0)
    assert "no image in the half DFR fits on" in section["dfr"]["skipped"]
    assert section["audit"]["bias_leakage"] < 0.4


# -- at the end of training, and `debias evaluate` on a finished run ------------------------------
def test_train_adds_the_section_and_evaluate_gives_the_same_without_touching_the_rest(
    tmp_path, binary_digits
):
    on = train(tiny(tmp_path / "on", binary_digits), log=quiet)
    off = train(tiny(tmp_path / "off", binary_digits, represent=False), log=quiet)
    assert KEY in on and KEY not in off
    assert same(on["splits"], off["splits"])  # the run's own numbers do not move
    before = json.loads((tmp_path / "off" / "metrics.json").read_text())
    assert main(["evaluate", str(tmp_path / "off")]) == 0
    after = json.loads((tmp_path / "off" / "metrics.json").read_text())
    assert same({k: v for k, v in after.items() if k != KEY}, before)
    # The trainer reuses its last evaluation's features; evaluate encodes again: same numbers.
    assert same(_without_times(after[KEY]), _without_times(on[KEY]))
    assert after[KEY]["dfr"]["splits"]["test"]["n"] == on["splits"]["test"]["n"]
    # The section as a table, beside the run's own numbers.
    table = results.load_representation(tmp_path / "off")
    dfr_test = table[(table["part"] == "dfr") & (table["split"] == "test")]
    got = dfr_test.set_index("metric")["value"]
    assert got["unbiased_accuracy"] == after[KEY]["dfr"]["splits"]["test"]["unbiased_accuracy"]
    leak = table[(table["part"] == "audit") & (table["metric"] == "bias_leakage")]["value"]
    assert list(leak) == [after[KEY]["audit"]["bias_leakage"]]
    # Run again: left alone; --force recomputes it.
    assert main(["evaluate", str(tmp_path / "off")]) == 0
    assert same(json.loads((tmp_path / "off" / "metrics.json").read_text()), after)
    assert main(["evaluate", "--force", "--refits", "2", str(tmp_path / "off")]) == 0
    forced = json.loads((tmp_path / "off" / "metrics.json").read_text())[KEY]["dfr"]
    assert forced["refits"] == 2 and "then 2 refits" in forced["rule"]


def test_two_stage_runs_reuse_the_frozen_features(tmp_path, binary_digits):
    kw = dict(method="contex", linear_epochs=1, epochs=1)
    on = train(tiny(tmp_path / "on", binary_digits, **kw), log=quiet)
    train(tiny(tmp_path / "off", binary_digits, represent=False, **kw), log=quiet)
    assert main(["evaluate", str(tmp_path / "off")]) == 0
    after = json.loads((tmp_path / "off" / "metrics.json").read_text())
    assert same(_without_times(after[KEY]), _without_times(on[KEY]))
    # the loss is recorded with every argument, ConTeX's weight included
    assert on["method"]["loss"] == {
        "name": "contex", "gather": True, "temperature": 0.07, "base_temperature": 0.07,
        "self_weight": 0.5,
    }  # fmt: skip


def test_contex_self_weight_is_a_loss_option_recorded_per_run(tmp_path, binary_digits):
    kw = dict(method="contex", linear_epochs=1, epochs=1, represent=False, max_steps=2)
    half = train(tiny(tmp_path / "a", binary_digits, **kw), log=quiet)
    seven = train(
        tiny(tmp_path / "b", binary_digits, loss_options={"self_weight": 0.7}, **kw), log=quiet
    )
    assert half["method"]["loss"]["self_weight"] == 0.5
    assert seven["method"]["loss"]["self_weight"] == 0.7
    assert seven["config"]["loss_options"] == {"self_weight": 0.7}
    loss_a = pd.read_csv(tmp_path / "a" / "history.csv")["train_contrastive"].iloc[0]
    loss_b = pd.read_csv(tmp_path / "b" / "history.csv")["train_contrastive"].iloc[0]
    assert loss_a != loss_b  # another loss, other numbers


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p / "missing", "is not a folder"),
        (lambda p: p, "is not a debias run folder"),
        (lambda p: (p / "metrics.json").write_text('{"accuracy": 1}') and p, "not a debias run"),
    ],
)
def test_evaluate_refuses_a_folder_that_is_not_a_finished_debias_run(
    tmp_path, capsys, make, message
):
    folder = make(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(["evaluate", str(folder)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("debias evaluate: error: ") and message in err and "\n" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written


def test_evaluate_refuses_an_unfinished_run(tmp_path, capsys, binary_digits):
    cfg = tiny(tmp_path / "r", binary_digits, represent=False)
    train(cfg, log=quiet)
    (tmp_path / "r" / "metrics.json").unlink()
    assert main(["evaluate", str(tmp_path / "r")]) == 2
    assert "is not a finished debias run" in capsys.readouterr().err


# -- the dfr method --------------------------------------------------------------------------------
def test_dfr_method_end_to_end(tmp_path, binary_digits):
    ce = train(tiny(tmp_path / "ce", binary_digits), log=quiet)
    dfr = train(tiny(tmp_path / "dfr", binary_digits, method="dfr"), log=quiet)
    assert dfr["method"]["supervision"] == dfr["supervision"] == "val_bias"
    assert ce["supervision"] == "none"
    assert dfr["method"]["supervision_text"] == SUPERVISION["val_bias"]
    assert [s["name"] for s in dfr["method"]["stages"]] == ["train", "dfr"]
    fitted = dfr["method"]["fitted"]
    assert fitted["C"] in C_GRID and fitted["refits"] == 20
    # Its ERM stage is the ce run, so it tunes C exactly as the ce run's representation section
    # (same features, same draws) and refits 20 times where the section refits REFITS times.
    tuned = ("C", "tuning_worst_group_accuracy", "val_groups", "images_per_group")
    for rec in (dfr[KEY]["dfr"], ce[KEY]["dfr"]):
        assert same({k: fitted[k] for k in tuned}, {k: rec[k] for k in tuned})
        assert rec["refits"] == REFITS
    own, ref = dfr["splits"]["test"], ce[KEY]["dfr"]["splits"]["test"]
    assert abs(own["accuracy"] - ref["accuracy"]) < 0.05
    assert own["accuracy"] != ce["splits"]["test"]["accuracy"]  # the head did change
    # every run reads no training bias labels: the method's context never held them
    assert dfr["method"]["hparams"] == {"refits": 20}


def test_dfr_method_without_a_feasible_validation_split_fails_with_one_line(tmp_path, capsys):
    out = tmp_path / "r"
    rc = main(
        ["train", "--out", str(out), "--dataset", "digits", "--rho", "0.95", "--method", "dfr",
         "--model", "smallconvnet", "--epochs", "1", "--max-steps", "1", "--device", "cpu",
         "--quiet"]
    )  # fmt: skip
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("debias train: error: ") and "use a larger validation split" in err


def test_methods_lists_dfr_with_its_supervision(capsys):
    assert main(["methods"]) == 0
    lines = capsys.readouterr().out.splitlines()
    dfr = next(line for line in lines if line.startswith("dfr "))
    assert "supervision val_bias (bias labels of the validation split only" in dfr
    ce = next(line for line in lines if line.startswith("ce "))
    assert "supervision none (no bias labels" in ce
    reweight = next(line for line in lines if line.startswith("reweight "))
    assert "supervision train_bias (target and bias labels of the training split)" in reweight


# -- three supervision kinds in the report, read from each run's record ---------------------------
def test_report_prints_three_supervision_kinds_from_the_run_records(tmp_path, binary_digits):
    base = dict(represent=False, epochs=1, max_steps=2)
    for name, kw in {
        "method=ce": {},
        "method=dfr": {"method": "dfr"},
        "method=reweight": {"method": "reweight"},
        "method=jtt": {"method": "jtt", "select": "val/worst_group_accuracy",
                       "method_options": {"identify_epochs": 1}},
    }.items():  # fmt: skip
        train(tiny(tmp_path / "s" / name, binary_digits, **base, **kw), log=quiet)
    # An old record: "target"/"bias" and no run-level kind; it still reads.
    old = tmp_path / "s" / "method=ce" / "metrics.json"
    m = json.loads(old.read_text())
    m.pop("supervision")
    m["method"]["supervision"] = "target"
    old.write_text(json.dumps(m))
    df = results.load(tmp_path / "s")
    kinds = df.groupby("method")["supervision"].first().to_dict()
    assert kinds == {"ce": "none", "dfr": "val_bias", "reweight": "train_bias", "jtt": "val_bias"}
    summary, _ = summarize(df)
    marks = summary.groupby("method")["supervision"].first().to_dict()
    assert marks == {"ce": "—", "dfr": "V", "reweight": "B", "jtt": "V"}
    with pytest.warns(UserWarning, match="4 run.s. without a representation section"):
        assert results.load_representation(tmp_path / "s").empty


def test_the_refits_option_defaults_to_the_official_count():
    """TrainConfig.represent_refits (issue 35): the official num_retrains unless a run sets it."""
    from debias.audit.dfr import REFITS as OFFICIAL
    from debias.train import TrainConfig
    from debias.train.represent import REFITS

    assert TrainConfig.represent_refits == OFFICIAL == REFITS == 20
    with pytest.raises(ValueError, match="represent_refits"):
        TrainConfig(rho=0.99, represent_refits=0)
