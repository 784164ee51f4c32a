"""SimpleConvNet training throughput on one GPU: images/s and achieved TFLOP/s, with and
without bf16 autocast and channels_last (the ReBias model, batch 256, Adam).

    python bench/gpu_throughput.py [--steps 60] [--device cuda]

FLOPs per training image are counted as 3 x 2 x forward MACs (forward, and a backward of about
twice the forward), with the forward MACs counted by hooks on every Conv2d/Linear. Prints one
line per variant and exits 0 with a message when no GPU is found.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from torch import nn

from debias.models import SimpleConvNet


def forward_macs(model: nn.Module, x: torch.Tensor) -> int:
    """Multiply-accumulates of one forward pass of ``model`` on a batch of one image."""
    total = 0

    def hook(module, inputs, output):
        nonlocal total
        if isinstance(module, nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1] * module.in_channels
            total += output.numel() * k // module.groups
        elif isinstance(module, nn.Linear):
            total += output.numel() * module.in_features

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    with torch.no_grad():
        model(x[:1])
    for h in handles:
        h.remove()
    return total


def throughput(device: torch.device, *, bf16: bool, channels_last: bool, steps: int) -> float:
    """Training images per second (after 10 warm-up steps)."""
    torch.manual_seed(0)
    model = SimpleConvNet().to(device)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-4)
    x = torch.randn(256, 3, 28, 28, device=device).contiguous(memory_format=fmt)
    y = torch.randint(0, 10, (256,), device=device)

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(10):
        step()
    torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize(device)
    return steps * 256 / (time.perf_counter() - t0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("gpu_throughput: no GPU found (torch.cuda.is_available() is False); nothing measured")
        return 0
    device = torch.device(args.device)
    macs = forward_macs(SimpleConvNet(), torch.zeros(1, 3, 28, 28))
    flops_per_image = 3 * 2 * macs
    print(
        f"device: {torch.cuda.get_device_name(device)}; SimpleConvNet {macs / 1e9:.3f} GMAC/image"
    )
    for bf16 in (False, True):
        for cl in (False, True):
            ips = throughput(device, bf16=bf16, channels_last=cl, steps=args.steps)
            print(
                f"bf16={str(bf16):<5} channels_last={str(cl):<5} {ips:>9.0f} images/s "
                f"{ips * flops_per_image / 1e12:>6.1f} TFLOP/s"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
