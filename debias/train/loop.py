"""One training run, start to finish: data → model → epochs → selection → files.

Three protocols share this loop:

- ``ce``: cross-entropy on the classifier (the Vanilla baseline of ReBias).
- ``two-stage``: pretrain encoder + projection head with a contrastive loss (stage ``pretrain``),
  then fit a linear classifier on frozen features (stage ``linear``): the SupContrast/ConTeX
  protocol. During pretraining an *online linear probe* (a linear layer on detached features,
  trained alongside) makes convergence visible epoch by epoch.
- ``joint``: cross-entropy + λ·contrastive on the same batch: the BiasCon protocol.

Every evaluated epoch gets a GroupReport on each evaluation split. The reported epoch is chosen by
``config.select`` among the epochs of the final stage, never on a test split. Files written under
``config.out``: ``checkpoint.pt`` (after every epoch; a rerun of the same command resumes from
it), ``history.csv`` (one row per epoch), ``metrics.json`` (when the run is complete) and, with
``save_embeddings``, ``embeddings.npz``.
"""

from __future__ import annotations

import copy
import math
import platform
import sys
import time
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
from debias.data.registry import COLOUR_BIAS, DEFAULT_AUGMENT, load_splits
from debias.metrics import group_report
from debias.models import LinearProbe, ProjectionHead, build_model
from debias.train import runfolder
from debias.train.checkpoint import save_json, save_text, save_torch
from debias.train.config import TrainConfig
from debias.train.distributed import DistContext
from debias.train.evaluate import encode
from debias.train.runfolder import CHECKPOINT, EMBEDDINGS, HISTORY, METRICS, MODEL

