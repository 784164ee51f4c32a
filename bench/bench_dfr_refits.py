"""DFR refits' cost: the representation section's DFR head with 20 refits (the official
``num_retrains``) against 2 (what the CPU sweeps of 2026-12-04 and before averaged).

On Biased-MNIST rho .997 (the CPU protocol's data: 2,000 held-out validation images, LeNet's
128-d features; DEBIAS_DATA must hold MNIST), for a LeNet encoder of a given state: ``random``
(untrained, seeded: features that carry little of the target, the slow case for liblinear, as
the contrastive encoders at chance are) and ``ce`` (one epoch of cross-entropy on the biased
training split, ~30 s on one core: features that carry the target and the colour). Times
:func:`debias.audit.dfr.fit_dfr` alone (tuning + refits; the features are encoded once,
outside the timing), ``--repeats`` times, and prints the median CPU seconds of this process
(``time.process_time``: liblinear runs on one thread, so on shared cores this is the time the
fit takes on an idle one, where wall time would count the other processes) per refit count, the
ratio 20 / 2, the extra seconds and what they are against a CPU-protocol run's median wall time
(:data:`RUN_SECONDS`, the YAML's measured medians).

Usage::

    .venv/bin/python bench/bench_dfr_refits.py               # random and ce encoders
    .venv/bin/python bench/bench_dfr_refits.py --encoders random --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

# Per-run median wall seconds of the CPU protocol (sweeps/biased_mnist_cpu.yaml's header,
# 2026-12-04, 1 thread per run): the CE family and the two-view contrastive methods.
RUN_SECONDS = {"ce family": 33.0, "two-view": 54.0}


def features(encoder: str, seed: int = 0) -> dict[str, np.ndarray]:
    """Validation features, targets, bias and the training rows' features for the scaler."""
    from debias.audit.dfr import scaler_rows
    from debias.data.registry import load_splits
    from debias.models.registry import build_model
    from debias.train.evaluate import encode

    torch.manual_seed(seed)
    splits = load_splits("biased-mnist", rho=0.997, data_seed=0, val_size=2000)
    model = build_model("lenet", 10)
    if encoder == "ce":
        _one_ce_epoch(model, splits["train"])
    model.eval()
    val, train = splits["val"], splits["train"]
    rows = torch.from_numpy(scaler_rows(len(train), seed))
    return {
        "Z": encode(model, val).float().numpy(),
        "y": val.targets.numpy(),
        "b": val.bias.numpy(),
        "scale": encode(model, train, rows=rows).float().numpy(),
    }


def _one_ce_epoch(model: torch.nn.Module, train) -> None:
    """One epoch of Adam (lr 1e-3, batch 256) on the biased training split, seeded."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-4)
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))
    model.train()
    for start in range(0, len(order), 256):
        rows = order[start : start + 256]
        x = train.normalize(train.images[rows])
        loss = torch.nn.functional.cross_entropy(model(x), train.targets[rows])
        opt.zero_grad()
        loss.backward()
        opt.step()


def time_fit(f: dict[str, np.ndarray], refits: int, repeats: int) -> tuple[float, dict]:
    from debias.audit.dfr import fit_dfr

    times, head = [], None
    for _ in range(repeats):
        t0 = time.process_time()
        head = fit_dfr(f["Z"], f["y"], f["b"], f["scale"], seed=0, refits=refits)
        times.append(time.process_time() - t0)
    return statistics.median(times), head.record()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoders", nargs="+", default=["random", "ce"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (sweeps: 1)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    for encoder in args.encoders:
        f = features(encoder)
        two, rec2 = time_fit(f, 2, args.repeats)
        twenty, rec20 = time_fit(f, 20, args.repeats)
        tied = [c for c, v in rec20["tuning_worst_group_accuracy"].items()
                if v == max(rec20["tuning_worst_group_accuracy"].values())]  # fmt: skip
        print(
            f"{encoder:>6} encoder: DFR fit 2 refits {two:.2f} CPU s, 20 refits {twenty:.2f} CPU s, "
            f"ratio 20/2 = {twenty / two:.2f}x; +{twenty - two:.2f} s per run = "
            + ", ".join(
                f"{100 * (twenty - two) / s:.1f}% of a {k} run ({s:.0f} s)"
                for k, s in RUN_SECONDS.items()
            )  # fmt: skip
            + f"; C = {rec20['C']:g} (tied: {' '.join(tied)}), {rec20['val_groups']} groups x "
            f"{rec20['images_per_group']} images per refit"
        )


if __name__ == "__main__":
    main()
