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
RECIPES = ("waterbirds_subpopbench", "celeba_subpopbench", "utkface_biascon", "celeba_biascon")


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


def test_biascon_recipes_hold_the_official_scripts_settings():
    for recipe, epochs, milestones in (("utkface_biascon", 20, [6, 13]),
                                       ("celeba_biascon", 40, [13, 26])):  # fmt: skip
        for run in load_sweep(REPO / "sweeps" / f"{recipe}.yaml").expand(only={"seed": [0]}):
            cfg = run.train_config("x")
            assert (cfg.model, cfg.weights, cfg.optimizer) == (
                "tv_resnet18",
                "IMAGENET1K_V1",
                "adam",
            )
            assert (cfg.lr, cfg.weight_decay, cfg.batch_size, cfg.epochs) == (
                1e-3,
                1e-4,
                128,
                epochs,
            )
            assert cfg.lr_milestones == [epochs // 3, 2 * epochs // 3] == milestones
            if cfg.method == "biascon":  # 0.01 CE + L_con, as CE + 100 L_con
                assert cfg.mode == "joint" and cfg.lambda_con == 100.0


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
