"""Batched augmentation on tensors, on the data's own device.

The original Biased-MNIST code (BiasCon) builds two views per sample with per-image PIL
transforms inside a ``DataLoader``; that costs more than the model on small networks. Here a
whole batch is augmented by one ``affine_grid``/``grid_sample`` call (random crop-with-padding
and small rotation fused into one affine map per image), plus optional horizontal flips and
colour jitter, all on the device the batch already lives on.

Colour jitter is off by default: on Biased-MNIST the background colour *is* the bias, so
jittering hue perturbs the very attribute under study (PROTOCOLS §1, "augmentation trap").
The published contrastive recipes jitter it all the same; their views are named sets here
(:data:`VIEW_SETS`), built from the published transforms' parameters with torchvision's draws
(:mod:`debias.data.transforms`), and a warning says so when the bias is colour.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from debias.data import transforms as T


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
    # The published transforms (debias.data.transforms), off by default:
    resized_crop_scale: tuple[float, float] | None = None  # RandomResizedCrop(scale=...)
    rotation_fill: str = "border"  # "zeros": torchvision RandomRotation's black corners
    interpolation: str = "bilinear"  # "nearest": torchvision RandomRotation's default
    jitter: tuple[float, float, float, float] | None = None  # ColorJitter(b, c, s, hue)
    jitter_p: float = 1.0  # RandomApply([ColorJitter], p)
    grayscale_p: float = 0.0  # RandomGrayscale(p)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def published(self) -> bool:
        """Uses a transform of :mod:`debias.data.transforms` (the torchvision-faithful path)."""
        return (
            self.resized_crop_scale is not None or self.jitter is not None
            or self.grayscale_p > 0 or self.rotation_fill != "border"
            or self.interpolation != "bilinear"
        )  # fmt: skip

    @property
    def perturbs_colour(self) -> bool:
        return self.colour_jitter > 0 or self.jitter is not None or self.grayscale_p > 0


# Named view sets (TrainConfig.views). "geometry": the dataset's own crop + rotation (+ flip for
# faces) views, today's CPU protocol (with the colour_jitter option on top); "none": the image
# itself. The others are the published recipes' views, from the official code:
SUPCONTRAST_VIEWS = (
    "HobbitLong/SupContrast main_supcon.py set_loader; hdeng26/Contex main_contex.py"
)
BIASCON_VIEWS = "grayhong/bias-contrastive-learning debias/datasets/biased_mnist.py get_color_mnist"
BIASCON_FACES = "grayhong/bias-contrastive-learning debias/datasets/{utk_face,celeba}.py"
VIEW_SETS: dict[str, tuple[AugmentConfig | None, str]] = {
    "geometry": (None, "the dataset's crop +-2 px + rotation +-10 deg (+ flip for faces)"),
    "none": (AugmentConfig(crop_padding=0, rotation=0.0), "no augmentation: the image itself"),
    # RandomResizedCrop(size, scale=(0.2, 1.)), RandomHorizontalFlip(),
    # RandomApply([ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8), RandomGrayscale(p=0.2)
    "supcontrast": (
        AugmentConfig(
            crop_padding=0,
            rotation=0.0,
            hflip=True,
            resized_crop_scale=(0.2, 1.0),
            jitter=(0.4, 0.4, 0.4, 0.1),
            jitter_p=0.8,
            grayscale_p=0.2,
        ),
        SUPCONTRAST_VIEWS,
    ),  # fmt: skip
    # RandomRotation(20), RandomApply([ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8)
    "biascon-mnist": (
        AugmentConfig(
            crop_padding=0,
            rotation=20.0,
            rotation_fill="zeros",
            interpolation="nearest",
            jitter=(0.4, 0.4, 0.4, 0.1),
            jitter_p=0.8,
        ),
        BIASCON_VIEWS,
    ),  # fmt: skip
    # The faces' training transforms without aug (BiasCon's CE stream and its CE / BiasBal
    # baselines): UTKFace RandomResizedCrop(64) (scale 0.08-1) + RandomHorizontalFlip; CelebA
    # Resize((224, 224)) + RandomHorizontalFlip. Their aug=1 contrastive views are "supcontrast".
    "biascon-utkface-plain": (
        AugmentConfig(crop_padding=0, rotation=0.0, hflip=True, resized_crop_scale=(0.08, 1.0)),
        f"{BIASCON_FACES} get_utk_face(aug=False)",
    ),
    "flip": (
        AugmentConfig(crop_padding=0, rotation=0.0, hflip=True),
        f"RandomHorizontalFlip() only ({BIASCON_FACES} get_celeba(aug=False))",
    ),
}


def view_config(name: str, dataset_augment: dict, colour_jitter: float = 0.0) -> AugmentConfig:
    """The :class:`AugmentConfig` of the view set ``name`` (:data:`VIEW_SETS`); ``geometry``
    takes the dataset's augment fields and ``colour_jitter``."""
    if name not in VIEW_SETS:
        raise ValueError(f"views {name!r}: expected one of {', '.join(VIEW_SETS)}")
    if name == "geometry":
        return AugmentConfig(**{**dataset_augment, "colour_jitter": colour_jitter})
    if colour_jitter:
        raise ValueError(
            f"colour_jitter={colour_jitter} applies to views 'geometry' only; views {name!r} "
            "has its own published colour transforms"
        )
    return VIEW_SETS[name][0]


