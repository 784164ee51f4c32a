"""The two-view pretraining epoch under each recipe's views: the path before issue 33 vs today's.

LeNet (the CPU model) on Biased-MNIST rho 0.997, ConTeX (``n_views 2``), one epoch of gradient
steps of each recipe whose views are augmented, with the recipe's batches:

* ``supcontrast``: views ``supcontrast`` (RandomResizedCrop 0.2-1, flip, ColorJitter(.4, .4,
  .4, .1) p .8, grey p .2), two-stage pretraining, batch 256, SGD + cosine;
* ``biascon``: views ``biascon-mnist`` (RandomRotation(20) with black corners, ColorJitter p
  .8), one stage: a plain CE batch of 128 + a 1/P(b|y)-sampled stream of 64 images x 2 views;
* ``cpu-geometry``: views ``geometry`` (crop +-2 px, rotation +-10 deg), batch 256, Adam.

For each recipe six variants run round-robin in one process (``common.interleave``):

* ``epoch/ref``: ``Trainer.train_epoch`` with ``BatchAugment(reference=True)``, the path before
  issue 33: one view at a time, ColorJitter as every op on the whole batch at every one of the
  four positions (rows picked by ``where``), the hue by torchvision's ``[B, 3, 6, H, W]``
  one-hot ``einsum``;
* ``epoch/fast``: ``Trainer.train_epoch`` as training runs it: both views drawn, then made in
  one batched pass, each jitter op once per image on just its rows, the hue by a ``gather``;
  and deterministic mode without its NaN fill of every new tensor
  (:func:`debias.train.loop.deterministic_cpu`; the reference keeps the fill);
* ``epoch/ref+nhwc``, ``epoch/fast+nhwc``: the same two with ``channels_last`` (as the CPU
  sweeps run; LeNet's max-pool is several times faster on NHWC tensors on this CPU);
* ``feed/ref``, ``feed/fast``: the same epoch's inputs alone (``Trainer.step_batch``: index,
  convert, augment, normalise), no model: where the time of the epoch goes.

The two paths give the same images from the same generator, bit for bit (tests/test_augment.py);
the bench checks it on the measured steps (``same inputs``). Reported:
seconds per epoch-equivalent (the measured steps scaled to a whole epoch's), ``ref/fast`` (the
speed-up) and the feed's share of each epoch. The machine may be busy: absolute seconds are
inflated by the load, the interleaved ratio is what to read.

Run: ``OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/bench_two_view.py [--max-steps 20]
[--repeats 3] [--recipes supcontrast biascon cpu-geometry]``.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_train  # noqa: E402
import common  # noqa: E402
import torch.utils.deterministic as D  # noqa: E402

from debias.data.augment import BatchAugment  # noqa: E402
from debias.train.config import TrainConfig  # noqa: E402
from debias.train.loop import Trainer, deterministic_cpu  # noqa: E402

RHO = 0.997
RECIPES = ("supcontrast", "biascon", "cpu-geometry")
MAX_STEPS = 20  # a whole LeNet epoch is 215-430 steps; the first 20 show the ratio


def make_trainer(
    recipe: str, *, reference: bool, max_steps: int | None, method: str = "contex",
    root: str | None = None, seed: int = 0, channels_last: bool = False,
    dataset: str = "biased-mnist", rho: float = RHO,
) -> Trainer:  # fmt: skip
    """A LeNet :class:`Trainer` of ``recipe`` with data, model and first stage built (no
    files), its augmentation the reference path or today's (``dataset``: the tests' digits)."""
    cfg = TrainConfig(
        out="runs/bench-unused",  # nothing is written; the recipe's own epochs (only epoch 0 runs)
        dataset=dataset, rho=rho, root=root, model="lenet", recipe=recipe,
        method=method, method_options={"n_views": 2}, max_steps=max_steps,
        seed=seed, device="cpu", progress=False, channels_last=channels_last,
    )  # fmt: skip
    trainer = Trainer(cfg, log=lambda *_: None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # colour jitter on a colour bias: known
        trainer.load_data()
        trainer.augment = BatchAugment(trainer.augment.config, reference=reference)
    trainer.build()
    trainer.enter_stage(0)
    return trainer


def epoch_batches(trainer: Trainer, epoch: int = 0):
    """``(generator, stage, batches, stream)`` exactly as ``Trainer.train_epoch`` makes them."""
    _, stage, _ = trainer.stage_of(epoch)
    gen = trainer.generator(epoch)
    rows = trainer.method.epoch_rows(stage, len(trainer.train_set), gen)
    batches = list(trainer.batches(len(trainer.train_set), gen, rows))
    return gen, stage, batches, trainer.method.stream_rows(stage, len(batches), gen)


def feed_epoch(trainer: Trainer, epoch: int = 0) -> int:
    """The inputs of one ``train_epoch`` (``step_batch`` of every step), no model; image rows."""
    gen, stage, batches, stream = epoch_batches(trainer, epoch)
    rows = 0
    for step, idx in enumerate(batches):
        batch = trainer.step_batch(idx, gen, stage, stream, step)
        rows += batch.x.shape[0] + (0 if batch.extra is None else batch.extra.x.shape[0])
    return rows


def same_inputs(a: Trainer, b: Trainer, epoch: int = 0) -> bool:
    """Whether two trainers feed their models the same values at every step of ``epoch`` (the
    memory layouts may differ: the reference path's hue ``einsum`` leaves its images
    channels-last, so the two models' convolutions round differently and their losses differ
    in the last digits)."""
    (ga, stage, ba, sa), (gb, _, bb, sb) = epoch_batches(a, epoch), epoch_batches(b, epoch)
    for step, (ia, ib) in enumerate(zip(ba, bb, strict=True)):
        xa, xb = a.step_batch(ia, ga, stage, sa, step), b.step_batch(ib, gb, stage, sb, step)
        if not torch.equal(xa.x, xb.x) or (xa.extra is not None and not torch.equal(
            xa.extra.x, xb.extra.x
        )):  # fmt: skip
            return False
    return True


def full_steps(trainer: Trainer) -> int:
    """The steps of a whole epoch (``Trainer.batches`` without ``max_steps``)."""
    n, bs = len(trainer.train_set), trainer.cfg.batch_size
    return n // bs + (1 if n % bs > 1 else 0)


def _epoch(trainer: Trainer, *, fill: bool) -> Callable[[], int]:
    """One ``train_epoch(0)`` of ``trainer`` with deterministic mode filling new tensors with
    NaN (``fill``: the path before issue 33) or not (:func:`debias.train.loop.deterministic_cpu`,
    today's); the steps taken."""

    def go() -> int:
        deterministic_cpu()
        D.fill_uninitialized_memory = fill
        try:
            return int(trainer.train_epoch(0)["steps"])
        finally:
            D.fill_uninitialized_memory = True  # torch's default

    return go


def run_recipe(
    recipe: str, *, repeats: int, max_steps: int | None, method: str = "contex",
    root: str | None = None, log: Callable[[str], None] | None = None, **data: Any,
) -> dict[str, Any]:  # fmt: skip
    """Time the variants of one recipe, interleaved; seconds scaled to a whole epoch.
    ``data``: ``dataset`` and ``rho`` of :func:`make_trainer` (the tests' digits)."""
    with bench_train.deterministic_cpu():
        made = {
            (ref, cl): make_trainer(
                recipe,
                reference=ref,
                max_steps=max_steps,
                method=method,
                root=root,
                channels_last=cl,
                **data,
            )
            for ref in (True, False)
            for cl in (False, True)
        }
        same = same_inputs(made[True, False], made[False, False])
        variants = {
            f"epoch/{'ref' if ref else 'fast'}{'+nhwc' if cl else ''}": _epoch(t, fill=ref)
            for (ref, cl), t in made.items()
        }
        variants["feed/ref"] = lambda: feed_epoch(made[True, False])
        variants["feed/fast"] = lambda: feed_epoch(made[False, False])
        seconds, results = common.interleave(variants, repeats, log=log)
    if results["feed/ref"] != results["feed/fast"] or len({
        v for k, v in results.items() if k.startswith("epoch/")
    }) != 1:  # fmt: skip
        raise RuntimeError(f"the variants fed different amounts: {results}")
    fast = made[False, False]
    steps, whole = results["epoch/fast"], full_steps(fast)
    s = {k: common.summary([t * whole / steps for t in v]) for k, v in seconds.items()}
    return {
        "recipe": recipe, "views": fast.cfg.views, "method": method, "steps": steps,
        "epoch_steps": whole, "batch_size": fast.cfg.batch_size, "seconds": s,
        "raw_seconds": seconds, "same_inputs": same, "threads": torch.get_num_threads(),
    }  # fmt: skip


def rows(results: Sequence[dict[str, Any]]) -> list[common.Row]:
    """Per recipe: the epoch (NCHW, the default, and channels-last, as the CPU sweeps run) and
    the feed alone, before issue 33 and today; in s per epoch-equivalent."""
    out = []
    for r in results:
        s = r["seconds"]
        part = f"{r['steps']} of {r['epoch_steps']} steps, scaled"
        share = (
            f"feed = {100 * s['feed/ref']['median'] / s['epoch/ref']['median']:.0f}% of the ref "
            f"epoch, {100 * s['feed/fast']['median'] / s['epoch/fast']['median']:.0f}% of the fast"
        )
        for measure, key, notes in (
            ("epoch", "epoch/{}", f"same inputs as ref: {r['same_inputs']}"),
            ("epoch, channels-last", "epoch/{}+nhwc", "as the CPU sweeps run"),
            ("feed alone", "feed/{}", share),
        ):
            ours, ref = s[key.format("fast")], s[key.format("ref")]
            out.append(
                common.Row(
                    f"{r['recipe']} ({r['views']})",
                    f"{measure} ({part})",
                    "s/epoch",
                    ours,
                    "before issue 33",
                    ref,
                    ref["median"] / ours["median"],
                    "ref/fast",
                    notes=notes,
                )  # fmt: skip
            )
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=RECIPES)
    parser.add_argument("--method", default="contex")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-steps", type=int, default=MAX_STEPS, help="0: whole epochs")
    parser.add_argument("--root", default=None)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("-v", "--verbose", action="store_true", help="print every repeat")
    args = parser.parse_args(argv)
    common.set_threads(args.threads)
    env = common.environment()
    print(f"{env['cpu_model']}, torch threads {env['torch_threads']}, load {env['loadavg']}")
    results = [
        run_recipe(
            recipe,
            repeats=args.repeats,
            max_steps=args.max_steps or None,
            method=args.method,
            root=args.root,
            log=print if args.verbose else None,
        )  # fmt: skip
        for recipe in args.recipes
    ]
    table = rows(results)
    print(common.format_table(table))
    for row in table:
        print(f"{row.stage}, {row.measure}: {row.notes}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
