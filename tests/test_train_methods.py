"""Every contrastive method in both protocols, a few steps on real Biased-MNIST."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
from conftest import needs_mnist, quiet

from debias.losses import LOSSES
from debias.train import TrainConfig, train

pytestmark = [needs_mnist, pytest.mark.slow]


@pytest.mark.parametrize("mode", ["two-stage", "joint"])
@pytest.mark.parametrize("method", sorted(LOSSES))
def test_method_mode_on_real_biased_mnist(tmp_path, method, mode):
    cfg = TrainConfig(
        out=str(tmp_path / "r"),
        rho=0.99,
        method=method,
        mode=mode,
        model="smallconvnet",
        epochs=1,
        linear_epochs=1,
        max_steps=2,
        batch_size=64,
        val_size=500,
        train_limit=1000,
        progress=False,
        device="cpu",
        save_embeddings=mode == "two-stage",
    )
    res = train(cfg, log=quiet)
    out = Path(cfg.out)
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["config"]["method"] == method and saved["config"]["mode"] == mode
    assert set(saved["splits"]) == {"val", "test", "test_biased", "test_conflicting"}
    assert res["data"]["train"]["n"] == 1000
    hist = pd.read_csv(out / "history.csv")
    assert math.isfinite(hist["train_contrastive"].iloc[0])
    if mode == "two-stage":
        # pretraining rows carry the online probe (convergence curves), then the linear stage
        assert list(hist["stage"]) == ["pretrain", "linear"]
        assert 0 <= hist["probe/test/unbiased_accuracy"].iloc[0] <= 1
        assert saved["selection"]["stage"] == "linear"
        import numpy as np

        emb = np.load(out / "embeddings.npz")
        assert emb["Z"].shape[0] == emb["targets"].shape[0] == 10000
    else:
        assert list(hist["stage"]) == ["train"] and "train_ce" in hist.columns
