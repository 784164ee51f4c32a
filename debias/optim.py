"""Optimisers and learning-rate schedules as reusable pieces, chosen by name from a config.

Optimisers (:func:`make_optimizer`): ``adam`` (ReBias, BiasCon), ``adamw``, ``sgd`` with
``momentum`` and an optional ``nesterov`` (SupContrast, ConTeX, FairKL).

Schedules (:func:`lr_at`), for a stage of ``E`` epochs, 0-based epoch ``k`` and the batch
``i`` of ``n`` inside it; ``lr0`` is the configured lr, ``γ`` the decay rate:

- ``constant``: ``lr0``.
- ``multistep``: ``lr0 · γ^#{m ∈ milestones : k >= m}``: the lr is multiplied by ``γ`` after
  epoch ``m`` (``torch.optim.lr_scheduler.MultiStepLR`` stepped once per epoch, and
  SupContrast's ``adjust_learning_rate`` without ``--cosine``: ``steps = sum(epoch >
  lr_decay_epochs)`` with its 1-based ``epoch = k + 1``).
- ``cosine`` (SupContrast ``util.py`` ``adjust_learning_rate`` with ``--cosine``, called at
  the start of its 1-based epoch ``e = k + 1``): ``η_min = lr0 · γ³``,
  ``lr = η_min + (lr0 − η_min) · (1 + cos(π e / E)) / 2`` (so epoch 1 is already below lr0
  and the last epoch runs at η_min, as in the official code).

Warm-up (SupContrast ``warmup_learning_rate``, on with ``--warm``, which ``main_supcon.py``
sets for batches over 256): during the first ``W = warmup_epochs`` epochs the lr rises per
batch, ``p = (i + k·n) / (W·n)``, ``lr = warmup_from + p · (warmup_to − warmup_from)``, where
``warmup_to`` is the schedule's lr at ``e = W`` (cosine: ``η_min + (lr0 − η_min)(1 +
cos(π W / E)) / 2``; otherwise ``lr0``, as in ``main_supcon.py``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "multistep", "cosine")
SUPCONTRAST_UTIL = "HobbitLong/SupContrast util.py (adjust_learning_rate, warmup_learning_rate)"


def make_optimizer(
    params: Iterable[Any],
    name: str,
    *,
    lr: float,
    weight_decay: float = 0.0,
    momentum: float = 0.9,
    nesterov: bool = False,
) -> torch.optim.Optimizer:
    """The optimiser ``name`` (:data:`OPTIMIZERS`); ``momentum`` and ``nesterov`` are SGD's.

    >>> net = torch.nn.Linear(2, 1)
    >>> make_optimizer(net.parameters(), "sgd", lr=0.05, momentum=0.9).defaults["momentum"]
    0.9
    """
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(
            params, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov
        )
    raise ValueError(f"optimizer {name!r}: expected one of {', '.join(OPTIMIZERS)}")


@dataclass(frozen=True)
class Schedule:
    """One stage's learning-rate schedule (see the module docstring for the formulas)."""

    kind: str = "constant"
    lr: float = 1e-3
    epochs: int = 1
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    warmup_epochs: int = 0
    warmup_from: float = 0.01

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULES:
            raise ValueError(f"lr_schedule {self.kind!r}: expected one of {', '.join(SCHEDULES)}")
        if self.kind == "multistep" and not self.milestones:
            raise ValueError(
                "lr_schedule multistep needs lr_milestones (epochs after which lr is "
                "multiplied by lr_gamma), e.g. --lr-milestones 26 53"
            )
        if self.kind != "multistep" and self.milestones:
            raise ValueError(
                f"lr_milestones {list(self.milestones)} with lr_schedule {self.kind!r}: "
                "milestones apply to the multistep schedule only"
            )
        if self.warmup_epochs < 0 or (self.warmup_epochs and self.warmup_epochs >= self.epochs):
            raise ValueError(
                f"warmup_epochs {self.warmup_epochs}: expected 0..{self.epochs - 1} "
                f"(fewer than the stage's {self.epochs} epochs)"
            )

    def base(self, epoch: int) -> float:
        """The lr of 0-based ``epoch`` without warm-up."""
        if self.kind == "multistep":
            return self.lr * self.gamma ** sum(epoch >= m for m in self.milestones)
        if self.kind == "cosine":
            return self._cosine(epoch + 1)
        return self.lr

    def _cosine(self, e: float) -> float:
        eta_min = self.lr * self.gamma**3
        return eta_min + (self.lr - eta_min) * (1 + math.cos(math.pi * e / self.epochs)) / 2

    def at(self, epoch: int, batch: int = 0, batches: int = 1) -> float:
        """The lr of batch ``batch`` of ``batches`` in 0-based ``epoch``."""
        if epoch < self.warmup_epochs:
            to = self._cosine(self.warmup_epochs) if self.kind == "cosine" else self.lr
            p = (batch + epoch * batches) / (self.warmup_epochs * batches)
            return self.warmup_from + p * (to - self.warmup_from)
        return self.base(epoch)

    def describe(self) -> str:
        """One line for the run's log: what the lr does."""
        text = {
            "constant": f"constant lr {self.lr:g}",
            "multistep": f"lr {self.lr:g} x{self.gamma:g} after epochs "
            f"{', '.join(map(str, self.milestones))}",
            "cosine": f"cosine lr {self.lr:g} -> {self.lr * self.gamma**3:g} over "
            f"{self.epochs} epochs (SupContrast)",
        }[self.kind]
        if self.warmup_epochs:
            text += f", linear warm-up from {self.warmup_from:g} over {self.warmup_epochs} epochs"
        return text

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class LRScheduler:
    """Sets an optimiser's lr from a :class:`Schedule`: :meth:`step_batch` before each step
    (warm-up moves per batch), :meth:`step` after each epoch. Its state is the epoch count
    (a checkpoint of torch's ``MultiStepLR``, ``last_epoch``, is read too)."""

    def __init__(self, optimizer: torch.optim.Optimizer, schedule: Schedule) -> None:
        self.optimizer, self.schedule, self.epoch = optimizer, schedule, 0
        self._set(schedule.at(0))

    def _set(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def step_batch(self, batch: int, batches: int) -> None:
        if self.epoch < self.schedule.warmup_epochs:
            self._set(self.schedule.at(self.epoch, batch, batches))

    def step(self) -> None:
        self.epoch += 1
        self._set(self.schedule.at(self.epoch))

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.epoch = int(state["epoch"] if "epoch" in state else state["last_epoch"])
        self._set(self.schedule.at(self.epoch))


def stage_schedule(cfg: Any, epochs: int, milestones: Sequence[int], lr: float) -> Schedule:
    """The :class:`Schedule` of a gradient stage of ``epochs`` epochs from a run's config
    (``lr_schedule``, ``lr_gamma``, ``warmup_epochs``, ``warmup_from``)."""
    return Schedule(
        kind=cfg.lr_schedule,
        lr=lr,
        epochs=epochs,
        milestones=tuple(milestones),
        gamma=cfg.lr_gamma,
        warmup_epochs=cfg.warmup_epochs,
        warmup_from=cfg.warmup_from,
    )
