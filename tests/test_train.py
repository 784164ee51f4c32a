"""Training runs end to end: outputs, selection, determinism, resume, conflicts, the CLI."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
from conftest import needs_mnist, quiet
from conftest import tiny as conftest_tiny

from debias.cli import main
from debias.train import RunConflictError, TrainConfig, train


def tiny(out, **kw) -> TrainConfig:
    """conftest's seconds-long CE run on the scikit-learn digits, 3 epochs of 4 steps."""
    return conftest_tiny(out, **{"epochs": 3, "max_steps": 4, **kw})


def same(a, b) -> bool:
    """Equality that treats NaN as equal to NaN (e.g. aligned accuracy on the conflicting test)."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def test_ce_run_writes_metrics_history_and_model(tmp_path):
    res = train(tiny(tmp_path / "r"), log=quiet)
    out = tmp_path / "r"
    on_disk = json.loads((out / "metrics.json").read_text())
    assert on_disk["selection"] == {
        "rule": "last",
        "description": "last epoch",
        "epoch": 3,
        "stage": "train",
    }
    assert set(on_disk["splits"]) == {"val", "test", "test_biased", "test_conflicting"}
    for split, rep in on_disk["splits"].items():
        assert 0 <= rep["worst_group_accuracy"] <= rep["unbiased_accuracy"] <= 1
        # the groups table adds up to the split and reproduces the headline numbers
        groups = pd.DataFrame(rep["groups"])
        assert groups["n"].sum() == on_disk["data"][split]["n"] == rep["n"]
        assert math.isclose(groups["correct"].sum() / groups["n"].sum(), rep["accuracy"])
        assert math.isclose(groups["accuracy"].mean(), rep["unbiased_accuracy"])
    assert on_disk["splits"]["test_biased"]["n_conflicting"] == 0
    assert on_disk["splits"]["test_conflicting"]["n_aligned"] == 0
    assert on_disk["versions"]["torch"] and on_disk["wall_time_seconds"] > 0
    # the machine, for runs.csv: bit-identical results hold on one kind of CPU only
    assert on_disk["versions"]["cpu_capability"] and on_disk["versions"]["cpu"] != "unknown"
    hist = pd.read_csv(out / "history.csv")
    assert list(hist["epoch"]) == [1, 2, 3] and (hist["steps"] == 4).all()
    assert "test/worst_group_accuracy" in hist.columns
    # metrics.json numbers are those of the selected (last) epoch's row
    assert math.isclose(
        hist["test/unbiased_accuracy"].iloc[-1], res["splits"]["test"]["unbiased_accuracy"]
    )
    assert (out / "model.pt").exists()


def test_same_seed_same_numbers_other_seed_other_numbers(tmp_path):
    a = train(tiny(tmp_path / "a"), log=quiet)
    b = train(tiny(tmp_path / "b"), log=quiet)
    c = train(tiny(tmp_path / "c", seed=1), log=quiet)
    ha, hb, hc = (pd.read_csv(tmp_path / n / "history.csv") for n in "abc")
    assert ha["train_loss"].tolist() == hb["train_loss"].tolist()
    assert same(a["splits"], b["splits"])
    assert ha["train_loss"].tolist() != hc["train_loss"].tolist()
    assert c["config"]["seed"] == 1


def test_interrupted_run_resumes_to_the_same_result(tmp_path):
    ref = train(tiny(tmp_path / "ref"), log=quiet)

    def interrupt_after_first_epoch(line):
        if line.startswith("epoch"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(tiny(tmp_path / "r"), log=interrupt_after_first_epoch)
    out = tmp_path / "r"
    assert (out / "checkpoint.pt").exists() and not (out / "metrics.json").exists()
    assert len(pd.read_csv(out / "history.csv")) == 1  # what was written is kept
    lines = []
    resumed = train(tiny(tmp_path / "r"), log=lines.append)
    assert any("resuming" in line and "epoch 1/3" in line for line in lines)
    assert same(resumed["splits"], ref["splits"])
    h_ref, h_res = pd.read_csv(tmp_path / "ref" / "history.csv"), pd.read_csv(out / "history.csv")
    assert h_ref["train_loss"].tolist() == h_res["train_loss"].tolist()
    # a finished run is not trained again
    again = []
    train(tiny(tmp_path / "r"), log=again.append)
    assert again == [f"{out}: already finished (metrics.json present); nothing to do"]


@pytest.mark.parametrize(
    ("linear_epoch", "select"),
    [(1, "last"), (2, "val/worst_group_accuracy")],  # before / after a linear checkpoint
)
def test_interrupt_in_the_linear_stage_resumes_to_the_same_result(
    tmp_path, monkeypatch, linear_epoch, select
):
    """Ctrl-C (KeyboardInterrupt) inside a linear-stage epoch of a two-stage run, then the same
    command again: metrics.json and history.csv equal an uninterrupted run's exactly."""
    from debias.train.loop import Trainer

    kw = dict(method="supcon", mode="two-stage", epochs=1, linear_epochs=3, select=select)
    ref = train(tiny(tmp_path / "ref", **kw), log=quiet)
    fit = Trainer.linear_epoch
    calls = []

    def interrupted(self, epoch, feats):
        calls.append(epoch)
        if len(calls) == linear_epoch:
            raise KeyboardInterrupt
        return fit(self, epoch, feats)

    monkeypatch.setattr(Trainer, "linear_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(tiny(tmp_path / "r", **kw), log=quiet)
    out = tmp_path / "r"
    assert len(pd.read_csv(out / "history.csv")) == linear_epoch  # pretrain + finished linear
    monkeypatch.setattr(Trainer, "linear_epoch", fit)
    lines = []
    resumed = train(tiny(tmp_path / "r", **kw), log=lines.append)
    assert any(f"after epoch {linear_epoch}/4" in line for line in lines)
    for key in ("splits", "selection", "epochs_run", "method"):
        assert same(resumed[key], ref[key]), key
    # timings (epoch_seconds, eval_seconds) are the only columns allowed to differ
    timeless = [c for c in pd.read_csv(out / "history.csv").columns if not c.endswith("_seconds")]
    pd.testing.assert_frame_equal(
        pd.read_csv(tmp_path / "ref" / "history.csv")[timeless],
        pd.read_csv(out / "history.csv")[timeless],
        check_exact=True,
    )


def test_validation_selection_picks_the_best_validation_epoch(tmp_path):
    res = train(tiny(tmp_path / "r", epochs=4, select="val/unbiased_accuracy"), log=quiet)
    hist = pd.read_csv(tmp_path / "r" / "history.csv")
    best = int(hist.loc[hist["val/unbiased_accuracy"].idxmax(), "epoch"])
    assert res["selection"]["epoch"] == best
    assert "validation" in res["selection"]["description"]
    row = hist[hist["epoch"] == best].iloc[0]
    assert math.isclose(row["test/unbiased_accuracy"], res["splits"]["test"]["unbiased_accuracy"])


def test_selection_on_test_is_refused():
    with pytest.raises(ValueError, match="selection on a test split is not allowed"):
        TrainConfig(select="test/unbiased_accuracy")
    with pytest.raises(ValueError, match="unknown method"):
        TrainConfig(method="dro")
    with pytest.raises(ValueError, match="cross-entropy runs use mode 'ce'"):
        TrainConfig(method="ce", mode="joint")


def test_changed_config_in_same_folder_is_a_conflict(tmp_path):
    train(tiny(tmp_path / "r", epochs=1), log=quiet)
    with pytest.raises(RunConflictError, match="rho: 0.95 there vs 0.9 now"):
        train(tiny(tmp_path / "r", epochs=1, rho=0.9), log=quiet)
    # --force starts over
    res = train(tiny(tmp_path / "r", epochs=1, rho=0.9), force=True, log=quiet)
    assert res["config"]["rho"] == 0.9


def test_cli_train_and_errors(tmp_path, capsys):
    out = tmp_path / "cli"
    rc = main(
        [
            "train",
            "--dataset",
            "digits",
            "--rho",
            "0.99",
            "--model",
            "smallconvnet",
            "--epochs",
            "1",
            "--max-steps",
            "2",
            "--batch-size",
            "32",
            "--out",
            str(out),
            "--device",
            "cpu",
            "--quiet",
        ]
    )
    assert rc == 0
    assert "done:" in capsys.readouterr().out and (out / "metrics.json").exists()
    rc = main(["train", "--dataset", "nope", "--rho", "0.9", "--out", str(tmp_path / "x")])
    assert rc == 2
    assert "unknown dataset 'nope'" in capsys.readouterr().err
    rc = main(["train", "--rho", "0.9", "--select", "test/accuracy", "--out", str(tmp_path / "y")])
    assert rc == 2


@needs_mnist
def test_real_biased_mnist_ce_few_steps(tmp_path):
    res = train(
        TrainConfig(
            out=str(tmp_path / "m"),
            rho=0.997,
            model="smallconvnet",
            epochs=1,
            max_steps=3,
            val_size=1000,
            progress=False,
            device="cpu",
        ),
        log=quiet,
    )
    data = res["data"]
    assert data["train"]["n"] == 59000 and data["val"]["n"] == 1000
    assert data["test"]["n"] == data["test_biased"]["n"] == data["test_conflicting"]["n"] == 10000
    assert data["test_biased"]["n_aligned"] == 10000 and data["test_conflicting"]["n_aligned"] == 0
    test = res["splits"]["test"]
    assert test["n_groups"] == 100  # rho 0.1 fills every (digit, colour) cell
    assert len(res["splits"]["test"]["groups"]) == 100


def test_run_written_before_an_option_existed_is_still_the_same_run(tmp_path):
    train(tiny(tmp_path / "r", epochs=1), log=quiet)
    path = tmp_path / "r" / "metrics.json"
    old = json.loads(path.read_text())
    del (
        old["config"]["train_limit"],
        old["config"]["channels_last"],
    )  # as written by an older version
    path.write_text(json.dumps(old))
    lines = []
    train(tiny(tmp_path / "r", epochs=1), log=lines.append)
    assert lines and "already finished" in lines[0]
