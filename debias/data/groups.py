"""Group rules shared by the loaders that split and label data themselves (CelebA, metadata).

A group is a ``(target, bias)`` pair ``(y, b)``; its integer code is ``y * num_bias + b``.
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction

import torch

from debias._types import group_code

__all__ = ["aligned_from_counts", "group_code", "stratified"]


def stratified(
    idx: torch.Tensor, groups: torch.Tensor, fracs: Sequence[float], gen: torch.Generator
) -> list[torch.Tensor]:
    """Split ``idx`` per group: part k > 0 gets ``round(fracs[k] * n)`` (>= 1 if n > len(fracs)
    - 1), part 0 the rest; each group is permuted by ``gen`` in ascending group order."""
    parts: list[list[torch.Tensor]] = [[] for _ in fracs]
    for g in torch.unique(groups[idx]).tolist():
        members = idx[groups[idx] == g]
        members = members[torch.randperm(len(members), generator=gen)]
        n = len(members)
        counts = [int(f * n + 0.5) for f in fracs[1:]]
        if n >= len(fracs):
            counts = [max(1, c) for c in counts]
        pos = n - sum(counts)
        parts[0].append(members[:pos])
        for k, c in enumerate(counts, start=1):
            parts[k].append(members[pos : pos + c])
            pos += c
    return [torch.cat(p) if p else idx[:0] for p in parts]


def aligned_from_counts(
    y: torch.Tensor, b: torch.Tensor, num_classes: int = 2, num_bias: int = 2
) -> list[tuple[int, int]]:
    """Bias-aligned ``(y, b)`` pairs from the labels of a training pool.

    For each bias value ``b`` present: ``argmax_y n(y, b) / n(y)`` over the classes present,
    i.e. the target value most over-represented among images with bias ``b`` relative to its
    overall rate (compared exactly, as fractions). A tie goes to ``y = b`` when ``b`` is among
    the tied values (for binary labels with ``y`` and ``b`` independent: the diagonal), else to
    the smallest tied ``y``. The plain "most frequent ``y`` given ``b``" would, on CelebA
    Blond_Hair/Male, call non-blond aligned with both sexes, because most women are not blond.
    """
    counts = torch.bincount(group_code(y, b, num_bias), minlength=num_classes * num_bias)
    counts = counts.view(num_classes, num_bias).tolist()
    n_y = [sum(row) for row in counts]
    present = [t for t in range(num_classes) if n_y[t] > 0]
    aligned = []
    for bv in range(num_bias):
        if not any(counts[t][bv] for t in present):
            continue
        rate = {t: Fraction(counts[t][bv], n_y[t]) for t in present}
        best = max(rate.values())
        tied = [t for t in present if rate[t] == best]
        aligned.append((bv if bv in tied else tied[0], bv))
    return aligned
