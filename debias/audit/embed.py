"""Turn any encoder and dataset into an embedding matrix with its labels.

The audit works on numbers, not models, so users can audit encoders they did not train with
``debias`` (a torchvision backbone, a CLIP image tower, a checkpoint from a paper): one call to
:func:`embed` gives an :class:`Embeddings`, which can be saved, reloaded and audited.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from debias._types import Group
from debias.data.base import TensorImageDataset
from debias.metrics._inputs import as_aligned, as_labels

if TYPE_CHECKING:
    from debias.audit.audit import AuditReport

FeatureFn = Callable[[nn.Module, torch.Tensor], torch.Tensor]


@dataclass(repr=False)
class Embeddings:
    """Embeddings ``Z`` (float32 ``[N, D]``) with int64 ``targets`` and ``bias`` ``[N]``.

    ``aligned_groups`` is the explicit set of bias-aligned ``(target, bias)`` pairs, or None when
    unknown (the metrics then use ``b == y``). ``source`` says where they come from (the
    encoder and data of :func:`embed`, the file of :meth:`load`); it is shown, never compared.
    ``print(emb)`` shows a one-line summary, not the arrays:

    >>> Embeddings(np.eye(4, 3), [0, 1, 0, 1], [0, 0, 1, 1], source="an example")
    Embeddings(n=4, dim=3, targets: 2 classes, bias: 2 values, aligned groups: b == y, source='an example')
    """

    Z: np.ndarray
    targets: np.ndarray
    bias: np.ndarray
    aligned_groups: tuple[Group, ...] | None = None
    source: str = field(default="", compare=False)

    def __repr__(self) -> str:
        aligned = "b == y" if self.aligned_groups is None else f"{len(self.aligned_groups)} given"
        return (
            f"Embeddings(n={len(self)}, dim={self.dim}, targets: "
            f"{len(np.unique(self.targets))} classes, bias: {len(np.unique(self.bias))} values, "
            f"aligned groups: {aligned}, source={self.source or 'not recorded'!r})"
        )

    def __post_init__(self) -> None:
        self.Z = np.asarray(self.Z, dtype=np.float32)
        # as_labels rejects NaN and fractional labels instead of truncating them to classes.
        self.targets = as_labels(self.targets, "targets")
        self.bias = as_labels(self.bias, "bias")
        if self.Z.ndim != 2:
            raise ValueError(f"Z must be a 2-D array [N, D]; got shape {self.Z.shape}")
        n = self.Z.shape[0]
        if self.targets.shape != (n,) or self.bias.shape != (n,):
            raise ValueError(
                f"targets and bias must have shape ({n},) to match Z; got "
                f"{self.targets.shape} and {self.bias.shape}"
            )
        if self.aligned_groups is not None:
            # One validator for every way pairs arrive (a 1-D array in a file included).
            self.aligned_groups = tuple(sorted(as_aligned(self.aligned_groups)))

    def __len__(self) -> int:
        return int(self.Z.shape[0])

    @property
    def dim(self) -> int:
        return int(self.Z.shape[1])

    def save(self, path: str | os.PathLike) -> Path:
        """Write an ``.npz`` with keys ``Z, targets, bias, aligned_groups`` (``[G, 2]`` int64).

        ``aligned_groups_given`` tells None (unknown) apart from an empty set. ``.npz`` is added
        to the file name if missing, as numpy does; the path written is returned.
        """
        path = Path(path)
        if path.suffix != ".npz":
            path = path.with_name(path.name + ".npz")
        path.parent.mkdir(parents=True, exist_ok=True)
        groups = np.asarray(self.aligned_groups or [], dtype=np.int64).reshape(-1, 2)
        np.savez(
            path,
            Z=self.Z,
            targets=self.targets,
            bias=self.bias,
            aligned_groups=groups,
            aligned_groups_given=np.asarray(self.aligned_groups is not None),
            source=np.asarray(self.source),
        )
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> Embeddings:
        """Read a file written by :meth:`save` (or any npz with ``Z, targets, bias``)."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"no embeddings file at {path} (expected an .npz from save())")
        with open(path, "rb") as fh:
            head = fh.read(4)
        if head[:2] != b"PK":  # every .npz is a zip archive
            raise ValueError(
                f"{path} is not an .npz file (a zip of arrays, as np.savez or `debias train "
                f"--save-embeddings` write); it starts with {head!r}"
            )
        with np.load(path, allow_pickle=False) as f:
            missing = {"Z", "targets", "bias"} - set(f.files)
            if missing:
                raise ValueError(
                    f"{path} lacks keys {sorted(missing)}; expected Z, targets, bias, "
                    "aligned_groups"
                )
            given = bool(f["aligned_groups_given"]) if "aligned_groups_given" in f.files else None
            groups = f["aligned_groups"] if "aligned_groups" in f.files else None
            if given is None:
                given = groups is not None and groups.size > 0
            if given and (groups.ndim != 2 or groups.shape[1] != 2):
                raise ValueError(
                    f"{path}: aligned_groups has shape {groups.shape}; expected (y, b) pairs, "
                    "an integer array of shape [G, 2]"
                )
            aligned = [tuple(int(v) for v in row) for row in groups] if given else None
            made = str(f["source"]) if "source" in f.files else ""
            source = f"{path}" + (f" ({made})" if made else "")
            return cls(f["Z"], f["targets"], f["bias"], aligned_groups=aligned, source=source)

    def audit(self, **kwargs) -> AuditReport:
        """Shorthand for :func:`debias.audit.audit_embeddings` on these embeddings."""
        from debias.audit.audit import audit_embeddings

        kwargs.setdefault("aligned_groups", self.aligned_groups)
        return audit_embeddings(self.Z, self.targets, self.bias, **kwargs)


