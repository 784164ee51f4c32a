"""Sweep-level benchmark (issue 22): runs of the Biased-MNIST CPU protocol, the old way and the
new way, interleaved, with where each run's time goes.

Both sides run the real protocol: every run's options are those of
``sweeps/biased_mnist_cpu.yaml`` (read with :func:`debias.sweep.config.load_sweep`, so the
benchmark cannot drift from the grid), at one rho, for a few methods and seeds.

* ``old``: how the grid ran before issue 22: a fresh Python process per run
  (:func:`debias.sweep.runner.execute_run`, what ``debias sweep --process-per-run`` does), NCHW
  activations (``channels_last: false``) and the test splits evaluated after every epoch
  (``eval_every: 1``);
* ``new``: how it runs now: one persistent worker (:class:`debias.sweep.worker.Worker`) takes
  all the new runs in turn (imports, torch's start-up and the coloured dataset paid once),
  ``channels_last: true`` and ``eval_every: 0`` (the YAML's settings).

Both paths have the LeNet pool-before-ReLU order (bit-identical outputs, landed earlier), so the
ratio understates the gain over the code of 2026-11-30 by that ~1.15x step speed-up.

Order: for each (method, seed), the old run and the new run start together, one thread each,
one per core (as ``--jobs 2`` runs them), so load drifts hit both alike; ``--serial`` runs them
one after the other instead. Per run it prints the wall time seen from outside (start to the
run's return code) and splits it into training (the epochs minus the evaluation inside them),
evaluation (every forward pass over val/test splits, :attr:`metrics.json` ``eval_seconds``), the
representation section (DFR and audit) and the rest (process start, imports, data loading and
colouring, checkpoints). Ratios are old/new of the per-method median.

Run: ``.venv/bin/python bench/bench_sweep.py [--methods ce supcon] [--seeds 0 1] [--rho 0.997]``
(~7 min on 2 idle cores). ``--quick`` (1 epoch, 2,000 training and 1,000 evaluation images)
checks that it works. Results: ``bench/results/sweep/bench_sweep.json`` and the run folders.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import statistics
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

from debias.sweep.config import load_sweep  # noqa: E402
from debias.sweep.runner import _child_env, execute_run  # noqa: E402
from debias.sweep.worker import Worker  # noqa: E402
from debias.train.runfolder import METRICS, RUN_CONFIG  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
GRID = REPO / "sweeps" / "biased_mnist_cpu.yaml"
# What each path changes in the grid's options.
PATHS = {
    "old": {"channels_last": False, "eval_every": 1},
    "new": {"channels_last": True, "eval_every": 0},
}
QUICK = {"epochs": 1, "linear_epochs": 1, "train_limit": 2000, "eval_limit": 1000}
PARTS = ("training", "evaluation", "representation", "rest")


def run_configs(
    methods: Sequence[str], seeds: Sequence[int], rho: float, quick: bool
) -> list[dict[str, Any]]:
    """The grid's options of every (method, seed) at ``rho``, in benchmark order."""
    spec = load_sweep(GRID)
    by_key = {(r.params["method"], r.params["seed"], r.params["rho"]): r for r in spec.expand()}
    out = []
    for method in methods:
        for seed in seeds:
            key = (method, seed, rho)
            if key not in by_key:
                raise SystemExit(f"bench_sweep: {key} is not a run of {GRID.name}")
            cfg = dict(by_key[key].config)
            if quick:
                cfg.update(QUICK)
                cfg["epochs"] = min(cfg["epochs"], QUICK["epochs"])
            out.append(cfg)
    return out


def write_run(cfg: dict[str, Any], path: str, out: Path) -> Path:
    """A fresh run folder for ``cfg`` under one path's settings."""
    from debias.train.config import TrainConfig

    run = out / path / f"{cfg['method']}_seed{cfg['seed']}"
    if run.exists():
        shutil.rmtree(run)
    run.mkdir(parents=True)
    full = TrainConfig.from_dict({**cfg, **PATHS[path], "out": str(run.resolve())}).to_dict()
    (run / RUN_CONFIG).write_text(json.dumps(full, indent=2))
    return run


def profile(run: Path, wall: float) -> dict[str, float]:
    """``wall`` split into :data:`PARTS` from the run's metrics.json and history.csv."""
    metrics = json.loads((run / METRICS).read_text())
    with open(run / "history.csv") as fh:
        rows = list(csv.DictReader(fh))
    in_epochs = sum(float(r["eval_seconds"] or 0) for r in rows)
    training = float(metrics["wall_time_seconds"]) - in_epochs
    evaluation = float(metrics["eval_seconds"])
    representation = float(metrics.get("representation", {}).get("seconds", 0.0))
    rest = wall - training - evaluation - representation
    return dict(zip(PARTS, (training, evaluation, representation, rest), strict=True))


