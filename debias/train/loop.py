"""One training run, start to finish: data → method → stages → selection → files.

The loop knows no method and no stage kind by name: a :class:`~debias.methods.Method` names
its stages, turns a batch into loss terms (see :mod:`debias.methods.base`) and gives each stage
the :class:`~debias.methods.stages.StageRunner` that runs its epochs. The built-in kinds:

- ``train``: gradient steps on the method's loss; the classifier is evaluated every epoch.
- ``pretrain``: gradient steps on the method's loss (a contrastive pretraining); an *online
  linear probe* (a linear layer on detached features, trained alongside) is evaluated instead,
  so convergence is visible epoch by epoch.
- ``linear``: a linear classifier fitted on frozen features (the SupContrast/ConTeX protocol).
- ``refit``: no gradient steps (the method changed the classifier when the stage started).

Every evaluated epoch gets a GroupReport on each evaluation split. The reported epoch is chosen by
``config.select`` among the epochs of the method's final stage, never on a test split. Files
written under ``config.out``: ``checkpoint.pt`` (after every epoch; a rerun of the same command
resumes from it), ``history.csv`` (one row per epoch), ``metrics.json`` (when the run is
complete) and, with ``save_embeddings``, ``embeddings.npz``.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import platform
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from debias._atomic import atomic_write
from debias.data.augment import AugmentConfig, BatchAugment
from debias.data.base import TensorImageDataset
from debias.data.registry import dataset_spec, load_splits
from debias.methods import (
    SUPERVISION,
    TRAIN_BIAS_LABELS,
    VAL_BIAS_LABELS,
    Batch,
    Context,
    Stage,
    StageHelper,
    get_method,
    resolve_hparams,
    run_supervision,
)
from debias.methods.stages import StageRunner
from debias.metrics import group_report
from debias.models import build_model
from debias.train import runfolder
from debias.train.checkpoint import save_json, save_text, save_torch
from debias.train.config import RunConflictError, TrainConfig
from debias.train.distributed import DistContext
from debias.train.evaluate import encode
from debias.train.logging_backends import log_epoch
from debias.train.represent import KEY as REPRESENTATION
from debias.train.represent import represent
from debias.train.runfolder import CHECKPOINT, EMBEDDINGS, HISTORY, METRICS, MODEL

# Version of the checkpoint layout; a checkpoint of another layout is refused, not misread.
CHECKPOINT_FORMAT = 2
# The checkpoint's own entries; every other entry is the current stage runner's state().
CORE_KEYS = frozenset(
    {"format", "config", "epochs_done", "elapsed", "method", "stage_started", "history", "best"}
)
# The entries of the built-in stage runners (debias.methods.stages).
STAGE_KEYS = ("optimizer", "scheduler", "linear", "linear_optimizer")

# A per-epoch evaluation shows a progress bar only when it takes longer than this.
EVAL_BAR_DELAY_S = 3.0


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` → CUDA when present, else CPU; anything else is passed to ``torch.device``."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(
            f"device={device!r}: expected auto, cpu, cuda, cuda:N or another torch device name"
        ) from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device={device!r}: no CUDA device is available here (torch.cuda.is_available() is "
            "False); use --device cpu, or --device auto to take a GPU when there is one"
        )
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(
            f"device={device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)"
        )
    return dev


def versions() -> dict[str, str]:
    import debias

    out = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "debias": debias.__version__,
    }
    for name in ("torch", "torchvision", "numpy", "pandas", "sklearn", "fairlearn"):
        try:
            out[name] = __import__(name).__version__
        except Exception:  # a missing optional package is not a reason to fail a run
            out[name] = "not installed"
    return out


class Trainer:
    """Runs one :class:`TrainConfig` with the method it names. Use :func:`train` unless you
    need the pieces (``load_data``, ``build``, ``batches``, ``inputs``, ``train_epoch``).

    ``load`` stands in for :func:`~debias.data.registry.load_splits` (same arguments, same
    result; a sweep worker passes its cache of the splits, :class:`debias.sweep.worker.SplitCache`).
    """

    def __init__(
        self, cfg: TrainConfig, *, log=print, load: Callable[..., Any] | None = None
    ) -> None:
        self.cfg = cfg
        self._load_splits = load or load_splits
        self.out = Path(cfg.out)
        self.device = resolve_device(cfg.device)
        self.dist = DistContext.from_env(self.device.type)
        if self.dist.enabled and self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)
            torch.cuda.set_device(self.device)
        # Only rank 0 talks and writes.
        self.log = log if self.dist.is_main else (lambda *a, **k: None)

    # -- set-up --------------------------------------------------------------------------------
    def load_data(self) -> None:
        """Load every split onto the device; ``train_limit`` trims the training split."""
        cfg = self.cfg
        self.splits: dict[str, TensorImageDataset] = {
            name: ds.to(self.device)
            for name, ds in self._load_splits(cfg.dataset, **cfg.data_kwargs()).items()
        }
        if cfg.train_limit is not None:
            self.splits["train"] = self.splits["train"].subset(range(cfg.train_limit))
        self.train_set = self.splits["train"]
        self.eval_splits = [s for s in self.splits if s != "train"]
        if cfg.eval_limit is not None:
            for name in self.eval_splits:
                self.splits[name] = _limited(self.splits[name], cfg.eval_limit, cfg.data_seed)
        spec = dataset_spec(cfg.dataset)
        self.augment = BatchAugment(
            AugmentConfig(**{**spec.augment, "colour_jitter": cfg.colour_jitter}),
            bias_is_colour=spec.colour_bias,
        )

    def build(self) -> None:
        """Build the method (seeded), its stage list, and empty run state."""
        cfg, ds = self.cfg, self.train_set
        method_cls = get_method(cfg.method)
        reads_bias = method_cls.supervision == TRAIN_BIAS_LABELS
        ctx = Context(
            cfg=cfg,
            num_classes=ds.num_classes,
            num_bias=ds.num_bias,
            train_targets=ds.targets,
            train_bias=ds.bias if reads_bias else None,
            device=self.device,
            build_model=self._build_model,
        )
        torch.manual_seed(cfg.seed)
        self.method = method_cls(ctx, resolve_hparams(cfg.method, cfg.method_options))
        self.method.to(self.device)
        self.reads_bias = reads_bias
        self.net: nn.Module = self.method.net
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = DistributedDataParallel(self.method.net, device_ids=ids)
        self.stages = self.method.stages()
        self.stage_started = -1  # index of the last stage whose start_stage has run
        self._runner: StageRunner | None = None  # the runner of the stage entered last
        self._current = -1  # its index
        self._saved_stage: dict[str, Any] = {}  # a checkpoint's runner entries
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] | None = None  # {"epoch", "value", "state"} under val selection
        self.epochs_done = 0
        self.elapsed = 0.0

    def _build_model(self) -> nn.Module:
        cfg = self.cfg
        model = build_model(cfg.model, self.train_set.num_classes, weights=cfg.weights)
        model = model.to(self.device)
        if cfg.channels_last:
            model = model.to(memory_format=torch.channels_last)
        return model

    @property
    def model(self) -> nn.Module:
        """The classifier the run evaluates and saves (``features`` + ``fc``)."""
        return self.method.classifier

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
            reads_val = type(self.method).supervision in (VAL_BIAS_LABELS, TRAIN_BIAS_LABELS)
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
        }
        runner = self._runner.state() if self._runner is not None else {}
        clash = sorted(set(runner) & set(core))
        if clash:
            raise ValueError(f"{type(self._runner).__name__}.state(): keys {clash} are reserved")
        # The built-in runners' keys are always there (None when unused), as in checkpoints
        # written before stage runners existed.
        return core | dict.fromkeys(STAGE_KEYS) | runner

    def restore(self, state: dict[str, Any]) -> None:
        """Load a :meth:`state` (the optimizer of the current stage is restored on entering it)."""
        if state.get("format") != CHECKPOINT_FORMAT:
            raise RunConflictError(
                f"{self.out / CHECKPOINT} was written by an older debias (checkpoint format "
                f"{state.get('format', 1)}, expected {CHECKPOINT_FORMAT}); rerun with --force "
                "to start this run over"
            )
        runfolder.check_same_run(state["config"], self.cfg, self.out, "a checkpoint")
        self.method.load_state_dict(state["method"])
        self.stage_started = state["stage_started"]
        self._saved_stage = {k: v for k, v in state.items() if k not in CORE_KEYS}
        self.history = state["history"]
        self.best = state["best"]
        self.epochs_done = state["epochs_done"]
        self.elapsed = state["elapsed"]

    # -- batches ---------------------------------------------------------------------------------
    def generator(self, epoch: int) -> torch.Generator:
        """The random stream of one epoch (batch order, augmentation, resampling)."""
        # One stream per (seed, epoch): a resumed run draws exactly what an uninterrupted one would.
        return torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + epoch)

    def batches(self, n: int, gen: torch.Generator, rows: torch.Tensor | None = None):
        """Batches of training rows: a shuffle of ``range(n)``, or ``rows`` in the given order."""
        order = torch.randperm(n, generator=gen) if rows is None else rows
        bs = self.cfg.batch_size
        m = len(order)
        # Drop a ragged last batch of size 1: BatchNorm and contrastive losses need >= 2 rows.
        steps = m // bs + (1 if m % bs > 1 else 0)
        if self.cfg.max_steps is not None:
            steps = min(steps, self.cfg.max_steps)
        for s in range(steps):
            yield self.dist.shard(order[s * bs : (s + 1) * bs]).to(self.device)

    def inputs(self, idx: torch.Tensor, gen, *, two_view: bool, augment: bool) -> torch.Tensor:
        """The network input of one batch: normalised float images ``[B, C, H, W]``, or with
        ``two_view`` two views stacked view-major ``[2B, C, H, W]`` (row ``v·B + i``); without
        ``augment`` the two views are the same image.

        This is the whole data path of training; ``bench/`` times exactly this method.
        """
        ds = self.train_set
        # index_select is ~3x faster than advanced indexing for a uint8 batch on the CPU.
        raw = ds.images.index_select(0, idx)
        c = raw.shape[1]
        mean = torch.tensor(ds.mean, device=raw.device).view(1, c, 1, 1)
        std = torch.tensor(ds.std, device=raw.device).view(1, c, 1, 1)
        if not augment:
            # (x / 255 - mean) / std as one in-place multiply-add on the fresh float copy.
            x = raw.float().mul_(1.0 / (255.0 * std)).add_(-mean / std)
            if two_view:
                x = torch.cat([x, x], 0)
        else:
            x01 = raw.float().mul_(1.0 / 255.0)
            if two_view:
                # Same random draws as BatchAugment.views, without its [B, V, ...] stack copy.
                x = torch.cat([self.augment(x01, gen), self.augment(x01, gen)], 0)
            else:
                x = self.augment(x01, gen)
            x = x.sub_(mean).div_(std)
        if self.cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def batch(self, idx: torch.Tensor, gen, stage: Stage) -> Batch:
        """One :class:`Batch` as the method sees it (bias labels only if it reads them)."""
        ds = self.train_set
        if stage.views not in (1, 2):
            raise ValueError(f"stage {stage.name!r}: views must be 1 or 2, got {stage.views}")
        x = self.inputs(idx, gen, two_view=stage.views == 2, augment=bool(self.cfg.augment))
        bias = ds.bias[idx] if self.reads_bias else None
        return Batch(index=idx, x=x, y=ds.targets[idx], bias=bias, views=stage.views)

    # -- one epoch ---------------------------------------------------------------------------------
    def _autocast(self):
        dtype = torch.bfloat16 if self.cfg.amp == "bf16" else None
        return torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None)

    def step_loss(self, batch: Batch, stage: Stage) -> dict[str, torch.Tensor]:
        """The loss terms of one batch; ``terms["loss"]`` is what is minimised."""
        with self._autocast():
            out = self.net(batch.x)
        return self.method.loss(out, batch, stage)

    def train_epoch(self, epoch: int, optimizer=None, scheduler=None) -> dict[str, float]:
        """One epoch of gradient steps of the stage ``epoch`` belongs to, by ``optimizer`` and
        ``scheduler`` (default: the current stage's); mean loss terms."""
        optimizer = optimizer or self.optimizer
        scheduler = scheduler or self.scheduler
        _, stage, k = self.stage_of(epoch)
        gen = self.generator(epoch)
        self.net.train()
        sums: dict[str, torch.Tensor] = {}
        steps = 0
        rows = self.method.epoch_rows(stage, len(self.train_set), gen)
        batches = list(self.batches(len(self.train_set), gen, rows))
        desc = f"{stage.name} epoch {k + 1}/{stage.epochs}"
        for idx in _progress(batches, self.cfg.progress and self.dist.is_main, desc):
            terms = self.step_loss(self.batch(idx, gen, stage), stage)
            _check_finite(terms, epoch, steps)
            optimizer.zero_grad(set_to_none=True)
            terms["loss"].backward()
            optimizer.step()
            steps += 1
            # Summed on the device: a .item() per step would stall a GPU pipeline every batch.
            for key, v in terms.items():
                sums[key] = sums.get(key, 0.0) + v.detach().float()
        scheduler.step()
        means = {f"train_{key}": float(v) / max(steps, 1) for key, v in sums.items()}
        return means | {"steps": steps}

    def linear_epoch(self, epoch: int, feats: torch.Tensor) -> dict[str, float]:
        """One epoch of the current stage's linear classifier (its runner's ``linear`` and
        ``linear_optimizer``) on frozen training features."""
        ds = self.train_set
        gen = self.generator(epoch)
        total, steps = 0.0, 0
        self.linear.train()
        for idx in self.batches(len(ds), gen):
            loss = F.cross_entropy(self.linear(feats[idx]), ds.targets[idx])
            self.linear_optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.linear_optimizer.step()
            total += float(loss.detach())
            steps += 1
        return {"train_loss": total / max(steps, 1), "steps": steps}

    # -- evaluation --------------------------------------------------------------------------------
    def report(self, split: str, pred: torch.Tensor):
        ds = self.splits[split]
        return group_report(
            ds.targets.cpu().numpy(),
            pred.cpu().numpy(),
            ds.bias.cpu().numpy(),
            aligned=ds.aligned_groups,
        )

    def evaluate(self, classify, splits: list[str]) -> tuple[dict[str, float], dict[str, Any]]:
        """GroupReport numbers of ``classify(split) -> predictions`` on ``splits``, as one
        history row and as the reports themselves."""
        row: dict[str, float] = {}
        reports = {}
        for split in splits:
            reports[split] = self.report(split, classify(split))
            for key, v in reports[split].to_dict().items():
                row[f"{split}/{key}"] = v
        return row, reports

    def encode(
        self, split: str, fn=None, *, what: str = "encoding", delay: float = 0
    ) -> torch.Tensor:
        """``fn`` (default: features) over a whole split; sharded over ranks and re-assembled.
        A progress bar appears after ``delay`` seconds (evaluations: only the slow ones)."""
        ds = self.splits[split]
        rows = torch.arange(self.dist.rank, len(ds), self.dist.world_size)
        enabled = self.cfg.progress and self.dist.is_main

        def wrap(starts):
            return _progress(starts, enabled, f"{what} {split} ({len(ds):,} images)", delay=delay)

        local = encode(
            self.model, ds, batch_size=self.cfg.eval_batch_size, fn=fn, rows=rows, wrap=wrap
        )
        return self.dist.gather_rows(local, len(ds))

    def model_predictions(self, split: str) -> torch.Tensor:
        kept = self._kept.get(split) if self._kept is not None else None
        if kept is None:
            fn = lambda m, x: m(x).argmax(1)  # noqa: E731
        else:
            # The run's last evaluation keeps the features for the representation section;
            # m(x) is m.fc(m.features(x)), so the predictions are the same, bit for bit.
            def fn(m, x):
                feats = m.features(x)
                kept.append(feats)
                return m.fc(feats).argmax(1)

        return self.encode(split, fn=fn, what="evaluating", delay=EVAL_BAR_DELAY_S)

    # While the run's last evaluation runs: {split: feature batches} (see evaluate_classifier).
    _kept: dict[str, list[torch.Tensor]] | None = None
    # (epoch, {split: features}) of the run's last evaluation, for the representation section.
    _last_features: tuple[int, dict[str, torch.Tensor]] = (0, {})

    def evaluate_classifier(self, epoch: int, splits: list[str]) -> tuple[dict[str, float], dict]:
        """:meth:`evaluate` of the classifier's predictions; the run's last evaluation also
        keeps the features it computed, so the representation section need not encode again."""
        keep = self.cfg.represent and not self.dist.enabled and epoch + 1 == self.total_epochs
        self._kept = {s: [] for s in splits} if keep else None
        try:
            out = self.evaluate(self.model_predictions, splits)
        finally:
            kept, self._kept = self._kept, None
        if keep:
            self._last_features = (epoch + 1, {s: torch.cat(b) for s, b in kept.items() if b})
        return out

    def last_features(self, epoch: int) -> dict[str, torch.Tensor]:
        """The features the run's last evaluation kept, by split, if it evaluated ``epoch``."""
        evaluated, features = self._last_features
        return features if evaluated == epoch else {}

    def splits_now(self, epoch: int, final: bool) -> list[str]:
        """The evaluation splits of ``epoch``. ``eval_every=N``: all of them every N epochs and at
        the run's last epoch, else only val, in the final stage under a val selection.
        ``eval_every=0`` (only what is read): val every epoch; the test splits only at the last
        epoch under ``select: last`` (under a val selection :meth:`_final_reports` evaluates
        them once, on the selected state)."""
        every, last = self.cfg.eval_every, epoch + 1 == self.total_epochs
        val = ["val"] if "val" in self.splits else []
        if every == 0:
            return list(self.eval_splits) if last and self.cfg.select == "last" else val
        if (epoch + 1) % every == 0 or last:
            return list(self.eval_splits)
        return val if final and self.cfg.select != "last" else []

    def select(self, epoch: int, row: dict[str, float], reports, state_fn) -> None:
        """Track the selected epoch under a validation rule; ties go to the later epoch."""
        if self.cfg.select == "last":
            self._last_reports = (epoch + 1, reports)
            return
        value = row.get(self.cfg.select)
        if value is None:
            raise ValueError(
                f"select={self.cfg.select!r}: no such validation metric; available: "
                f"{sorted(k for k in row if k.startswith('val/'))}"
            )
        # A later epoch wins a tie: at high bias many epochs share worst-group 0.0, and the
        # later one has seen more training.
        if self.best is None or (not math.isnan(value) and not value < self.best["value"]):
            self.best = {"epoch": epoch + 1, "value": value, "state": copy.deepcopy(state_fn())}
            self._best_reports = (epoch + 1, reports)

    # -- the run ---------------------------------------------------------------------------------
    def run(self, *, force: bool = False) -> dict[str, Any]:
        """Train (or resume, or return the finished result) and write the run's files."""
        # Claims the folder (refusing a user's files), locks it against a second process.
        with runfolder.run_folder(self.out, force=force, owner=self.dist.is_main):
            self.dist.barrier()
            return self._run()

    def _run(self) -> dict[str, Any]:
        cfg = self.cfg
        metrics_path = self.out / METRICS
        ckpt_path = self.out / CHECKPOINT
        if metrics_path.exists():
            done = runfolder.read_metrics(metrics_path)
            runfolder.check_same_run(done["config"], cfg, self.out, "a finished run")
            self.log(f"{self.out}: already finished (metrics.json present); nothing to do")
            return done

        if cfg.device == "cpu" or self.device.type == "cpu":
            torch.use_deterministic_algorithms(True, warn_only=True)
        self.load_data()
        self.build()
        if ckpt_path.exists():
            self.restore(runfolder.load_checkpoint(ckpt_path))
            self.log(f"resuming {self.out} after epoch {self.epochs_done}/{self.total_epochs}")
        try:
            while self.epochs_done < self.total_epochs:
                self._run_epoch(self.epochs_done, ckpt_path)
        except KeyboardInterrupt:
            saved = (
                f"{self.epochs_done} epoch(s) are saved in {ckpt_path}; run the same command "
                "again to resume"
                if ckpt_path.exists()
                else "before the first epoch ended, so nothing was saved"
            )
            self.log(f"\ninterrupted: {saved}")
            raise
        try:
            return self._finish()
        finally:
            self.dist.close()

    def _run_epoch(self, epoch: int, ckpt_path: Path) -> None:
        """One epoch of whatever stage it belongs to, then its history row and checkpoint."""
        index, stage, _ = self.stage_of(epoch)
        t0 = time.perf_counter()
        if self._current != index:
            self.enter_stage(index)
        row: dict[str, Any] = {"epoch": epoch + 1, "stage": stage.name}
        self.eval_seconds = 0.0
        row |= self._runner.epoch(self, stage, epoch, index == len(self.stages) - 1)
        row["epoch_seconds"] = time.perf_counter() - t0
        # Forward passes over whole splits (evaluation, probing, frozen features) in the epoch.
        row["eval_seconds"] = self.eval_seconds
        self.elapsed += row["epoch_seconds"]
        self.history.append(row)
        self.epochs_done += 1
        if self.dist.is_main:
            save_torch(self.state(), ckpt_path)
            save_text(pd.DataFrame(self.history).to_csv(index=False), self.out / HISTORY)
            log_epoch(self, row)  # optional trackers (config.log_to); nothing when unset
        self.log(_epoch_line(row))

    eval_seconds: float = 0.0
    eval_bar_delay = EVAL_BAR_DELAY_S  # the progress-bar delay of evaluations and probing
    _eval_depth: int = 0

    @contextlib.contextmanager
    def evaluating(self):
        """Add the time of the ``with`` block to :attr:`eval_seconds` (nested blocks once)."""
        t0 = time.perf_counter()
        self._eval_depth += 1
        try:
            yield
        finally:
            self._eval_depth -= 1
            if self._eval_depth == 0:
                self.eval_seconds += time.perf_counter() - t0

    def _final_reports(self) -> tuple[int, dict[str, Any]]:
        """The selected epoch and its reports: the classifier is put in its selected state and
        the reports computed when that epoch was evaluated are reused (not evaluated twice)."""
        cfg = self.cfg
        last = len(self.stages) - 1
        if self._current != last:  # resumed after the last epoch: restore the final stage
            self.enter_stage(last)
        runner = self._runner
        if cfg.select == "last":
            chosen, cached = self.history[-1]["epoch"], getattr(self, "_last_reports", None)
        else:
            chosen, cached = self.best["epoch"], getattr(self, "_best_reports", None)
            runner.load_selected(self, self.best["state"])
        reports = dict(cached[1]) if cached is not None and cached[0] == chosen else {}
        # A run resumed after its last epoch, or a selected epoch whose test splits eval_every
        # skipped: evaluate the selected classifier on what is missing, the way the epoch would
        # have (a linear stage: on the frozen features), so the numbers are the same.
        with self.evaluating():
            for s in self.eval_splits:
                if s not in reports:
                    reports[s] = self.report(s, runner.predict(self, s))
        runner.finish(self)
        return chosen, {s: reports[s] for s in self.eval_splits}

    def _method_record(self) -> dict[str, Any]:
        cls = type(self.method)
        return {
            "name": cls.name,
            "supervision": cls.supervision,
            "supervision_text": SUPERVISION[cls.supervision],
            "hparams": dict(self.method.hp),
            "stages": [dataclasses.asdict(s) for s in self.stages],
            "paper": cls.paper,
            **self.method.record(),
        }

    def _finish(self) -> dict[str, Any]:
        cfg = self.cfg
        self.eval_seconds = 0.0
        chosen_epoch, reports = self._final_reports()
        eval_seconds = self.eval_seconds + sum(r.get("eval_seconds", 0.0) for r in self.history)
        rule = "last epoch" if cfg.select == "last" else f"best {cfg.select} (validation split)"
        rule += "; ties go to the later epoch" if cfg.select != "last" else ""
        result = {
            "config": cfg.to_dict(),
            "method": self._method_record(),
            # What the whole run read: the method's kind, raised by a selection on a validation
            # metric that needs bias labels.
            "supervision": run_supervision(type(self.method).supervision, cfg.select),
            "selection": {
                "rule": cfg.select,
                "description": rule,
                "epoch": chosen_epoch,
                "stage": self.stages[-1].name,
            },
            "splits": {
                split: {**rep.to_dict(), "groups": rep.groups.to_dict(orient="records")}
                for split, rep in reports.items()
            },
            "data": {
                split: {
                    "n": len(ds),
                    "aligned_groups": [list(g) for g in ds.aligned_groups],
                    "n_aligned": int(ds.aligned.sum()),
                    # files the loader skipped (off-pattern names, unreadable images), by reason
                    "skipped": dict(getattr(ds, "skipped", {}) or {}),
                    "class_names": list(ds.class_names),
                    "bias_names": list(ds.bias_names),
                }
                for split, ds in self.splits.items()
            },
            "epochs_run": self.epochs_done,
            "wall_time_seconds": self.elapsed,
            # Forward passes over whole splits: in the epochs (part of wall_time_seconds) and in
            # the final evaluation (not).
            "eval_seconds": eval_seconds,
            "device": str(self.device),
            "versions": versions(),
            "history": HISTORY,
        }
        if cfg.save_embeddings:
            self._save_embeddings()
            result["embeddings"] = EMBEDDINGS
        if cfg.represent and self.dist.is_main:
            result[REPRESENTATION] = self._representation(chosen_epoch)
        if self.dist.is_main:
            state = {"config": cfg.to_dict(), "model": self.model.state_dict()}
            save_torch(state, self.out / MODEL)
            save_json(result, self.out / METRICS)
        self.dist.barrier()
        return result

    def _representation(self, chosen_epoch: int) -> dict[str, Any]:
        """The representation section; a split too small for its probes (a fit that cannot
        run) is recorded as the section's ``error`` and warned about, and the run's own
        numbers are still written."""
        cfg = self.cfg
        try:
            return represent(
                self.model, self.splits, seed=cfg.seed, batch_size=cfg.eval_batch_size,
                features=self._runner.reusable_features(self, chosen_epoch), log=self.log,
            )  # fmt: skip
        except ValueError as err:
            warnings.warn(f"{self.out}: no representation section: {err}", stacklevel=2)
            return {"error": f"{type(err).__name__}: {err}"}

    def _save_embeddings(self) -> None:
        ds = self.splits["test"]
        z = self.encode("test").float().cpu().numpy()
        if not self.dist.is_main:
            return
        arrays = dict(
            Z=z,
            targets=ds.targets.cpu().numpy(),
            bias=ds.bias.cpu().numpy(),
            aligned_groups=np.asarray(ds.aligned_groups, dtype=np.int64).reshape(-1, 2),
            split=np.asarray("test"),
        )
        atomic_write(self.out / EMBEDDINGS, lambda fh: np.savez_compressed(fh, **arrays))


def _check_finite(terms: dict[str, torch.Tensor], epoch: int, step: int) -> None:
    """Stop at the first step whose loss is NaN or infinite, naming the terms that are."""
    loss = terms["loss"]
    # One host sync per step; on an accelerator this is the price of stopping at once.
    if bool(torch.isfinite(loss.detach())):
        return
    bad = {k: float(v.detach().float()) for k, v in terms.items()}
    raise FloatingPointError(
        f"non-finite training loss at epoch {epoch + 1}, step {step + 1}: {bad}; the last "
        "finished epoch is kept in checkpoint.pt (lower the learning rate, or check the inputs)"
    )


def _epoch_line(row: dict[str, Any]) -> str:
    parts = [f"epoch {row['epoch']:>3} [{row['stage']}]"]
    if "train_loss" in row:
        parts.append(f"loss {row['train_loss']:.4f}")
    for key, label in (
        ("val/accuracy", "val acc"),
        ("test/unbiased_accuracy", "unbiased"),
        ("test/worst_group_accuracy", "worst-group"),
        ("test_biased/accuracy", "biased"),
        ("probe/val/accuracy", "probe val acc"),
        ("probe/test/unbiased_accuracy", "probe unbiased"),
    ):
        if key in row:
            parts.append(f"{label} {100 * row[key]:.1f}%")
    parts.append(f"{row['epoch_seconds']:.1f}s")
    return " | ".join(parts)


def _limited(ds: TensorImageDataset, limit: int, seed: int) -> TensorImageDataset:
    """A seeded subset of at most ``limit`` rows of an evaluation split (``eval_limit``), in
    the split's order; the same rows for every method and seed of one ``data_seed``."""
    if len(ds) <= limit:
        return ds
    gen = torch.Generator().manual_seed(seed)
    rows = torch.randperm(len(ds), generator=gen)[:limit].sort().values
    return ds.subset(rows)


def _progress(items, enabled: bool, desc: str, *, delay: float = 0):
    """A progress bar over ``items`` in a terminal or a notebook (tqdm.auto picks the widget),
    shown once ``delay`` seconds have passed; nothing when output goes to a file or a CI log."""
    if not enabled or not (sys.stderr.isatty() or "ipykernel" in sys.modules):
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, leave=False, delay=delay)


