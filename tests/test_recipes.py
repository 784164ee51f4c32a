"""Recipes as data (debias/recipes/*.yaml): each names its official sources, runs with its own
loss and with the others swapped in, is selectable from Python, a --config file, the command
line and a sweep base, every value overridable and recorded in the run's config."""

from __future__ import annotations

import pytest
import yaml

from debias.cli import build_parser, config_from_args, main
from debias.recipes import RECIPES, get_recipe, load_recipe
from debias.sweep.config import load_sweep
from debias.train import TrainConfig

SWAPS = ("contex", "supcon", "biascon", "fairkl", "simclr", "cacr")


def test_every_recipe_names_its_official_sources_and_runs_its_own_loss():
    faces = {f"{r}-{d}" for r in ("biascon", "bc+bb") for d in ("utkface", "celeba")}
    assert set(RECIPES) == {"supcontrast", "biascon", "bc+bb", "fairkl", "cpu-geometry"} | faces
    repos = {
        "supcontrast": "HobbitLong/SupContrast", "biascon": "grayhong/bias-contrastive-learning",
        "bc+bb": "grayhong/bias-contrastive-learning",
        "fairkl": "EIDOSLAB/unbiased-contrastive-learning", "cpu-geometry": "sweeps/",
    } | dict.fromkeys(faces, "grayhong/bias-contrastive-learning")  # fmt: skip
    data = {"utkface": {"dataset": "utkface", "bias": "race"},
            "celeba": {"dataset": "celeba", "target": "Heavy_Makeup", "bias": "Male"}}  # fmt: skip
    for name, recipe in RECIPES.items():
        assert any(repos[name] in s for s in recipe.sources), name
        kw = data.get(name.rpartition("-")[2], {"rho": 0.99})
        cfg = TrainConfig(out="x", recipe=name, **kw)
        assert (cfg.recipe, cfg.method) == (name, recipe.loss)
        for key, value in recipe.options.items():
            if key not in ("method_options", "temperature", "base_temperature"):
                assert getattr(cfg, key) == value, (name, key)
        for key, value in recipe.options.get("method_options", {}).items():
            assert cfg.method_options[key] == value


def test_published_values_of_the_recipes():
    bc = TrainConfig(out="x", rho=0.99, recipe="biascon")
    assert (bc.mode, bc.views, bc.optimizer, bc.lr, bc.weight_decay) == (
        "joint", "biascon-mnist", "adam", 1e-3, 1e-4
    )  # fmt: skip
    assert (bc.batch_size, bc.epochs, bc.lr_milestones, bc.lr_schedule) == (
        128, 80, [26, 53], "multistep"
    )  # fmt: skip
    mo = bc.method_options
    assert (mo["ce_weight"], mo["stream_batch_size"], mo["sampler_clip"], mo["temperature"]) == (
        0.01, 64, 10.0, 0.07
    )  # fmt: skip
    assert (mo["stream_sampler"], mo["projection"], mo["bb_logits"]) == (
        "bias-balanced",
        "none",
        False,
    )
    assert bc.ce_views == "none"  # the CE loader is get_color_mnist(aug=False)
    assert TrainConfig(out="x", rho=0.99, recipe="bc+bb").method_options["bb_logits"] is True
    fk = TrainConfig(out="x", rho=0.99, recipe="fairkl")
    assert (fk.mode, fk.views, fk.optimizer, fk.momentum, fk.lr, fk.batch_size) == (
        "online", "none", "sgd", 0.9, 1e-3, 256
    )  # fmt: skip
    assert (fk.lr_milestones, fk.method_options["last_activation"]) == ([26, 53], "tanh")
    assert fk.method_options["n_views"] == 1 and fk.method_options["head_lr"] == 1e-3
    sc = TrainConfig(out="x", rho=0.99, recipe="supcontrast")
    assert (sc.views, sc.optimizer, sc.lr_schedule, sc.momentum) == (
        "supcontrast",
        "sgd",
        "cosine",
        0.9,
    )
    assert sc.method_options["linear_milestones"] == [60, 75, 90]
    assert sc.method_options["linear_gamma"] == 0.2 and sc.method_options["linear_lr"] == 0.1


