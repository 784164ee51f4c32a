"""`debias train`'s options come from TrainConfig; --config files; "did you mean" for unknown
keys; `debias sweep --set/--only` narrow a grid; the CelebA protocol's new name."""

from __future__ import annotations

import dataclasses
import json
import warnings

import pytest
import yaml

from debias.cli import build_parser, config_from_args, main
from debias.sweep.config import SweepSpec
from debias.train import TrainConfig, runfolder

TINY = [
    "--dataset", "digits", "--rho", "0.95", "--model", "smallconvnet", "--epochs", "1",
    "--batch-size", "64", "--max-steps", "2", "--device", "cpu", "--quiet",
]  # fmt: skip


def parse(*argv: str) -> TrainConfig:
    return config_from_args(build_parser().parse_args(["train", *argv]))


def test_a_config_reads_back_from_its_option_groups_in_python_files_and_sweeps(tmp_path):
    cfg = parse(*TINY, "--out", "o", "--method", "supcon", "--temperature", "0.2")
    groups = cfg.grouped()
    assert set(groups) == {"data", "method", "optim", "eval", "runtime"}
    assert groups["data"]["rho"] == 0.95 and groups["runtime"]["out"] == "o"
    assert groups["method"]["method_options"] == {"temperature": 0.2}
    assert TrainConfig.from_dict(groups) == cfg
    run = tmp_path / "grouped.yaml"
    run.write_text(yaml.safe_dump({
        "data": {"dataset": "digits", "rho": 0.95}, "method": {"method": "supcon",
        "temperature": 0.2}, "optim": {"epochs": 1, "batch-size": 64, "max_steps": 2},
        "runtime": {"out": "o", "device": "cpu", "progress": False},
        "model": "smallconvnet",  # flat keys may sit beside the groups
    }))  # fmt: skip
    assert parse("--config", str(run)) == cfg
    with pytest.raises(ValueError, match="option 'epochs' is in group 'data'; it belongs to 'op"):
        TrainConfig.from_dict({"data": {"rho": 0.9, "epochs": 2}, "out": "o"})
    with pytest.raises(ValueError, match="option 'rho' given twice"):
        TrainConfig.from_dict({"data": {"rho": 0.9}, "rho": 0.8, "out": "o"})
    spec = {"name": "g", "base": {"data": {"dataset": "digits", "rho": 0.9}, "epochs": 1},
            "grid": {"seed": [0, 1]}}  # fmt: skip
    runs = SweepSpec.from_dict(spec).expand()
    assert [(r.train_config("x").rho, r.train_config("x").seed) for r in runs] == [
        (0.9, 0),
        (0.9, 1),
    ]


def test_runtime_fields_are_declared_at_their_fields_and_leave_the_identity():
    from debias.train.config import RUNTIME_FIELDS

    assert RUNTIME_FIELDS == {
        "out", "device", "root", "download", "progress", "log_to",  # where and how it runs
        "eval_batch_size", "eval_every", "save_embeddings", "represent",  # change no number
        "represent_refits",  # of the run's own: only its representation section's DFR head
        "represent_every",  # adds history columns (the validation read-out) only
    }  # fmt: skip
    cfg = parse(*TINY, "--out", "a")
    other = parse(*TINY, "--out", "b", "--eval-every", "0", "--no-represent")
    assert cfg.identity() == other.identity() and "out" not in cfg.identity()
    assert cfg.identity() != parse(*TINY, "--out", "a", "--seed", "1").identity()
    help_text = build_parser()._subparsers._group_actions[0].choices["train"].format_help()
    runtime = help_text.split("runtime (where and how")[1]
    assert "--device" in runtime and "--out" in runtime and "--seed" not in runtime


def test_every_config_field_is_a_train_option_with_help():
    help_text = build_parser()._subparsers._group_actions[0].choices["train"].format_help()
    for f in dataclasses.fields(TrainConfig):
        flag = f.metadata["cli"].get("flag", "--" + f.name.replace("_", "-"))
        # A bool that is on by default shows only the flag that turns it off (--quiet).
        flag = f.metadata["cli"].get("false_flag", flag) if f.default is True else flag
        assert flag in help_text, f.name
        assert f.metadata["help"], f.name
    assert "--quiet" in help_text and "--config" in help_text and "--force" in help_text
    assert (
        "--no-represent" in help_text
        and parse(*TINY, "--out", "o", "--no-represent").represent is False
    )


