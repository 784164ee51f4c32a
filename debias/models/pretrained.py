"""torchvision backbones at their native stems, with ImageNet weights loaded offline-safely.

``TorchvisionEncoder("resnet50", pretrained="IMAGENET1K_V2")`` is torchvision's ResNet-50 with
its classification head replaced by a debias ``fc``: ``features(x)`` is the pooled vector the
ImageNet head read (512-d for ResNet-18/34, 2048-d for ResNet-50, the 768-d class token for
ViT-B/16), ``forward(x) == fc(features(x))``.

Weights (``pretrained=``):

- a torchvision weight name of the architecture (``IMAGENET1K_V1``, ``IMAGENET1K_V2``,
  ``DEFAULT``, or the full ``ResNet50_Weights.IMAGENET1K_V2``): read from the file torchvision
  itself reads, ``torch.hub.get_dir()/checkpoints/<basename of weights.url>``, i.e.
  ``$TORCH_HOME/hub/checkpoints/resnet50-11ad3fa6.pth`` (``TORCH_HOME`` defaults to
  ``~/.cache/torch``). A file there is loaded exactly as torchvision loads an existing cached
  file (``torch.load(..., weights_only=True)``; torchvision checks the hash only while
  downloading). An absent file is a one-line :class:`WeightsNotFoundError` naming the file,
  the folder and the command that fetches it on a machine with internet: debias never
  downloads (offline machines cannot, and a silent fallback to random weights would change
  results).
- a path to a local ``state_dict`` file of the same architecture (its ``fc``/``heads`` entries
  are dropped: the head is debias's own).
- ``None``: random initialisation (torchvision's).

Preprocessing. Weights come with their own: ``weights.transforms()`` (resize, centre crop,
ImageNet mean/std). :func:`preprocessing` returns it as a plain dict without building the model;
the trainer applies it (normalisation, centre crop) and records it in ``metrics.json``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from debias.models.heads import EncoderClassifier

__all__ = [
    "ARCHITECTURES",
    "TorchvisionEncoder",
    "WeightsNotFoundError",
    "expected_weights_file",
    "preprocessing",
    "resolve_weights",
    "weights_path",
]

# architecture -> (torchvision builder name, the module that is the ImageNet head)
ARCHITECTURES: dict[str, tuple[str, str]] = {
    "resnet18": ("resnet18", "fc"),
    "resnet34": ("resnet34", "fc"),
    "resnet50": ("resnet50", "fc"),
    "vit_b_16": ("vit_b_16", "heads"),
}


class WeightsNotFoundError(FileNotFoundError):
    """Pretrained weights are not on this machine (and debias does not download them)."""


def _is_path(pretrained: str | os.PathLike) -> bool:
    text = str(pretrained)
    if isinstance(pretrained, os.PathLike) or Path(text).expanduser().is_file():
        return True
    return "/" in text or text.endswith((".pth", ".pt"))


def resolve_weights(arch: str, name: str) -> Any:
    """torchvision's ``Weights`` enum member of ``arch`` called ``name`` (``IMAGENET1K_V2``,
    ``DEFAULT`` or ``ResNet50_Weights.IMAGENET1K_V2``); a one-line error listing the names
    otherwise."""
    from torchvision.models import get_model_weights

    enum = get_model_weights(ARCHITECTURES[arch][0])
    short = name.split(".", 1)[1] if name.startswith(enum.__name__ + ".") else name
    try:
        return enum[short]
    except KeyError:
        raise ValueError(
            f"{arch}: unknown pretrained weights {name!r}; expected one of "
            f"{list(enum.__members__)} or a path to a local state_dict file"
        ) from None


def expected_weights_file(weights: Any) -> Path:
    """Where torchvision keeps (and looks for) ``weights``:
    ``torch.hub.get_dir()/checkpoints/<file name of weights.url>``."""
    from urllib.parse import urlparse

    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(weights.url).path)


def _fetch_hint(arch: str, weights: Any, path: Path) -> str:
    return (
        f"pretrained weights {type(weights).__name__}.{weights.name} not found: expected "
        f"{path.name} in {path.parent} (torch.hub.get_dir()/checkpoints, set by TORCH_HOME); "
        'debias never downloads. On a machine with internet run `python -c "import torchvision; '
        f"torchvision.models.{ARCHITECTURES[arch][0]}(weights='{weights.name}')\"` (or "
        f"`curl -L {weights.url} -o {path.name}`) and copy the file there"
    )


def weights_path(arch: str, pretrained: str | os.PathLike) -> Path:
    """The file ``pretrained`` (a weight name or a local file) is read from; a one-line
    :class:`WeightsNotFoundError` when it is not there."""
    if _is_path(pretrained):
        path = Path(pretrained).expanduser()
        if not path.is_file():
            raise WeightsNotFoundError(
                f"{arch}: weights file not found: {path}; pass an existing state_dict file or a "
                f"torchvision weight name (e.g. IMAGENET1K_V1); debias never downloads"
            )
    else:
        weights = resolve_weights(arch, str(pretrained))
        path = expected_weights_file(weights)
        if not path.is_file():
            raise WeightsNotFoundError(_fetch_hint(arch, weights, path))
    return path


def _load_state(arch: str, pretrained: str | os.PathLike) -> tuple[dict[str, Any], str]:
    """(state_dict, where it came from) for a weight name or a local file."""
    path = weights_path(arch, pretrained)
    return torch.load(path, map_location="cpu", weights_only=True), str(path)


def preprocessing(arch: str, pretrained: str | os.PathLike | None) -> dict[str, Any] | None:
    """The preprocessing that belongs to the weights, from ``weights.transforms()``: ``{weights,
    resize, crop, mean, std, interpolation}`` (None for random initialisation). A local file
    is taken to be ImageNet-trained like the architecture's ``IMAGENET1K_V1`` weights, whose
    transforms are used (recorded as ``assumed``)."""
    if pretrained is None:
        return None
    local = _is_path(pretrained)
    weights = resolve_weights(arch, "IMAGENET1K_V1" if local else str(pretrained))
    t = weights.transforms()
    return {
        "weights": str(pretrained) if local else f"{type(weights).__name__}.{weights.name}",
        "resize": int(t.resize_size[0]),
        "crop": int(t.crop_size[0]),
        "mean": [float(m) for m in t.mean],
        "std": [float(s) for s in t.std],
        "interpolation": t.interpolation.value,
        "source": f"assumed {type(weights).__name__}.IMAGENET1K_V1" if local else "weights",
    }


class TorchvisionEncoder(EncoderClassifier):
    """A torchvision classifier as a debias encoder (see the module docstring).

    Args:
        arch: a key of :data:`ARCHITECTURES`.
        num_classes: outputs of ``fc``.
        pretrained: a weight name, a local state_dict file, or None (random).

    Example:
        >>> m = TorchvisionEncoder("resnet18", num_classes=2)     # random init
        >>> m.feature_dim
        512
    """

    def __init__(
        self, arch: str, num_classes: int = 2, pretrained: str | os.PathLike | None = None
    ) -> None:
        super().__init__()
        import torchvision.models as tvm  # torchvision is heavy: import on use

        if arch not in ARCHITECTURES:
            raise ValueError(
                f"unknown architecture {arch!r}; expected one of {list(ARCHITECTURES)}"
            )
        builder, head = ARCHITECTURES[arch]
        kwargs: dict[str, Any] = {}
        if arch.startswith("vit") and pretrained is not None and not _is_path(pretrained):
            # torchvision builds a ViT at its weights' resolution (384 for the SWAG ones)
            kwargs["image_size"] = resolve_weights(arch, str(pretrained)).meta["min_size"][0]
        net = getattr(tvm, builder)(weights=None, **kwargs)
        self.weights_source = None
        if pretrained is not None:
            state, self.weights_source = _load_state(arch, pretrained)
            _load_body(net, state, head, arch, self.weights_source)
        self.feature_dim = _head_in_features(getattr(net, head))
        setattr(net, head, nn.Identity())
        self.arch = arch
        self.encoder = net
        self.fc = nn.Linear(self.feature_dim, num_classes)


def _head_in_features(head: nn.Module) -> int:
    """The input width of an ImageNet head (``fc``, or the last Linear of ViT's ``heads``)."""
    linears = [m for m in head.modules() if isinstance(m, nn.Linear)]
    return int(linears[-1].in_features)


def _load_body(net: nn.Module, state: Mapping[str, Any], head: str, arch: str, source: str) -> None:
    """Load every non-head entry of ``state`` into ``net``; anything else missing or extra is
    a one-line error (a file of another architecture)."""
    body = {k: v for k, v in state.items() if not k.startswith(head + ".")}
    missing, unexpected = net.load_state_dict(body, strict=False)
    missing = [k for k in missing if not k.startswith(head + ".")]
    if missing or unexpected:
        raise ValueError(
            f"{source} is not a {arch} state_dict: {len(missing)} missing key(s) "
            f"{missing[:3]}, {len(unexpected)} unexpected {list(unexpected)[:3]}"
        )
