"""torchvision backbones: weights from a temporary TORCH_HOME, exactly where torchvision looks;
the one-line error when they are absent (no download is ever attempted)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from debias.models import (
    TorchvisionEncoder,
    WeightsNotFoundError,
    build_model,
    check_weights,
    model_preprocessing,
)
from debias.models.pretrained import expected_weights_file, resolve_weights


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "torch"


def _write_weights(arch: str, name: str, seed: int = 0):
    """A weights file with the right keys (a randomly initialised torchvision model's
    state_dict) at the path torchvision reads; returns that model."""
    import torchvision.models as tvm

    torch.manual_seed(seed)
    ref = getattr(tvm, arch)(weights=None)
    path = expected_weights_file(resolve_weights(arch, name))
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ref.state_dict(), path)
    return ref.eval(), path


def test_weights_load_from_torch_home(torch_home):
    ref, path = _write_weights("resnet18", "IMAGENET1K_V1")
    # torchvision's own file name under $TORCH_HOME/hub/checkpoints
    assert path == torch_home / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    m = build_model("tv_resnet18", 3, weights="IMAGENET1K_V1").eval()
    assert m.feature_dim == 512 and m.fc.out_features == 3
    torch.testing.assert_close(m.encoder.layer4[1].conv2.weight, ref.layer4[1].conv2.weight)
    # native stem (stride 2, max-pool), unlike the 64x64 "resnet18"
    assert m.encoder.conv1.stride == (2, 2)
    x = torch.randn(2, 3, 64, 64)
    # the feature is the pooled vector torchvision's fc read
    ref.fc = torch.nn.Identity()
    torch.testing.assert_close(m.features(x), ref(x))
    torch.testing.assert_close(m(x), m.fc(m.features(x)))


def test_full_weight_name_and_local_file(torch_home, tmp_path):
    ref, path = _write_weights("resnet18", "IMAGENET1K_V1", seed=1)
    a = TorchvisionEncoder("resnet18", pretrained="ResNet18_Weights.IMAGENET1K_V1")
    b = TorchvisionEncoder("resnet18", pretrained=str(path))  # a local file
    torch.testing.assert_close(a.encoder.conv1.weight, b.encoder.conv1.weight)
    assert b.weights_source == str(path)
    with pytest.raises(ValueError, match="is not a resnet34 state_dict"):
        TorchvisionEncoder("resnet34", pretrained=str(path))


def test_feature_dims_of_every_backbone():
    dims = {"tv_resnet18": 512, "resnet34": 512, "resnet50": 2048, "vit_b_16": 768}
    for name, dim in dims.items():
        m = build_model(name, 2)
        assert m.feature_dim == dim, name
    vit = build_model("vit_b_16", 2).eval()
    with torch.no_grad():
        assert vit.features(torch.zeros(1, 3, 224, 224)).shape == (1, 768)


def test_absent_weights_one_line_error(torch_home):
    with pytest.raises(WeightsNotFoundError) as err:
        build_model("resnet50", 2, weights="IMAGENET1K_V2")
    text = str(err.value)
    assert "\n" not in text
    assert "resnet50-11ad3fa6.pth" in text
    assert str(torch_home / "hub" / "checkpoints") in text
    assert "torchvision.models.resnet50(weights='IMAGENET1K_V2')" in text
    assert not (torch_home / "hub" / "checkpoints" / "resnet50-11ad3fa6.pth").exists()
    with pytest.raises(WeightsNotFoundError, match="never downloads"):
        check_weights("vit_b_16", "IMAGENET1K_V1")
    with pytest.raises(ValueError, match="unknown pretrained weights 'IMAGENET1K_V9'"):
        build_model("resnet50", 2, weights="IMAGENET1K_V9")


def test_preprocessing_comes_from_the_weights():
    pre = model_preprocessing("resnet50", "IMAGENET1K_V2")
    assert (pre["resize"], pre["crop"], pre["interpolation"]) == (232, 224, "bilinear")
    assert pre["mean"] == [0.485, 0.456, 0.406] and pre["std"] == [0.229, 0.224, 0.225]
    assert model_preprocessing("resnet50", "IMAGENET1K_V1")["resize"] == 256
    assert model_preprocessing("resnet50", None) is None
    assert model_preprocessing("narrowresnet", None) is None


def test_cli_exits_2_with_one_line(torch_home, tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "debias", "train", "--dataset", "digits", "--rho", "0.9",
         "--model", "resnet50", "--pretrained", "IMAGENET1K_V2", "--epochs", "1",
         "--out", str(tmp_path / "run"), "--device", "cpu", "--quiet"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 2, out.stderr
    lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "resnet50-11ad3fa6.pth" in lines[0], out.stderr
    assert not (tmp_path / "run" / "metrics.json").exists()
