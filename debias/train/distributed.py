"""Data-parallel training across processes (``torchrun --nproc_per_node N -m debias train``).

Conventions:

- ``batch_size`` is the *global* batch. Every rank draws the same seeded permutation and takes
  rows ``rank::world`` of each global batch, so the union over ranks is exactly the batch a
  single process would use, and contrastive losses (which all-gather features, see
  :mod:`debias.losses.distributed`) see that same global batch.
- Evaluation is sharded the same way and predictions are all-gathered, so every rank holds the
  full predictions and metrics are computed once, on rank 0's process, for the whole split.
- Only rank 0 writes files and logs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls, device_type: str) -> DistContext:
        """Join the process group that ``torchrun`` describes in the environment, if any."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        owns = False
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
            owns = True
        return cls(
            rank=dist.get_rank(),
            world_size=dist.get_world_size(),
            local_rank=int(os.environ.get("LOCAL_RANK", "0")),
            owns_group=owns,
        )

    def shard(self, idx: torch.Tensor) -> torch.Tensor:
        """This rank's rows of a global batch (trimmed so every rank gets the same count)."""
        if not self.enabled:
            return idx
        usable = len(idx) // self.world_size * self.world_size
        return idx[:usable][self.rank :: self.world_size]

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def gather_rows(self, local: torch.Tensor, n: int) -> torch.Tensor:
        """Inverse of sharding rows ``rank::world`` of ``range(n)``: all-gather and interleave."""
        if not self.enabled:
            return local
        per_rank = -(-n // self.world_size)
        padded = torch.zeros((per_rank, *local.shape[1:]), dtype=local.dtype, device=local.device)
        padded[: len(local)] = local
        parts = [torch.empty_like(padded) for _ in range(self.world_size)]
        dist.all_gather(parts, padded)
        out = torch.stack(parts, dim=1).reshape(per_rank * self.world_size, *local.shape[1:])
        return out[:n]

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()
