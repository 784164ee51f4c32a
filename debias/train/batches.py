"""The batches of a training run: one epoch's random stream, the order of its rows, the
network inputs (normalised, augmented, one or two views) and the gradient steps of one epoch:
:class:`TrainerBatches`, the part of :class:`debias.train.loop.Trainer` that does them.
"""

from __future__ import annotations

import sys
import time

import torch
import torch.nn.functional as F

from debias.methods import Batch, Stage


class TrainerBatches:
    """Batches and gradient steps of a :class:`~debias.train.loop.Trainer` (which sets
    ``cfg``, ``train_set``, ``augment``, ``ce_augment``, ``net``, ``method``, ``dist`` and
    ``device``)."""

    # a two-stream run's CE-batch views (TrainConfig.ce_views); None: the run's augment and views
    ce_augment = None

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

    def inputs(
        self, idx: torch.Tensor, gen, *, two_view: bool, augment: bool, augmenter=None
    ) -> torch.Tensor:
        """The network input of one batch: normalised float images ``[B, C, H, W]``, or with
        ``two_view`` two views stacked view-major ``[2B, C, H, W]`` (row ``v·B + i``); without
        ``augment`` the two views are the same image. ``augmenter``: the
        :class:`~debias.data.augment.BatchAugment` (default: the run's).

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
            aug = augmenter or self.augment
            x01 = raw.float().mul_(1.0 / 255.0)
            # Both views drawn one after the other, then made in one batched pass.
            x = aug.view_major(x01, 2 if two_view else 1, gen)
            x = x.sub_(mean).div_(std)
        if self.cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def batch(
        self, idx: torch.Tensor, gen, stage: Stage, *, views: int | None = None,
        augment: bool | None = None, augmenter=None,
    ) -> Batch:  # fmt: skip
        """One :class:`Batch` as the method sees it (bias labels only if it reads them);
        ``views`` and ``augment`` default to the stage's and the run's, ``augmenter`` to the
        run's views."""
        ds = self.train_set
        views = stage.views if views is None else views
        if views not in (1, 2):
            raise ValueError(f"stage {stage.name!r}: views must be 1 or 2, got {views}")
        augment = bool(self.cfg.augment) if augment is None else augment
        x = self.inputs(idx, gen, two_view=views == 2, augment=augment, augmenter=augmenter)
        bias = ds.bias[idx] if self.reads_bias else None
        return Batch(index=idx, x=x, y=ds.targets[idx], bias=bias, views=views)

    def step_batch(self, idx: torch.Tensor, gen, stage: Stage, stream, step: int) -> Batch:
        """The batch of one step, with the method's second stream's batch as ``extra``
        (always augmented: it is the contrastive stream; the CE batch then by ``ce_views``
        when the run sets it)."""
        if stream is None:
            return self.batch(idx, gen, stage)
        if self.ce_augment is None:
            batch = self.batch(idx, gen, stage)
        else:
            plain = self.cfg.ce_views == "none"  # the stored image itself, no float round trip
            batch = self.batch(idx, gen, stage, augment=not plain, augmenter=self.ce_augment)
        rows, views = stream
        extra = self.batch(rows[step].to(self.device), gen, stage, views=views, augment=True)
        return batch._replace(extra=extra)

    # -- one epoch ---------------------------------------------------------------------------------
    def _autocast(self):
        dtype = torch.bfloat16 if self.cfg.amp == "bf16" else None
        return torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None)

    def step_loss(self, batch: Batch, stage: Stage) -> dict[str, torch.Tensor]:
        """The loss terms of one batch; ``terms["loss"]`` is what is minimised."""
        with self._autocast():
            out = self.net(batch.x)
            if batch.extra is not None:
                out["extra"] = self.net(batch.extra.x)
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
        step_batch = getattr(scheduler, "step_batch", None)  # warm-up moves the lr per batch
        stream = self.method.stream_rows(stage, len(batches), gen)
        if stream is not None and self.dist.enabled:
            raise ValueError("a second training stream (stream_rows) is not supported under DDP")
        shown = self.cfg.progress and self.dist.is_main
        for idx in _progress(batches, shown, desc, log=self.log):
            terms = self.step_loss(self.step_batch(idx, gen, stage, stream, steps), stage)
            _check_finite(terms, epoch, steps)
            if step_batch is not None:
                step_batch(steps, len(batches))
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


# Without a terminal (a log file, CI, `make demo | tee`), a plain line at most this often.
PROGRESS_LINE_S = 30.0


def say(line: str) -> None:
    """The default ``log`` of a run: print, flushed, so a log file or a pipe sees each line
    as it is written (block buffering would hold an epoch's lines back for minutes)."""
    print(line, flush=True)


def _progress(items, enabled: bool, desc: str, *, delay: float = 0, log=None):
    """A progress bar over ``items`` in a terminal or a notebook (tqdm.auto picks the widget),
    shown once ``delay`` seconds have passed. When output goes to a file or a CI log, with
    ``log``, a line ``desc: i/n (p%), s`` every :data:`PROGRESS_LINE_S` seconds instead."""
    if not enabled:
        return items
    if not (sys.stderr.isatty() or "ipykernel" in sys.modules):
        return items if log is None else _progress_lines(items, desc, log)
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, leave=False, delay=delay)


def _progress_lines(items, desc: str, log):
    n, t0 = len(items), time.perf_counter()
    last = t0
    for i, item in enumerate(items, 1):
        yield item
        now = time.perf_counter()
        if now - last >= PROGRESS_LINE_S and i < n:
            log(f"{desc}: {i}/{n} steps ({100 * i // n}%), {now - t0:.0f}s")
            last = now
