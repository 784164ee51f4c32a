"""The CUDA path (skipped without a GPU; `bash bench/gpu_check.sh` runs it on one): losses,
augmentation and methods give the CPU's numbers on CUDA, and short runs train there with bf16
autocast and channels_last."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import quiet

from debias.data.augment import AugmentConfig, BatchAugment
from debias.losses import LOSSES, get_loss
from debias.train import TrainConfig, train

ROOT = Path(__file__).resolve().parents[1]
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


@cuda
@pytest.mark.parametrize("name", sorted(LOSSES))
def test_loss_on_cuda_equals_cpu(name):
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(64, 2, 32, generator=gen)
    y = torch.randint(0, 4, (64,), generator=gen)
    b = torch.randint(0, 3, (64,), generator=gen)
    loss = get_loss(name)
    cpu = loss(z, labels=y, bias=b)
    gpu = loss(z.cuda(), labels=y.cuda(), bias=b.cuda())
    assert torch.allclose(cpu, gpu.cpu(), atol=1e-4, rtol=1e-4)


@cuda
def test_augmentation_draws_the_same_views_on_cuda():
    x = torch.rand(16, 3, 28, 28)
    aug = BatchAugment(AugmentConfig(crop_padding=2, rotation=10.0))
    a = aug(x, torch.Generator().manual_seed(3))
    b = aug(x.cuda(), torch.Generator().manual_seed(3))
    assert torch.allclose(a, b.cpu(), atol=1e-4)


@cuda
@pytest.mark.parametrize("method", ["ce", "supcon", "contex", "groupdro", "lff", "jtt"])
def test_short_run_trains_on_cuda_with_bf16_and_channels_last(tmp_path, method):
    cfg = TrainConfig(
        out=str(tmp_path / method),
        dataset="digits",
        rho=0.95,
        method=method,
        model="lenet",
        epochs=2,
        linear_epochs=1,
        batch_size=64,
        max_steps=5,
        lr_milestones=[],
        amp="bf16",
        channels_last=True,
        device="cuda",
        progress=False,
    )
    res = train(cfg, log=quiet)
    assert res["device"].startswith("cuda")
    saved = json.loads((Path(cfg.out) / "metrics.json").read_text())
    assert 0.0 <= saved["splits"]["test"]["unbiased_accuracy"] <= 1.0


def test_gpu_check_says_so_without_a_gpu():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the script would run the full check")
    proc = subprocess.run(
        ["bash", str(ROOT / "bench" / "gpu_check.sh")],
        env={"PYTHON": sys.executable, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "no GPU found" in proc.stdout