def test_drifted_options_are_settable_and_defaults_come_from_the_dataclass(tmp_path):
    cfg = parse(*TINY, "--out", "o", "--lr-gamma", "0.5",
                "--eval-batch-size", "64", "--method", "jtt", "--method-option", "upweight=7",
                "--eval-every", "3", "--eval-limit", "100")  # fmt: skip
    assert (cfg.lr_gamma, cfg.eval_batch_size) == (0.5, 64)
    assert cfg.method_options == {"upweight": 7} and cfg.progress is False
    # a method's shortcut options (generated from its hparams) go to its method_options
    two = parse(*TINY, "--out", "o", "--method", "supcon", "--linear-lr", "0.02",
                "--temperature", "0.2", "--method-option", "linear_epochs=3")  # fmt: skip
    assert two.method_options == {"linear_lr": 0.02, "temperature": 0.2, "linear_epochs": 3}
    assert (two.linear_lr, two.temperature, two.linear_epochs) == (0.02, 0.2, 3)
    assert (cfg.eval_every, cfg.eval_limit) == (3, 100)
    plain = parse("--rho", "0.9", "--out", "o")
    default = TrainConfig(rho=0.9, out="o")
    assert plain == default and plain.progress is True and plain.augment is False


def test_bool_list_and_key_value_options_keep_their_behaviour():
    base = ["--rho", "0.9", "--out", "o"]
    assert parse(*base, "--method", "supcon").augment is True
    assert parse(*base, "--method", "supcon", "--no-augment").augment is False
    assert parse(*base, "--augment").augment is True
    assert parse(*base, "--lr-milestones").lr_milestones == []
    assert parse(*base, "--lr-milestones", "20", "40", "60").lr_milestones == [20, 40, 60]
    cfg = parse(*base, "--method", "cacr", "--loss-option", "tau_neg=2.0",
                "--loss-option", "symmetric=true")  # fmt: skip
    assert cfg.loss_options == {"tau_neg": 2.0, "symmetric": True}
    assert parse(*base, "--download", "--save-embeddings").download is True
    assert build_parser().parse_args(["train", *base, "--force"]).force is True


def test_config_file_with_command_line_overrides(tmp_path, capsys):
    run = tmp_path / "run.yaml"
    run.write_text(yaml.safe_dump({
        "dataset": "digits", "rho": 0.95, "model": "smallconvnet", "epochs": 1,
        "batch_size": 64, "max_steps": 2, "device": "cpu", "progress": False,
        "lr_gamma": 0.5, "method_options": {"upweight": 3}, "method": "jtt",
        "out": str(tmp_path / "from_file"),
    }))  # fmt: skip
    cfg = parse("--config", str(run), "--epochs", "2", "--method-option", "identify_epochs=1")
    assert (cfg.epochs, cfg.lr_gamma, cfg.out) == (2, 0.5, str(tmp_path / "from_file"))
    assert cfg.method_options == {"upweight": 3, "identify_epochs": 1}  # merged key by key
    js = tmp_path / "run.json"
    js.write_text(json.dumps({"rho": 0.9, "lr-gamma": 0.3}))
    assert parse("--config", str(js), "--out", "o").lr_gamma == 0.3
    rc = main(["train", "--config", str(run), "--method", "ce", "--method-option", "x=1"])
    assert (
        rc == 2 and "method 'ce' does not take option(s) 'upweight', 'x'" in capsys.readouterr().err
    )


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"rho": 0.9, "lr_gama": 0.5}, r"unknown training option(s) ['lr_gama'] (did you mean 'lr_gamma'?)"),
        ([1, 2], "expected a mapping of training option: value, got list"),
        ("rho: [", "is not valid yaml"),
    ],
)  # fmt: skip
def test_bad_config_file_is_a_one_line_error(tmp_path, capsys, content, message):
    run = tmp_path / "run.yaml"
    run.write_text(content if isinstance(content, str) else yaml.safe_dump(content))
    rc = main(["train", "--config", str(run), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("debias train: error: --config") and err.count("\n") == 1
    assert message in err, err
    assert not (tmp_path / "o").exists()


def test_out_is_required_and_unknown_keys_get_a_hint(tmp_path, capsys):
    rc = main(["train", "--rho", "0.9"])
    assert rc == 2 and "--out is required" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"\['sed'\] \(did you mean 'seed'\?\)"):
        TrainConfig.from_dict({"rho": 0.9, "sed": 1})
    with pytest.raises(ValueError, match=r"grid: unknown .*\['sed'\] \(did you mean 'seed'\?\)"):
        SweepSpec.from_dict({"name": "s", "grid": {"sed": [0]}})


def test_cli_train_with_a_config_file_runs(tmp_path, capsys):
    run = tmp_path / "run.yaml"
    run.write_text("dataset: digits\nrho: 0.95\nmodel: smallconvnet\nepochs: 1\n"
                   "batch_size: 64\nmax_steps: 2\ndevice: cpu\nlr_gamma: 0.5\n")  # fmt: skip
    out = tmp_path / "r"
    assert main(["train", "--config", str(run), "--quiet", "--out", str(out)]) == 0
    saved = json.loads((out / "metrics.json").read_text())["config"]
    assert saved["lr_gamma"] == 0.5 and saved["progress"] is False and saved["epochs"] == 1


# -- sweep --set / --only ------------------------------------------------------------------------
SPEC = {
    "name": "g",
    "base": {"dataset": "digits", "model": "smallconvnet", "epochs": 1, "max_steps": 2,
             "batch_size": 32, "device": "cpu"},
    "grid": {"rho": [0.99, 0.95, 0.9], "method": ["ce", "reweight"], "seed": [0, 1]},
}  # fmt: skip


def dry(tmp_path, capsys, *extra):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(SPEC, sort_keys=False))
    rc = main(["sweep", str(path), "--dry-run", "--out", str(tmp_path / "o"), *extra])
    out, err = capsys.readouterr()
    runs = [line.split(":")[0] for line in out.splitlines() if line.startswith("rho=")]
    return rc, runs, err


