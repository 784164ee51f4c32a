"""Batched tensor versions of the torchvision transforms the published contrastive recipes use,
with torchvision's parameter draws (``get_params``) and formulas, one draw per image.

Images are float ``[B, C, H, W]`` in ``[0, 1]``. Each transform has a ``draw_*`` function (its
random parameters for a batch, from a CPU generator: the same seed gives the same views on any
device) and an ``apply_*`` function (deterministic given the parameters), so the draws can be
checked against torchvision's ranges and the formulas against ``torchvision.transforms.
functional`` on fixed parameters (tests/test_augment.py).

- ``RandomResizedCrop(size, scale, ratio=(3/4, 4/3))``: area fraction ``s ~ U(scale)``, log
  aspect ``~ U(log ratio)``, ``w = round(sqrt(s·A·r))``, ``h = round(sqrt(s·A/r))``, accepted
  when it fits (10 tries, then the whole image, torchvision's fallback for in-range aspect
  ratios), top-left corner uniform over the valid positions; resized back bilinearly.
- ``RandomHorizontalFlip()``: p = 1/2.
- ``RandomRotation(d)``: angle ``~ U(−d, d)``; torchvision fills the corners with 0 (black)
  and uses nearest interpolation by default.
- ``RandomApply([ColorJitter(b, c, s, h)], p)``: with probability ``p``, brightness
  ``f ~ U(max(0, 1−b), 1+b)`` (``x·f``), contrast (blend with the mean of the grey image),
  saturation (blend with the grey image), hue (``h ~ U(−h, h)`` turns added to HSV hue), in a
  random order per image (torchvision's ``fn_idx = randperm(4)``); each result clamped to
  ``[0, 1]``.
- ``RandomGrayscale(p)``: with probability ``p``, ``0.2989 R + 0.587 G + 0.114 B`` in every
  channel.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

Rand = Callable[..., torch.Tensor]  # rand(*shape) -> U[0, 1) on the batch's device
GREY = (0.2989, 0.587, 0.114)  # torchvision rgb_to_grayscale (tensor path)


def draw_resized_crop(
    rand: Rand, b: int, h: int, w: int, scale: tuple[float, float],
    ratio: tuple[float, float] = (3 / 4, 4 / 3), tries: int = 10,
) -> torch.Tensor:  # fmt: skip
    """``[B, 4]`` crop boxes ``(top, left, height, width)`` in pixels, torchvision's draw."""
    area = h * w
    s = scale[0] + (scale[1] - scale[0]) * rand(b, tries)
    logr = math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * rand(b, tries)
    aspect = torch.exp(logr)
    cw = torch.round(torch.sqrt(s * area * aspect))
    ch = torch.round(torch.sqrt(s * area / aspect))
    ok = (cw > 0) & (cw <= w) & (ch > 0) & (ch <= h)
    first = torch.where(ok.any(1), ok.float().argmax(1), -1)
    pick = first.clamp(min=0).unsqueeze(1)
    cw = torch.where(first >= 0, cw.gather(1, pick).squeeze(1), float(w))
    ch = torch.where(first >= 0, ch.gather(1, pick).squeeze(1), float(h))
    top = torch.floor(rand(b) * (h - ch + 1))
    left = torch.floor(rand(b) * (w - cw + 1))
    return torch.stack([top, left, ch, cw], dim=1)


def crop_theta(boxes: torch.Tensor, h: int, w: int, flip: torch.Tensor) -> torch.Tensor:
    """``[B, 2, 3]`` affine maps (``affine_grid``, ``align_corners=False``) that resize each
    box to the full image, mirrored where ``flip`` is -1."""
    top, left, ch, cw = boxes.unbind(1)
    cx = (left + cw / 2) * 2 / w - 1
    cy = (top + ch / 2) * 2 / h - 1
    zero = torch.zeros_like(cx)
    return torch.stack(
        [torch.stack([cw / w * flip, zero, cx], 1), torch.stack([zero, ch / h, cy], 1)], 1
    )


