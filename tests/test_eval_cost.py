"""Smoke-run cost: ``eval_every`` thins the per-epoch test evaluations without changing the
reported numbers; ``eval_limit`` evaluates on a seeded subset; evaluation progress bars."""

from __future__ import annotations

import json
import math
import sys

import pandas as pd
import pytest
from conftest import quiet
from conftest import tiny as conftest_tiny

from debias.cli import main
from debias.train import TrainConfig, train
from debias.train import batches as train_batches
from debias.train import loop as train_loop


def tiny(out, **kw) -> TrainConfig:
    """conftest's tiny run with 3 epochs (a thinned evaluation has epochs to skip)."""
    return conftest_tiny(out, **{"epochs": 3, **kw})


def evaluated(hist: pd.DataFrame, column: str) -> list[bool]:
    """Which history rows hold ``column`` (a column no row has is absent from the file)."""
    return hist[column].notna().tolist() if column in hist else [False] * len(hist)


def same(a, b) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


@pytest.mark.slow
@pytest.mark.parametrize("select", ["last", "val/worst_group_accuracy"])
def test_eval_every_keeps_the_reported_numbers(tmp_path, select):
    full = train(tiny(tmp_path / "a", select=select), log=quiet)
    thin = train(tiny(tmp_path / "b", select=select, eval_every=2), log=quiet)
    assert same(full["splits"], thin["splits"]) and full["selection"] == thin["selection"]
    hist = pd.read_csv(tmp_path / "b" / "history.csv")
    # Test splits at epochs 2 (every 2nd) and 3 (the last), not 1.
    assert hist["test/accuracy"].isna().tolist() == [True, False, False]
    # The val split stays per-epoch only under a val selection.
    assert hist["val/accuracy"].isna().tolist() == [select == "last", False, False]
    ref = pd.read_csv(tmp_path / "a" / "history.csv")
    assert ref.loc[1:, "test/accuracy"].tolist() == hist.loc[1:, "test/accuracy"].tolist()


@pytest.mark.slow
def test_eval_every_two_stage_probe_and_linear(tmp_path):
    kw = dict(method="supcon", epochs=3, linear_epochs=2, batch_size=32, max_steps=2)
    full = train(tiny(tmp_path / "a", **kw), log=quiet)
    thin = train(tiny(tmp_path / "b", eval_every=2, **kw), log=quiet)
    assert same(full["splits"], thin["splits"])
    hist = pd.read_csv(tmp_path / "b" / "history.csv")
    # Epochs 1-3 pretrain (probe at 2), 4-5 linear (4: every 2nd; 5: the last).
    assert hist["probe/test/accuracy"].isna().tolist() == [True, False, True, True, True]
    assert hist["test/accuracy"].isna().tolist() == [True, True, True, False, False]


@pytest.mark.parametrize("method", ["ce", "jtt"])
@pytest.mark.parametrize("select", ["last", "val/worst_group_accuracy"])
def test_eval_every_0_evaluates_only_what_is_read(tmp_path, select, method):
    """eval_every=0: val every epoch, the test splits once, for the reported epoch; the same
    reported numbers as evaluating everything every epoch (today's eval_every=1)."""
    kw = dict(select=select, method=method, epochs=3)  # jtt: 1 identification epoch first
    full = train(tiny(tmp_path / "a", **kw), log=quiet)
    read = train(tiny(tmp_path / "b", eval_every=0, **kw), log=quiet)
    assert same(full["splits"], read["splits"]) and full["selection"] == read["selection"]
    hist = pd.read_csv(tmp_path / "b" / "history.csv")
    n = len(hist)
    assert hist["val/accuracy"].notna().all()
    assert pd.read_csv(tmp_path / "a" / "history.csv")["val/accuracy"].tolist() == (
        hist["val/accuracy"].tolist()
    )
    # select last: the test splits at the last epoch only; val selection: never in the loop.
    tested = [select == "last" and e == n for e in hist["epoch"]]
    for split in ("test", "test_biased", "test_conflicting"):
        assert evaluated(hist, f"{split}/accuracy") == tested
    assert (hist["eval_seconds"] > 0).all() and (hist["eval_seconds"] < hist["epoch_seconds"]).all()
    assert read["eval_seconds"] >= hist["eval_seconds"].sum()


