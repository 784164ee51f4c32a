"""The stages of a training run: which stage an epoch belongs to, entering it (the method's
``start_stage`` and its :class:`~debias.methods.stages.StageRunner`), and the checkpoint that
resumes it: :class:`TrainerStages`, a part of :class:`debias.train.loop.Trainer`.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from debias.methods import TRAIN_BIAS_LABELS, VAL_BIAS_LABELS, Stage, StageHelper
from debias.train import runfolder
from debias.train.config import RunConflictError
from debias.train.evaluate import encode
from debias.train.runfolder import CHECKPOINT

# Version of the checkpoint layout; a checkpoint of another layout is refused, not misread.
CHECKPOINT_FORMAT = 2
# The checkpoint's own entries; every other entry is the current stage runner's state().
CORE_KEYS = frozenset(
    {
        "format",
        "config",
        "epochs_done",
        "elapsed",
        "method",
        "stage_started",
        "history",
        "best",
        "continued_from",
    }
)
# The entries of the built-in stage runners (debias.methods.stages).
STAGE_KEYS = ("optimizer", "scheduler", "linear", "linear_optimizer")


class TrainerStages:
    """Stages and checkpoints of a :class:`~debias.train.loop.Trainer` (which sets ``cfg``,
    ``method``, ``stages``, ``stage_started``, ``splits``, ``history``, ``best``...)."""

    @property
    def total_epochs(self) -> int:
        return sum(s.epochs for s in self.stages)

    def stage_of(self, epoch: int) -> tuple[int, Stage, int]:
        """``(stage index, stage, epoch within the stage)`` of a run-wide 0-based epoch."""
        first = 0
        for i, stage in enumerate(self.stages):
            if epoch < first + stage.epochs:
                return i, stage, epoch - first
            first += stage.epochs
        raise IndexError(f"epoch {epoch + 1} is past the last stage ({self.total_epochs} epochs)")

    # -- stages ------------------------------------------------------------------------------------
    def enter_stage(self, index: int) -> None:
        """Start stage ``index`` (``method.start_stage`` once per run) and make its runner
        (``method.stage_runner``), which restores its checkpointed state on resume."""
        stage = self.stages[index]
        fresh = index > self.stage_started
        if fresh:
            kind = self.method.supervision_of(self.method.hp)
            reads_val = kind in (VAL_BIAS_LABELS, TRAIN_BIAS_LABELS)
            helper = StageHelper(
                lambda: self.model_predictions("train"),
                self.log,
                lambda split, rows=None: encode(
                    self.model, self.splits[split], batch_size=self.cfg.eval_batch_size, rows=rows
                ),
                self.splits.get("val") if reads_val else None,
            )
            self.method.start_stage(stage, helper)
            self.stage_started = index
        self._runner = self.method.stage_runner(stage)
        self._runner.enter(self, stage, None if fresh else self._saved_stage)
        self._current = index

    # The current stage runner's optimizers and linear classifier, where it has them (the
    # built-in runners': debias.methods.stages).
    @property
    def optimizer(self) -> torch.optim.Optimizer | None:
        return getattr(self._runner, "optimizer", None)

    @property
    def scheduler(self) -> Any:
        return getattr(self._runner, "scheduler", None)

    @property
    def linear(self) -> nn.Module | None:
        return getattr(self._runner, "linear", None)

    @property
    def linear_optimizer(self) -> torch.optim.Optimizer | None:
        return getattr(self._runner, "linear_optimizer", None)

    # -- checkpointing ---------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """Everything a resumed run needs (written to ``checkpoint.pt`` after every epoch)."""
        core = {
            "format": CHECKPOINT_FORMAT,
            "config": self.cfg.identity(),
            "epochs_done": self.epochs_done,
            "elapsed": self.elapsed,
            "method": self.method.state_dict(),
            "stage_started": self.stage_started,
            "history": self.history,
            "best": self.best,
            "continued_from": self.continued_from,
        }
        runner = self._runner.state() if self._runner is not None else {}
        clash = sorted(set(runner) & set(core))
        if clash:
            raise ValueError(f"{type(self._runner).__name__}.state(): keys {clash} are reserved")
        # The built-in runners' keys are always there (None when unused), as in checkpoints
        # written before stage runners existed.
        return core | dict.fromkeys(STAGE_KEYS) | runner

    def restore(self, state: dict[str, Any], *, longer: bool = False) -> str:
        """Load a :meth:`state` (the optimizer of the current stage is restored on entering it);
        with ``longer`` it may be the checkpoint of a finished run this one continues
        (:meth:`check_continuation`). Returns what is done: "resuming" or "continuing"."""
        if state.get("format") != CHECKPOINT_FORMAT:
            raise RunConflictError(
                f"{self.out / CHECKPOINT} was written by an older debias (checkpoint format "
                f"{state.get('format', 1)}, expected {CHECKPOINT_FORMAT}); rerun with --force "
                "to start this run over"
            )
        runfolder.check_same_run(state["config"], self.cfg, self.out, "a checkpoint", longer=longer)
        self.method.load_state_dict(state["method"])
        self.stage_started = state["stage_started"]
        self._saved_stage = {k: v for k, v in state.items() if k not in CORE_KEYS}
        self.history = state["history"]
        self.best = state["best"]
        self.epochs_done = state["epochs_done"]
        self.elapsed = state["elapsed"]
        self.continued_from = list(state.get("continued_from") or [])
        if state["config"]["epochs"] == self.cfg.epochs:
            return "resuming"
        self.continued_from.append(self._continuing)
        return "continuing"

    def check_continuation(self, done: dict[str, Any], ckpt_path: Path) -> None:
        """Refuse to continue the finished run ``done`` (its metrics.json) to more epochs unless
        only its last stage grows (a stage after the main one, such as a linear read-out, has
        already run on the shorter main stage) and its checkpoint is there."""
        old = done["method"]["stages"]
        new = json.loads(json.dumps([dataclasses.asdict(s) for s in self.stages]))
        grown = len(old) == len(new) and old[:-1] == new[:-1]
        if not grown or {**old[-1], "epochs": new[-1]["epochs"]} != new[-1]:
            first = next((i for i, (a, b) in enumerate(zip(old, new)) if a != b), 0)
            later = ", ".join(s["name"] for s in new[first + 1 :]) or "stage list"
            raise RunConflictError(
                f"cannot continue {self.out} to more epochs: its {later} stage(s) already ran "
                "after the shorter main stage; use another --out, or --force to start over"
            )
        if not ckpt_path.exists():
            raise RunConflictError(
                f"cannot continue {self.out} to more epochs: {ckpt_path} (its last epoch) is "
                "missing; use another --out, or --force to start over"
            )
        self._continuing = {
            "epochs": done["config"]["epochs"],
            "epochs_run": done.get("epochs_run"),
            "selected_epoch": done.get("selection", {}).get("epoch"),
            "wall_time_seconds": done.get("wall_time_seconds"),
        }