def _resolve_layer(model: nn.Module, layer: nn.Module | str) -> nn.Module:
    if isinstance(layer, nn.Module):
        if not any(m is layer for m in model.modules()):
            raise ValueError("layer is a module that is not part of model")
        return layer
    modules = dict(model.named_modules())
    if layer not in modules:
        names = [name for name in modules if name]
        raise ValueError(f"model has no submodule named {layer!r}; available: {names}")
    return modules[layer]


def _first_tensor(out: object) -> torch.Tensor:
    # Hooks on blocks may see tuples/lists (e.g. attention blocks); the features come first.
    while isinstance(out, (tuple, list)):
        if not out:
            break
        out = out[0]
    if not isinstance(out, torch.Tensor):
        raise ValueError(f"expected the features to be a tensor; got {type(out).__name__}")
    return out


def _batches(
    dataset: Dataset, batch_size: int, device: torch.device
) -> Iterable[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    base, index = dataset, None
    if isinstance(dataset, Subset) and isinstance(dataset.dataset, TensorImageDataset):
        base, index = dataset.dataset, torch.as_tensor(dataset.indices, dtype=torch.long)
    if isinstance(base, TensorImageDataset):
        # Whole-tensor slices instead of a per-sample DataLoader: this is the fast path.
        n = len(base) if index is None else len(index)
        for s in range(0, n, batch_size):
            sel = slice(s, s + batch_size) if index is None else index[s : s + batch_size]
            sel_d = sel if index is None else sel.to(base.images.device)
            x = base.normalize(base.images[sel_d].to(device, non_blocking=True))
            yield x, base.targets[sel_d], base.bias[sel_d]
        return
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)
    for item in loader:
        if not isinstance(item, (tuple, list)) or len(item) < 3:
            raise ValueError(
                "dataset items must be (x, target, bias) tuples; got "
                f"{type(item).__name__} of length {len(item) if hasattr(item, '__len__') else '?'}"
            )
        x, y, b = item[0], item[1], item[2]
        yield x.to(device, non_blocking=True), torch.as_tensor(y), torch.as_tensor(b)


def embed(
    model: nn.Module,
    dataset: Dataset,
    *,
    batch_size: int = 512,
    device: torch.device | str | None = None,
    feature_fn: FeatureFn | None = None,
    layer: nn.Module | str | None = None,
) -> Embeddings:
    """Embed every item of ``dataset`` with ``model``; return :class:`Embeddings`.

    The feature of a batch ``x`` is, in order of precedence:

    * ``feature_fn(model, x)`` when given (for models whose forward returns logits, e.g.
      ``lambda m, x: m.features(x)``);
    * the output of ``layer`` (a submodule or its dotted name in ``model.named_modules()``),
      captured by a forward hook during ``model(x)``;
    * ``model(x)`` itself.

    Features with more than two dimensions are flattened to ``[B, D]``. A
    :class:`~debias.data.base.TensorImageDataset` (or a ``Subset`` of one) is batched as whole
    tensors through ``dataset.normalize``; any other dataset goes through a ``DataLoader`` that
    must yield ``(x, target, bias)``. Runs under ``model.eval()`` and ``torch.no_grad()`` on
    ``device`` (default: cuda if available, else cpu), then restores the model's training mode
    and original device.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module; got {type(model).__name__}")
    if feature_fn is not None and layer is not None:
        raise ValueError("pass either feature_fn or layer, not both")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}")
    if len(dataset) == 0:  # type: ignore[arg-type]
        raise ValueError("dataset is empty; nothing to embed")
    device = torch.device(
        device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu")
    )
    target_module = _resolve_layer(model, layer) if layer is not None else None
    captured: list[torch.Tensor] = []
    handle = None
    if target_module is not None:
        handle = target_module.register_forward_hook(
            lambda _m, _inp, out: captured.append(_first_tensor(out))
        )

    param = next(iter(model.parameters()), None)
    original_device = param.device if param is not None else None
    was_training = model.training
    feats, ys, bs = [], [], []
    try:
        model.to(device)
        model.eval()
        with torch.no_grad():
            for x, y, b in _batches(dataset, batch_size, device):
                if feature_fn is not None:
                    f = feature_fn(model, x)
                elif target_module is not None:
                    captured.clear()
                    model(x)
                    if not captured:
                        raise ValueError("the hooked layer was not called during model(x)")
                    f = captured[-1]
                else:
                    f = model(x)
                f = _first_tensor(f)
                if f.shape[0] != x.shape[0]:
                    raise ValueError(
                        f"features have batch size {f.shape[0]} for an input batch of {x.shape[0]}"
                    )
                feats.append(f.reshape(f.shape[0], -1).float().cpu())
                ys.append(y.reshape(-1).long().cpu())
                bs.append(b.reshape(-1).long().cpu())
    finally:
        if handle is not None:
            handle.remove()
        model.train(was_training)
        if original_device is not None:
            model.to(original_device)

    base = dataset.dataset if isinstance(dataset, Subset) else dataset
    how = "feature_fn" if feature_fn is not None else f"layer {layer!r}" if layer else "output"
    return Embeddings(
        Z=torch.cat(feats).numpy(),
        targets=torch.cat(ys).numpy(),
        bias=torch.cat(bs).numpy(),
        aligned_groups=getattr(base, "aligned_groups", None),
        source=f"{type(model).__name__} ({how}) on {getattr(base, 'name', type(base).__name__)}",
    )
