"""The published recipes as GPU sweeps (sweeps/*_subpopbench.yaml, sweeps/*_biascon.yaml):
each validates with `debias sweep --dry-run` and holds its source's settings; the Waterbirds
recipe runs end to end at toy scale on a CPU (bench/gpu_recipes.py's shortening)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from debias.cli import main
from debias.sweep.config import load_sweep

REPO = Path(__file__).resolve().parents[1]
RECIPES = (
    "waterbirds_subpopbench", "celeba_subpopbench", "utkface_biascon", "celeba_biascon",
    "celeba_biascon_blond",
)  # fmt: skip


@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_validates_with_dry_run(recipe, tmp_path, capsys):
    path = REPO / "sweeps" / f"{recipe}.yaml"
    assert main(["sweep", str(path), "--dry-run", "--out", str(tmp_path / "o")]) == 0
    assert "nothing was started" in capsys.readouterr().out
    text = path.read_text()
    assert "Published numbers it should reproduce" in text  # names its source and anchors


def test_subpopbench_recipes_hold_hparams_registry_defaults():
    for recipe, steps_per_epoch, steps in (
        ("waterbirds_subpopbench", 45, 5001),  # ceil(4,795 / 108), N_STEPS
        ("celeba_subpopbench", 1508, 30001),  # ceil(162,770 / 108)
    ):
        runs = {r.params["method"]: r.train_config("x") for r in load_sweep(
            REPO / "sweeps" / f"{recipe}.yaml").expand(only={"seed": [0]})}  # fmt: skip
        assert set(runs) == {"ce", "groupdro", "jtt", "dfr"}
        for cfg in runs.values():
            assert (cfg.model, cfg.weights, cfg.optimizer, cfg.momentum) == (
                "resnet50", "IMAGENET1K_V1", "sgd", 0.9,
            )  # fmt: skip
            assert (cfg.lr, cfg.weight_decay, cfg.batch_size) == (1e-3, 1e-4, 108)
            assert cfg.lr_milestones == [] and cfg.select == "val/worst_group_accuracy"
        total = runs["ce"].epochs * steps_per_epoch
        assert steps <= total < steps + steps_per_epoch  # the published length, rounded up
        jtt = runs["jtt"]
        assert jtt.epochs + jtt.method_options["identify_epochs"] == runs["ce"].epochs
        assert jtt.method_options["upweight"] == 9  # jtt_lambda 10 = the sample + 9 copies
        assert runs["groupdro"].method_options["step_size"] == 0.01


@pytest.mark.parametrize(
    ("recipe", "epochs", "views", "clip"),
    [("utkface_biascon", 20, "biascon-utkface-plain", 10.0), ("celeba_biascon", 40, "flip", 50.0),
     ("celeba_biascon_blond", 10, "flip", 30.0)],
)  # fmt: skip
def test_biascon_recipes_hold_the_official_scripts_settings(recipe, epochs, views, clip):
    """Vanilla and BiasBal as train_*_ce.py / train_*_bb.py, BiasCon and BC+BB as the face
    recipes (train_*_bc.py --bb 0 / 1), the task's epochs and --ratio."""
    runs = {}
    for run in load_sweep(REPO / "sweeps" / f"{recipe}.yaml").expand(only={"seed": [0]}):
        cfg = run.train_config("x")
        runs.setdefault((cfg.method, cfg.recipe), cfg)
        assert (cfg.model, cfg.weights, cfg.optimizer) == ("tv_resnet18", "IMAGENET1K_V1", "adam")
        assert (cfg.lr, cfg.weight_decay, cfg.batch_size, cfg.epochs) == (1e-3, 1e-4, 128, epochs)
        assert cfg.lr_milestones == [epochs // 3, 2 * epochs // 3]
        assert cfg.select == "val/unbiased_accuracy"
        if cfg.method == "biascon":  # the CE loader's transform; the stream's aug=1 views
            assert (cfg.mode, cfg.ce_views, cfg.views) == ("joint", views, "supcontrast")
            mo = cfg.method_options
            assert (mo["ce_weight"], mo["lambda_con"], mo["sampler_clip"]) == (0.01, 1.0, clip)
            assert mo["bb_logits"] == (cfg.recipe.startswith("bc+bb"))
        else:
            assert (cfg.recipe, cfg.augment, cfg.views) == (None, True, views)
    data = "utkface" if recipe.startswith("utkface") else "celeba"
    assert set(runs) == {("ce", None), ("biasbal", None), ("biascon", f"biascon-{data}"),
                         ("biascon", f"bc+bb-{data}")}  # fmt: skip


def test_waterbirds_recipe_runs_at_toy_scale(tmp_path, monkeypatch):
    """bench/gpu_recipes.py --toy for the Waterbirds recipe: a synthetic tree, random stand-in
    weights in a fresh TORCH_HOME (after the offline message); ERM and JTT (the one whose
    length the shortening edits) keep it fast; the GPU check runs every method."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_torch_home"))
    monkeypatch.syspath_prepend(str(REPO / "bench"))
    sys.modules.pop("gpu_recipes", None)
    import gpu_recipes

    lines = []
    monkeypatch.setattr("builtins.print", lambda *a, **k: lines.append(" ".join(map(str, a))))
    assert gpu_recipes.main(["--toy", "--out", str(tmp_path), "--recipes",
                             "waterbirds_subpopbench", "--methods", "ce", "jtt"]) == 0  # fmt: skip
    text = "\n".join(lines)
    assert (
        "offline message (as a user sees it): pretrained weights ResNet50_Weights.IMAGENET1K_V1"
        in text
    )
    assert "resnet50-0676ba61.pth" in text
    for method in ("ce", "jtt"):
        assert f"waterbirds_subpopbench/method={method}/seed=0:" in text
    assert text.count("adjusted ") == 2 and text.count("path check only") == 2
    assert "input [32, 32] normalised by ResNet50_Weights.IMAGENET1K_V1" in text


def _synthetic_faces(folder: Path) -> None:
    """40 faces in UTKFace's naming: 16 (male, White), 16 (female, non-White), 4 of each
    conflicting group; 40 x 40 JPEGs of one random colour each plus noise."""
    import numpy as np
    from PIL import Image

    groups = [(0, 0, 16), (1, 1, 16), (1, 0, 4), (0, 1, 4)]  # (gender, race, count)
    k = 0
    for gender, race, n in groups:
        for _ in range(n):
            rng = np.random.default_rng(k)
            arr = np.clip(rng.integers(0, 256, 3) + rng.integers(-20, 20, (40, 40, 3)), 0, 255)
            folder.mkdir(parents=True, exist_ok=True)
            name = f"{25 + k % 30}_{gender}_{race}_20170101{k:09d}.jpg.chip.jpg"
            Image.fromarray(arr.astype(np.uint8)).save(folder / name, quality=95)
            k += 1


def test_face_recipe_runs_at_toy_scale(tmp_path, monkeypatch):
    """bc+bb-utkface on a 40-face synthetic tree, ResNet-18 from scratch at 32 px, 2 steps: the
    CE batch of 8 and the bias-balanced stream of 8 x 2 views, 0.01 CE (with log P(y|b)) +
    BiasCon; the run records the recipe's values."""
    from debias.train import train

    monkeypatch.setenv("DEBIAS_CACHE", str(tmp_path / "cache"))
    _synthetic_faces(tmp_path / "data" / "utkface")
    done = train(dict(
        out=str(tmp_path / "r"), root=str(tmp_path / "data"), dataset="utkface", bias="race",
        recipe="bc+bb-utkface", weights=None, image_size=32, epochs=1, lr_milestones=[],
        lr_schedule="constant", batch_size=8, max_steps=2, method_options={"stream_batch_size": 8},
        progress=False, device="cpu", represent=False,
    ), log=lambda *a, **k: None)  # fmt: skip
    cfg = done["config"]
    assert (cfg["recipe"], cfg["model"], cfg["views"], cfg["ce_views"]) == (
        "bc+bb-utkface", "tv_resnet18", "supcontrast", "biascon-utkface-plain"
    )  # fmt: skip
    mo = cfg["method_options"]
    assert (mo["ce_weight"], mo["sampler_clip"], mo["bb_logits"], mo["stream_batch_size"]) == (
        0.01, 10.0, True, 8
    )  # fmt: skip
    assert done["supervision"] == "train_bias"
    assert done["method"]["stages"][0]["views"] == 1  # the CE stream; the stream has two
    import pandas as pd

    epoch = pd.read_csv(tmp_path / "r" / done["history"]).iloc[-1]
    assert epoch["steps"] == 2
    total = 0.01 * epoch["train_ce"] + epoch["train_contrastive"]
    assert epoch["train_loss"] == pytest.approx(total, rel=1e-5)