def draw_jitter(
    rand: Rand, b: int, jitter: tuple[float, float, float, float], p: float
) -> dict[str, torch.Tensor]:
    """ColorJitter(brightness, contrast, saturation, hue) under RandomApply(p): ``apply``
    ``[B]`` bool, the four factors ``[B]`` and the order ``[B, 4]`` (a permutation of 0..3:
    brightness, contrast, saturation, hue)."""
    bri, con, sat, hue = jitter

    def factor(s: float) -> torch.Tensor:
        low = max(0.0, 1 - s)
        return low + (1 + s - low) * rand(b)

    return {
        "apply": rand(b) < p,
        "order": torch.argsort(rand(b, 4), dim=1),
        "brightness": factor(bri),
        "contrast": factor(con),
        "saturation": factor(sat),
        "hue": (rand(b) * 2 - 1) * hue,
    }


def grey(x: torch.Tensor) -> torch.Tensor:
    """``[B, 1, H, W]`` luma of RGB images (torchvision ``rgb_to_grayscale``)."""
    r, g, b = x.unbind(1)
    return (GREY[0] * r + GREY[1] * g + GREY[2] * b).unsqueeze(1)


def _blend(x: torch.Tensor, other: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    return (f.view(-1, 1, 1, 1) * x + (1 - f.view(-1, 1, 1, 1)) * other).clamp(0, 1)


def adjust_brightness(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    return _blend(x, torch.zeros_like(x), f)


def adjust_contrast(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    return _blend(x, grey(x).mean(dim=(1, 2, 3), keepdim=True), f)


def adjust_saturation(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    return _blend(x, grey(x), f)


# R, G, B of each hue sector 0..5 as an index into (v, p, q, t): torchvision _hsv2rgb's
# a1 = (v, q, p, p, t, v), a2 = (t, v, v, q, p, p), a3 = (p, p, t, v, v, q), one row per sector.
_HSV_PICK = torch.tensor([[0, 2, 1, 1, 3, 0], [3, 0, 0, 2, 1, 1], [1, 1, 3, 0, 0, 2]]).t()


def adjust_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Hue rotated by ``shift`` turns in HSV, torchvision's ``_rgb2hsv`` / ``_hsv2rgb``
    formulas; the same values as :func:`adjust_hue_reference`, bit for bit on finite inputs:
    its sums of one non-zero and two zero terms are ``where`` selections here, and its one-hot
    ``einsum`` over the six hue sectors a ``gather`` (about 5x less memory traffic)."""
    r, g, b = x.unbind(1)
    maxc, minc = x.amax(1), x.amin(1)
    eqc = maxc == minc
    cr = maxc - minc
    ones = torch.ones_like(maxc)
    s = cr / torch.where(eqc, ones, maxc)
    crd = torch.where(eqc, ones, cr)
    rc, gc, bc = (maxc - r) / crd, (maxc - g) / crd, (maxc - b) / crd
    hue = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    hue = torch.fmod(hue / 6.0 + 1.0, 1.0)
    hue = torch.remainder(hue + shift.view(-1, 1, 1), 1.0)
    i = torch.floor(hue * 6.0)
    f = hue * 6.0 - i
    sector = i.to(torch.int64) % 6
    v = maxc
    p = (v * (1.0 - s)).clamp(0, 1)
    q = (v * (1.0 - s * f)).clamp(0, 1)
    t = (v * (1.0 - s * (1.0 - f))).clamp(0, 1)
    pick = _HSV_PICK.to(x.device)[sector].permute(0, 3, 1, 2)  # [B, 3, H, W] into (v, p, q, t)
    return torch.stack((v, p, q, t), 1).gather(1, pick)


def adjust_hue_reference(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Hue rotated by ``shift`` turns in HSV: torchvision ``_rgb2hsv`` / ``_hsv2rgb`` line by
    line (its ``[B, 3, 6, H, W]`` one-hot ``einsum``): what :func:`adjust_hue` is checked
    against, and the path before issue 33."""
    r, g, b = x.unbind(1)
    maxc, minc = x.max(1).values, x.min(1).values
    cr = maxc - minc
    s = cr / torch.where(maxc == minc, torch.ones_like(maxc), maxc)
    crd = torch.where(maxc == minc, torch.ones_like(cr), cr)
    rc, gc, bc = (maxc - r) / crd, (maxc - g) / crd, (maxc - b) / crd
    hr = (maxc == r) * (bc - gc)
    hg = ((maxc == g) & (maxc != r)) * (2.0 + rc - bc)
    hb = ((maxc != g) & (maxc != r)) * (4.0 + gc - rc)
    hue = torch.fmod((hr + hg + hb) / 6.0 + 1.0, 1.0)
    hue = torch.remainder(hue + shift.view(-1, 1, 1), 1.0)
    i = torch.floor(hue * 6.0)
    f = hue * 6.0 - i
    i = i.to(torch.int64) % 6
    v = maxc
    p = (v * (1.0 - s)).clamp(0, 1)
    q = (v * (1.0 - s * f)).clamp(0, 1)
    t = (v * (1.0 - s * (1.0 - f))).clamp(0, 1)
    mask = i.unsqueeze(1) == torch.arange(6, device=x.device).view(1, -1, 1, 1)
    a1 = torch.stack((v, q, p, p, t, v), 1)
    a2 = torch.stack((t, v, v, q, p, p), 1)
    a3 = torch.stack((p, p, t, v, v, q), 1)
    a4 = torch.stack((a1, a2, a3), 1)  # [B, 3, 6, H, W]
    return torch.einsum("bkhw,bckhw->bchw", mask.to(x.dtype), a4)


_JITTER_OPS = (
    ("brightness", adjust_brightness),
    ("contrast", adjust_contrast),
    ("saturation", adjust_saturation),
    ("hue", adjust_hue),
)
_JITTER_OPS_REFERENCE = (*_JITTER_OPS[:3], ("hue", adjust_hue_reference))


def apply_jitter(x: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
    """ColorJitter with :func:`draw_jitter`'s parameters, each image in its own op order.

    At each of the four positions every op runs once, on just the rows that apply it there
    (``index_select`` / ``index_copy_``): each image gets each op once, as torchvision's
    per-image loop does, instead of every op on the whole batch at every position
    (:func:`apply_jitter_reference`, 4x the work)."""
    out = x.clone()
    for k in range(4):
        at_k = params["order"][:, k]
        for j, (name, op) in enumerate(_JITTER_OPS):
            rows = torch.nonzero(params["apply"] & (at_k == j)).squeeze(1)
            if len(rows):
                done = op(out.index_select(0, rows), params[name].index_select(0, rows))
                out.index_copy_(0, rows, done)
    return out


def apply_jitter_reference(x: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
    """ColorJitter with :func:`draw_jitter`'s parameters, each image in its own op order: every
    op on the whole batch at each of the four positions, rows picked by ``where``, with
    :func:`adjust_hue_reference` (the path before issue 33; ``bench/bench_two_view.py``)."""
    out = x
    for k in range(4):
        step = out
        for j, (name, op) in enumerate(_JITTER_OPS_REFERENCE):
            rows = params["apply"] & (params["order"][:, k] == j)
            if bool(rows.any()):
                step = torch.where(rows.view(-1, 1, 1, 1), op(out, params[name]), step)
        out = step
    return out


def apply_grayscale(x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """RandomGrayscale: the luma in every channel for ``rows`` (``[B]`` bool)."""
    return torch.where(rows.view(-1, 1, 1, 1), grey(x).expand_as(x), x)


def warp(x: torch.Tensor, theta: torch.Tensor, *, fill: str, mode: str) -> torch.Tensor:
    """``grid_sample`` of ``x`` under ``theta``; ``fill`` ``"border"`` (replicate) or
    ``"zeros"`` (black, torchvision's fill=0); ``mode`` ``"bilinear"`` or ``"nearest"``."""
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode=mode, padding_mode=fill, align_corners=False)
