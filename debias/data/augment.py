"""Batched augmentation on tensors, on the data's own device.

The original Biased-MNIST code (BiasCon) builds two views per sample with per-image PIL
transforms inside a ``DataLoader``; that costs more than the model on small networks. Here a
whole batch is augmented by one ``affine_grid``/``grid_sample`` call (random crop-with-padding
and small rotation fused into one affine map per image), plus optional horizontal flips and
colour jitter, all on the device the batch already lives on.

Colour jitter is off by default: on Biased-MNIST the background colour *is* the bias, so
jittering hue perturbs the very attribute under study (PROTOCOLS §1, "augmentation trap").
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AugmentConfig:
    """What :class:`BatchAugment` does.

    Attributes:
        crop_padding: random translation of up to this many pixels in x and y (the effect of
            ``RandomCrop(size, padding=crop_padding)``; the border is replicated instead of
            zero-filled so the background colour stays the background colour).
        rotation: maximum absolute rotation in degrees.
        hflip: flip horizontally with probability 1/2 (faces yes, digits no).
        colour_jitter: strength ``s`` of brightness/contrast/saturation jitter (factors in
            ``[1-s, 1+s]``) and hue jitter ``s/4`` (fraction of a full turn); 0 disables it.
    """

    crop_padding: int = 2
    rotation: float = 10.0
    hflip: bool = False
    colour_jitter: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


class BatchAugment:
    """Random two-view (or n-view) augmentation of a uint8 or float image batch ``[B, C, H, W]``.

    Call ``aug(batch, generator)`` for one view, ``aug.views(batch, n, generator)`` for
    ``[B, n, C, H, W]``. Inputs are float images in ``[0, 1]`` (use before normalisation).
    """

    def __init__(self, config: AugmentConfig | None = None, *, bias_is_colour: bool = False):
        self.config = config or AugmentConfig()
        if self.config.colour_jitter > 0 and bias_is_colour:
            warnings.warn(
                "colour jitter is on while the bias attribute is colour (Biased-MNIST): it "
                "perturbs the very shortcut being studied, as BiasCon's ColorJitter(hue=0.1) did. "
                "Results are not comparable to runs without it.",
                UserWarning,
                stacklevel=2,
            )

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        cfg = self.config
        b, _, h, w = x.shape
        dev = x.device

        def rand(*shape: int) -> torch.Tensor:
            # Draw on the CPU generator then move: the same seed gives the same views on any device.
            return torch.rand(*shape, generator=generator).to(dev)

        if cfg.rotation > 0 or cfg.crop_padding > 0 or cfg.hflip:
            angle = (rand(b) * 2 - 1) * math.radians(cfg.rotation)
            # Integer pixel shifts like RandomCrop, expressed in grid units ([-1, 1] spans W pixels).
            shift = torch.floor(rand(b, 2) * (2 * cfg.crop_padding + 1)) - cfg.crop_padding
            tx, ty = shift[:, 0] * 2 / w, shift[:, 1] * 2 / h
            flip = torch.ones(b, device=dev)
            if cfg.hflip:
                flip = torch.where(rand(b) < 0.5, -1.0, 1.0)
            cos, sin = torch.cos(angle), torch.sin(angle)
            theta = torch.stack(
                [
                    torch.stack([cos * flip, -sin, tx], dim=1),
                    torch.stack([sin * flip, cos, ty], dim=1),
                ],
                dim=1,
            )
            grid = F.affine_grid(theta, list(x.shape), align_corners=False)
            x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
        if cfg.colour_jitter > 0:
            x = _colour_jitter(x, cfg.colour_jitter, rand)
        return x

    def views(
        self, x: torch.Tensor, n: int = 2, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """``n`` independent views stacked as ``[B, n, C, H, W]``."""
        return torch.stack([self(x, generator) for _ in range(n)], dim=1)


def _colour_jitter(x: torch.Tensor, s: float, rand) -> torch.Tensor:
    b = x.shape[0]
    factor = lambda: (1 - s + 2 * s * rand(b)).view(b, 1, 1, 1)  # noqa: E731
    x = (x * factor()).clamp(0, 1)  # brightness
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = ((x - mean) * factor() + mean).clamp(0, 1)  # contrast
    if x.shape[1] == 3:
        grey = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1)
        x = ((x - grey) * factor() + grey).clamp(0, 1)  # saturation
        # Hue: rotate the chroma plane of YIQ, a cheap batched stand-in for HSV hue shifts.
        hue = ((rand(b) * 2 - 1) * (s / 4) * 2 * math.pi).view(b, 1, 1)
        yiq = torch.tensor(
            [[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]],
            device=x.device,
        )
        q = torch.einsum("ij,bjhw->bihw", yiq, x)
        i2 = q[:, 1] * torch.cos(hue) - q[:, 2] * torch.sin(hue)
        q2 = q[:, 1] * torch.sin(hue) + q[:, 2] * torch.cos(hue)
        q = torch.stack([q[:, 0], i2, q2], dim=1)
        x = torch.einsum("ij,bjhw->bihw", torch.linalg.inv(yiq), q).clamp(0, 1)
    return x
