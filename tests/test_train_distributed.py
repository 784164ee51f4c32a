"""``torchrun --nproc_per_node 2 -m debias train`` on CPU with gloo: sharded data, one writer."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pandas as pd
import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(out, *extra: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(_free_port()),
        "-m",
        "debias",
        "train",
        "--dataset",
        "digits",
        "--rho",
        "0.95",
        "--model",
        "smallconvnet",
        "--epochs",
        "2",
        "--batch-size",
        "64",
        "--max-steps",
        "3",
        "--device",
        "cpu",
        "--quiet",
        "--out",
        str(out),
        *extra,
    ]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["ce", "contex"])
def test_two_gloo_processes_train_and_write_once(tmp_path, method):
    out = tmp_path / method
    extra = ["--method", method] + (["--linear-epochs", "1"] if method != "ce" else [])
    proc = _torchrun(out, *extra)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    hist = pd.read_csv(out / "history.csv")
    expected_epochs = 2 if method == "ce" else 3
    assert len(hist) == expected_epochs  # rank 1 wrote no rows of its own
    # predictions of both ranks were gathered: every test image is scored exactly once
    test = metrics["splits"]["test"]
    assert test["n"] == metrics["data"]["test"]["n"]
    assert sum(g["n"] for g in test["groups"]) == test["n"]
    # rank 0 alone logs: one line per epoch in stdout
    lines = proc.stdout.splitlines()
    assert sum(line.startswith("epoch ") for line in lines) == expected_epochs, proc.stdout
    assert sum(line.startswith("done:") for line in lines) == 1, proc.stdout
    assert not list(out.glob(".debias-tmp.*"))
