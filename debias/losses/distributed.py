"""Global-batch contrastive losses under ``torch.distributed`` / DDP.

A contrastive loss needs every other sample of the batch as a negative, so with data
parallelism each rank gathers the features (and labels, bias) of all ranks and computes the loss
on the *global* batch.

Gradient convention (read this before changing anything):

* :func:`gather_features` all-gathers *detached* copies and puts this rank's own tensor back
  into its slot, so rank ``r``'s loss ``L`` (the same global-batch value on every rank) has a
  gradient only through the local features ``x_r``: ``∂L/∂x_r``.
* The sum over ranks of those gradients is the full gradient of ``L``; DDP *averages*
  parameter gradients over ranks, i.e. divides that sum by ``world_size``.
* Therefore every loss passes its value through :func:`scale_grad_for_ddp`, which leaves the
  value unchanged (so logs show the real global-batch loss) and multiplies the gradient by
  ``world_size``. After DDP's averaging, parameter gradients equal the single-process
  gradient of the global batch exactly. ``tests/test_losses_distributed.py`` checks this with
  two gloo processes against a single process, for both the feature and a DDP model's
  parameter gradients.

Without an initialised process group (or with ``world_size == 1``) everything is a no-op.
All ranks must pass the same per-rank batch size (``DistributedSampler`` pads to make it so);
a mismatch raises a ``ValueError`` instead of a hang or a silent shape error.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

__all__ = ["gather_features", "is_distributed", "scale_grad_for_ddp", "world_size"]


def is_distributed() -> bool:
    """True when ``torch.distributed`` is available, initialised and has more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    """Number of ranks of the default process group (1 when not distributed)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _gather_keep_local(t: torch.Tensor) -> torch.Tensor:
    parts = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, t.detach().contiguous())
    # The local slot keeps its autograd history; the others are constants for this rank.
    parts[dist.get_rank()] = t
    return torch.cat(parts, dim=0)


def gather_features(
    features: torch.Tensor,
    labels: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """All-gather ``features`` (dim 0, rank order), ``labels`` and ``bias`` across ranks.

    The local part of the gathered features keeps its gradient (see the module docstring for
    the DDP convention). Returns the inputs unchanged when not distributed.
    """
    if not is_distributed():
        return features, labels, bias
    n = torch.tensor([features.shape[0]], device=features.device, dtype=torch.long)
    sizes = [torch.empty_like(n) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, n)
    sizes_list = [int(s.item()) for s in sizes]
    if len(set(sizes_list)) != 1:
        raise ValueError(
            "gather_features needs the same per-rank batch size on every rank (use a "
            f"DistributedSampler with padding / drop_last); got sizes {sizes_list}"
        )
    out_f = _gather_keep_local(features)
    out_y = _gather_keep_local(labels) if labels is not None else None
    out_b = _gather_keep_local(bias) if bias is not None else None
    return out_f, out_y, out_b


class _ScaleGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, factor: float) -> torch.Tensor:  # type: ignore[override]
        ctx.factor = factor
        return x.clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        return grad * ctx.factor, None


def scale_grad_for_ddp(loss: torch.Tensor, factor: int) -> torch.Tensor:
    """Identity on the value, gradient times ``factor`` (= world size; see module docstring)."""
    if factor == 1:
        return loss
    return _ScaleGrad.apply(loss, float(factor))
