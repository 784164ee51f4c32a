"""Bad input is an error (or a loud warning) that names the input, the value and what was
expected; sweeps validate in dry-run as a run would, survive reruns and a killed parent."""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from debias.cli import main
from debias.train import TrainConfig

TINY = [
    "--dataset", "digits", "--rho", "0.95", "--model", "smallconvnet", "--epochs", "1",
    "--batch-size", "64", "--max-steps", "2", "--device", "cpu", "--quiet",
]  # fmt: skip
SWEEP_BASE = {
    "dataset": "digits", "model": "smallconvnet", "epochs": 1, "max_steps": 2,
    "batch_size": 32, "device": "cpu", "rho": 0.99,
}  # fmt: skip


def run_cli(args, capsys) -> tuple[int, str]:
    rc = main(args)
    return rc, capsys.readouterr().err


# -- TrainConfig ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--max-steps", "0"], r"max_steps .* must be an integer >= 1; got 0"),
        (["--max-steps", "-3"], r"max_steps .* got -3"),
        (["--train-limit", "0"], r"train_limit .* must be an integer >= 2; got 0"),
        (["--rho", "1.5"], r"rho .* <= 1; got 1.5"),
        (["--rho", "nan"], r"rho .* got nan"),
        (["--protocol", "biascon"], r"protocol='biascon' do not apply to dataset 'digits'"),
        (["--target", "gender", "--bias", "race"], r"bias='race', target='gender' do not apply"),
        (["--val-size", "100"], r"val_size=100 do not apply to dataset 'digits'"),
        (["--lr", "0"], r"lr must be a number > 0; got 0"),
        # a milestone outside 1..epochs-1 of the main stage never takes effect
        (["--epochs", "3", "--lr-milestones", "1", "-1"], r"\[1, -1\]: -1 not allowed; "
         r"expected integers 1\.\.2, epochs of the 3-epoch main stage \(--epochs\)"),
        (["--epochs", "3", "--lr-milestones", "3"], r"lr_milestones \[3\]: 3 not allowed"),
        (["--lr-milestones", "1"], r"1 not allowed; expected none in a 1-epoch run"),
        (["--select", "worst_group_accuracy"], r"select='worst_group_accuracy': expected 'last' "
         r"or 'val/<metric>'; did you mean 'val/worst_group_accuracy'\?$"),
        (["--select", "test/unbiased_accuracy"], r"selection on a test split is not allowed \(got "
         r"'test'\); use 'val/unbiased_accuracy'"),
        (["--select", "worst_grup"], r"such as 'val/worst_group_accuracy' \(did you mean"),
        (["--method", "contex", "--loss-option", "tau_neg=2.0"], r"loss 'contex' takes no "
         r"option 'tau_neg'; it takes temperature, base_temperature, self_weight, gather "
         r"\(tau_neg is an "
         r"option of cacr\)$"),
        (["--method", "supcon", "--loss-option", "temprature=0.1"], r"did you mean 'temperature'"),
    ],
)  # fmt: skip
def test_train_options_checked_before_anything_runs(tmp_path, capsys, extra, message):
    out = tmp_path / "r"
    rc, err = run_cli(["train", *TINY, *extra, "--out", str(out)], capsys)
    assert rc == 2
    assert err.startswith("debias train: error: ") and err.count("\n") == 1
    import re

    assert re.search(message, err), err
    assert not out.exists()