@pytest.mark.parametrize(
    ("name", "data", "clip", "epochs", "ce_views"),
    [
        ("utkface", {"dataset": "utkface", "bias": "age"}, 10.0, 20, "biascon-utkface-plain"),
        ("celeba", {"dataset": "celeba", "target": "Heavy_Makeup", "bias": "Male"}, 50.0, 40,
         "flip"),
    ],
)  # fmt: skip
def test_published_values_of_the_face_recipes(name, data, clip, epochs, ce_views):
    """train_utk_face_bc.py / train_celeba_bc.py (task makeup) as read: FCResNet18 =
    resnet18(pretrained=True), the stream's aug=1 views, the CE loader's aug=False transform."""
    for recipe, bb in ((f"biascon-{name}", False), (f"bc+bb-{name}", True)):
        cfg = TrainConfig(out="x", recipe=recipe, **data)
        assert (cfg.model, cfg.weights, cfg.mode, cfg.views, cfg.ce_views) == (
            "tv_resnet18", "IMAGENET1K_V1", "joint", "supcontrast", ce_views
        )  # fmt: skip
        assert (cfg.optimizer, cfg.lr, cfg.weight_decay, cfg.batch_size, cfg.epochs) == (
            "adam", 1e-3, 1e-4, 128, epochs
        )  # fmt: skip
        assert cfg.lr_milestones == [epochs // 3, epochs * 2 // 3]
        mo = cfg.method_options
        assert (mo["ce_weight"], mo["lambda_con"], mo["stream_batch_size"], mo["temperature"]) == (
            0.01, 1.0, 64, 0.07
        )  # fmt: skip
        assert (mo["stream_sampler"], mo["sampler_clip"], mo["projection"], mo["bb_logits"]) == (
            "bias-balanced", clip, "none", bb
        )  # fmt: skip


@pytest.mark.parametrize("recipe", ["supcontrast", "biascon", "bc+bb", "cpu-geometry"])
def test_the_contrastive_term_swaps_inside_a_recipe(recipe):
    own = TrainConfig(out="x", rho=0.99, recipe=recipe)
    for loss in SWAPS:
        cfg = TrainConfig(out="x", rho=0.99, recipe=recipe, method=loss)
        same = {k: v for k, v in cfg.identity().items() if k not in ("method", "method_options")}
        assert same == {
            k: v for k, v in own.identity().items() if k not in ("method", "method_options")
        }
        if loss == "cacr":  # no temperature: the recipe's is left out, not an error
            assert "temperature" not in cfg.method_options


def test_a_one_view_recipe_refuses_a_loss_with_a_self_term_with_the_fix():
    with pytest.raises(ValueError, match="needs n_views=2.*--method-option n_views=2"):
        TrainConfig(out="x", rho=0.99, recipe="fairkl", method="contex")
    cfg = TrainConfig(out="x", rho=0.99, recipe="fairkl", method="contex",
                      method_options={"n_views": 2})  # fmt: skip
    assert cfg.method_options["last_activation"] == "tanh"  # the rest of the recipe stays


def test_every_value_is_overridable_and_recorded():
    cfg = TrainConfig(out="x", rho=0.99, recipe="biascon", lr=0.01, epochs=3, lr_milestones=[1],
                      method_options={"ce_weight": 0.1}, temperature=0.2)  # fmt: skip
    assert (cfg.lr, cfg.epochs, cfg.lr_milestones) == (0.01, 3, [1])
    assert cfg.method_options["ce_weight"] == 0.1 and cfg.method_options["temperature"] == 0.2
    assert cfg.method_options["stream_batch_size"] == 64  # the rest of the recipe's
    saved = cfg.to_dict()
    assert saved["recipe"] == "biascon" and saved["lr"] == 0.01
    assert TrainConfig.from_dict(saved).to_dict() == saved  # a saved run reads back equal


def test_recipe_from_a_config_file_the_command_line_and_a_sweep_base(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"method": {"recipe": "fairkl"}, "data": {"rho": 0.99}}))
    cli = config_from_args(build_parser().parse_args(
        ["train", "--config", str(path), "--out", "o", "--lr", "0.01"]
    ))  # fmt: skip
    assert (cli.recipe, cli.mode, cli.optimizer, cli.lr) == ("fairkl", "online", "sgd", 0.01)
    cli = config_from_args(build_parser().parse_args(
        ["train", "--recipe", "bc+bb", "--method", "contex", "--rho", "0.99", "--out", "o"]
    ))  # fmt: skip
    assert (cli.method, cli.method_options["bb_logits"]) == ("contex", True)
    sweep = tmp_path / "s.yaml"
    sweep.write_text(yaml.safe_dump({
        "name": "s", "out": str(tmp_path / "runs"),
        "base": {"dataset": "biased-mnist", "rho": 0.99, "recipe": "biascon"},
        "grid": {"method": ["biascon", "contex", "supcon"], "seed": [0]},
    }))  # fmt: skip
    runs = load_sweep(sweep).expand()
    assert [r.config["method"] for r in runs] == ["biascon", "contex", "supcon"]
    assert all(TrainConfig.from_dict(r.config).mode == "joint" for r in runs)


