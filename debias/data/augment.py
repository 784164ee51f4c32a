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


Params = dict[str, "torch.Tensor | dict[str, torch.Tensor]"]  # one view's draws, [B, ...] each


class BatchAugment:
    """Random two-view (or n-view) augmentation of a uint8 or float image batch ``[B, C, H, W]``.

    Call ``aug(batch, generator)`` for one view, ``aug.views(batch, n, generator)`` for
    ``[B, n, C, H, W]``, ``aug.view_major(batch, n, generator)`` for ``[nB, C, H, W]`` (row
    ``v·B + i``, what training feeds). Inputs are float images in ``[0, 1]`` (use before
    normalisation).

    Each view is drawn (:meth:`draw`: every random parameter, from the CPU generator, in a
    fixed order) then applied (:meth:`apply`: deterministic). ``view_major`` draws the views
    one after the other, as that many calls would, and applies them to all ``n`` copies of the
    batch at once (views with colour ops; the others are one warp per view either way). ``reference=True`` is the path before issue 33, kept for
    ``bench/bench_two_view.py`` and the tests: one view at a time, ColorJitter by
    :func:`~debias.data.transforms.apply_jitter_reference` (every op on the whole batch at
    every position). Both give the same images from the same generator.
    """

    def __init__(
        self, config: AugmentConfig | None = None, *, bias_is_colour: bool = False,
        reference: bool = False,
    ) -> None:  # fmt: skip
        self.config = config or AugmentConfig()
        self.reference = reference
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
        return self.apply(x, self.draw(x.shape, _rand(generator, x.device)))

    def view_major(
        self, x: torch.Tensor, n: int = 2, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """``n`` independent views stacked view-major, ``[nB, C, H, W]`` (row ``v·B + i``):
        the same images as ``torch.cat([aug(x, generator) for _ in range(n)])``."""
        # Views without colour ops are one warp each: a batched pass would only add a copy.
        if self.reference or not self.config.perturbs_colour:
            return torch.cat([self(x, generator) for _ in range(n)], 0)
        rand = _rand(generator, x.device)
        drawn = [self.draw(x.shape, rand) for _ in range(n)]
        return self.apply(x if n == 1 else x.repeat(n, 1, 1, 1), _cat_params(drawn))

    def views(
        self, x: torch.Tensor, n: int = 2, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """``n`` independent views stacked as ``[B, n, C, H, W]``."""
        return self.view_major(x, n, generator).unflatten(0, (n, x.shape[0])).transpose(0, 1)

    def draw(self, shape: torch.Size | tuple[int, ...], rand: T.Rand) -> Params:
        """Every random parameter of one view of a batch of ``shape`` ``[B, C, H, W]``, drawn in
        the order the transforms are applied: geometry (flip, then crop or rotation), then
        colour."""
        cfg = self.config
        b, c, h, w = shape
        params: Params = {}
        if cfg.published:
            flip = torch.where(rand(b) < 0.5, -1.0, 1.0) if cfg.hflip else None
            if cfg.resized_crop_scale is not None:
                boxes = T.draw_resized_crop(rand, b, h, w, cfg.resized_crop_scale)
                ones = torch.ones_like(boxes[:, 0])
                params["theta"] = T.crop_theta(boxes, h, w, ones if flip is None else flip)
            elif cfg.rotation > 0 or cfg.hflip:
                params["theta"] = _rotation_theta(rand(b) * 2 - 1, cfg.rotation, 0, flip, b)
            if cfg.jitter is not None and c == 3:
                params["jitter"] = T.draw_jitter(rand, b, cfg.jitter, cfg.jitter_p)
            if cfg.grayscale_p > 0 and c == 3:
                params["grey"] = rand(b) < cfg.grayscale_p
            return params
        if cfg.rotation > 0 or cfg.crop_padding > 0 or cfg.hflip:
            angle = rand(b) * 2 - 1
            # Integer pixel shifts like RandomCrop, expressed in grid units ([-1, 1] spans W pixels).
            shift = torch.floor(rand(b, 2) * (2 * cfg.crop_padding + 1)) - cfg.crop_padding
            flip = torch.where(rand(b) < 0.5, -1.0, 1.0) if cfg.hflip else None
            shift = shift * torch.tensor([2 / w, 2 / h], device=shift.device)
            params["theta"] = _rotation_theta(angle, cfg.rotation, shift, flip, b)
        if cfg.colour_jitter > 0:
            params["colour"] = _draw_colour_jitter(rand, b, c)
        return params

    def apply(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        """The views :meth:`draw`'s ``params`` describe (one row of them per image of ``x``)."""
        cfg = self.config
        if cfg.published:
            # RandomResizedCrop never samples outside the image; RandomRotation fills corners.
            fill = "border" if cfg.resized_crop_scale is not None else cfg.rotation_fill
            if "theta" in params:
                x = T.warp(x, params["theta"], fill=fill, mode=cfg.interpolation)
            if "jitter" in params:
                jitter = T.apply_jitter_reference if self.reference else T.apply_jitter
                x = jitter(x, params["jitter"])
            if "grey" in params:
                x = T.apply_grayscale(x, params["grey"])
            return x
        if "theta" in params:
            x = T.warp(x, params["theta"], fill="border", mode="bilinear")
        if "colour" in params:
            x = _colour_jitter(x, cfg.colour_jitter, params["colour"])
        return x


def _rand(generator: torch.Generator | None, device: torch.device) -> T.Rand:
    # Draw on the CPU generator then move: the same seed gives the same views on any device.
    return lambda *shape: torch.rand(*shape, generator=generator).to(device)


def _rotation_theta(
    u: torch.Tensor, degrees: float, shift: torch.Tensor | int, flip: torch.Tensor | None, b: int
) -> torch.Tensor:
    """``[B, 2, 3]`` affine maps: rotation by ``u·degrees`` (``u`` in ``[-1, 1]``), mirrored
    where ``flip`` is -1, translated by ``shift`` ``[B, 2]`` in grid units."""
    angle = u * math.radians(degrees)
    cos, sin = torch.cos(angle), torch.sin(angle)
    flip = torch.ones_like(cos) if flip is None else flip
    shift = torch.zeros(b, 2, device=cos.device) if isinstance(shift, int) else shift
    return torch.stack(
        [
            torch.stack([cos * flip, -sin, shift[:, 0]], dim=1),
            torch.stack([sin * flip, cos, shift[:, 1]], dim=1),
        ],
        dim=1,
    )


def _cat_params(drawn: list[Params]) -> Params:
    """The draws of several views as one batch of parameters (view-major rows)."""
    out: Params = {}
    for key, first in drawn[0].items():
        if isinstance(first, dict):
            out[key] = {k: torch.cat([p[key][k] for p in drawn]) for k in first}
        else:
            out[key] = torch.cat([p[key] for p in drawn])
    return out


def _draw_colour_jitter(rand: T.Rand, b: int, c: int) -> dict[str, torch.Tensor]:
    """The ``geometry`` views' colour jitter draws: brightness, contrast and (colour images)
    saturation factors in ``[0, 1)`` (scaled by the strength when applied), and a hue draw."""
    drawn = {"brightness": rand(b), "contrast": rand(b)}
    if c == 3:
        drawn |= {"saturation": rand(b), "hue": rand(b)}
    return drawn


def _colour_jitter(x: torch.Tensor, s: float, drawn: dict[str, torch.Tensor]) -> torch.Tensor:
    b = x.shape[0]

    def factor(u: torch.Tensor) -> torch.Tensor:
        return (1 - s + 2 * s * u).view(b, 1, 1, 1)

    x = (x * factor(drawn["brightness"])).clamp(0, 1)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = ((x - mean) * factor(drawn["contrast"]) + mean).clamp(0, 1)
    if x.shape[1] == 3:
        grey = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1)
        x = ((x - grey) * factor(drawn["saturation"]) + grey).clamp(0, 1)
        # Hue: rotate the chroma plane of YIQ, a cheap batched stand-in for HSV hue shifts.
        hue = ((drawn["hue"] * 2 - 1) * (s / 4) * 2 * math.pi).view(b, 1, 1)
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