def test_rho_with_utkface_is_an_error_and_defaults_come_from_the_dataset(tmp_path):
    with pytest.raises(ValueError, match=r"rho=0.99 do not apply to dataset 'utkface'"):
        TrainConfig(out=str(tmp_path), dataset="utkface", rho=0.99)
    faces = TrainConfig(out=str(tmp_path), dataset="utkface")
    assert (faces.target, faces.bias, faces.bias_rate, faces.image_size) == (
        "gender",
        "race",
        0.9,
        64,
    )
    # What the dataset does not take is recorded as None, not as a value that did nothing.
    assert faces.rho is None and faces.val_size is None and faces.protocol is None
    mnist = TrainConfig(out=str(tmp_path), rho=0.99)
    assert (mnist.val_size, mnist.palette, mnist.bias_rate, mnist.protocol) == (
        5000,
        "rebias",
        None,
        None,
    )
    with pytest.raises(
        ValueError, match=r"val_size must be an integer >= 1 and <= 59999; got 70000"
    ):
        TrainConfig(out=str(tmp_path), rho=0.99, val_size=70000)
    with pytest.raises(ValueError, match=r"dataset 'biased-mnist' needs rho"):
        TrainConfig(out=str(tmp_path))
    with pytest.raises(ValueError, match=r"download=True do not apply to dataset 'celeba'"):
        TrainConfig(out=str(tmp_path), dataset="celeba", download=True)


# -- sweep ---------------------------------------------------------------------------------------
def write_yaml(path: Path, doc) -> Path:
    import yaml

    path.write_text("" if doc is None else yaml.safe_dump(doc))
    return path


@pytest.mark.parametrize(
    ("base", "message"),
    [
        ({"rho": 1.5}, r"rho .* got 1.5"),
        ({"rho": math.nan}, r"rho .* got nan"),
        ({"dataset": "biased-mnist", "val_size": 70000}, r"val_size .* got 70000"),
        ({"protocol": "groupdro"}, r"protocol='groupdro' do not apply"),
    ],
)
def test_sweep_dry_run_validates_like_a_run(tmp_path, capsys, base, message):
    import re

    cfg = write_yaml(tmp_path / "s.yaml", {"base": SWEEP_BASE | base, "grid": {"seed": [0]}})
    rc, err = run_cli(["sweep", str(cfg), "--dry-run", "--out", str(tmp_path / "o")], capsys)
    assert rc == 2 and re.search(message, err), err
    assert not (tmp_path / "o").exists()


def test_sweep_empty_yaml(tmp_path, capsys):
    cfg = write_yaml(tmp_path / "empty.yaml", None)
    rc, err = run_cli(["sweep", str(cfg), "--dry-run"], capsys)
    assert rc == 2 and "empty.yaml is empty; expected a mapping with 'base' and 'grid'" in err


def test_sweep_dry_run_checks_run_folders(tmp_path, capsys):
    cfg = write_yaml(tmp_path / "s.yaml", {"base": SWEEP_BASE, "grid": {"seed": [0, 1]}})
    out = tmp_path / "o"
    (out / "seed=0").mkdir(parents=True)
    (out / "seed=0" / "model.pt").write_text("a user's file")
    rc, err = run_cli(["sweep", str(cfg), "--dry-run", "--out", str(out)], capsys)
    assert rc == 2 and "seed=0: " in err and "model.pt that debias did not write" in err
    assert (out / "seed=0" / "model.pt").read_text() == "a user's file"


def test_sweep_never_overwrites_a_users_sweep_json(tmp_path, capsys):
    cfg = write_yaml(tmp_path / "s.yaml", {"base": SWEEP_BASE, "grid": {"seed": [0]}})
    out = tmp_path / "o"
    out.mkdir()
    (out / "sweep.json").write_text("my own notes")
    rc, err = run_cli(["sweep", str(cfg), "--out", str(out)], capsys)
    assert rc == 2 and "sweep.json that debias did not write" in err
    assert (out / "sweep.json").read_text() == "my own notes"
    assert not (out / "seed=0").exists()


def status_rows(out: Path) -> dict[str, dict[str, str]]:
    with open(out / "sweep_status.csv") as fh:
        return {r["run"]: r for r in csv.DictReader(fh)}


