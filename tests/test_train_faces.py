"""Short training runs on the real face copies write metrics.json with the datasets' own groups."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest
from conftest import quiet

from debias.train import TrainConfig, train

ROOT = Path(os.environ.get("DEBIAS_DATA", "data"))


def _run(tmp_path, monkeypatch, **kw):
    monkeypatch.setenv("DEBIAS_CACHE", str(tmp_path / "cache"))
    cfg = TrainConfig(
        out=str(tmp_path / "run"),
        model="smallconvnet",
        epochs=1,
        max_steps=2,
        batch_size=32,
        progress=False,
        device="cpu",
        image_size=32,
        **kw,
    )
    return train(cfg, log=quiet)


@pytest.mark.slow
@pytest.mark.skipif(not (ROOT / "utkface").is_dir(), reason=f"UTKFace not found under {ROOT}")
@pytest.mark.parametrize("method", ["ce", "contex", "biascon"])
def test_utkface_run_uses_its_aligned_groups(tmp_path, monkeypatch, method):
    extra = {} if method == "ce" else {"method": method, "linear_epochs": 1}
    res = _run(tmp_path, monkeypatch, dataset="utkface", target="gender", bias="race", **extra)
    assert res["config"]["mode"] == ("ce" if method == "ce" else "two-stage")
    assert set(res["splits"]) == {"val", "test"}
    for split in ("train", "val", "test"):
        assert res["data"][split]["aligned_groups"] == [[0, 0], [1, 1]]
    train_info = res["data"]["train"]
    # BiasCon biasing: about 1/11 of the training split is bias-conflicting
    frac = 1 - train_info["n_aligned"] / train_info["n"]
    assert 0.08 < frac < 0.10
    test = res["splits"]["test"]
    assert test["n_groups"] == 4 and sum(g["n"] for g in test["groups"]) == test["n"]


@pytest.mark.slow
@pytest.mark.skipif(not (ROOT / "celeba").is_dir(), reason=f"CelebA not found under {ROOT}")
def test_celeba_run_uses_its_aligned_groups(tmp_path, monkeypatch):
    with warnings.catch_warnings():
        # The partial copy has no valid/test partition: the loader warns (once per process)
        # and makes a stratified split; tests/test_data_faces.py checks that warning.
        warnings.simplefilter("ignore", UserWarning)
        res = _run(tmp_path, monkeypatch, dataset="celeba", target="Blond_Hair", bias="Male")
    # (blond, female) and (non-blond, male) are the aligned pairs, not the diagonal
    assert res["data"]["test"]["aligned_groups"] == [[0, 1], [1, 0]]
    test = res["splits"]["test"]
    aligned = {(g["y"], g["b"]) for g in test["groups"] if g["aligned"]}
    assert aligned == {(0, 1), (1, 0)}
    assert test["n_groups"] == 4
