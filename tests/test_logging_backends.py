"""Optional trackers (``TrainConfig.log_to``): off by default, a clear error when a package is
missing, and one scalar per numeric history column per epoch when on."""

from __future__ import annotations

import importlib.util
import json
import sys
import types
from pathlib import Path

import pandas as pd
import pytest
from conftest import quiet, tiny

from debias.train import TrainConfig, train

HAS_TENSORBOARD = importlib.util.find_spec("tensorboard") is not None


def test_log_to_off_by_default_and_bad_names_refused(tmp_path):
    assert TrainConfig(dataset="digits", rho=0.9).log_to is None
    with pytest.raises(
        ValueError, match=r"log_to='tensorbord': unknown tracker\(s\) \['tensorbord'\]"
    ):
        tiny(tmp_path, log_to="tensorbord")


@pytest.mark.skipif(HAS_TENSORBOARD, reason="tensorboard is installed here")
def test_missing_tensorboard_names_what_to_install(tmp_path):
    with pytest.raises(ImportError, match="pip install tensorboard"):
        tiny(tmp_path, log_to="tensorboard")


@pytest.mark.skipif(
    importlib.util.find_spec("mlflow") is not None, reason="mlflow is installed here"
)
def test_missing_mlflow_names_what_to_install(tmp_path):
    with pytest.raises(ImportError, match="pip install mlflow"):
        tiny(tmp_path, log_to="tensorboard,mlflow" if HAS_TENSORBOARD else "mlflow")


def test_every_epoch_row_reaches_the_tracker(tmp_path, monkeypatch):
    """The trainer's hook end to end, with a stand-in SummaryWriter when tensorboard is absent
    (with it installed, the real one writes event files and the same rows are checked)."""
    calls: list[tuple[str, float, int]] = []

    class Writer:
        def __init__(self, log_dir):
            self.log_dir = Path(log_dir)

        def add_scalar(self, tag, value, step):
            calls.append((tag, value, step))

        def flush(self):
            pass

        def close(self):
            pass

    if not HAS_TENSORBOARD:
        fake = types.ModuleType("torch.utils.tensorboard")
        fake.SummaryWriter = Writer
        monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", fake)
    res = train(tiny(tmp_path / "r", log_to="tensorboard"), log=quiet)
    assert res["config"]["log_to"] == "tensorboard"
    history = pd.read_csv(tmp_path / "r" / "history.csv")
    if HAS_TENSORBOARD:
        assert list((tmp_path / "r" / "tensorboard").glob("events.out.tfevents.*"))
        return
    logged = {(tag, step): value for tag, value, step in calls}
    for _, row in history.iterrows():
        step = int(row["epoch"])
        assert logged[("train_loss", step)] == pytest.approx(row["train_loss"])
        assert logged[("test/worst_group_accuracy", step)] == pytest.approx(
            row["test/worst_group_accuracy"]
        )
    assert {step for _, _, step in calls} == {1, 2}
    assert not any(tag in ("epoch", "stage") for tag, _, _ in calls)
    # A runtime option: the same run without trackers is the same run (resume, compare).
    again = train(tiny(tmp_path / "r"), log=quiet)
    assert json.dumps(again["splits"], sort_keys=True) == json.dumps(res["splits"], sort_keys=True)


# -- names: a sweep's runs are told apart ---------------------------------------------------------
def _sweep_folder(root: Path) -> list[Path]:
    """A sweep folder as `debias sweep` writes it: sweep.json naming each run and its grid
    values, one folder level per grid key."""
    runs = [
        {"run": f"method=ce/seed={s}", "params": {"method": "ce", "seed": s}, "config": {}}
        for s in (0, 1)
    ]
    root.mkdir(parents=True)
    (root / "sweep.json").write_text(json.dumps({"name": "bm-grid", "spec": {}, "runs": runs}))
    return [root / r["run"] for r in runs]