# Probe numbers logged per epoch during contrastive pretraining (convergence curves).
PROBE_SPLITS = ("val", "test")
PROBE_METRICS = ("accuracy", "unbiased_accuracy")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` → CUDA when present, else CPU; anything else is passed to ``torch.device``."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


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


def _loss_kwargs(cfg: TrainConfig) -> dict[str, Any]:
    kw = dict(cfg.loss_options)
    if cfg.method != "cacr":
        if cfg.temperature is not None:
            kw.setdefault("temperature", cfg.temperature)
        if cfg.base_temperature is not None:
            kw.setdefault("base_temperature", cfg.base_temperature)
    return kw


class Network(nn.Module):
    """Encoder + optional projection head + optional online probe behind one ``forward``.

    DistributedDataParallel synchronises gradients only for computations that go through the
    wrapped module's ``forward``, so everything a training step needs is computed here.
    """

    def __init__(
        self, model: nn.Module, head: nn.Module | None, probe: nn.Module | None, use_fc: bool
    ) -> None:
        super().__init__()
        self.model, self.head, self.probe, self.use_fc = model, head, probe, use_fc

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        feats = self.model.features(x)
        out = {"feats": feats}
        if self.use_fc:
            out["logits"] = self.model.fc(feats)
        if self.head is not None:
            out["z"] = self.head(feats)
        if self.probe is not None:
            # Detached: the probe watches the representation, it must not shape it.
            out["probe"] = self.probe(feats.detach())
        return out


class Trainer:
    """Runs one :class:`TrainConfig`. Use :func:`train` unless you need the pieces."""

    def __init__(self, cfg: TrainConfig, *, log=print) -> None:
        self.cfg = cfg
        self.out = Path(cfg.out)
        self.device = resolve_device(cfg.device)
        self.dist = DistContext.from_env(self.device.type)
        if self.dist.enabled and self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)
            torch.cuda.set_device(self.device)
        # Only rank 0 talks and writes.
        self.log = log if self.dist.is_main else (lambda *a, **k: None)

    # -- set-up --------------------------------------------------------------------------------
    def _load_data(self) -> None:
        cfg = self.cfg
        options = dict(
            rho=cfg.rho,
            root=cfg.root,
            data_seed=cfg.data_seed,
            val_size=cfg.val_size,
            download=cfg.download,
            palette=cfg.palette,
            bias_rate=cfg.bias_rate,
            protocol=cfg.protocol,
            image_size=cfg.image_size,
        )
        if cfg.target is not None:
            options["target"] = cfg.target
        if cfg.bias is not None:
            options["bias"] = cfg.bias
        self.splits: dict[str, TensorImageDataset] = {
            name: ds.to(self.device) for name, ds in load_splits(cfg.dataset, **options).items()
        }
        if cfg.train_limit is not None:
            self.splits["train"] = self.splits["train"].subset(range(cfg.train_limit))
        self.train_set = self.splits["train"]
        self.eval_splits = [s for s in self.splits if s != "train"]
        aug_options = dict(DEFAULT_AUGMENT.get(cfg.dataset, {}), colour_jitter=cfg.colour_jitter)
        self.augment = BatchAugment(
            AugmentConfig(**aug_options), bias_is_colour=cfg.dataset in COLOUR_BIAS
        )

    def _build(self) -> None:
        cfg = self.cfg
        torch.manual_seed(cfg.seed)
        ds = self.train_set
        self.model = build_model(cfg.model, ds.num_classes, weights=cfg.weights).to(self.device)
        if cfg.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.head: nn.Module | None = None
        self.probe: nn.Module | None = None
        self.criterion = None
        params = list(self.model.parameters())
        if cfg.mode != "ce":
            from debias.losses import get_loss

            self.criterion = get_loss(cfg.method, **_loss_kwargs(cfg))
            self.head = ProjectionHead(self.model.feature_dim).to(self.device)
            params += list(self.head.parameters())
        if cfg.mode == "two-stage":
            self.probe = LinearProbe(self.model.feature_dim, ds.num_classes).to(self.device)
            params += list(self.probe.parameters())
            # The classifier of a two-stage run is fitted on frozen features afterwards.
            self.model.fc.requires_grad_(False)
            params = [p for p in params if p.requires_grad]
        self.net: nn.Module = Network(
            self.model, self.head, self.probe, use_fc=cfg.mode != "two-stage"
        )
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = DistributedDataParallel(self.net, device_ids=ids)
        self.optimizer = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(
            self.optimizer, milestones=cfg.lr_milestones, gamma=cfg.lr_gamma
        )
        self.linear: nn.Module | None = None
        self.linear_optimizer = None
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] | None = None  # {"epoch", "value", "state"} under val selection
        self.epochs_done = 0
        self.elapsed = 0.0

    @property
    def total_epochs(self) -> int:
        return self.cfg.epochs + (self.cfg.linear_epochs if self.cfg.mode == "two-stage" else 0)

    # -- checkpointing ---------------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        def sd(m):
            return None if m is None else m.state_dict()

        return {
            "config": self.cfg.identity(),
            "epochs_done": self.epochs_done,
            "elapsed": self.elapsed,
            "model": sd(self.model),
            "head": sd(self.head),
            "probe": sd(self.probe),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "linear": sd(self.linear),
            "linear_optimizer": sd(self.linear_optimizer),
            "history": self.history,
            "best": self.best,
        }

    def _restore(self, state: dict[str, Any]) -> None:
        runfolder.check_same_run(state["config"], self.cfg, self.out, "a checkpoint")
        self.model.load_state_dict(state["model"])
        if self.head is not None:
            self.head.load_state_dict(state["head"])
        if self.probe is not None:
            self.probe.load_state_dict(state["probe"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.history = state["history"]
        self.best = state["best"]
        self.epochs_done = state["epochs_done"]
        self.elapsed = state["elapsed"]
        if state.get("linear") is not None:
            self._make_linear()
            self.linear.load_state_dict(state["linear"])
            self.linear_optimizer.load_state_dict(state["linear_optimizer"])

    # -- batches ---------------------------------------------------------------------------------
    def _generator(self, epoch: int) -> torch.Generator:
        # One stream per (seed, epoch): a resumed run draws exactly what an uninterrupted one would.
        return torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + epoch)

    def _batches(self, n: int, gen: torch.Generator):
        perm = torch.randperm(n, generator=gen)
        bs = self.cfg.batch_size
        # Drop a ragged last batch of size 1: BatchNorm and contrastive losses need >= 2 rows.
        steps = n // bs + (1 if n % bs > 1 else 0)
        if self.cfg.max_steps is not None:
            steps = min(steps, self.cfg.max_steps)
        for s in range(steps):
            yield self.dist.shard(perm[s * bs : (s + 1) * bs]).to(self.device)

    def _inputs(self, idx: torch.Tensor, gen, *, two_view: bool, augment: bool) -> torch.Tensor:
        """The network input of one batch: normalised float images ``[B, C, H, W]``, or with
        ``two_view`` two augmented views stacked view-major ``[2B, C, H, W]`` (row ``v·B + i``).

        This is the whole data path of training; ``bench/`` times exactly this method.
        """
        ds = self.train_set
        # index_select is ~3x faster than advanced indexing for a uint8 batch on the CPU.
        raw = ds.images.index_select(0, idx)
        c = raw.shape[1]
        mean = torch.tensor(ds.mean, device=raw.device).view(1, c, 1, 1)
        std = torch.tensor(ds.std, device=raw.device).view(1, c, 1, 1)
        if not two_view and not augment:
            # (x / 255 - mean) / std as one in-place multiply-add on the fresh float copy.
            x = raw.float().mul_(1.0 / (255.0 * std)).add_(-mean / std)
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

    # -- one epoch ---------------------------------------------------------------------------------
    def _autocast(self):
        dtype = torch.bfloat16 if self.cfg.amp == "bf16" else None
        return torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None)

    def _step_loss(self, idx: torch.Tensor, gen) -> dict[str, torch.Tensor]:
        """The loss terms of one batch; ``terms["loss"]`` is what is minimised."""
        cfg, ds = self.cfg, self.train_set
        y, b = ds.targets[idx], ds.bias[idx]
        x = self._inputs(idx, gen, two_view=cfg.mode != "ce", augment=bool(cfg.augment))
        with self._autocast():
            out = self.net(x)
        if cfg.mode == "ce":
            ce = F.cross_entropy(out["logits"].float(), y)
            return {"ce": ce, "loss": ce}
        bsz = len(idx)
        z = torch.stack([out["z"][:bsz], out["z"][bsz:]], dim=1)  # [B, V=2, D]
        terms = {"contrastive": self.criterion(z, labels=y, bias=b)}
        if cfg.mode == "joint":
            terms["ce"] = F.cross_entropy(out["logits"].float(), y.repeat(2))
            terms["loss"] = terms["ce"] + cfg.lambda_con * terms["contrastive"]
        else:
            terms["probe_ce"] = F.cross_entropy(out["probe"].float(), y.repeat(2))
            terms["loss"] = terms["contrastive"] + terms["probe_ce"]
        return terms

    def _train_epoch(self, epoch: int) -> dict[str, float]:
        cfg, ds = self.cfg, self.train_set
        gen = self._generator(epoch)
        self.net.train()
        sums: dict[str, torch.Tensor] = {}
        steps = 0
        batches = list(self._batches(len(ds), gen))
        for idx in _progress(
            batches, cfg.progress and self.dist.is_main, f"epoch {epoch + 1}/{self.total_epochs}"
        ):
            terms = self._step_loss(idx, gen)
            self.optimizer.zero_grad(set_to_none=True)
            terms["loss"].backward()
            self.optimizer.step()
            steps += 1
            # Summed on the device: a .item() per step would stall a GPU pipeline every batch.
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + v.detach().float()
        self.scheduler.step()
        means = {f"train_{k}": float(v) / max(steps, 1) for k, v in sums.items()}
        if not all(math.isfinite(v) for v in means.values()):
            raise FloatingPointError(f"non-finite training loss at epoch {epoch + 1}: {means}")
        return means | {"steps": steps}

    def _make_linear(self) -> None:
        ds = self.train_set
        torch.manual_seed(self.cfg.seed + 1)
        self.linear = nn.Linear(self.model.feature_dim, ds.num_classes).to(self.device)
        self.linear_optimizer = torch.optim.Adam(self.linear.parameters(), lr=self.cfg.linear_lr)

    def _linear_epoch(self, epoch: int, feats: torch.Tensor) -> dict[str, float]:
        ds = self.train_set
        gen = self._generator(epoch)
        total, steps = 0.0, 0
        self.linear.train()
        for idx in self._batches(len(ds), gen):
            loss = F.cross_entropy(self.linear(feats[idx]), ds.targets[idx])
            self.linear_optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.linear_optimizer.step()
            total += float(loss.detach())
            steps += 1
        return {"train_loss": total / max(steps, 1), "steps": steps}

    # -- evaluation --------------------------------------------------------------------------------
    def _report(self, split: str, pred: torch.Tensor):
        ds = self.splits[split]
        return group_report(
            ds.targets.cpu().numpy(),
            pred.cpu().numpy(),
            ds.bias.cpu().numpy(),
            aligned=ds.aligned_groups,
        )

    def _evaluate(self, classify) -> dict[str, float]:
        """GroupReport numbers of ``classify(split) -> predictions`` on every evaluation split."""
        row: dict[str, float] = {}
        for split in self.eval_splits:
            for k, v in self._report(split, classify(split)).to_dict().items():
                row[f"{split}/{k}"] = v
        return row

    def _encode(self, split: str, fn=None) -> torch.Tensor:
        """``fn`` (default: features) over a whole split; sharded over ranks and re-assembled."""
        ds = self.splits[split]
        rows = torch.arange(self.dist.rank, len(ds), self.dist.world_size)
        local = encode(self.model, ds, batch_size=self.cfg.eval_batch_size, fn=fn, rows=rows)
        return self.dist.gather_rows(local, len(ds))

    def _model_predictions(self, split: str) -> torch.Tensor:
        return self._encode(split, fn=lambda m, x: m(x).argmax(1))

    def _probe_row(self) -> dict[str, float]:
        row = {}
        for split in PROBE_SPLITS:
            if split not in self.splits:
                continue
            feats = self._encode(split)
            with torch.no_grad():
                pred = self.probe(feats).argmax(1)
            rep = self._report(split, pred).to_dict()
            for m in PROBE_METRICS:
                row[f"probe/{split}/{m}"] = rep[m]
        return row

    def _consider(self, epoch: int, row: dict[str, float], state_fn) -> None:
        """Track the selected epoch under a validation rule (``last`` needs no tracking)."""
        if self.cfg.select == "last":
            return
        value = row.get(self.cfg.select)
        if value is None:
            raise ValueError(
                f"select={self.cfg.select!r}: no such validation metric; available: "
                f"{sorted(k for k in row if k.startswith('val/'))}"
            )
        if self.best is None or (not math.isnan(value) and value > self.best["value"]):
            self.best = {"epoch": epoch + 1, "value": value, "state": copy.deepcopy(state_fn())}

    # -- the run ---------------------------------------------------------------------------------
    def run(self, *, force: bool = False) -> dict[str, Any]:
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
        self._load_data()
        self._build()
        if ckpt_path.exists():
            self._restore(runfolder.load_checkpoint(ckpt_path))
            self.log(f"resuming {self.out} after epoch {self.epochs_done}/{self.total_epochs}")

        feats_cache: dict[str, torch.Tensor] = {}
        try:
            while self.epochs_done < self.total_epochs:
                epoch = self.epochs_done
                t0 = time.perf_counter()
                stage = (
                    "linear"
                    if epoch >= cfg.epochs
                    else ("train" if cfg.mode != "two-stage" else "pretrain")
                )
                row: dict[str, Any] = {"epoch": epoch + 1, "stage": stage}
                if stage == "linear":
                    if not feats_cache:
                        feats_cache = self._freeze_features()
                    if self.linear is None:
                        self._make_linear()
                    row["lr"] = self.cfg.linear_lr
                    row |= self._linear_epoch(epoch, feats_cache["train"])
                    self.linear.eval()
                    with torch.no_grad():
                        row |= self._evaluate(lambda s, f=feats_cache: self.linear(f[s]).argmax(1))
                    self._consider(epoch, row, lambda: {"linear": self.linear.state_dict()})
                else:
                    row["lr"] = self.optimizer.param_groups[0]["lr"]
                    row |= self._train_epoch(epoch)
                    if stage == "pretrain":
                        row |= self._probe_row()
                    else:
                        row |= self._evaluate(self._model_predictions)
                        self._consider(epoch, row, lambda: {"model": self.model.state_dict()})
                row["epoch_seconds"] = time.perf_counter() - t0
                self.elapsed += row["epoch_seconds"]
                self.history.append(row)
                self.epochs_done += 1
                if self.dist.is_main:
                    save_torch(self._state(), ckpt_path)
                    save_text(pd.DataFrame(self.history).to_csv(index=False), self.out / HISTORY)
                self.log(_epoch_line(row))
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

    def _freeze_features(self) -> dict[str, torch.Tensor]:
        # Every rank holds all features and fits the (cheap) linear classifier identically.
        return {name: self._encode(name) for name in self.splits}

    def _finish(self) -> dict[str, Any]:
        cfg = self.cfg
        final_stage = [r for r in self.history if r["stage"] in ("train", "linear")]
        if cfg.select == "last":
            chosen_epoch = final_stage[-1]["epoch"]
        else:
            chosen_epoch = self.best["epoch"]
            state = self.best["state"]
            if "model" in state:
                self.model.load_state_dict(state["model"])
            if "linear" in state:
                self.linear.load_state_dict(state["linear"])
        if cfg.mode == "two-stage":
            # From here on model(x) is the full classifier: encoder + the fitted linear layer.
            self.model.fc.load_state_dict(self.linear.state_dict())
        reports = {
            split: self._report(split, self._model_predictions(split)) for split in self.eval_splits
        }
        rule = "last epoch" if cfg.select == "last" else f"best {cfg.select} (validation split)"
        result = {
            "config": cfg.to_dict(),
            "selection": {
                "rule": cfg.select,
                "description": rule,
                "epoch": chosen_epoch,
                "stage": "linear" if cfg.mode == "two-stage" else "train",
            },
            "splits": {
                split: {
                    **rep.to_dict(),
                    "groups": rep.groups.to_dict(orient="records"),
                }
                for split, rep in reports.items()
            },
            "data": {
                split: {
                    "n": len(ds),
                    "aligned_groups": [list(g) for g in ds.aligned_groups],
                    "n_aligned": int(ds.aligned.sum()),
                }
                for split, ds in self.splits.items()
            },
            "epochs_run": self.epochs_done,
            "wall_time_seconds": self.elapsed,
            "device": str(self.device),
            "versions": versions(),
            "history": HISTORY,
        }
        if cfg.save_embeddings:
            self._save_embeddings()
            result["embeddings"] = EMBEDDINGS
        if self.dist.is_main:
            state = {"config": cfg.to_dict(), "model": self.model.state_dict()}
            save_torch(state, self.out / MODEL)
            save_json(result, self.out / METRICS)
        self.dist.barrier()
        return result

    def _save_embeddings(self) -> None:
        ds = self.splits["test"]
        z = self._encode("test").float().cpu().numpy()
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


def _progress(items, enabled: bool, desc: str):
    if not enabled or not sys.stderr.isatty():
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, leave=False)


def train(cfg: TrainConfig | dict[str, Any], *, force: bool = False, log=print) -> dict[str, Any]:
    """Run (or resume, or skip if finished) one training run; returns the ``metrics.json`` dict."""
    if isinstance(cfg, dict):
        cfg = TrainConfig.from_dict(cfg)
    return Trainer(cfg, log=log).run(force=force)


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
    config.update(out=str(run_dir), device=device, progress=False)
    if root is not None:
        config["root"] = root
    cfg = TrainConfig.from_dict(config)
    trainer = Trainer(cfg, log=lambda *a, **k: None)
    trainer._load_data()
    model = build_model(cfg.model, trainer.train_set.num_classes).to(trainer.device)
    model.load_state_dict(runfolder.load_checkpoint(weights)["model"])
    return model.eval(), trainer.splits, cfg