@pytest.mark.parametrize("select", ["last", "val/worst_group_accuracy"])
def test_eval_every_0_two_stage(tmp_path, select):
    """The online probe logs val only; the linear stage evaluates the test splits once, on the
    frozen features (as an evaluated epoch would), with the numbers of eval_every=1."""
    kw = dict(method="supcon", epochs=2, linear_epochs=3, batch_size=32, max_steps=2)
    full = train(tiny(tmp_path / "a", select=select, **kw), log=quiet)
    read = train(tiny(tmp_path / "b", select=select, eval_every=0, **kw), log=quiet)
    assert same(full["splits"], read["splits"]) and full["selection"] == read["selection"]
    hist = pd.read_csv(tmp_path / "b" / "history.csv")
    # Epochs 1-2 pretrain (probe on val), 3-5 linear (val every epoch).
    assert evaluated(hist, "probe/val/accuracy") == [True, True, False, False, False]
    assert evaluated(hist, "probe/test/accuracy") == [False] * 5
    assert evaluated(hist, "val/accuracy") == [False, False, True, True, True]
    assert evaluated(hist, "test/accuracy") == [False, False, False, False, select == "last"]


@pytest.mark.parametrize("select", ["last", "val/worst_group_accuracy"])
def test_two_stage_run_resumed_after_its_last_epoch(tmp_path, select):
    """A crash between the last checkpoint and metrics.json: the rerun restores the linear
    classifier and reports the numbers of the uninterrupted run (it used to fail: no linear)."""
    kw = dict(method="supcon", epochs=1, linear_epochs=2, batch_size=32, max_steps=2)
    cfg = tiny(tmp_path / "a", select=select, eval_every=0, **kw)
    done = train(cfg, log=quiet)
    (tmp_path / "a" / "metrics.json").unlink()
    again = train(cfg, log=quiet)
    assert same(done["splits"], again["splits"]) and done["selection"] == again["selection"]


def test_eval_limit_evaluates_a_seeded_subset_and_is_part_of_the_run(tmp_path):
    res = train(tiny(tmp_path / "a", eval_limit=50, epochs=1), log=quiet)
    assert {s: d["n"] for s, d in res["data"].items() if s != "train"} == dict.fromkeys(
        ("val", "test", "test_biased", "test_conflicting"), 50
    )
    assert res["data"]["train"]["n"] > 1000 and res["config"]["eval_limit"] == 50
    assert sum(g["n"] for g in res["splits"]["test"]["groups"]) == 50
    # Same rows for another training seed (one data_seed, one subset); other rows for another.
    from debias.data.registry import load_splits

    test = load_splits("digits", rho=0.95)["test"]
    a = train_loop._limited(test, 50, 0).targets.tolist()
    assert a == train_loop._limited(test, 50, 0).targets.tolist()
    assert a != train_loop._limited(test, 50, 1).targets.tolist()
    assert train_loop._limited(test, 10_000, 0) is test
    # A different eval_limit is a different run (it changes the numbers).
    with pytest.raises(Exception, match="eval_limit: 50 there vs 60 now"):
        train(tiny(tmp_path / "a", eval_limit=60, epochs=1), log=quiet)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--eval-every", "-1"], "eval_every (epochs between test evaluations; 0: the reported epoch only) must be an integer >= 0; got -1"),
        (["--eval-limit", "1"], "eval_limit (images per evaluation split) must be an integer >= 2; got 1"),
    ],
)  # fmt: skip
def test_eval_options_are_checked(tmp_path, capsys, extra, message):
    rc = main(
        ["train", "--dataset", "digits", "--rho", "0.9", "--out", str(tmp_path / "o"), *extra]
    )
    assert rc == 2 and message in capsys.readouterr().err


def test_evaluation_bar_waits_a_few_seconds_and_encoding_bar_does_not(tmp_path, monkeypatch):
    bars = []

    def fake_progress(items, enabled, desc, *, delay=0, log=None):
        bars.append((desc, delay, enabled))
        return items

    # the one progress helper of the loop's parts (debias.train.batches)
    monkeypatch.setattr(train_batches, "_progress", fake_progress)
    train(tiny(tmp_path / "r", method="supcon", epochs=1, linear_epochs=1, batch_size=32,
               max_steps=2, progress=True), log=quiet)  # fmt: skip
    encoding = [b for b in bars if b[0].startswith("encoding")]
    # Under max_steps the linear stage encodes only the training rows of its capped batches
    # (2 x 32 images, no bar), not the whole training split.
    assert {b[0].split()[1] for b in encoding} == {
        "val",
        "test",
        "test_biased",
        "test_conflicting",
    }
    assert all(delay == 0 and enabled for _, delay, enabled in encoding)
    evaluating = [b for b in bars if b[0].startswith(("probing", "evaluating"))]
    assert evaluating and all(d == train_loop.EVAL_BAR_DELAY_S for _, d, _ in evaluating)


def test_progress_uses_the_notebook_aware_bar(monkeypatch):
    monkeypatch.setitem(sys.modules, "ipykernel", sys)
    bar = train_loop._progress(range(3), True, "x", delay=2.0)
    assert type(bar).__module__.startswith("tqdm") and list(bar) == [0, 1, 2]
    assert train_loop._progress(range(3), False, "x") == range(3)
    assert not math.isnan(bar.delay) and bar.delay == 2.0
