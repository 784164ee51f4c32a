"""A dataset is one DatasetSpec: a user's dataset with an option of its own, registered from
outside the package (a plugin file, as a user would write it), trains, resumes, sweeps and
reports; bad values of its options are one-line errors; the built-in specs hold the facts the
parallel tables held."""

from __future__ import annotations

import json
import sys

import pytest
from conftest import quiet

from debias.data import registry
from debias.plugins import ENV, load_plugins
from debias.train import TrainConfig, train
from debias.train.runfolder import config_diff

# A user's module: 8x8 images whose target is a blue stripe and whose bias is the background
# (red or green); ``bias_strength`` (new, required) is the aligned fraction of training images,
# ``image_size`` (a built-in option) has a default of its own.
PLUGIN = """
import torch

from debias import DataOption, DatasetSpec, register_dataset
from debias.data.base import TensorImageDataset
from debias.data.spec import number

CALLS = []


def stripes(*, data_seed, root, bias_strength, image_size):
    CALLS.append({"bias_strength": bias_strength, "image_size": image_size})

    def make(n, aligned_fraction, seed):
        gen = torch.Generator().manual_seed(1000 * data_seed + seed)
        y = torch.randint(0, 2, (n,), generator=gen)
        b = torch.where(torch.rand(n, generator=gen) < aligned_fraction, y, 1 - y)
        img = torch.zeros(n, 3, image_size, image_size, dtype=torch.uint8)
        img[:, 0] = (200 * (b == 0)).to(torch.uint8)[:, None, None]
        img[:, 1] = (200 * (b == 1)).to(torch.uint8)[:, None, None]
        img[y == 1, 2, :, : image_size // 2] = 255
        return TensorImageDataset(
            img, y, b, aligned_groups=[(0, 0), (1, 1)], num_classes=2, num_bias=2
        )

    return {
        "train": make(256, bias_strength, 1),
        "val": make(64, 0.5, 2),
        "test": make(128, 0.5, 3),
    }


SPEC = register_dataset(
    DatasetSpec(
        "stripes",
        stripes,
        options=(
            DataOption(
                "bias_strength",
                help="fraction of bias-aligned training images",
                required=True,
                check=number(low=0, high=1),
            ),
            DataOption("image_size", 8, "side length in pixels", check=number(low=4, integer=True)),
        ),
        colour_bias=True,
        level_keys=("bias_strength",),
        group_axes=("stripe", "background"),
    ),
    replace=True,
)
"""
TINY = dict(model="smallconvnet", epochs=1, batch_size=32, max_steps=2, lr_milestones=[],
            progress=False, device="cpu", represent=False)  # fmt: skip


@pytest.fixture
def stripes(tmp_path, monkeypatch):
    """The plugin imported here and, through DEBIAS_PLUGINS, in every process debias starts."""
    path = tmp_path / "stripes_plugin.py"
    path.write_text(PLUGIN)
    monkeypatch.setenv(ENV, str(path))
    saved = dict(registry.DATASETS)
    assert load_plugins() == [str(path)]
    name, module = next(
        (n, m)
        for n, m in sys.modules.items()
        if getattr(m, "__file__", None) == str(path.resolve())
    )
    yield module
    registry.DATASETS.clear()
    registry.DATASETS.update(saved)
    del sys.modules[name]


