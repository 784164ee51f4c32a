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

import copy
import time
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import torch.utils.deterministic
from torch import nn

from debias._checks import OptionTypeError
from debias.data.augment import BatchAugment, view_config
from debias.data.base import TensorImageDataset
from debias.data.registry import dataset_spec, load_splits
from debias.methods import (
    TRAIN_BIAS_LABELS,
    Context,
    get_method,
    resolve_hparams,
)
from debias.methods.stages import StageRunner
from debias.models import build_model, check_weights, model_preprocessing
from debias.train import runfolder
from debias.train.batches import (  # noqa: F401 (re-exported)
    TrainerBatches,
    _check_finite,
    _progress,
    say,
)
from debias.train.checkpoint import save_text, save_torch
from debias.train.config import TrainConfig
from debias.train.distributed import DistContext
from debias.train.limits import limits_text, run_limits
from debias.train.logging_backends import log_epoch
from debias.train.record import TrainerRecord, versions  # noqa: F401 (re-exported)
from debias.train.runfolder import CHECKPOINT, HISTORY, METRICS, MODEL
from debias.train.selection import EVAL_BAR_DELAY_S, TrainerSelection  # noqa: F401 (re-exported)
from debias.train.stages import CHECKPOINT_FORMAT, TrainerStages  # noqa: F401 (re-exported)


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


def deterministic_cpu() -> None:
    """What a CPU run sets before training: deterministic algorithms (warning where an op has
    none), without their filling of every new tensor with NaN. That filling only makes a bug
    that reads uninitialised memory visible; no op here reads it (the same seed gives the same
    weights bit for bit either way: tests/test_train.py), and the fills cost 10-35% of a LeNet
    training step on 2 CPU cores (bench/bench_two_view.py)."""
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.utils.deterministic.fill_uninitialized_memory = False


# The Trainer's parts, one module per job (stages and checkpoints, batches and gradient steps,
# evaluation and selection, the run record); their names are re-exported here, where they were.
class Trainer(TrainerStages, TrainerBatches, TrainerSelection, TrainerRecord):
    """Runs one :class:`TrainConfig` with the method it names. Use :func:`train` unless you
    need the pieces (``load_data``, ``build``, ``batches``, ``inputs``, ``train_epoch``).

    ``load`` stands in for :func:`~debias.data.registry.load_splits` (same arguments, same
    result; a sweep worker passes its cache of the splits, :class:`debias.sweep.worker.SplitCache`).
    """

    def __init__(
        self, cfg: TrainConfig, *, log=say, load: Callable[..., Any] | None = None
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
        self.full_sizes = {name: len(ds) for name, ds in self.splits.items()}
        if cfg.train_limit is not None:
            n = len(self.splits["train"])
            if cfg.train_limit > n:
                raise ValueError(
                    f"train_limit {cfg.train_limit} is more than the {n} training images of "
                    f"{cfg.dataset!r}; expected at most {n} (or leave it unset for all)"
                )
            self.splits["train"] = self.splits["train"].subset(range(cfg.train_limit))
        self.preprocessing = model_preprocessing(cfg.model, cfg.weights)
        if self.preprocessing is not None:
            self.splits = {
                name: _preprocessed(ds, self.preprocessing) for name, ds in self.splits.items()
            }
        self.train_set = self.splits["train"]
        self.eval_splits = [s for s in self.splits if s != "train"]
        if cfg.eval_limit is not None:
            for name in self.eval_splits:
                self.splits[name] = _limited(self.splits[name], cfg.eval_limit, cfg.data_seed)
        spec = dataset_spec(cfg.dataset)
        # the adjusted average's weights: the training split's (y, b) group counts
        self.group_weights = _group_counts(self.train_set) if spec.adjusted_average else None
        self.augment = BatchAugment(
            view_config(cfg.views, dict(spec.augment), cfg.colour_jitter),
            bias_is_colour=spec.colour_bias,
        )
        if cfg.ce_views is not None:
            self.ce_augment = BatchAugment(
                view_config(cfg.ce_views, dict(spec.augment)), bias_is_colour=spec.colour_bias
            )

    def build(self) -> None:
        """Build the method (seeded), its stage list, and empty run state."""
        cfg, ds = self.cfg, self.train_set
        method_cls = get_method(cfg.method)
        hp = resolve_hparams(cfg.method, cfg.method_options)
        reads_bias = method_cls.supervision_of(hp) == TRAIN_BIAS_LABELS
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
        self.method = method_cls(ctx, hp)
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
        # Finished runs this one continues to more epochs (oldest first), and the one it is
        # about to continue (check_continuation), recorded once its checkpoint is restored.
        self.continued_from: list[dict[str, Any]] = []
        self._continuing: dict[str, Any] | None = None

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
        done = runfolder.read_metrics(metrics_path) if metrics_path.exists() else None
        longer = done is not None and runfolder.is_continuation(done["config"], cfg, self.out)
        if done is not None and not longer:
            self.log(f"{self.out}: already finished (metrics.json present); nothing to do")
            return done

        if cfg.device == "cpu" or self.device.type == "cpu":
            deterministic_cpu()
        # absent pretrained weights fail now, not after minutes of decoding (a finished run's
        # model.pt needs no weights file: load_trained does not call this)
        check_weights(cfg.model, cfg.weights)
        self.load_data()
        self.log(data_line(cfg.dataset, self.splits, self.full_sizes))
        self.build()
        if longer:
            self.check_continuation(done, ckpt_path)
        if ckpt_path.exists():
            how = self.restore(runfolder.load_checkpoint(ckpt_path), longer=longer)
            self.log(f"{how} {self.out} after epoch {self.epochs_done}/{self.total_epochs}")
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
        index, stage, k = self.stage_of(epoch)
        t0 = time.perf_counter()
        if self._current != index:
            self.enter_stage(index)
        row: dict[str, Any] = {"epoch": epoch + 1, "stage": stage.name}
        self.eval_seconds = 0.0
        row |= self._runner.epoch(self, stage, epoch, index == len(self.stages) - 1)
        row |= self.readout_row(stage, k)  # represent_every: validation only
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
        ("readout/val/unbiased_accuracy", "val read-out unbiased"),
    ):
        if key in row:
            parts.append(f"{label} {100 * row[key]:.1f}%")
    parts.append(f"{row['epoch_seconds']:.1f}s")
    return " | ".join(parts)


