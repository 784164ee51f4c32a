"""Data-feed speed and memory: the trainer's whole-tensor path vs per-sample PIL DataLoaders.

One epoch of Biased-MNIST training data (55,000 images: MNIST-train minus the 5,000 held-out
validation rows, rho 0.99), batch 256, produced as normalised float batches ready for a model.

Plain feed (no augmentation; ReBias trains this way):

* reference: ReBias' ``ColourBiasedMNIST`` access pattern (clovaai/rebias
  ``datasets/colour_mnist.py``): images stored as one uint8 HWC numpy array, ``__getitem__``
  builds a ``PIL.Image`` and applies ``ToTensor()`` + ``Normalize(0.5, 0.5)``;
  ``DataLoader(batch_size=256, shuffle=True, num_workers=2)`` and ``num_workers=0``.
  (ReBias also sets ``pin_memory=True``, which only matters with a GPU; off here.)
* ours: exactly the trainer's data path (``debias.train.loop.Trainer``): ``batches``
  (one ``randperm`` then slices) and ``Trainer.inputs`` (``index_select``, one fused
  normalisation).

Two-view augmented feed (contrastive training):

* reference ``biascon``: BiasCon's Biased-MNIST pipeline (grayhong/bias-contrastive-learning
  ``debias/datasets/biased_mnist.py``, ``get_color_mnist(aug=True, two_crop=True)``):
  ``TwoCropTransform(Compose([RandomRotation(20), RandomApply([ColorJitter(0.4, 0.4, 0.4, 0.1)],
  p=0.8), ToTensor(), Normalize]))``, per sample, then ``torch.cat`` of the two views as their
  training loop does. Batch 256 here (BiasCon used 64 for this loader) so that both sides
  produce the same batches.
* reference ``geometric``: the same structure with the augmentation *our* default applies
  (``RandomCrop(28, padding=2, padding_mode="edge")`` + ``RandomRotation(10)``): like for like.
* ours: the trainer's two-view path, ``Trainer.inputs(two_view=True)`` (one
  ``affine_grid``/``grid_sample`` per view and batch, ``cat``, in-place normalisation); with the
  Biased-MNIST default augmentation, and once more with ``colour_jitter=0.4`` to match the
  amount of work in BiasCon's pipeline (ColorJitter perturbs the bias colour; our default keeps
  it off on purpose).

Memory: one fresh interpreter per variant (:func:`memory_worker`, run with
``common.MEMORY_MALLOC`` so that RSS follows tensor lifetimes); it builds the dataset, resets
its peak-RSS mark to the current RSS (``/proc/self/clear_refs``), feeds ``MEMORY_BATCHES``
batches and reports peak (``VmHWM``) minus the RSS before, and, for ``num_workers > 0``, the
largest worker's peak RSS (``RUSAGE_CHILDREN``; a forked worker's RSS includes the pages it
shares with the parent, so it is an upper bound on its own cost). Python-side ``tracemalloc``
is not used: it does not see torch's or PIL's native allocations.

Run: ``.venv/bin/python bench/bench_feed.py [--repeats 5] [--max-batches N]``.
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import math
import os
import resource
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402  (bench/ is not a package)

from debias.data.augment import AugmentConfig, BatchAugment  # noqa: E402
from debias.data.base import TensorImageDataset  # noqa: E402
from debias.data.registry import dataset_spec  # noqa: E402
from debias.train.config import TrainConfig  # noqa: E402
from debias.train.loop import Trainer  # noqa: E402

RHO = 0.99
BATCH = 256
MEAN = STD = (0.5, 0.5, 0.5)
WORKERS = (0, 2)
QUICK_BATCHES = 40  # --quick: the first 40 batches (10,240 images) of each epoch
MEMORY_BATCHES = 20  # peak memory of a streaming feed is reached within a few batches
JITTER = 0.4  # BiasCon's ColorJitter(0.4, 0.4, 0.4, 0.1) strength, for the like-for-like row


# -- data -------------------------------------------------------------------------------------------
def load_train(
    root: str | os.PathLike | None = None, rho: float = RHO, limit: int | None = None
) -> TensorImageDataset:
    """The Biased-MNIST training split the trainer uses (optionally its first ``limit`` rows)."""
    from debias.data.biased_mnist import biased_mnist

    ds = biased_mnist("train", rho=rho, root=root)
    if limit is None:
        return ds
    if not 2 <= limit <= len(ds):
        raise ValueError(f"limit must be between 2 and {len(ds)} images; got {limit}")
    return ds.subset(range(limit))


# -- the references, written the way the original repositories do it ---------------------------------
class TwoCropTransform:
    """Two independent draws of the same transform (SupContrast / BiasCon ``TwoCropTransform``)."""

    def __init__(self, transform: Callable) -> None:
        self.transform = transform

    def __call__(self, x):
        return [self.transform(x), self.transform(x)]


class PerSampleColourMNIST(Dataset):
    """ReBias/BiasCon ``ColourBiasedMNIST.__getitem__``: uint8 HWC array -> PIL -> transform."""

    def __init__(self, ds: TensorImageDataset, transform: Callable | None) -> None:
        # The originals keep ``self.data`` as a numpy uint8 [N, H, W, 3] array.
        self.data = np.ascontiguousarray(ds.images.permute(0, 2, 3, 1).cpu().numpy())
        self.targets = ds.targets.cpu()
        self.biased_targets = ds.bias.cpu()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int):
        img, target = self.data[index], int(self.targets[index])
        img = Image.fromarray(img.astype(np.uint8), mode="RGB")
        if self.transform is not None:
            img = self.transform(img)
        return img, target, int(self.biased_targets[index])


def plain_transform() -> Callable:
    """ReBias ``get_biased_mnist_dataloader``: ``ToTensor`` + ``Normalize(0.5, 0.5)``."""
    return transforms.Compose([transforms.ToTensor(), transforms.Normalize(MEAN, STD)])


def biascon_transform() -> Callable:
    """BiasCon ``get_color_mnist(aug=True, two_crop=True)`` training transform."""
    return TwoCropTransform(
        transforms.Compose(
            [
                transforms.RandomRotation(20),
                transforms.RandomApply([transforms.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
                transforms.ToTensor(),
                transforms.Normalize(MEAN, STD),
            ]
        )
    )


def geometric_transform() -> Callable:
    """Per-sample PIL version of our default Biased-MNIST augmentation (crop 2 px, rotate 10)."""
    cfg = dict(dataset_spec("biased-mnist").augment)
    return TwoCropTransform(
        transforms.Compose(
            [
                transforms.RandomCrop(28, padding=cfg["crop_padding"], padding_mode="edge"),
                transforms.RandomRotation(cfg["rotation"]),
                transforms.ToTensor(),
                transforms.Normalize(MEAN, STD),
            ]
        )
    )


REFERENCE_TRANSFORMS: dict[str, Callable[[], Callable]] = {
    "plain": plain_transform,
    "biascon": biascon_transform,
    "geometric": geometric_transform,
}


def reference_loader(
    ds: TensorImageDataset | PerSampleColourMNIST,
    kind: str,
    num_workers: int,
    *,
    batch_size: int = BATCH,
    seed: int = 0,
) -> DataLoader:
    """``DataLoader(PerSampleColourMNIST(ds, transform), batch_size, shuffle=True, num_workers)``.

    Pass a :class:`PerSampleColourMNIST` to share its HWC array between several loaders.
    """
    if kind not in REFERENCE_TRANSFORMS:
        raise ValueError(
            f"unknown reference {kind!r}; expected one of {list(REFERENCE_TRANSFORMS)}"
        )
    if num_workers < 0:
        raise ValueError(f"num_workers must be >= 0; got {num_workers}")
    if isinstance(ds, PerSampleColourMNIST):
        ref = copy.copy(ds)  # shares the arrays; only the transform differs
        ref.transform = REFERENCE_TRANSFORMS[kind]()
    else:
        ref = PerSampleColourMNIST(ds, REFERENCE_TRANSFORMS[kind]())
    return DataLoader(
        ref,
        batch_size=batch_size,
        shuffle=True,
        num_workers=num_workers,
        generator=torch.Generator().manual_seed(seed),
    )


def reference_epoch(loader: DataLoader, max_batches: int | None = None) -> int:
    """Iterate one epoch (or its first ``max_batches``); return the number of image rows fed.

    Two-view batches are concatenated view-major, as BiasCon's training loop does before the
    model. Creating the iterator (worker start-up) and shutting it down count, as in training.
    """
    rows = 0
    for i, (x, _y, _b) in enumerate(loader):
        if max_batches is not None and i >= max_batches:
            break
        if isinstance(x, list):
            x = torch.cat([x[0], x[1]], dim=0)
        rows += x.shape[0]
    return rows


# -- ours: the trainer's own data path ------------------------------------------------------------------
def feed_trainer(
    ds: TensorImageDataset,
    *,
    batch_size: int = BATCH,
    max_batches: int | None = None,
    colour_jitter: float = 0.0,
    seed: int = 0,
) -> Trainer:
    """A :class:`Trainer` holding ``ds`` as its training set, without model or optimiser.

    Its ``_generator``, ``batches`` and ``inputs`` are the trainer's own code; the
    augmentation is built the way ``Trainer.load_data`` builds it for Biased-MNIST.
    """
    cfg = TrainConfig(
        dataset="biased-mnist",
        rho=RHO,
        model="smallconvnet",
        batch_size=batch_size,
        max_steps=max_batches,
        seed=seed,
        device=str(ds.device),
        progress=False,
        colour_jitter=colour_jitter,
    )
    trainer = Trainer(cfg, log=lambda *_: None)
    trainer.train_set = ds
    with warnings.catch_warnings():
        # Colour jitter on a colour bias warns; the like-for-like row asks for it on purpose.
        warnings.simplefilter("ignore", UserWarning)
        trainer.augment = BatchAugment(
            AugmentConfig(
                **dict(dataset_spec("biased-mnist").augment, colour_jitter=colour_jitter)
            ),
            bias_is_colour=True,
        )
    return trainer


def ours_epoch(trainer: Trainer, *, two_view: bool, epoch: int = 0) -> int:
    """The data part of ``Trainer.train_epoch``: its batches and ``Trainer.inputs`` (the very
    method training calls, so the bench cannot drift from the trainer); returns the rows fed."""
    ds = trainer.train_set
    gen = trainer.generator(epoch)
    rows = 0
    for idx in list(trainer.batches(len(ds), gen)):
        _y, _b = ds.targets[idx], ds.bias[idx]
        x = trainer.inputs(idx, gen, two_view=two_view, augment=two_view)
        rows += x.shape[0]
    return rows


# -- timing -------------------------------------------------------------------------------------------
def _expected_rows(n: int, max_batches: int | None, views: int) -> int:
    steps = math.ceil(n / BATCH)
    if max_batches is not None and max_batches < steps:
        return max_batches * BATCH * views
    return n * views


def _check_rows(results: dict[str, int], expected: int) -> None:
    bad = {k: v for k, v in results.items() if v != expected}
    if bad:
        raise RuntimeError(f"feed variants fed {bad} image rows; expected {expected} each")


def run_plain(
    ds: TensorImageDataset,
    *,
    repeats: int = 5,
    max_batches: int | None = None,
    workers: Sequence[int] = WORKERS,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Time one plain epoch: ours vs the ReBias-style DataLoader at each ``workers`` count."""
    trainer = feed_trainer(ds, max_batches=max_batches)
    per_sample = PerSampleColourMNIST(ds, None)
    variants: dict[str, Callable[[], Any]] = {"ours": lambda: ours_epoch(trainer, two_view=False)}
    warm: dict[str, Callable[[], Any]] = {"ours": lambda: ours_epoch(trainer, two_view=False)}
    for nw in workers:
        loader = reference_loader(per_sample, "plain", nw)
        variants[f"ref_plain_nw{nw}"] = lambda ld=loader: reference_epoch(ld, max_batches)
        warm[f"ref_plain_nw{nw}"] = lambda ld=loader: reference_epoch(ld, 1)
    seconds, results = common.interleave(variants, repeats, warmup=warm, log=log)
    _check_rows(results, _expected_rows(len(ds), max_batches, 1))
    return {
        "n_images": len(ds),
        "batch_size": BATCH,
        "max_batches": max_batches,
        "rows_fed": results["ours"],
        "seconds": {k: common.summary(v) for k, v in seconds.items()},
        "raw_seconds": seconds,
    }