def test_a_new_option_reaches_the_loader_is_recorded_and_resumes(stripes, tmp_path):
    cfg = TrainConfig(out=str(tmp_path / "r"), dataset="stripes",
                      data_options={"bias_strength": 0.9}, **TINY)  # fmt: skip
    assert cfg.image_size == 8 and cfg.rho is None  # its own default; not another dataset's
    assert cfg.data_kwargs() == {"data_seed": 0, "root": None, "bias_strength": 0.9,
                                 "image_size": 8}  # fmt: skip
    res = train(cfg, log=quiet)
    assert stripes.CALLS == [{"bias_strength": 0.9, "image_size": 8}]
    saved = json.loads((tmp_path / "r" / "metrics.json").read_text())["config"]
    assert saved["data_options"] == {"bias_strength": 0.9} and saved["image_size"] == 8
    assert res["splits"]["test"]["n"] == 128
    assert config_diff(saved, cfg) == {}
    # the same run asked for again is the finished run; another value is another run
    assert train(cfg, log=quiet)["splits"] == res["splits"]
    other = TrainConfig(**{**cfg.to_dict(), "data_options": {"bias_strength": 0.5}})
    assert config_diff(saved, other) == {
        "data_options": ({"bias_strength": 0.9}, {"bias_strength": 0.5})
    }


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({}, r"dataset 'stripes' needs bias_strength \(fraction of bias-aligned training "
             r"images; e\.g\. .*--data-option bias_strength=VALUE"),
        ({"data_options": {"bias_strength": 1.5}}, r"bias_strength must be a number >= 0 and "
                                                   r"<= 1; got 1\.5"),
        ({"data_options": {"bias_strenght": 0.9}}, r"data_options \['bias_strenght'\] do not "
                                                   r"apply to dataset 'stripes' \(did you mean "
                                                   r"'bias_strength'\?\)"),
        ({"data_options": {"bias_strength": 0.9}, "rho": 0.9}, r"rho=0\.9 do not apply to "
                                                               r"dataset 'stripes'"),
        ({"data_options": {"rho": 0.9}}, r"data_options \['rho'\]: give rho as the option"),
    ],
)  # fmt: skip
def test_bad_options_of_a_registered_dataset(stripes, tmp_path, options, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(out=str(tmp_path / "r"), dataset="stripes", **TINY, **options)
    assert stripes.CALLS == []
    with pytest.raises(ValueError, match=r"data_options \['bias_strength'\] do not apply"):
        TrainConfig(out=str(tmp_path / "r"), rho=0.9, data_options={"bias_strength": 0.9})


@pytest.mark.slow
def test_a_registered_dataset_sweeps_in_workers_and_reports(stripes, tmp_path):
    from debias.report import make_report
    from debias.sweep import run_sweep

    spec = {
        "name": "stripes",
        "base": {"dataset": "stripes", **TINY},
        "grid": {"data_options": [{"bias_strength": 0.95}, {"bias_strength": 0.6}]},
    }
    result = run_sweep(spec, out=tmp_path / "sw", log=quiet)
    assert result.ok, result.runs
    assert stripes.CALLS == []  # the worker process loaded the data, through DEBIAS_PLUGINS
    for value in (0.95, 0.6):
        run = tmp_path / "sw" / f"data_options=bias_strength-{value}"
        assert json.loads((run / "metrics.json").read_text())["config"]["data_options"] == {
            "bias_strength": value
        }
    paths = make_report(tmp_path / "sw", tmp_path / "rep")
    import pandas as pd

    summary = pd.read_csv(paths["summary"])
    assert sorted(summary["bias_strength"].unique()) == [0.6, 0.95]  # the report's bias level
    assert "bias_strength" in paths["report"].read_text()


def test_the_builtin_specs_hold_the_facts_of_the_old_tables():
    spec = registry.dataset_spec
    assert spec("biased-mnist").defaults == {"rho": None, "val_size": 5000, "palette": "rebias",
                                             "download": False}  # fmt: skip
    assert spec("metadata:x.csv") is spec("metadata")
    assert [s.required for s in registry.DATASETS.values()] == [("rho",), ("rho",), (), (), (), ()]
    assert {n: s.colour_bias for n, s in registry.DATASETS.items()} == {
        "biased-mnist": True, "digits": True, "utkface": False, "celeba": False,
        "waterbirds": False, "metadata": False,
    }  # fmt: skip
    assert spec("celeba").level_keys == ("target", "bias", "protocol")
    assert spec("utkface").augment == {"crop_padding": 4, "rotation": 10.0, "hflip": True}
    assert {spec(n).defaults["image_size"] for n in ("utkface", "celeba", "metadata")} == {64}
    assert registry.DEFAULT_AUGMENT["digits"]["hflip"] is False
    with pytest.raises(ValueError, match=r"unknown dataset 'digit' \(did you mean 'digits'\?\)"):
        spec("digit")
    with pytest.raises(ValueError, match=r"dataset 'digits' takes no option\(s\) \['val_size'\]"):
        registry.load_splits("digits", rho=0.9, val_size=10)


def test_old_form_registration_keeps_the_builtin_check(tmp_path):
    saved = dict(registry.DATASETS)
    try:
        registry.register_dataset(
            "mine", lambda **kw: {}, options={"rho": None}, level_keys=("rho",)
        )
        with pytest.raises(ValueError, match=r"rho .* <= 1; got 2"):
            TrainConfig(out=str(tmp_path), dataset="mine", rho=2)
        with pytest.raises(ValueError, match="registered already"):
            registry.register_dataset(registry.dataset_spec("mine"))
    finally:
        registry.DATASETS.clear()
        registry.DATASETS.update(saved)


def test_a_plugin_that_cannot_be_imported_is_a_one_line_cli_error(tmp_path, monkeypatch, capsys):
    from debias.cli import main

    monkeypatch.setenv(ENV, str(tmp_path / "missing.py"))
    assert main(["methods"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"debias methods: error: {ENV}: cannot import") and err.count("\n") == 1