def data_line(
    dataset: str, splits: dict[str, TensorImageDataset], full_sizes: dict[str, int]
) -> str:
    """One line of what a run trains and evaluates on: each split's size (and its size before
    a limit cut it), the training split's bias-aligned / conflicting counts and its (target,
    bias) groups, the smallest named.

    Example: ``data biased-mnist: train 55,000 (54,829 bias-aligned, 171 conflicting; 100
    (target, bias) groups, smallest 0=red... ) | val 5,000 | test 10,000``.
    """
    parts = []
    for name, ds in splits.items():
        size = f"{name} {len(ds):,}"
        if len(ds) < full_sizes.get(name, len(ds)):
            size += f" of {full_sizes[name]:,}"
        if name == "train":
            counts = ds.group_counts()
            small = counts.loc[counts["n"].idxmin()]
            n_aligned = int(ds.aligned.sum())
            size += (
                f" ({n_aligned:,} bias-aligned, {len(ds) - n_aligned:,} conflicting; "
                f"{len(counts)} (target, bias) groups, smallest ({small['target']}, {small['bias']}) "
                f"with {int(small['n'])})"
            )
        parts.append(size)
    return f"data {dataset}: " + " | ".join(parts)


def _preprocessed(ds: TensorImageDataset, pre: dict[str, Any]) -> TensorImageDataset:
    """A copy of ``ds`` (a sweep worker's cached split stays as it is) with the pretrained
    weights' own preprocessing (:func:`debias.models.model_preprocessing`): their mean/std, and
    their centre crop when the stored images are larger. Decoded
    at ``image_size = pre["resize"]`` (a centred square resized), then cropped to ``pre["crop"]``,
    this is torchvision's ``Resize(resize) + CenterCrop(crop)`` of the weights' transforms."""
    ds = copy.copy(ds)
    ds.mean, ds.std = tuple(pre["mean"]), tuple(pre["std"])
    h, w = ds.images.shape[-2:]
    crop = pre["crop"]
    if h > crop and w > crop:
        top, left = (h - crop) // 2, (w - crop) // 2
        ds.images = ds.images[..., top : top + crop, left : left + crop].contiguous()
    pre["applied"] = {"stored": [int(h), int(w)], "input": list(ds.images.shape[-2:])}
    return ds


def _group_counts(ds: TensorImageDataset) -> dict[tuple[int, int], int]:
    counts = ds.group_counts()
    return {(int(r.y), int(r.b)): int(r.n) for r in counts.itertuples()}


def _limited(ds: TensorImageDataset, limit: int, seed: int) -> TensorImageDataset:
    """A seeded subset of at most ``limit`` rows of an evaluation split (``eval_limit``), in
    the split's order; the same rows for every method and seed of one ``data_seed``."""
    if len(ds) <= limit:
        return ds
    gen = torch.Generator().manual_seed(seed)
    rows = torch.randperm(len(ds), generator=gen)[:limit].sort().values
    return ds.subset(rows)