def test_sweep_set_on_a_grid_key_narrows_the_grid(tmp_path, capsys):
    rc, runs, _ = dry(tmp_path, capsys)
    assert rc == 0 and len(runs) == 12
    rc, runs, _ = dry(tmp_path, capsys, "--set", "rho=0.95")
    assert rc == 0 and runs == [
        f"rho=0.95/method={m}/seed={s}" for m in ("ce", "reweight") for s in (0, 1)
    ]
    rc, runs, err = dry(tmp_path, capsys, "--set", "rho=0.97")
    assert rc == 2 and runs == []
    assert "--set rho=0.97: 0.97 not in the grid's values [0.99, 0.95, 0.9]" in err


def test_sweep_only_runs_a_subset_of_the_grid(tmp_path, capsys):
    rc, runs, _ = dry(tmp_path, capsys, "--only", "rho=0.9,0.99", "--only", "seed=1",
                      "--only", "method=reweight")  # fmt: skip
    assert rc == 0 and runs == ["rho=0.99/method=reweight/seed=1", "rho=0.9/method=reweight/seed=1"]
    rc, _, err = dry(tmp_path, capsys, "--only", "sed=1")
    assert rc == 2 and "--only sed: not a grid key of this sweep (did you mean 'seed'?)" in err
    rc, _, err = dry(tmp_path, capsys, "--only", "method=ce,groupdro")
    assert rc == 2 and "'groupdro' not in the grid's values ['ce', 'reweight']" in err


def test_narrowed_pass_keeps_the_manifest_of_the_full_one(tmp_path):
    from debias.sweep.runner import _Sweep

    spec = SweepSpec.from_dict(SPEC)
    full = _Sweep(spec, spec.expand(), tmp_path, print)
    full.write_manifest()
    part = _Sweep(spec, spec.expand(only={"seed": [0]}), tmp_path, print)
    part.write_manifest()
    listed = json.loads((tmp_path / "sweep.json").read_text())["runs"]
    assert sorted(r["run"] for r in listed) == sorted(r.name for r in spec.expand())


# -- CelebA protocol name --------------------------------------------------------------------------
def test_protocol_groupdro_is_a_deprecated_alias_of_official(tmp_path):
    with pytest.warns(FutureWarning, match="protocol 'groupdro' is deprecated, use 'official'"):
        cfg = TrainConfig(out=str(tmp_path), dataset="celeba", protocol="groupdro")
    assert cfg.protocol == "official"
    assert TrainConfig(out=str(tmp_path), dataset="celeba").protocol == "official"
    # A metrics.json written under the old name is the same run.
    old = cfg.to_dict() | {"protocol": "groupdro"}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert runfolder.config_diff(old, cfg) == {}
        assert runfolder.saved_config(old)["protocol"] == "official"
    with pytest.raises(ValueError, match=r"protocol must be one of \['official', 'biascon'\]"):
        TrainConfig(out=str(tmp_path), dataset="celeba", protocol="dro")