def train(
    cfg: TrainConfig | dict[str, Any],
    *,
    force: bool = False,
    log=print,
    load: Callable[..., Any] | None = None,
) -> dict[str, Any]:
    """Run (or resume, or skip if finished) one training run; returns the ``metrics.json`` dict.
    ``load``: see :class:`Trainer`."""
    if isinstance(cfg, dict):
        cfg = TrainConfig.from_dict(cfg)
    return Trainer(cfg, log=log, load=load).run(force=force)


def load_trained(
    run_dir: str | Path, *, root: str | None = None, device: str = "auto"
) -> tuple[nn.Module, dict[str, TensorImageDataset], TrainConfig]:
    """A finished run's model (its selected classifier) and data splits, rebuilt from its files.

    ``root`` overrides the data root recorded in the run (runs move between machines).
    """
    run_dir = Path(run_dir)
    metrics, weights = run_dir / METRICS, run_dir / MODEL
    for path in (metrics, weights):
        if not path.exists():
            raise FileNotFoundError(
                f"{path} not found: {run_dir} is not a finished debias run "
                "(expected metrics.json and model.pt written by `debias train`)"
            )
    config = runfolder.saved_config(runfolder.read_metrics(metrics)["config"])
    config.update(out=str(run_dir), device=device, progress=False, log_to=None)
    if root is not None:
        config["root"] = root
    cfg = TrainConfig.from_dict(config)
    trainer = Trainer(cfg, log=lambda *a, **k: None)
    trainer.load_data()
    model = build_model(cfg.model, trainer.train_set.num_classes).to(trainer.device)
    model.load_state_dict(runfolder.load_checkpoint(weights)["model"])
    return model.eval(), trainer.splits, cfg