def run_two_view(
    ds: TensorImageDataset,
    *,
    repeats: int = 5,
    max_batches: int | None = None,
    workers: Sequence[int] = WORKERS,
    geometric_workers: Sequence[int] = (2,),
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Time one two-view augmented epoch: ours (default, +jitter) vs BiasCon / geometric refs."""
    trainer = feed_trainer(ds, max_batches=max_batches)
    trainer_jitter = feed_trainer(ds, max_batches=max_batches, colour_jitter=JITTER)
    variants: dict[str, Callable[[], Any]] = {
        "ours": lambda: ours_epoch(trainer, two_view=True),
        "ours_jitter": lambda: ours_epoch(trainer_jitter, two_view=True),
    }
    warm = dict(variants)
    per_sample = PerSampleColourMNIST(ds, None)
    refs = [("biascon", nw) for nw in workers] + [("geometric", nw) for nw in geometric_workers]
    for kind, nw in refs:
        loader = reference_loader(per_sample, kind, nw)
        variants[f"ref_{kind}_nw{nw}"] = lambda ld=loader: reference_epoch(ld, max_batches)
        warm[f"ref_{kind}_nw{nw}"] = lambda ld=loader: reference_epoch(ld, 1)
    seconds, results = common.interleave(variants, repeats, warmup=warm, log=log)
    _check_rows(results, _expected_rows(len(ds), max_batches, 2))
    return {
        "n_images": len(ds),
        "batch_size": BATCH,
        "max_batches": max_batches,
        "rows_fed": results["ours"],
        "seconds": {k: common.summary(v) for k, v in seconds.items()},
        "raw_seconds": seconds,
    }


# -- memory ---------------------------------------------------------------------------------------------
MEMORY_VARIANTS: dict[str, tuple[str, bool, int]] = {
    # name: (kind, two_view, num_workers); kind "ours" or a REFERENCE_TRANSFORMS key
    "ours_plain": ("ours", False, 0),
    "ref_plain_nw0": ("plain", False, 0),
    "ref_plain_nw2": ("plain", False, 2),
    "ours_two_view": ("ours", True, 0),
    "ref_biascon_nw0": ("biascon", True, 0),
    "ref_biascon_nw2": ("biascon", True, 2),
}


def memory_worker(
    variant: str,
    *,
    root: str | None,
    max_batches: int,
    limit: int | None = None,
    threads: int | None = None,
) -> dict[str, float]:
    """In a fresh process: peak-RSS increase of feeding ``max_batches`` batches of ``variant``."""
    if variant not in MEMORY_VARIANTS:
        raise ValueError(f"unknown memory variant {variant!r}; expected {list(MEMORY_VARIANTS)}")
    common.set_threads(threads)
    kind, two_view, nw = MEMORY_VARIANTS[variant]
    ds = load_train(root, limit=limit)
    # No warm-up on either side: both measurements include first-call initialisation.
    if kind == "ours":
        trainer = feed_trainer(ds, max_batches=max_batches)
        fn = lambda: ours_epoch(trainer, two_view=two_view)  # noqa: E731
    else:
        loader = reference_loader(ds, kind, nw)
        fn = lambda: reference_epoch(loader, max_batches)  # noqa: E731
    gc.collect()
    # Building the dataset peaks higher than an epoch does: measure from here on.
    reset = common.reset_peak_rss()
    before = common.rss_mb()
    rows = fn()
    after = common.peak_rss_mb()
    return {
        "variant": variant,
        "num_workers": nw,
        "batches": max_batches,
        "rows": rows,
        "baseline_mb": before,
        "peak_increase_mb": max(after - before, 0.0),
        "peak_was_reset": reset,
        "worker_peak_rss_mb": common.maxrss_mb(resource.RUSAGE_CHILDREN) if nw else 0.0,
    }


def run_memory(
    *,
    root: str | None = None,
    max_batches: int = MEMORY_BATCHES,
    limit: int | None = None,
    variants: Sequence[str] = tuple(MEMORY_VARIANTS),
    log: Callable[[str], None] | None = None,
) -> dict[str, dict[str, float]]:
    """:func:`memory_worker` for every variant, each in its own interpreter."""
    unknown = [v for v in variants if v not in MEMORY_VARIANTS]
    if unknown:
        raise ValueError(f"unknown memory variant(s) {unknown}; expected {list(MEMORY_VARIANTS)}")
    out = {}
    for v in variants:
        params = {
            "variant": v,
            "root": root,
            "max_batches": max_batches,
            "limit": limit,
            "threads": torch.get_num_threads(),  # the parent's setting, e.g. bench/run --threads
        }
        out[v] = common.child_json(
            Path(__file__).resolve(), ["--worker", json.dumps(params)], env=common.MEMORY_MALLOC
        )
        if log is not None:
            log(f"    memory {v}: {out[v]}")
    return out


# -- rows for the table -----------------------------------------------------------------------------------
def rows_time(plain: dict[str, Any], two: dict[str, Any]) -> list[common.Row]:
    """Table rows for stages 2 and 3 (seconds per epoch, or per ``max_batches`` batches)."""
    Row = common.Row
    out: list[Row] = []

    def what(res: dict[str, Any], label: str) -> str:
        if res["max_batches"] is None:
            return f"{label}, 1 epoch ({res['n_images']} imgs)"
        return f"{label}, first {res['max_batches']} batches"

    s = plain["seconds"]
    for name in [k for k in s if k.startswith("ref_plain_nw")]:
        nw = int(name.rsplit("nw", 1)[1])
        target = f">= {common.TARGET_PLAIN_FEED:g}" if nw == 2 else ""
        out.append(
            Row(
                "2 plain feed",
                what(plain, "B=256 normalised batches"),
                "s",
                s["ours"],
                f"ReBias PIL DataLoader nw={nw}",
                s[name],
                s[name]["median"] / s["ours"]["median"],
                "ref/ours",
                target,
            )
        )
    t = two["seconds"]
    refs = [k for k in t if k.startswith("ref_")]
    for name in refs:
        kind, nw = name[4:].rsplit("_nw", 1)
        primary = kind == "biascon" and nw == "2"
        label = {"biascon": "BiasCon PIL TwoCrop", "geometric": "PIL crop+rotate TwoCrop"}[kind]
        out.append(
            Row(
                "3 two-view feed",
                what(two, "2 views, BatchAugment default"),
                "s",
                t["ours"],
                f"{label} nw={nw}",
                t[name],
                t[name]["median"] / t["ours"]["median"],
                "ref/ours",
                f">= {common.TARGET_TWO_VIEW_FEED:g}" if primary else "",
                notes="the issue's target row" if primary else "",
            )
        )
    for name in [k for k in refs if k.startswith("ref_biascon")]:
        nw = name.rsplit("_nw", 1)[1]
        out.append(
            Row(
                "3 two-view feed",
                what(two, f"2 views, BatchAugment + jitter {JITTER}"),
                "s",
                t["ours_jitter"],
                f"BiasCon PIL TwoCrop nw={nw}",
                t[name],
                t[name]["median"] / t["ours_jitter"]["median"],
                "ref/ours",
                notes="like for like: both sides jitter colour",
            )
        )
    return out


def rows_memory(mem: dict[str, dict[str, float]]) -> list[common.Row]:
    """Stage 6 rows: peak-RSS increase of ours vs each reference, per feed."""
    Row = common.Row
    out: list[Row] = []
    pairs = [
        ("ours_plain", "ref_plain_nw0", "plain feed", "ReBias DataLoader nw=0"),
        ("ours_plain", "ref_plain_nw2", "plain feed", "ReBias DataLoader nw=2"),
        ("ours_two_view", "ref_biascon_nw0", "two-view feed", "BiasCon DataLoader nw=0"),
        ("ours_two_view", "ref_biascon_nw2", "two-view feed", "BiasCon DataLoader nw=2"),
    ]
    for ours, ref, label, ref_label in pairs:
        if ours not in mem or ref not in mem:
            continue
        o, r = mem[ours], mem[ref]
        notes = f"{o['batches']} batches; process baseline {o['baseline_mb']:.0f} MB"
        if r["num_workers"]:
            notes += f"; largest worker peak RSS {r['worker_peak_rss_mb']:.0f} MB (incl. shared)"
        out.append(
            Row(
                "6 peak memory",
                f"{label}: peak RSS increase",
                "MB",
                common.point(o["peak_increase_mb"]),
                ref_label,
                common.point(r["peak_increase_mb"]),
                r["peak_increase_mb"] / o["peak_increase_mb"]
                if o["peak_increase_mb"] > 0
                else math.nan,
                "ref/ours",
                notes=notes,
            )
        )
    return out


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--worker"]:
        p = json.loads(argv[1])
        res = memory_worker(
            p["variant"],
            root=p.get("root"),
            max_batches=p["max_batches"],
            limit=p.get("limit"),
            threads=p.get("threads"),
        )
        print(json.dumps(res))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", default=None, help="data root (default $DEBIAS_DATA)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--max-batches", type=int, default=None, help="default: whole epoch")
    parser.add_argument("--no-memory", action="store_true")
    args = parser.parse_args(argv)
    common.set_threads()
    ds = load_train(args.root)
    log = print
    plain = run_plain(ds, repeats=args.repeats, max_batches=args.max_batches, log=log)
    two = run_two_view(ds, repeats=args.repeats, max_batches=args.max_batches, log=log)
    rows = rows_time(plain, two)
    if not args.no_memory:
        rows += rows_memory(run_memory(root=args.root))
    print(common.format_table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