def test_sweep_rerun_merges_status_and_lock_blocks_duplicates(tmp_path, capsys):
    out = tmp_path / "o"
    one = write_yaml(tmp_path / "one.yaml", {"base": SWEEP_BASE, "grid": {"seed": [0]}})
    assert main(["sweep", str(one), "--out", str(out)]) == 0
    first = status_rows(out)["seed=0"]
    assert first["status"] == "done" and first["started"] and first["finished"]
    # A rerun with a second grid point: seed=0 is skipped but keeps when and how long it ran.
    two = write_yaml(tmp_path / "two.yaml", {"base": SWEEP_BASE, "grid": {"seed": [0, 1]}})
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        # seed=1 is being trained by another live process: refused, not run twice.
        (out / "seed=1").mkdir()
        (out / "seed=1" / ".debias-run.lock").write_text(
            json.dumps({"pid": sleeper.pid, "host": os.uname().nodename, "started": 0})
        )
        assert main(["sweep", str(two), "--out", str(out)]) == 1
    finally:
        sleeper.kill()
        sleeper.wait()
    rows = status_rows(out)
    again = rows["seed=0"]
    assert again["status"] == "skipped"
    assert (again["started"], again["finished"], again["seconds"]) == (
        first["started"], first["finished"], first["seconds"],
    )  # fmt: skip
    assert rows["seed=1"]["status"] == "failed" and "in use by process" in rows["seed=1"]["error"]
    assert not (out / "seed=1" / "metrics.json").exists()
    # A rerun of the one-run YAML keeps the row of seed=1 (merge, not overwrite).
    assert main(["sweep", str(one), "--out", str(out)]) == 0
    assert set(status_rows(out)) == {"seed=0", "seed=1"}


def test_worker_dies_with_its_parent_even_on_sigkill(tmp_path):
    """The sweep's child calls die_with_parent(); SIGKILL of the parent must end it."""
    child = (
        "from debias.sweep.runner import die_with_parent; die_with_parent(); "
        "print('armed', flush=True); import time; time.sleep(120)"
    )
    parent = (
        "import subprocess, sys, time; "
        f"p = subprocess.Popen([sys.executable, '-c', {child!r}]); "
        "print(p.pid, flush=True); time.sleep(120)"
    )
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    proc = subprocess.Popen([sys.executable, "-c", parent], stdout=subprocess.PIPE, env=env)
    child_pid = int(proc.stdout.readline())
    assert proc.stdout.readline().strip() == b"armed"  # the child shares the parent's stdout
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    for _ in range(100):
        try:
            os.kill(child_pid, 0)
        except ProcessLookupError:
            break
        # A dead child not yet reaped by init shows as a zombie: that is gone too.
        try:
            if Path(f"/proc/{child_pid}/stat").read_text().split()[2] == "Z":
                break
        except (FileNotFoundError, IndexError):
            break
        time.sleep(0.1)
    else:
        os.kill(child_pid, signal.SIGKILL)
        pytest.fail("the worker outlived its SIGKILLed parent")


# -- data and metrics -------------------------------------------------------------------------------
def test_colour_bias_needs_a_ten_class_source():
    from debias.data import colour_bias

    x = torch.zeros(40, 28, 28, dtype=torch.uint8)
    with pytest.raises(ValueError, match=r"10-class source.*classes \[2, 3, 4, 5, 6, 7, 8, 9\]"):
        colour_bias(x, torch.arange(40) % 2, 0.9)
    assert len(colour_bias(x, torch.arange(40) % 10, 0.9)) == 40


def test_biased_mnist_seed_is_checked_first(tmp_path):
    from debias.data import biased_mnist

    with pytest.raises(ValueError, match=r"seed must be an integer in \[0, 2\*\*32\); got 1.5"):
        biased_mnist("train", 0.99, seed=1.5, root=tmp_path)


def test_group_report_aligned_pairs_outside_the_data():
    from debias.metrics import group_report

    y = np.array([0, 0, 1, 1, 3, 3])
    b = np.array([0, 1, 0, 1, 3, 0])
    with pytest.raises(ValueError, match=r"aligned pair\(s\) \[\(50, 70\)\].*labels \[0, 1, 3\]"):
        group_report(y, y, b, aligned=[(50, 70)])
    with pytest.warns(UserWarning, match=r"\[\(3, 99\)\] name a label or bias value"):
        rep = group_report(y, y, b, aligned=[(0, 0), (3, 99)])
    assert rep.n_aligned == 1 and rep.n_conflicting == 5
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # (1, 1) has samples; (3, 1) has none but both values occur: a legitimate empty group.
        assert group_report(y, y, b, aligned=[(1, 1), (3, 1)]).n_aligned == 1