def test_run_identity_is_the_path_in_the_sweep(tmp_path):
    from debias.train.logging_backends import run_identity

    first, second = _sweep_folder(tmp_path / "sw")
    a, b = run_identity(first), run_identity(second)
    assert a == {
        "name": "method=ce/seed=0",
        "group": "bm-grid",
        "tags": ["method=ce", "seed=0"],
        "grid": {"method": "ce", "seed": 0},
    }
    assert b["name"] == "method=ce/seed=1" and a["name"] != b["name"]
    # Outside a sweep: the folder's own name, no group.
    assert run_identity(tmp_path / "lone") == {
        "name": "lone", "group": None, "tags": [], "grid": {}
    }  # fmt: skip
    # A folder without params in the manifest: the values are read off its path.
    (tmp_path / "sw2").mkdir()
    (tmp_path / "sw2" / "sweep.json").write_text("{}")
    assert run_identity(tmp_path / "sw2" / "rho=0.99" / "seed=2")["grid"] == {
        "rho": "0.99", "seed": "2"
    }  # fmt: skip


def test_wandb_and_mlflow_runs_are_named_after_the_path_in_the_sweep(tmp_path, monkeypatch):
    """The trainer's hook with stand-in `wandb` and `mlflow` modules (mlflow is not a dependency;
    the real wandb is tested offline below), recording what each tracker is given."""
    inits, mlflow_calls = [], []

    class Run:
        def log(self, values, step):
            pass

        def finish(self):
            pass

    fake_wandb = types.ModuleType("wandb")
    fake_wandb.init = lambda **kw: inits.append(kw) or Run()
    fake_mlflow = types.ModuleType("mlflow")
    fake_mlflow.active_run = lambda: None
    fake_mlflow.start_run = lambda run_name: mlflow_calls.append(("start", run_name))
    fake_mlflow.set_tags = lambda tags: mlflow_calls.append(("tags", tags))
    fake_mlflow.log_params = lambda params: None
    fake_mlflow.log_metrics = lambda values, step: None
    fake_mlflow.end_run = lambda: None
    monkeypatch.setitem(sys.modules, "wandb", fake_wandb)
    monkeypatch.setitem(sys.modules, "mlflow", fake_mlflow)
    for out in _sweep_folder(tmp_path / "sw"):
        seed = int(out.name.split("=")[1])
        train(tiny(out, epochs=1, seed=seed, log_to="wandb,mlflow", represent=False), log=quiet)
    assert [kw["name"] for kw in inits] == ["method=ce/seed=0", "method=ce/seed=1"]
    assert {kw["group"] for kw in inits} == {"bm-grid"}
    assert inits[1]["tags"] == ["method=ce", "seed=1"]
    assert inits[1]["config"]["sweep_grid"] == {"method": "ce", "seed": 1}
    assert inits[1]["config"]["seed"] == 1  # the run's own config is still there
    assert ("start", "method=ce/seed=1") in mlflow_calls
    assert ("tags", {"sweep": "bm-grid", "method": "ce", "seed": "1"}) in mlflow_calls


def test_a_real_wandb_run_offline_carries_the_sweep_path_group_and_tags(tmp_path, monkeypatch):
    """The real ``wandb`` package in offline mode (no network, files in the run folder): the Run it
    returns is named after the run's path in the sweep, grouped by the sweep, tagged with the
    grid values, and its config holds them."""
    wandb = pytest.importorskip("wandb", reason="wandb is in the dev extra; install it")
    for key, value in {"WANDB_MODE": "offline", "WANDB_SILENT": "true",
                       "WANDB_PROJECT": "debias-test"}.items():  # fmt: skip
        monkeypatch.setenv(key, value)
    runs, real_init = [], wandb.init
    monkeypatch.setattr(wandb, "init", lambda **kw: runs.append(real_init(**kw)) or runs[-1])
    out = _sweep_folder(tmp_path / "sw")[1]
    train(tiny(out, epochs=1, seed=1, log_to="wandb", represent=False), log=quiet)
    (run,) = runs
    assert (run.name, run.group) == ("method=ce/seed=1", "bm-grid")
    assert list(run.tags) == ["method=ce", "seed=1"]
    assert run.config["sweep_grid"] == {"method": "ce", "seed": 1} and run.config["seed"] == 1
    # in the run folder: what `wandb sync` uploads later
    assert len(list(out.glob("wandb/offline-run-*/run-*.wandb"))) == 1
