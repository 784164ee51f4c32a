"""The run record other tools read: strict JSON (null, not NaN), provenance (version, commit,
command line), and smoke-test limits marked wherever a limited run's numbers appear."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import torch
from conftest import quiet, tiny

from debias import results
from debias.report.markdown import limits_markdown
from debias.train import load_trained, train
from debias.train.checkpoint import save_json
from debias.train.limits import eval_limit_note, limits_text, run_limits


def strict(text: str):
    """Parse as a strict JSON parser does: bare NaN / Infinity are errors."""

    def refuse(name):
        raise ValueError(f"bare {name} in JSON")

    return json.loads(text, parse_constant=refuse)


@pytest.fixture(scope="module")
def limited_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("limited") / "r"
    res = train(tiny(out, eval_limit=40), log=quiet)
    return out, res


def test_save_json_writes_null_for_nan_and_inf(tmp_path):
    path = tmp_path / "m.json"
    save_json(
        {"a": float("nan"), "b": [1.5, float("inf"), np.float64("nan")], "c": np.int64(3),
         "d": torch.tensor(-float("inf")), "e": None, "f": (np.float32(0.5),)},
        path,
    )  # fmt: skip
    assert strict(path.read_text()) == {
        "a": None, "b": [1.5, None, None], "c": 3, "d": None, "e": None, "f": [0.5]
    }  # fmt: skip


def test_metrics_json_is_strict_json_and_reads_back_as_nan(limited_run):
    out, res = limited_run
    text = (out / "metrics.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    on_disk = strict(text)
    # The conflicting test split has no aligned image: the metric is undefined, written null.
    assert on_disk["splits"]["test_conflicting"]["aligned_accuracy"] is None
    assert math.isnan(res["splits"]["test_conflicting"]["aligned_accuracy"])
    # debias's readers give NaN there, as they did for files written with bare NaN; a null that
    # means None (an unset option) stays None.
    again = train(tiny(out, eval_limit=40), log=quiet)  # finished: read from disk
    assert math.isnan(again["splits"]["test_conflicting"]["aligned_accuracy"])
    assert again["config"]["train_limit"] is None
    df = results.load(out)
    row = df[(df["split"] == "test_conflicting") & (df["metric"] == "aligned_accuracy")]
    assert len(row) == 1 and math.isnan(row["value"].iloc[0])


def test_metrics_json_records_version_commit_and_command(limited_run):
    import debias

    prov = strict((limited_run[0] / "metrics.json").read_text())["provenance"]
    assert prov["debias"] == debias.__version__
    # This checkout is a git repository (or a copy without .git: then None, never a guess).
    commit = prov["git_commit"]
    assert commit is None or len(commit.split("+")[0]) == 40
    assert isinstance(prov["command"], str) and prov["command"]


def test_limits_are_recorded_and_the_representation_says_why(limited_run):
    out, _ = limited_run
    m = strict((out / "metrics.json").read_text())
    assert m["limits"] == {"eval_limit": 40, "max_steps": 3}
    assert "eval_limit=40" in m["limits_note"] and "max_steps=3" in m["limits_note"]
    assert "validation included" in m["limits_note"]
    # The digits' val split has 126 images, its test split 540: the record keeps both sizes.
    assert m["data"]["val"]["n"] == 40 and m["data"]["val"]["n_before_limit"] == 126
    assert m["data"]["test"]["n_before_limit"] == 540
    rep = m["representation"]
    assert rep["limited"] == (
        "eval_limit=40 cut the evaluation splits (val to 40 of 126, test to 40 of 540, "
        "test_biased to 40 of 540, test_conflicting to 40 of 540 images)"
    )
    # 40 images over ~35 groups: no probe is run, and the reason gives the sizes and the cause.
    audit = rep["audit"]["skipped"]
    assert "the test split (40 images)" in audit and "fewer than 5 images per group" in audit
    assert "eval_limit=40 cut" in audit and "--eval-limit" in audit
    assert "40 validation images" in rep["dfr"]["skipped"]
    assert "val to 40 of 126" in rep["dfr"]["skipped"]


def test_load_trained_and_the_report_say_the_run_is_limited(limited_run):
    out, _ = limited_run
    with pytest.warns(UserWarning, match=r"limited run \(eval_limit=40.*that run's subsets"):
        _, splits, cfg = load_trained(out, device="cpu")
    assert len(splits["val"]) == 40 and cfg.eval_limit == 40
    md = "\n".join(limits_markdown(results.load(out)))
    assert md.startswith("**Limited runs.** 1 of 1 run(s)")
    assert "`r`: limited run (eval_limit=40" in md


def test_a_full_run_is_not_marked(tmp_path):
    assert run_limits({"eval_limit": None, "max_steps": None}) == {}
    assert limits_text({}) == "" and eval_limit_note(None, {"val": (5, 9)}) == ""
    assert eval_limit_note(50, {"val": (50, 50)}) == ""  # nothing was cut
    res = train(tiny(tmp_path / "r", max_steps=None, epochs=1, represent=False), log=quiet)
    assert res["limits"] == {} and res["limits_note"] == ""
    assert limits_markdown(results.load(tmp_path / "r")) == []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_trained(tmp_path / "r", device="cpu")


def test_max_steps_limits_the_linear_stage_encoding(tmp_path, monkeypatch):
    """A capped two-stage run encodes only the training rows its linear batches read (the
    whole training split is never encoded), and its linear epochs take the capped steps."""
    import pandas as pd

    from debias.methods.stages import LinearStage

    seen: list[int] = []
    original = LinearStage.features

    def counting(self, loop, split):
        if split == "train":
            seen.append(len(loop.train_set))
        return original(self, loop, split)

    monkeypatch.setattr(LinearStage, "features", counting)
    cfg = dict(method="supcon", epochs=1, max_steps=2, represent=False)
    res = train(tiny(tmp_path / "capped", **cfg, method_options={"linear_epochs": 2}), log=quiet)
    assert seen == []  # the whole training split was never encoded
    assert res["epochs_run"] == 3
    history = pd.read_csv(tmp_path / "capped" / "history.csv")
    linear = history[history["stage"] == "linear"]
    assert list(linear["steps"]) == [2, 2] and linear["train_loss"].notna().all()


def test_train_prints_the_data_it_trains_on(tmp_path):
    lines: list[str] = []
    train(tiny(tmp_path / "r", eval_limit=40, epochs=1, represent=False), log=lines.append)
    data = next(ln for ln in lines if ln.startswith("data digits: "))
    # The digits' train split (rho 0.95) and every evaluation split, cut by eval_limit.
    assert "val 40 of 126" in data and "test 40 of 540" in data
    n_train = int(data.split("train ")[1].split(" ")[0].replace(",", ""))
    aligned = int(data.split("(")[1].split(" bias-aligned")[0].replace(",", ""))
    assert 0.9 < aligned / n_train < 1.0 and "(target, bias) groups, smallest (" in data


def test_audit_of_a_limited_run_says_so(limited_run, tmp_path, capsys):
    from debias.cli import main

    out, _ = limited_run
    code = main(
        ["audit", "--run", str(out), "--out", str(tmp_path / "a"), "--cv", "2", "--no-plots",
         "--permutations", "1", "--device", "cpu"]
    )  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "Note: " in printed and "limited run (eval_limit=40" in printed
    md = (tmp_path / "a" / "audit.md").read_text()
    assert "limited run (eval_limit=40" in md and "permutation baseline" in md
    notes = json.loads((tmp_path / "a" / "audit.json").read_text())["notes"]
    assert any("that run's subsets" in n for n in notes)