def test_protocol_alias_warns_in_one_line_on_the_cli(tmp_path):
    """In a real process (pytest records warnings itself): one line on stderr, and it runs."""
    import subprocess
    import sys

    path = tmp_path / "s.yaml"
    path.write_text(
        yaml.safe_dump({"name": "c", "base": {"dataset": "celeba", "protocol": "groupdro"}})
    )
    argv = ["sweep", str(path), "--dry-run", "--out", str(tmp_path / "o")]
    done = subprocess.run(
        [sys.executable, "-m", "debias", *argv], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == (
        "debias sweep: warning: protocol 'groupdro' is deprecated, use 'official' (the official "
        "CelebA partitions; not the Group DRO method)\n"
    )


# -- strict types and duplicate keys at the config boundary (issue 34) ----------------------------
@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("epochs: 1.5\n", "epochs must be an integer; got 1.5"),
        ("epochs: true\n", "epochs must be an integer; got True"),
        ('epochs: "2"\n', "epochs must be an integer; got '2'"),
        ("batch_size: 64.5\n", "batch_size must be an integer; got 64.5"),
        ('lr: "0.1"\n', "lr must be a number; got '0.1'"),
        ("augment: 1\n", "augment must be true/false or null; got 1"),
        ("epochs: 1\nlr: 0.1\nepochs: 2\n", "key 'epochs' is given twice (lines 1 and 3)"),
        ("optim:\n  lr: 0.1\n  lr: 0.01\n", "key 'lr' is given twice (lines 2 and 3)"),
    ],
)
def test_config_files_are_typed_strictly_and_refuse_a_key_given_twice(tmp_path, capsys, text, says):
    f = tmp_path / "c.yaml"
    f.write_text(text)
    argv = ["--dataset", "digits", "--rho", "0.95", "--max-steps", "1", "--device", "cpu"]
    assert main(["train", *argv, "--config", str(f), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and says in err, err
    assert not (tmp_path / "o").exists()


def test_json_and_sweep_files_refuse_duplicates_and_non_utf8(tmp_path):
    from debias.train.config import load_config_file

    (tmp_path / "c.json").write_text('{"epochs": 1, "epochs": 2}')
    with pytest.raises(ValueError, match="'epochs' is given twice"):
        load_config_file(tmp_path / "c.json")
    (tmp_path / "l1.yaml").write_bytes("# café\nepochs: 1\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"l1.yaml is not UTF-8 text.*save it as UTF-8"):
        load_config_file(tmp_path / "l1.yaml")
    grid = "name: g\nbase: {dataset: digits, rho: 0.9}\ngrid:\n  seed: [0]\n  seed: [1]\n"
    (tmp_path / "s.yaml").write_text(grid)
    with pytest.raises(ValueError, match=r"not valid YAML: key 'seed' is given twice \(lines 4"):
        SweepSpec.load(tmp_path / "s.yaml")


def test_python_api_types_are_checked_where_the_config_is_made(tmp_path):
    from pathlib import Path

    from debias.train import train

    base = {"dataset": "digits", "rho": 0.9}
    for bad, says in [
        ({"out": None}, "out must be a folder path"),
        ({"out": ""}, "out must be a folder path"),
        ({"epochs": 1.5}, "epochs must be an integer"),
        ({"epochs": True}, "epochs must be an integer"),
        ({"rho": True}, "rho must be a number or null"),
        ({"select": 5}, "select must be a string"),
        ({"lr_milestones": "5"}, "lr_milestones must be a list or null"),
    ]:
        with pytest.raises(TypeError, match=says):
            TrainConfig(**({"out": "o"} | base | bad))
    assert TrainConfig(out=Path("o"), **base).out == "o"  # a Path is taken, recorded as str
    assert TrainConfig(out="o", lr=1, **base).lr == 1  # an int is a number
    with pytest.raises(TypeError, match="train\\(\\) takes a TrainConfig or a mapping"):
        train("some/path")


@pytest.mark.parametrize("metric", ["worst_group_y", "worst_group_b", "n", "n_groups", "nope"])
def test_selection_needs_a_metric_with_a_direction(metric):
    with pytest.raises(ValueError, match="val/worst_group_accuracy, val/aligned_accuracy"):
        parse(*TINY, "--out", "o", "--select", f"val/{metric}")
    assert parse(*TINY, "--out", "o", "--select", "val/equalized_odds_mean_gap")
