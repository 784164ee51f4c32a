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
from conftest import quiet

from debias.train import TrainConfig, train

HAS_TENSORBOARD = importlib.util.find_spec("tensorboard") is not None


def tiny(out, **kw) -> TrainConfig:
    base = dict(
        out=str(out), dataset="digits", rho=0.95, model="smallconvnet", epochs=2,
        batch_size=64, max_steps=3, lr_milestones=[], progress=False, device="cpu",
    )  # fmt: skip
    return TrainConfig(**(base | kw))


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
