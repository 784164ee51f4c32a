"""A finished run continued to more epochs from its checkpoint (``debias train --epochs N``
with N larger, nothing else changed) equals a run trained that long from the start, and is
recorded as continued; a continuation that would change what the run means is refused."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from conftest import quiet
from conftest import tiny as conftest_tiny

from debias.cli import main
from debias.train import RunConflictError, TrainConfig, train


def tiny(out, **kw) -> TrainConfig:
    """conftest's tiny run, 4 steps an epoch, no representation record."""
    return conftest_tiny(out, **{"max_steps": 4, "represent": False, **kw})


def same(a, b) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def timeless(path) -> pd.DataFrame:
    hist = pd.read_csv(path / "history.csv")
    return hist[[c for c in hist.columns if not c.endswith("_seconds")]]


def test_continued_run_equals_a_straight_run_bit_for_bit(tmp_path):
    """2 epochs, then 3: the same numbers as 3 epochs at once. On the CPU (deterministic
    algorithms, one random stream per epoch, optimizer and schedule restored) they are equal
    exactly, so the tolerance is zero."""
    ref = train(tiny(tmp_path / "ref", epochs=3, represent=True), log=quiet)
    first = train(tiny(tmp_path / "r", represent=True), log=quiet)
    lines = []
    longer = train(tiny(tmp_path / "r", epochs=3, represent=True), log=lines.append)
    assert any(line.startswith(f"continuing {tmp_path / 'r'} after epoch 2/3") for line in lines)
    for key in ("splits", "selection", "epochs_run", "method"):
        assert same(longer[key], ref[key]), key
    untimed = [{k: v for k, v in r["representation"].items() if k not in ("timings", "seconds")}
               for r in (longer, ref)]  # fmt: skip
    assert same(*untimed)
    pd.testing.assert_frame_equal(timeless(tmp_path / "ref"), timeless(tmp_path / "r"))
    assert longer["config"] == ref["config"] | {"out": str(tmp_path / "r")}
    assert longer["continued_from"] == [
        {
            "epochs": 2,
            "epochs_run": 2,
            "selected_epoch": 2,
            "wall_time_seconds": first["wall_time_seconds"],
        }
    ]
    on_disk = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert on_disk["continued_from"][0]["epochs"] == 2 and "continued_from" not in ref
    # the continued run is now the finished 3-epoch run
    again = []
    train(tiny(tmp_path / "r", epochs=3, represent=True), log=again.append)
    assert again == [f"{tmp_path / 'r'}: already finished (metrics.json present); nothing to do"]


def test_interrupted_continuation_resumes_and_records_one_continuation(tmp_path):
    ref = train(tiny(tmp_path / "ref", epochs=3, select="val/worst_group_accuracy"), log=quiet)
    train(tiny(tmp_path / "r", select="val/worst_group_accuracy"), log=quiet)

    def interrupt_after_an_epoch(line):
        if line.startswith("epoch"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(tiny(tmp_path / "r", epochs=3, select="val/worst_group_accuracy"),
              log=interrupt_after_an_epoch)  # fmt: skip
    # the shorter finished run's record stays until the longer one is finished
    assert json.loads((tmp_path / "r" / "metrics.json").read_text())["epochs_run"] == 2
    lines = []
    res = train(tiny(tmp_path / "r", epochs=3, select="val/worst_group_accuracy"),
                log=lines.append)  # fmt: skip
    assert any(line.startswith(f"resuming {tmp_path / 'r'} after epoch 3/3") for line in lines)
    assert [c["epochs"] for c in res["continued_from"]] == [2]
    for key in ("splits", "selection", "epochs_run"):
        assert same(res[key], ref[key]), key


def test_a_continuation_that_changes_the_schedule_or_anything_else_is_refused(tmp_path):
    out = tmp_path / "r"
    train(tiny(out, lr_milestones=[1]), log=quiet)
    # milestones resolved from the epoch count (quarters of --epochs) would move with it
    with pytest.raises(RunConflictError, match=r"lr schedule would change \(lr_milestones \[1\] "
                       r"there vs \[1, 2\] now\); give --lr-milestones 1 to keep it"):  # fmt: skip
        train(tiny(out, epochs=3, lr_milestones=[1, 2]), log=quiet)
    with pytest.raises(RunConflictError, match="lr: 0.001 there vs 0.002 now"):
        train(tiny(out, epochs=3, lr_milestones=[1], lr=2e-3), log=quiet)
    with pytest.raises(RunConflictError, match="epochs: 2 there vs 1 now"):
        train(tiny(out, epochs=1, lr_milestones=[]), log=quiet)
    # the same schedule, longer: fine
    assert train(tiny(out, epochs=3, lr_milestones=[1]), log=quiet)["epochs_run"] == 3


def test_a_run_whose_main_stage_is_followed_by_another_is_not_continued(tmp_path):
    kw = dict(method="supcon", mode="two-stage", linear_epochs=1, epochs=1)
    train(tiny(tmp_path / "r", **kw), log=quiet)
    with pytest.raises(RunConflictError, match="its linear stage.s. already ran after the "
                       "shorter main stage"):  # fmt: skip
        train(tiny(tmp_path / "r", **(kw | {"epochs": 2})), log=quiet)


def test_cli_continues_a_finished_run(tmp_path, capsys):
    args = ["train", "--dataset", "digits", "--rho", "0.95", "--model", "smallconvnet", "--batch-size", "64",
            "--max-steps", "2", "--lr-milestones", "--device", "cpu", "--quiet",
            "--no-represent", "--out", str(tmp_path / "c")]  # fmt: skip
    assert main([*args, "--epochs", "1"]) == 0
    assert main([*args, "--epochs", "2"]) == 0
    assert "continuing" in capsys.readouterr().out
    metrics = json.loads((tmp_path / "c" / "metrics.json").read_text())
    assert metrics["epochs_run"] == 2 and metrics["continued_from"][0]["epochs"] == 1


def test_a_sweep_whose_epochs_grew_continues_its_finished_runs(tmp_path):
    from debias.sweep import run_sweep
    from debias.sweep.config import SweepSpec

    base = dict(dataset="digits", rho=0.95, model="smallconvnet", batch_size=64, max_steps=2,
                lr_milestones=[], device="cpu", represent=False, progress=False)  # fmt: skip
    spec = {"name": "s", "base": base | {"epochs": 1}, "grid": {"seed": [0]}}
    (run,) = SweepSpec.from_dict(spec).expand()
    out = tmp_path / "sweep"
    train(run.train_config(out.resolve()), log=quiet)  # the finished 1-epoch run
    lines = []
    longer = spec | {"base": base | {"epochs": 2}}
    run_sweep(longer, out=out, dry_run=True, log=lines.append)
    assert lines[0] == "seed=0: resume from checkpoint | method ce, mode ce, epochs 2"
    moved = spec | {"base": base | {"epochs": 2, "lr_milestones": [1]}}
    with pytest.raises(ValueError, match="cannot continue .* the lr schedule would change"):
        run_sweep(moved, out=out, dry_run=True, log=lines.append)


def test_a_cosine_schedule_is_not_continued(tmp_path):
    """Cosine spans the epochs a run was given: 2 epochs continued to 3 would change every lr
    after the first, so it is refused with that reason (a constant or multistep lr is not)."""
    out = tmp_path / "r"
    train(tiny(out, lr_schedule="cosine"), log=quiet)
    with pytest.raises(RunConflictError, match="its cosine lr schedule spans the 2 epochs"):
        train(tiny(out, epochs=3, lr_schedule="cosine"), log=quiet)