class NewPath:
    """The persistent worker that takes every new-path run of the benchmark, in turn."""

    def __init__(self) -> None:
        self.worker = Worker(_child_env(1), str(REPO))

    def run(self, run: Path) -> tuple[int, float]:
        t0 = time.perf_counter()
        self.worker.submit(run.resolve())
        rc = self.worker.poll(timeout=None)
        return rc if rc is not None else 1, time.perf_counter() - t0

    def close(self) -> None:
        self.worker.close()


def old_path(run: Path) -> tuple[int, float]:
    """A fresh process for one run, as ``--process-per-run`` starts it."""
    t0 = time.perf_counter()
    result = execute_run(str(run.resolve()), 1, {}, str(REPO))
    return result["returncode"], time.perf_counter() - t0


def run_pair(old: Path, new: Path, worker: NewPath, serial: bool) -> dict[str, tuple[int, float]]:
    """The old and the new run of one (method, seed): together (one per core) or in turn."""
    done: dict[str, tuple[int, float]] = {}
    if serial:
        done["old"], done["new"] = old_path(old), worker.run(new)
        return done
    side = threading.Thread(target=lambda: done.__setitem__("old", old_path(old)))
    side.start()
    done["new"] = worker.run(new)
    side.join()
    return done


def measure(configs: list[dict[str, Any]], out: Path, serial: bool) -> list[dict[str, Any]]:
    """Every run of ``configs`` on both paths; one record per run."""
    records = []
    worker = NewPath()
    try:
        for i, cfg in enumerate(configs):
            runs = {path: write_run(cfg, path, out) for path in PATHS}
            done = run_pair(runs["old"], runs["new"], worker, serial)
            for path, (rc, wall) in done.items():
                if rc != 0:
                    raise SystemExit(f"bench_sweep: {runs[path]} failed (rc {rc}); see its log.txt")
                rec = {"path": path, "method": cfg["method"], "seed": cfg["seed"], "order": i}
                rec |= {"wall": wall, **profile(runs[path], wall)}
                records.append(rec)
                print(format_record(rec), flush=True)
    finally:
        worker.close()
    return records


def format_record(rec: dict[str, Any]) -> str:
    parts = " | ".join(f"{p} {rec[p]:6.1f}" for p in PARTS)
    return (
        f"  {rec['path']:<3} {rec['method']:<8} seed {rec['seed']}: {rec['wall']:6.1f} s = {parts}"
    )


def table(records: list[dict[str, Any]]) -> str:
    """Per method: medians of both paths, their ratio, and the new path's split."""
    lines = [
        f"{'method':<8} {'old s':>7} {'new s':>7} {'old/new':>8}   new path: "
        + " ".join(f"{p:>14}" for p in PARTS)
    ]
    for method in dict.fromkeys(r["method"] for r in records):
        med = {
            path: {
                k: statistics.median(
                    r[k] for r in records if r["method"] == method and r["path"] == path
                )
                for k in ("wall", *PARTS)
            }
            for path in PATHS
        }
        new = med["new"]
        split = " ".join(f"{new[p]:6.1f} ({new[p] / new['wall']:4.0%})" for p in PARTS)
        ratio = med["old"]["wall"] / new["wall"]
        lines.append(
            f"{method:<8} {med['old']['wall']:7.1f} {new['wall']:7.1f} {ratio:8.2f}   {split:>10}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--methods", nargs="+", default=["ce", "supcon"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    ap.add_argument("--rho", type=float, default=0.997)
    ap.add_argument("--serial", action="store_true", help="old and new run in turn, not together")
    ap.add_argument("--quick", action="store_true", help="1 epoch on 2,000 images: a smoke test")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "sweep")
    args = ap.parse_args(argv)
    configs = run_configs(args.methods, args.seeds, args.rho, args.quick)
    print(
        f"bench_sweep: {len(configs)} run(s) per path from {GRID.name}, rho {args.rho}", flush=True
    )
    records = measure(configs, args.out, args.serial)
    print(table(records))
    print(
        "(the new path's first run includes the worker's start-up: imports, torch's first "
        "deterministic call, loading and colouring the data)"
    )
    env = common.environment()
    result = {"args": {k: str(v) for k, v in vars(args).items()}, "env": env, "runs": records}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_sweep.json").write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