def test_cache_and_data_env_pointing_at_a_file(tmp_path, monkeypatch):
    from debias.data.root import cache_root, data_root

    f = tmp_path / "file"
    f.write_text("x")
    monkeypatch.setenv("DEBIAS_CACHE", str(f))
    with pytest.raises(ValueError, match=r"DEBIAS_CACHE=.*file' is a file; expected a folder"):
        cache_root()
    monkeypatch.setenv("DEBIAS_DATA", str(f))
    with pytest.raises(ValueError, match=r"DEBIAS_DATA=.*is a file; expected a folder"):
        data_root()


def test_failed_download_leaves_no_folders_and_cli_names_flags(tmp_path, monkeypatch, capsys):
    import torchvision

    from debias.data.mnist import load_mnist

    def fake_mnist(root, train, download):
        (Path(root) / "MNIST" / "raw").mkdir(parents=True)  # what torchvision does first
        raise OSError("network unreachable")

    monkeypatch.setattr(torchvision.datasets, "MNIST", fake_mnist)
    root = tmp_path / "data"
    with pytest.raises(FileNotFoundError, match="network unreachable"):
        load_mnist("train", root=root, download=True)
    assert not root.exists()
    out = tmp_path / "r"
    args = ["train", "--rho", "0.99", "--root", str(root), "--epochs", "1", "--out", str(out)]
    rc, err = run_cli(args, capsys)
    assert rc == 2 and "--root DIR" in err and "--download" in err
    assert not out.exists()


# -- audit -------------------------------------------------------------------------------------------
def write_npz(path: Path, targets, bias=None) -> Path:
    n = len(targets)
    rng = np.random.default_rng(0)
    np.savez(path, Z=rng.normal(size=(n, 4)), targets=targets,
             bias=np.arange(n) % 2 if bias is None else bias)  # fmt: skip
    return path


def test_audit_rejects_fractional_and_nan_targets(tmp_path, capsys):
    frac = write_npz(tmp_path / "f.npz", np.arange(40) * 0.5)
    rc, err = run_cli(["audit", str(frac), "--out", str(tmp_path / "a"), "--no-plots"], capsys)
    assert (
        rc == 2
        and "targets must hold integer labels; got non-integer value" in err
        and "0.5" in err
    )
    nan = write_npz(tmp_path / "n.npz", np.r_[np.nan, np.zeros(39)])
    rc, err = run_cli(["audit", str(nan), "--out", str(tmp_path / "a"), "--no-plots"], capsys)
    assert rc == 2 and "targets contains 1 NaN/inf value(s)" in err


def test_audit_text_file_named_npz(tmp_path, capsys):
    f = tmp_path / "emb.npz"
    f.write_text("not numbers\n")
    rc, err = run_cli(["audit", str(f), "--out", str(tmp_path / "a")], capsys)
    assert rc == 2 and "emb.npz is not an .npz file" in err and "b'not '" in err


def test_audit_never_overwrites_users_files(tmp_path, capsys):
    emb = write_npz(tmp_path / "e.npz", np.arange(60) % 2, np.arange(60) // 30)
    out = tmp_path / "mine"
    out.mkdir()
    (out / "audit.md").write_text("my notes")
    args = ["audit", str(emb), "--out", str(out), "--no-plots", "--cv", "2"]
    rc, err = run_cli(args, capsys)
    assert rc == 2 and "audit.md that debias did not write" in err
    assert (out / "audit.md").read_text() == "my notes"
    # A fresh folder works, and a second audit into it may replace what the first wrote.
    fresh = tmp_path / "fresh"
    assert main(["audit", str(emb), "--out", str(fresh), "--no-plots", "--cv", "2"]) == 0
    assert main(["audit", str(emb), "--out", str(fresh), "--no-plots", "--cv", "2"]) == 0
    assert (fresh / "audit.md").exists()
