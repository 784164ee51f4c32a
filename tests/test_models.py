"""Models: the ReBias architecture exactly, the shared features/fc interface, the registry."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from debias.models import (
    MODELS,
    LeNet,
    NarrowResNet,
    ProjectionHead,
    ResNet18,
    SimpleConvNet,
    SmallConvNet,
    build_model,
)


def test_simpleconvnet_is_the_rebias_architecture():
    m = SimpleConvNet(num_classes=10)
    convs = [x for x in m.extracter if isinstance(x, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [
        (3, 16),
        (16, 32),
        (32, 64),
        (64, 128),
    ]
    assert all(
        c.kernel_size == (7, 7) and c.padding == (3, 3) and c.stride == (1, 1) for c in convs
    )
    assert sum(isinstance(x, nn.BatchNorm2d) for x in m.extracter) == 4
    assert sum(isinstance(x, nn.ReLU) for x in m.extracter) == 4
    assert (m.fc.in_features, m.fc.out_features) == (128, 10)
    # parameter count of the ReBias network: convs + BN affine + fc
    expected = sum(7 * 7 * i * o + o + 2 * o for i, o in [(3, 16), (16, 32), (32, 64), (64, 128)])
    expected += 128 * 10 + 10
    assert sum(p.numel() for p in m.parameters()) == expected


@pytest.mark.parametrize("name", sorted(MODELS))
def test_features_then_fc_equals_forward(name):
    torch.manual_seed(0)
    m = build_model(name, num_classes=3).eval()
    size = {"resnet18": 64, "vit_b_16": 224}.get(name, 28)  # ViT takes its native 224 only
    x = torch.randn(2, 3, size, size)
    f = m.features(x)
    assert f.shape == (2, m.feature_dim)
    torch.testing.assert_close(m.fc(f), m(x))


@pytest.mark.parametrize("channels_last", [False, True])
def test_lenet_pool_before_relu_is_bit_identical_to_relu_before_pool(channels_last):
    """LeNet pools before its ReLU; the textbook order (ReLU, then pool) must give the same
    bits: outputs, every gradient, and after a few Adam steps the weights and BN statistics."""
    torch.manual_seed(0)
    ours = LeNet(10)
    ref = LeNet(10)
    e = list(ref.extracter)
    assert isinstance(e[2], nn.MaxPool2d) and isinstance(e[3], nn.ReLU)
    e[2], e[3], e[6], e[7] = e[3], e[2], e[7], e[6]  # Conv, BN, ReLU, Pool (x2)
    ref.extracter = nn.Sequential(*e)
    ref.load_state_dict(ours.state_dict())  # same keys: the swapped modules have no parameters
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    nets = [m.to(memory_format=fmt) for m in (ours, ref)]
    opts = [torch.optim.Adam(m.parameters(), lr=1e-2) for m in nets]
    gen = torch.Generator().manual_seed(1)
    for _ in range(3):
        # Negative-heavy inputs: many all-negative pooling windows, where the orders differ.
        x = (torch.randn(16, 3, 28, 28, generator=gen) - 0.5).contiguous(memory_format=fmt)
        y = torch.randint(0, 10, (16,), generator=gen)
        outs = []
        for m, opt in zip(nets, opts, strict=True):
            out = m(x)
            opt.zero_grad()
            nn.functional.cross_entropy(out, y).backward()
            outs.append((out.detach(), [p.grad.clone() for p in m.parameters()]))
            opt.step()
        assert torch.equal(outs[0][0], outs[1][0])
        assert all(torch.equal(a, b) for a, b in zip(outs[0][1], outs[1][1], strict=True))
    for a, b in zip(ours.state_dict().values(), ref.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_smallconvnet_is_much_cheaper_than_simpleconvnet():
    def macs(model):
        total = 0

        def hook(mod, inp, out):
            nonlocal total
            if isinstance(mod, nn.Conv2d):
                total += out.numel() * mod.in_channels * mod.kernel_size[0] * mod.kernel_size[1]

        hs = [mm.register_forward_hook(hook) for mm in model.modules()]
        model(torch.zeros(1, 3, 28, 28))
        for h in hs:
            h.remove()
        return total

    big, small = macs(SimpleConvNet().eval()), macs(SmallConvNet().eval())
    assert 0.35e9 < big < 0.45e9  # "about 0.4 GMAC per image" (PROTOCOLS §1)
    assert big / small > 300


def _macs(model: nn.Module, size: int) -> int:
    """Multiply-accumulates of the convolutions and linear layers for one size x size image."""
    total = 0

    def hook(mod, inp, out):
        nonlocal total
        if isinstance(mod, nn.Conv2d):
            k = mod.kernel_size[0] * mod.kernel_size[1]
            total += out.numel() * (mod.in_channels // mod.groups) * k
        elif isinstance(mod, nn.Linear):
            total += mod.in_features * mod.out_features

    hs = [m.register_forward_hook(hook) for m in model.modules()]
    with torch.no_grad():
        model.eval()(torch.zeros(1, 3, size, size))
    for h in hs:
        h.remove()
    return total


def test_narrowresnet_card_numbers():
    m = build_model("narrowresnet", 2)
    assert isinstance(m, NarrowResNet) and m.feature_dim == 128
    # the card: 11.45 MMAC per 64x64 image, 2.86 MMAC at 32x32, 0.30 M parameters
    stem = 32 * 32 * 16 * 3 * 9
    per_stage = [  # conv1 (stride 2) + conv2 + 1x1 shortcut, at 16x16, 8x8, 4x4
        16 * 16 * 32 * (16 * 9) + 16 * 16 * 32 * (32 * 9) + 16 * 16 * 32 * 16,
        8 * 8 * 64 * (32 * 9) + 8 * 8 * 64 * (64 * 9) + 8 * 8 * 64 * 32,
        4 * 4 * 128 * (64 * 9) + 4 * 4 * 128 * (128 * 9) + 4 * 4 * 128 * 64,
    ]
    assert _macs(m, 64) == stem + sum(per_stage) + 128 * 2 == 11_452_672
    assert _macs(m, 32) == 2_863_360  # fully convolutional: a quarter of the pixels
    assert sum(p.numel() for p in m.parameters()) == 303_122
    # about 50x cheaper than the face ResNet-18 at the same input size
    assert 45 < _macs(ResNet18(num_classes=2), 64) / _macs(m, 64) < 55


def test_resnet18_weights_file(tmp_path):
    from torchvision.models import resnet18

    ref = resnet18(weights=None)
    path = tmp_path / "r18.pth"
    torch.save(ref.state_dict(), path)
    m = ResNet18(num_classes=2, weights=path)
    torch.testing.assert_close(m.encoder.layer4[1].conv2.weight, ref.layer4[1].conv2.weight)
    assert m.encoder.conv1.stride == (1, 1)
    with pytest.raises(FileNotFoundError, match="never downloads"):
        ResNet18(weights=tmp_path / "missing.pth")


def test_registry_errors():
    with pytest.raises(ValueError, match="unknown model 'vgg'"):
        build_model("vgg", 10)
    with pytest.raises(ValueError, match="only supported for resnet18"):
        build_model("smallconvnet", 10, weights="x.pth")


def test_projection_head_is_linear_relu_linear():
    # SupContrast's head: Linear(d, d) -> ReLU -> Linear(d, out); check the value it computes.
    h = ProjectionHead(64, 128)
    lin1, lin2 = h.net[0], h.net[2]
    assert (lin1.in_features, lin1.out_features, lin2.out_features) == (64, 64, 128)
    x = torch.randn(5, 64, generator=torch.Generator().manual_seed(0))
    expected = torch.relu(x @ lin1.weight.T + lin1.bias) @ lin2.weight.T + lin2.bias
    out = h(x)
    assert out.shape == (5, 128)
    torch.testing.assert_close(out, expected)
    # The ReLU is really there: negative pre-activations do not reach the output.
    with torch.no_grad():
        lin1.weight.zero_()
        lin1.bias.fill_(-1.0)
    torch.testing.assert_close(h(x), lin2.bias.expand(5, 128))
    assert ProjectionHead(64, 16, hidden_dim=32).net[0].out_features == 32
