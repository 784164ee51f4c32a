"""A full training epoch vs the model's forward + backward alone: what the data path costs.

For a model (SmallConvNet, the CPU model; SimpleConvNet, the paper's) and Biased-MNIST train at
rho 0.99, three variants are timed round-robin in one process:

* ``trainer``: the real ``Trainer.train_epoch`` (cross-entropy, the ReBias protocol, batch 256):
  index, convert, normalise, forward, loss, backward, Adam step, loss bookkeeping;
* ``model``: the same model and the same Adam optimiser on the *same batches*, made beforehand
  as normalised float tensors: ``zero_grad``, forward, cross-entropy, backward, step; nothing
  else. Its loop is checked to end in bit-identical weights to the trainer's (tests);
* ``feed``: the trainer's data path alone (``bench_feed.ours_epoch``).

Reported: seconds and images/s of each, ``epoch/model`` (target <= 1.10: the data path and
bookkeeping cost under 10% of the epoch) and ``feed/epoch``. ``max_steps`` limits every variant
to the first batches of the epoch (``--quick``, and SimpleConvNet, ~0.4 GMAC/image, on a CPU).

Run: ``.venv/bin/python bench/bench_train.py --model smallconvnet [--max-steps 50]``.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_feed  # noqa: E402
import common  # noqa: E402

from debias.train.config import TrainConfig  # noqa: E402
from debias.train.loop import Trainer  # noqa: E402

RHO = 0.99
BATCH = 256
QUICK_STEPS = 50  # --quick: first 50 batches of the SmallConvNet epoch
SIMPLE_STEPS = 2  # SimpleConvNet: ~76 img/s on 2 idle CPU cores, so a few batches only
SIMPLE_STEPS_QUICK = 1


@contextlib.contextmanager
def deterministic_cpu() -> Iterator[None]:
    """``Trainer.run`` turns deterministic algorithms on for CPU runs; do the same, then restore."""
    prev = torch.are_deterministic_algorithms_enabled()
    prev_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(prev, warn_only=prev_warn)


def make_trainer(
    model: str = "smallconvnet",
    *,
    root: str | None = None,
    dataset: str = "biased-mnist",
    rho: float = RHO,
    batch_size: int = BATCH,
    max_steps: int | None = None,
    seed: int = 0,
    device: str = "cpu",
) -> Trainer:
    """A cross-entropy :class:`Trainer` with data loaded and model/optimiser built (no files)."""
    cfg = TrainConfig(
        out="runs/bench-unused",  # nothing is written: only load_data/build/train_epoch run
        dataset=dataset,
        rho=rho,
        root=root,
        model=model,
        method="ce",
        epochs=1,
        batch_size=batch_size,
        max_steps=max_steps,
        seed=seed,
        device=device,
        progress=False,
    )
    trainer = Trainer(cfg, log=lambda *_: None)
    trainer.load_data()
    trainer.build()
    trainer.enter_stage(0)
    return trainer


def premade_batches(trainer: Trainer, epoch: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The batches ``trainer.train_epoch(epoch)`` feeds its model, as ready normalised tensors."""
    if trainer.cfg.mode != "ce" or trainer.cfg.augment:
        raise ValueError("premade_batches mirrors the plain cross-entropy epoch (no augmentation)")
    ds = trainer.train_set
    gen = trainer.generator(epoch)
    out = []
    for idx in list(trainer.batches(len(ds), gen)):
        out.append((trainer.inputs(idx, gen, two_view=False, augment=False), ds.targets[idx]))
    return out