def test_unknown_recipe_and_the_listing(capsys, tmp_path):
    with pytest.raises(ValueError, match="recipe 'biascn'.*did you mean 'biascon'"):
        TrainConfig(out="x", rho=0.99, recipe="biascn")
    assert main(["recipes"]) == 0
    out = capsys.readouterr().out
    for name in RECIPES:
        assert f"--recipe {name}" in out
    assert "source: grayhong/bias-contrastive-learning train_biased_mnist_bc.py" in out
    bad = tmp_path / "r.yaml"
    bad.write_text("name: r\ntitle: t\nsources: [a: b]\nloss: supcon\noptions: {}\n")
    with pytest.raises(ValueError, match="must be text"):
        load_recipe(bad)
    assert get_recipe("fairkl").notes


@pytest.mark.filterwarnings("ignore:colour jitter is on", "ignore:aligned pair")
def test_a_recipe_run_trains_with_its_components(tmp_path):
    from debias.train import train

    done = train(dict(
        out=str(tmp_path / "r"), rho=0.99, recipe="bc+bb", method="contex", model="lenet",
        epochs=2, lr_milestones=[1], batch_size=32, max_steps=3, train_limit=512,
        eval_limit=64, val_size=200, progress=False, device="cpu", represent=False,
        method_options={"stream_batch_size": 16},
    ), log=lambda *a: None)  # fmt: skip
    assert done["config"]["recipe"] == "bc+bb" and done["supervision"] == "train_bias"
    assert done["method"]["stages"][0]["views"] == 1  # the CE stream; the stream has two


def test_step_recipes_move_their_milestones_with_the_epochs_as_the_official_code():
    from debias.recipes import recipe_options

    # train_biased_mnist_bc.py: decay_epochs = [epochs // 3, epochs * 2 // 3]
    for name in ("biascon", "bc+bb", "fairkl"):
        assert recipe_options(name, {})["lr_milestones"] == [26, 53]
        assert recipe_options(name, {"epochs": 80})["lr_milestones"] == [26, 53]
        assert recipe_options(name, {"epochs": 16})["lr_milestones"] == [5, 10]
        assert recipe_options(name, {"epochs": 4})["lr_milestones"] == [1, 2]
        assert recipe_options(name, {"epochs": 2})["lr_milestones"] == [1]
        one = recipe_options(name, {"epochs": 1})  # no step fits: a constant lr
        assert (one["lr_schedule"], one["lr_milestones"]) == ("constant", [])
        # given milestones, or another schedule, are the run's own
        assert recipe_options(name, {"epochs": 16, "lr_milestones": [3]})["lr_milestones"] == [3]
    assert "lr_milestones" not in recipe_options("supcontrast", {"epochs": 16})  # cosine
    cfg = TrainConfig(out="x", rho=0.997, recipe="biascon", epochs=16)
    assert (cfg.lr_schedule, cfg.lr_milestones) == ("multistep", [5, 10])
