"""Shared machinery of the contrastive losses (PROTOCOLS §4).

Every loss in :mod:`debias.losses` is a small :class:`ContrastiveLoss` subclass that only writes
its own equation in :meth:`ContrastiveLoss.compute`; validation, dtype handling, the
distributed gather and the helpers every equation needs live here once.

Conventions (PROTOCOLS §4):

* ``features`` is ``[B, V, D]`` (``V >= 2`` views of ``B`` images). It is L2-normalised along
  ``D`` *inside* the loss and flattened view-major, row ``r = v·B + b``, which is
  ``torch.cat(torch.unbind(features, 1), 0)`` exactly as in SupContrast.
* ``s_ik = z_i·z_k / τ``. For anchor ``i``: ``P(i)`` same label, ``k ≠ i``; ``N(i)`` different
  label; ``S(i)`` the other views of the same image; ``A(i)`` all ``k ≠ i``.
* float16 / bfloat16 inputs are computed in float32 (autocast is switched off inside the loss)
  and the loss comes back in float32; float64 stays float64 (the exactness tests use it).

Why the helpers look the way they do: the only ``[N, N]`` tensor a SupCon-type loss really
needs is the logit matrix that ``torch.logsumexp`` reduces. The numerator
``mean_{p∈P(i)} s_ip`` is linear in ``z_p``, so it is computed from per-group feature sums
(``O(N·D)``, no ``[N, N]`` positive mask at all); see :func:`positive_logit_mean`.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from debias.losses.distributed import gather_features, scale_grad_for_ddp, world_size

__all__ = [
    "ContrastiveLoss",
    "TemperatureScaledLoss",
    "check_features",
    "check_positive",
    "flatten_views",
    "group_ids",
    "group_sums",
    "masked_logsumexp",
    "normalize",
    "positive_logit_mean",
    "row_logsumexp",
    "self_excluded_logits",
]


# -- validation ---------------------------------------------------------------------------------
def check_features(features: torch.Tensor, min_views: int = 2) -> tuple[int, int, int]:
    """Validate ``features`` and return ``(B, V, D)``; ``V >= min_views`` (2 for the losses
    with a self term; 1 where positives are other images of the label: SupCon, FairKL)."""
    if not isinstance(features, torch.Tensor):
        raise ValueError(
            f"features must be a torch.Tensor [B, V, D]; got {type(features).__name__}"
        )
    if features.ndim != 3:
        raise ValueError(
            "features must have shape [B, V, D] (batch, views, dim) with V >= 2 views; got "
            f"shape {tuple(features.shape)}"
        )
    b, v, d = features.shape
    if v < min_views:
        raise ValueError(
            f"features must hold V >= {min_views} views per image ([B, V, D]); got V={v} "
            f"(shape {tuple(features.shape)})"
        )
    if b < 1 or d < 1:
        raise ValueError(f"features must have B >= 1 and D >= 1; got shape {tuple(features.shape)}")
    if not features.is_floating_point():
        raise ValueError(f"features must be a floating-point tensor; got {features.dtype}")
    return b, v, d


def _check_side(name: str, t: torch.Tensor | None, b: int, needed: bool, loss: str) -> None:
    if t is None:
        if needed:
            raise ValueError(f"{loss} needs `{name}` (shape [{b}]) but {name}=None was given")
        return
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"`{name}` must be a torch.Tensor of shape [{b}]; got {type(t).__name__}")
    if t.shape != (b,):
        raise ValueError(
            f"`{name}` must have shape [B] = [{b}] to match features [B, V, D]; got "
            f"{tuple(t.shape)}"
        )
    if t.is_floating_point() or t.is_complex():
        # Losses compare labels only by equality: float labels (e.g. torch.rand) would make
        # every row its own class and silently change the loss (BiasCon would return 0).
        raise ValueError(
            f"{loss}: `{name}` must be an integer tensor of class ids (e.g. torch.long); got "
            f"dtype {t.dtype}"
        )


def _check_finite(features: torch.Tensor, loss: str) -> None:
    # One O(B·V·D) pass, small next to the O((VB)²·D) loss; checked after the gather so every
    # rank raises together instead of one rank leaving the others waiting in a collective.
    bad = ~torch.isfinite(features)
    if bool(bad.any()):
        bad_images = int(bad.flatten(1).any(dim=1).sum())
        raise ValueError(
            f"{loss}: features hold {int(bad.sum())} NaN/inf value(s) in {bad_images} image(s) of "
            f"{features.shape[0]}; expected finite features (the encoder diverged or its "
            "input holds NaN)"
        )


def _check_batch(features: torch.Tensor, minimum: int, loss: str) -> None:
    if features.shape[0] < minimum:
        raise ValueError(
            f"{loss} needs a batch of B >= {minimum} images; got B={features.shape[0]} "
            f"(features of shape {tuple(features.shape)})"
        )


# -- geometry -----------------------------------------------------------------------------------
def normalize(features: torch.Tensor) -> torch.Tensor:
    """L2-normalise along the last dim (``F.normalize``, eps 1e-12, as SupContrast's head)."""
    return F.normalize(features, dim=-1)


def flatten_views(features: torch.Tensor) -> torch.Tensor:
    """``[B, V, D] -> [V·B, D]`` view-major: row ``r = v·B + b``.

    Same order as SupContrast's ``torch.cat(torch.unbind(features, 1), 0)``, in one copy.
    """
    b, v, d = features.shape
    return features.transpose(0, 1).reshape(v * b, d)


def self_excluded_logits(z: torch.Tensor, temperature: float) -> torch.Tensor:
    """``s = z zᵀ / τ`` with the diagonal set to ``-inf`` (an anchor never contrasts itself).

    Scaling the ``[N, D]`` operand instead of the ``[N, N]`` product saves one ``N²`` pass; the
    in-place diagonal fill is safe because ``mm`` saves its inputs, not its output.
    """
    logits = (z / temperature) @ z.T
    logits.fill_diagonal_(float("-inf"))
    return logits


def masked_logsumexp(logits: torch.Tensor, drop: torch.Tensor) -> torch.Tensor:
    """Row-wise ``log Σ_{k: not drop[i,k]} exp(logits[i,k])``.

    Done as ``logsumexp`` over ``-inf``-filled entries, so every row gets its own max (no
    underflow even when the kept set sits far below the row's overall max, e.g. ConTeX's
    different-label set at small τ). Passing the *dropped* set avoids building its complement.
    Rows with nothing kept return ``-inf``; callers must keep such rows out of the loss (their
    backward would be NaN).
    """
    return torch.logsumexp(logits.masked_fill(drop, float("-inf")), dim=1)


def group_ids(*keys: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Contiguous ids ``0..G-1`` for the distinct tuples of ``keys`` (e.g. labels, or (label, bias)).

    Keys may have different dtypes: each is mapped to ids first, then the tuples are combined.
    """
    uniq, ids = torch.unique(keys[0].reshape(-1), return_inverse=True)
    n = int(uniq.shape[0])
    for key in keys[1:]:
        uniq_k, ids_k = torch.unique(key.reshape(-1), return_inverse=True)
        uniq, ids = torch.unique(ids * int(uniq_k.shape[0]) + ids_k, return_inverse=True)
        n = int(uniq.shape[0])
    return ids, n


# Set to False to use the plain autograd path everywhere (slower, same numbers; tests use it).
FUSED = True
# Above this many groups, summing exp-logits per group with a [N, K] matmul costs more than a
# masked [N, N] pass; fall back to the mask. Module-level so tests can force either path.
MATMUL_MAX_GROUPS = 256


class _RowLogSumExp(torch.autograd.Function):
    """Fused ``log Σ_{k≠i} e^{s_ik}`` and ``log Σ_{k: g_k≠g_i} e^{s_ik}`` from one matmul.

    Forward keeps a single ``[N, N]`` buffer, ``E = exp(s − rowmax)`` (the logits are turned
    into it in place), and sums it twice: over all columns, and per group with ``E @ onehot``
    (an ``[N, K]`` product) keeping the columns of the other groups. Backward uses the closed
    form ``∂lse/∂s_ik = E_ik / ΣE`` and returns ``(W z + Wᵀ z) / τ``; nothing but ``E`` is saved.
    Only valid while no term can underflow to 0 (see :func:`row_logsumexp`).
    """

    @staticmethod
    def forward(ctx, z, temperature, onehot, row_groups):  # type: ignore[override]
        e = (z / temperature) @ z.T
        e.fill_diagonal_(float("-inf"))
        m = e.amax(dim=1)
        e.sub_(m[:, None]).exp_()
        sum_all = e.sum(dim=1)
        lse_all = m + sum_all.log()
        if onehot is None:
            sum_diff = lse_diff = None
        else:
            per_group = e @ onehot  # [N, K]: Σ_k E_ik over the rows of each group
            # Sum the *other* groups' columns (never total − own: that cancels catastrophically).
            sum_diff = per_group.masked_fill(onehot.bool(), 0.0).sum(dim=1)
            lse_diff = m + sum_diff.log()
        ctx.temperature = temperature
        ctx.n_groups = 0 if onehot is None else onehot.shape[1]
        ctx.save_for_backward(z, e, sum_all, sum_diff, row_groups)
        return lse_all, lse_diff

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g_all, g_diff):  # type: ignore[override]
        z, e, sum_all, sum_diff, row_groups = ctx.saved_tensors
        coef = (g_all / sum_all) if g_all is not None else torch.zeros_like(sum_all)
        if g_diff is None or sum_diff is None:
            w = e * coef[:, None]
        else:
            n_groups = ctx.n_groups
            # table[i, c] = weight of a column of group c for row i
            table = coef[:, None] + (g_diff / sum_diff)[:, None] * (
                torch.arange(n_groups, device=z.device)[None, :] != row_groups[:, None]
            )
            w = table.index_select(1, row_groups).mul_(e)
        # d s_ik / d z = (row i gets W z, row k gets Wᵀ z) / τ; two products, no [N, N] sum.
        grad = torch.addmm(w @ z, w.T, z)
        return grad.div_(ctx.temperature), None, None, None


def row_logsumexp(
    z: torch.Tensor,
    temperature: float,
    row_groups: torch.Tensor | None = None,
    n_groups: int = 0,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(lse_all, lse_diff)``: ``log Σ_{k∈A(i)} e^{s_ik}`` and ``log Σ_{k: g_k≠g_i} e^{s_ik}``.

    ``lse_diff`` is computed only when ``row_groups`` is given (``None`` otherwise); every row
    must then have at least one row of another group. On normalised rows ``|s| ≤ 1/τ``, so
    ``s − rowmax ≥ −2/τ``; while ``e^{−2/τ}`` stays a normal number of the dtype
    (τ ≳ 0.025 in float32) the fused :class:`_RowLogSumExp` is exact and used; below that the
    per-set ``logsumexp`` path (own max per set, never underflows) is used.
    """
    # 2% slack for rows whose norm rounds slightly above 1.
    fused = FUSED and 2.02 / temperature < -math.log(torch.finfo(z.dtype).tiny)
    if fused:
        onehot = None
        if row_groups is not None:
            if n_groups <= MATMUL_MAX_GROUPS:
                onehot = F.one_hot(row_groups, n_groups).to(z.dtype)
            else:
                fused = False
        if fused:
            lse_all, lse_diff = _RowLogSumExp.apply(z, temperature, onehot, row_groups)
            return lse_all, lse_diff
    logits = self_excluded_logits(z, temperature)
    lse_all = torch.logsumexp(logits, dim=1)
    if row_groups is None:
        return lse_all, None
    same = row_groups[:, None] == row_groups[None, :]
    return lse_all, masked_logsumexp(logits, same)


def group_sums(z: torch.Tensor, ids: torch.Tensor, n_groups: int) -> torch.Tensor:
    """``[G, D]``: sum of the rows of ``z`` in each group (differentiable ``index_add``)."""
    return z.new_zeros(n_groups, z.shape[1]).index_add(0, ids, z)


def positive_logit_mean(
    z: torch.Tensor,
    pos_sum: torch.Tensor,
    count: torch.Tensor,
    temperature: float,
) -> torch.Tensor:
    """``mean_{p∈P(i)} s_ip = z_i · (Σ_{p∈P(i)} z_p) / (τ·|P(i)|)``; 0 where ``|P(i)| = 0``.

    ``pos_sum`` is ``Σ_{p∈P(i)} z_p`` per row (built from :func:`group_sums`), ``count`` is
    ``|P(i)|``. Linearity of the dot product is what removes the ``[N, N]`` positive mask.
    """
    dots = (z * pos_sum).sum(dim=1) / temperature
    return dots / count.clamp_min(1).to(dots.dtype)


def check_positive(name: str, value: float) -> float:
    """``float(value)`` if it is a finite number > 0, else a ValueError naming the argument."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number > 0; got {value!r}") from None
    if not (v > 0.0 and v != float("inf")):
        raise ValueError(f"{name} must be a finite number > 0; got {value!r}")
    return v


# -- the module every loss derives from ---------------------------------------------------------
def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    # Half-precision similarities at τ = 0.07 overflow exp and lose the tail of the softmax.
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _autocast_off(device: torch.device):
    try:
        return torch.autocast(device_type=device.type, enabled=False)
    except (RuntimeError, ValueError):  # a backend without autocast support: nothing to disable
        return contextlib.nullcontext()


class ContrastiveLoss(nn.Module):
    """Base class: validation, float32 compute, distributed gather, DDP gradient convention.

    Subclasses set ``requires_labels`` / ``requires_bias`` (read by the trainer) and implement
    :meth:`compute` on the gathered, upcast, *un-normalised* ``[B, V, D]`` features.

    A call raises ValueError naming the loss when ``labels`` / ``bias`` are missing where
    required, of the wrong shape, or not integer class ids (float labels such as
    ``torch.rand(B)`` would make every row its own class); when the features hold NaN/inf; or
    when the batch has fewer than :attr:`min_batch` images.

    Args:
        gather: if ``torch.distributed`` is initialised with ``world_size > 1``, compute the loss
            on the features of *all* ranks (see :mod:`debias.losses.distributed`). The value each
            rank returns is the global-batch loss; its gradient is multiplied by ``world_size``
            so that DDP's averaging of parameter gradients gives exactly the single-process
            gradient of the global batch.
    """

    requires_labels: ClassVar[bool] = False
    requires_bias: ClassVar[bool] = False
    #: Fewest images (after the distributed gather) the loss is defined on.
    min_batch: ClassVar[int] = 1
    #: Fewest views per image: 2 where a self term needs another view of the image.
    min_views: ClassVar[int] = 2

    def __init__(self, *, gather: bool = True) -> None:
        super().__init__()
        self.gather = bool(gather)

    def compute(
        self, features: torch.Tensor, labels: torch.Tensor | None, bias: torch.Tensor | None
    ) -> torch.Tensor:
        raise NotImplementedError

    def forward(
        self,
        features: torch.Tensor,
        labels: torch.Tensor | None = None,
        bias: torch.Tensor | None = None,
    ) -> torch.Tensor:
        b, _, _ = check_features(features, self.min_views)
        name = type(self).__name__
        # Instance attributes may override the class flags (CACR(supervised=True) needs labels).
        _check_side("labels", labels, b, self.requires_labels, name)
        _check_side("bias", bias, b, self.requires_bias, name)
        if labels is not None and labels.device != features.device:
            labels = labels.to(features.device)
        if bias is not None and bias.device != features.device:
            bias = bias.to(features.device)

        with _autocast_off(features.device):
            x = features.to(_compute_dtype(features.dtype))
            ws = 1
            if self.gather:
                ws = world_size()
                if ws > 1:
                    x, labels, bias = gather_features(x, labels, bias)
            _check_batch(x, self.min_batch, name)
            _check_finite(x, name)
            loss = self.compute(x, labels, bias)
            if ws > 1:
                loss = scale_grad_for_ddp(loss, ws)
        return loss

    def settings(self) -> dict[str, Any]:
        """The loss's arguments as resolved, defaults included (a run records them)."""
        return {n: v for n, v in vars(self).items() if not n.startswith("_") and n != "training"}

    def extra_repr(self) -> str:
        return ", ".join(f"{n}={v!r}" for n, v in self.settings().items())


class TemperatureScaledLoss(ContrastiveLoss):
    r"""An InfoNCE-family loss: logits ``s_ik = z_i·z_k / τ``, per-anchor losses reduced by
    :meth:`reduce`,

    .. math::

        \mathcal{L} = \frac{\tau}{\tau_{base}} \cdot \frac{1}{N}\sum_{i=1}^{N} l(i),

    the mean over all ``N = V·B`` anchors, scaled by ``τ/τ_base`` (SupContrast's convention).
    Subclasses compute ``l(i)`` and end with ``return self.reduce(per_anchor)``; a different
    reduction is a different :meth:`reduce`.

    Args:
        temperature: τ (default 0.07, the SupContrast and ConTeX default).
        base_temperature: τ_base (default 0.07); ``None`` means ``τ_base = τ`` (no scaling).
        gather: gather features across ranks under ``torch.distributed`` (see base class).
    """

    def __init__(
        self,
        temperature: float = 0.07,
        base_temperature: float | None = 0.07,
        *,
        gather: bool = True,
    ) -> None:
        super().__init__(gather=gather)
        self.temperature = check_positive("temperature", temperature)
        self.base_temperature = (
            None
            if base_temperature is None
            else check_positive("base_temperature", base_temperature)
        )

    @property
    def scale(self) -> float:
        """``τ / τ_base`` (1.0 when ``base_temperature`` is None)."""
        return 1.0 if self.base_temperature is None else self.temperature / self.base_temperature

    def reduce(
        self, per_anchor: torch.Tensor, has_positive: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``(τ/τ_base)·mean_i l(i)`` over every anchor.

        ``has_positive`` (bool ``[N]``), if given, marks the anchors whose positive set is
        non-empty; the others contribute 0 but still count in the mean (BiasCon's official
        ``sum_mask[sum_mask == 0] = 1`` then ``loss.mean()``), so a batch where few anchors have
        positives gives a small loss, not the mean over those few.
        """
        if has_positive is not None:
            per_anchor = torch.where(has_positive, per_anchor, torch.zeros_like(per_anchor))
        return self.scale * per_anchor.mean()