def train(
    cfg: TrainConfig | dict[str, Any],
    *,
    force: bool = False,
    log=say,
    load: Callable[..., Any] | None = None,
) -> dict[str, Any]:
    """Run one training run: train, resume it from its checkpoint, continue a finished one to
    more ``epochs``, or return it when it is finished. ``cfg``: a :class:`TrainConfig` or a
    mapping of its fields; ``force`` discards what debias wrote in ``cfg.out`` first; ``log``
    receives each line the run prints; ``load``: see :class:`Trainer`.

    Returns the run's ``metrics.json`` as a dict: ``config`` (every option), ``method`` (name,
    supervision, resolved hyper-parameters, stages, paper), ``supervision`` (what the whole run
    read), ``selection`` (rule and reported epoch), ``splits`` (for each evaluation split the
    :class:`~debias.metrics.GroupReport` of the reported epoch as a dict, with its ``groups``
    rows), ``data`` (sizes, aligned groups, class and bias names), ``epochs_run``,
    ``wall_time_seconds``, ``versions``, ``representation`` (DFR head and bias leakage of the
    frozen features, unless ``represent=False``) and, for a continued run, ``continued_from``.

    Example::

        result = train(TrainConfig(out="runs/rw", rho=0.997, method="reweight",
                                   model="lenet", epochs=2, lr_milestones=[]))
        result["splits"]["test"]["worst_group_accuracy"]      # a float in [0, 1]
        result["selection"]["epoch"]                           # 2 (select="last")
    """
    if isinstance(cfg, Mapping):
        cfg = TrainConfig.from_dict(cfg)
    if not isinstance(cfg, TrainConfig):
        raise OptionTypeError(
            f"train() takes a TrainConfig or a mapping of its options, e.g. "
            f"train(TrainConfig(out='runs/x')) or train({{'out': 'runs/x'}}); got "
            f"{type(cfg).__name__} {cfg!r}"
        )
    if not isinstance(force, bool):
        raise OptionTypeError(f"train(force=...) must be true/false; got {force!r}")
    return Trainer(cfg, log=log, load=load).run(force=force)


def load_trained(
    run_dir: str | Path, *, root: str | None = None, device: str = "auto"
) -> tuple[nn.Module, dict[str, TensorImageDataset], TrainConfig]:
    """A finished run's model (its selected classifier) and data splits, rebuilt from its files.

    ``root`` overrides the data root recorded in the run (runs move between machines). A run
    made with limits (``eval_limit``, ``train_limit``, ``max_steps``) is rebuilt with the same
    subsets, and a :class:`UserWarning` says so.

    Returns ``(model, splits, cfg)``: the classifier in eval mode on ``device``
    (``model.features(x)`` and ``model(x)`` logits), ``{split name: TensorImageDataset}`` as the
    run saw them (the same ``eval_limit`` subsets, if it used one), and its :class:`TrainConfig`.

    Example::

        model, splits, cfg = load_trained("runs/rw")
        test = splits["test"]
        report = group_report(test.targets, predict(model, test), test.bias,
                              aligned=test.aligned_groups)
    """
    run_dir = Path(run_dir)
    metrics, weights = run_dir / METRICS, run_dir / MODEL
    for path in (metrics, weights):
        if not path.exists():
            raise FileNotFoundError(
                f"{path} not found: {run_dir} is not a finished debias run "
                "(expected metrics.json and model.pt written by `debias train`)"
            )
    record = runfolder.read_metrics(metrics)
    config = runfolder.saved_config(record["config"])
    config.update(out=str(run_dir), device=device, progress=False, log_to=None)
    if root is not None:
        config["root"] = root
    cfg = TrainConfig.from_dict(config)
    trainer = Trainer(cfg, log=lambda *a, **k: None)
    trainer.load_data()
    check_same_data(record, trainer.splits, metrics)
    model = build_model(cfg.model, trainer.train_set.num_classes)
    hp = resolve_hparams(cfg.method, cfg.method_options)
    model = get_method(cfg.method).prepare_model(model, hp).to(trainer.device)
    state = runfolder.load_checkpoint(weights)
    if state["config"].get("model") not in (None, cfg.model):
        raise runfolder.RunFolderError(
            f"{weights} holds a {state['config'].get('model')!r} model but {metrics} says "
            f"{cfg.model!r}: the two files are of different runs. Re-train the run (--force)"
        )
    try:
        model.load_state_dict(state["model"])
    except (RuntimeError, KeyError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise runfolder.RunFolderError(
            f"{weights} does not fit the {cfg.model!r} model of {metrics} ({first}): the files "
            "are of different runs, or edited. Re-train the run (--force)"
        ) from None
    if note := limits_text(run_limits(cfg)):
        warnings.warn(
            f"{run_dir}: {note}; the splits returned are that run's subsets", stacklevel=2
        )
    return model.eval(), trainer.splits, cfg


def check_same_data(record: dict[str, Any], splits: dict[str, Any], metrics: Path) -> None:
    """Refuse data that changed since the run read it: each split's fingerprint recorded in
    ``metrics.json`` (runs of debias >= this check) must equal today's."""
    changed = [
        name
        for name, ds in splits.items()
        if isinstance(record.get("data", {}).get(name), dict)
        and record["data"][name].get("fingerprint") not in (None, ds.fingerprint())
    ]
    if changed:
        raise runfolder.RunFolderError(
            f"the data of split(s) {', '.join(changed)} changed since the run was trained (their "
            f"fingerprints differ from those in {metrics}: labels, rows or images are not "
            "what the run read); restore that data (--root), or re-train the run (--force)"
        )