def model_epoch(trainer: Trainer, batches: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> int:
    """Forward + cross-entropy + backward + Adam step on pre-made batches; returns images."""
    model, opt = trainer.model, trainer.optimizer
    model.train()
    n = 0
    for x, y in batches:
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        n += x.shape[0]
    return n


def trainer_epoch(trainer: Trainer, epoch: int = 0) -> int:
    """The real ``Trainer.train_epoch``; returns the images it trained on."""
    steps = trainer.train_epoch(epoch)["steps"]
    n = len(trainer.train_set)
    bs = trainer.cfg.batch_size
    return sum(min(bs, n - s * bs) for s in range(int(steps)))


def run(
    model: str = "smallconvnet",
    *,
    root: str | None = None,
    dataset: str = "biased-mnist",
    repeats: int = 5,
    max_steps: int | None = None,
    batch_size: int = BATCH,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Time trainer epoch, model-only epoch and feed-only epoch, interleaved; ratios of medians."""
    with deterministic_cpu():
        trainer = make_trainer(
            model, root=root, dataset=dataset, max_steps=max_steps, batch_size=batch_size
        )
        # Always epoch 0, so all three variants see literally the same batches every repeat.
        batches = premade_batches(trainer, 0)
        feeder = bench_feed.feed_trainer(
            trainer.train_set, batch_size=batch_size, max_batches=max_steps
        )
        variants = {
            "trainer": lambda: trainer_epoch(trainer, 0),
            "model": lambda: model_epoch(trainer, batches),
            "feed": lambda: bench_feed.ours_epoch(feeder, two_view=False),
        }
        one = batches[:1]
        warm = {"model": lambda: model_epoch(trainer, one)}
        seconds, results = common.interleave(variants, repeats, warmup=warm, log=log)
    images = results["model"]
    if results["trainer"] != images or results["feed"] != images:
        raise RuntimeError(f"variants trained on different numbers of images: {results}")
    s = {k: common.summary(v) for k, v in seconds.items()}
    return {
        "model": model,
        "dataset": dataset,
        "n_train": len(trainer.train_set),
        "batch_size": batch_size,
        "max_steps": max_steps,
        "steps": len(batches),
        "images": images,
        "seconds": s,
        "raw_seconds": seconds,
        "images_per_s": {k: common.rate(v, images) for k, v in s.items()},
        "epoch_over_model": s["trainer"]["median"] / s["model"]["median"],
        "overhead_fraction": 1.0 - s["model"]["median"] / s["trainer"]["median"],
        "feed_fraction": s["feed"]["median"] / s["trainer"]["median"],
        "threads": torch.get_num_threads(),
    }


def rows(small: dict[str, Any], simple: dict[str, Any] | None = None) -> list[common.Row]:
    """Stage-5 rows: epoch vs model alone for SmallConvNet, images/s for SimpleConvNet."""
    Row = common.Row
    out: list[Row] = []
    for res, target in ((small, f"<= {common.TARGET_EPOCH_OVER_MODEL:g}"), (simple, "")):
        if res is None:
            continue
        part = (
            "1 epoch"
            if res["max_steps"] is None or res["steps"] * res["batch_size"] >= res["n_train"]
            else f"first {res['steps']} batches"
        )
        s, ips = res["seconds"], res["images_per_s"]
        out.append(
            Row(
                "5 training",
                f"{res['model']} CE epoch ({part}, {res['images']} imgs)",
                "s",
                s["trainer"],
                "model fwd+bwd alone",
                s["model"],
                res["epoch_over_model"],
                "epoch/model",
                target,
                notes=(
                    f"overhead {100 * res['overhead_fraction']:.1f}% of the epoch; data path "
                    f"alone {s['feed']['median']:.3f} s = {100 * res['feed_fraction']:.1f}%"
                ),
            )
        )
        out.append(
            Row(
                "5 training",
                f"{res['model']} throughput",
                "img/s",
                ips["trainer"],
                "model fwd+bwd alone",
                ips["model"],
                ips["trainer"]["median"] / ips["model"]["median"],
                "epoch/model",
            )
        )
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smallconvnet")
    parser.add_argument("--root", default=None)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--max-steps", type=int, default=None)
    args = parser.parse_args(argv)
    common.set_threads()
    res = run(args.model, root=args.root, repeats=args.repeats, max_steps=args.max_steps, log=print)
    print(common.format_table(rows(res)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