class BatchAugment:
    """Random two-view (or n-view) augmentation of a uint8 or float image batch ``[B, C, H, W]``.

    Call ``aug(batch, generator)`` for one view, ``aug.views(batch, n, generator)`` for
    ``[B, n, C, H, W]``. Inputs are float images in ``[0, 1]`` (use before normalisation).
    """

    def __init__(self, config: AugmentConfig | None = None, *, bias_is_colour: bool = False):
        self.config = config or AugmentConfig()
        if self.config.perturbs_colour and bias_is_colour:
            warnings.warn(
                "colour jitter is on while the bias attribute is colour (Biased-MNIST): it "
                "perturbs the very shortcut being studied, as the published BiasCon and "
                "SupContrast/ConTeX views (ColorJitter(0.4, 0.4, 0.4, 0.1)) do. Results are not "
                "comparable to runs with other views.",
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

        if cfg.published:
            return self._published(x, rand)

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

    def _published(self, x: torch.Tensor, rand) -> torch.Tensor:
        """Geometry (resized crop + flip, or rotation), then ColorJitter under RandomApply, then
        RandomGrayscale: the published order (:mod:`debias.data.transforms`)."""
        cfg = self.config
        b, c, h, w = x.shape
        flip = torch.ones(b, device=x.device)
        if cfg.hflip:
            flip = torch.where(rand(b) < 0.5, -1.0, 1.0)
        if cfg.resized_crop_scale is not None:
            boxes = T.draw_resized_crop(rand, b, h, w, cfg.resized_crop_scale)
            x = T.warp(x, T.crop_theta(boxes, h, w, flip), fill="border", mode=cfg.interpolation)
        elif cfg.rotation > 0 or cfg.hflip:
            angle = (rand(b) * 2 - 1) * math.radians(cfg.rotation)
            cos, sin, zero = torch.cos(angle), torch.sin(angle), torch.zeros(b, device=x.device)
            theta = torch.stack(
                [torch.stack([cos * flip, -sin, zero], 1), torch.stack([sin * flip, cos, zero], 1)],
                1,
            )
            x = T.warp(x, theta, fill=cfg.rotation_fill, mode=cfg.interpolation)
        if cfg.jitter is not None and c == 3:
            x = T.apply_jitter(x, T.draw_jitter(rand, b, cfg.jitter, cfg.jitter_p))
        if cfg.grayscale_p > 0 and c == 3:
            x = T.apply_grayscale(x, rand(b) < cfg.grayscale_p)
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
