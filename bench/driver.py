"""The driver behind ``bash bench/run``: runs the stages, prints one table, writes the results.

``python bench/driver.py [--quick]`` runs the seven stages (each in its own ``bench_*.py``),
prints one table and writes ``bench/results/bench.csv`` (the table), ``bench/results/env.json``
(the environment) and ``bench/results/bench.json`` (every raw result). See ``bench/README.md``.
The stage modules are imported inside the stage functions: the losses stage starts this script
again as a small parent process (``--losses-worker``) that must not load torch.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402  (bench/ is not a package)
    MALLOC_DEFAULTS,
    MEMORY_MALLOC,
    OMP_DEFAULTS,
    RESULTS,
    Row,
    child_json,
    environment,
    format_table,
    point,
    set_threads,
    write_csv,
)

# A reference two-view epoch costs 25-95 s on 2 cores: full epochs get at most this many repeats.
TWO_VIEW_FULL_REPEATS = 3


# -- stages -----------------------------------------------------------------------------------------
def _ratio(ref: dict[str, float], ours: dict[str, float]) -> float:
    return ref["median"] / ours["median"] if ours["median"] > 0 else math.nan


def stage_generation(root: str | None, repeats: int, log) -> tuple[list[Row], dict]:
    import bench_generation

    res = bench_generation.run(root=root, repeats=repeats)
    ours, ref = res["colour_bias_s"], res["reference_s"]
    ours["n"] = ref["n"] = res["repeats"]
    checks = (
        f"identical colours: {res['identical_colours']}, identical images "
        f"({res['subset_size']} rows): {res['identical_images_subset']}"
    )
    rows = [
        Row(
            "1 generation",
            f"Biased-MNIST train {res['n_images']} imgs, rho {res['rho']}",
            "s",
            ours,
            "per-sample PIL",
            ref,
            _ratio(ref, ours),
            "ref/ours",
            notes=checks,
            status="" if res["identical_colours"] and res["identical_images_subset"] else "FAIL",
        )
    ]
    return rows, res


def stage_feed(
    root: str | None, repeats: int, quick: bool, log
) -> tuple[list[Row], list[Row], dict]:
    import bench_feed

    max_batches = bench_feed.QUICK_BATCHES if quick else None
    ds = bench_feed.load_train(root)
    plain = bench_feed.run_plain(ds, repeats=repeats, max_batches=max_batches, log=log)
    # A reference two-view epoch costs 25-95 s on 2 cores (the issue: 41 s / 25 s idle), five
    # variants per repeat: full epochs get at most TWO_VIEW_FULL_REPEATS repeats.
    two_repeats = repeats if quick else min(repeats, TWO_VIEW_FULL_REPEATS)
    two = bench_feed.run_two_view(ds, repeats=two_repeats, max_batches=max_batches, log=log)
    del ds
    gc.collect()
    mem = bench_feed.run_memory(root=root, max_batches=bench_feed.MEMORY_BATCHES, log=log)
    return (
        bench_feed.rows_time(plain, two),
        bench_feed.rows_memory(mem),
        {
            "plain": plain,
            "two_view": two,
            "memory": mem,
        },
    )


def losses_worker(params: dict[str, Any]) -> list[dict[str, Any]]:
    """``bench_losses.run(**params)``, called in a small fresh process by :func:`stage_losses`."""
    import bench_losses

    # bench_losses starts every worker with its own hard-coded MALLOC_ENV (64 KiB thresholds).
    # Its timing workers get the settings bench/run exported instead, so every timing in the
    # table runs under the same allocator; its memory workers keep the lifetime-tracking
    # setting they were written for (= MEMORY_MALLOC).
    timing_env = {k: os.environ[k] for k in bench_losses.MALLOC_ENV if k in os.environ}
    memory_env = dict(bench_losses.MALLOC_ENV)
    start_worker = bench_losses._child

    def child(args: list[str]) -> dict[str, Any]:
        bench_losses.MALLOC_ENV = {**memory_env, **(timing_env if args[0] == "time" else {})}
        return start_worker(args)

    bench_losses._child = child
    params = dict(params)
    params["batch_sizes"] = tuple(params.get("batch_sizes", (256, 1024)))
    res = bench_losses.run(**params)
    for row in res:  # bench_losses records its constant; say what each measurement ran under
        row["malloc_env"] = {"time": timing_env or memory_env, "memory": memory_env}
    return res


def stage_losses(
    repeats: int,
    log,
    *,
    batch_sizes: Sequence[int] = (256, 1024),
    memory: bool = True,
) -> tuple[list[Row], list[dict]]:
    import bench_losses

    # bench_losses measures peak memory as the increase of its workers' ru_maxrss, which a
    # worker inherits from the process that starts it (see maxrss_mb): started from this
    # process, grown by the earlier stages, every increase reads 0. A fresh, small parent
    # (it never imports torch) keeps the measurement meaningful.
    params = {"batch_sizes": list(batch_sizes), "repeats": max(repeats, 3), "memory": memory}
    res = child_json(Path(__file__).resolve(), ["--losses-worker", json.dumps(params)])
    rows: list[Row] = []
    by = {(r["variant"], r["B"]): r for r in res}
    for b in batch_sizes:
        ref = by[("ref_supcon", b)]
        ref_t = {
            "median": ref["time_ms_median"],
            "min": ref["time_ms_min"],
            "max": ref["time_ms_max"],
            "n": ref["repeats"],
        }
        for name in bench_losses.OURS:
            r = by[(name, b)]
            ours_t = {
                "median": r["time_ms_median"],
                "min": r["time_ms_min"],
                "max": r["time_ms_max"],
                "n": r["repeats"],
            }
            notes = ""
            if name == "contex":
                rc = by[("ref_contex", b)]
                notes = (
                    f"vs ref_contex ({rc['time_ms_median']:.2f} ms, peak {rc.get('peak_mb', 0):.1f} "
                    f"MB): time x{r['time_ratio_vs_ref_contex']:.2f}"
                )
            rows.append(
                Row(
                    "4 losses",
                    f"{name} fwd+bwd B={b} V=2 D=128",
                    "ms",
                    ours_t,
                    "SupContrast-style SupCon",
                    ref_t,
                    _ratio(ref_t, ours_t),
                    "ref/ours",
                    notes=notes,
                )
            )
            if "peak_mb" in r:
                rows.append(
                    Row(
                        "4 losses",
                        f"{name} peak RSS B={b}",
                        "MB",
                        point(r["peak_mb"]),
                        "SupContrast-style SupCon",
                        point(ref["peak_mb"]),
                        ref["peak_mb"] / r["peak_mb"] if r["peak_mb"] > 0 else math.nan,
                        "ref/ours",
                        notes=f"autograd-saved {r['saved_mb']:.1f} MB vs {ref['saved_mb']:.1f} MB",
                    )
                )
    return rows, res


def stage_train(root: str | None, repeats: int, quick: bool, log) -> tuple[list[Row], dict]:
    import bench_train

    small = bench_train.run(
        "smallconvnet",
        root=root,
        repeats=repeats,
        max_steps=bench_train.QUICK_STEPS if quick else None,
        log=log,
    )
    simple = bench_train.run(
        "simpleconvnet",
        root=root,
        repeats=repeats,
        max_steps=bench_train.SIMPLE_STEPS_QUICK if quick else bench_train.SIMPLE_STEPS,
        log=log,
    )
    return bench_train.rows(small, simple), {"smallconvnet": small, "simpleconvnet": simple}


def stage_audit(log) -> tuple[list[Row], dict]:
    import bench_audit

    res = bench_audit.run(100_000, 512)
    stages = ", ".join(f"{k} {v:.1f}s" for k, v in res["stage_seconds"].items())
    rows = [
        Row(
            "7 audit",
            f"audit_embeddings {res['n']}x{res['d']}",
            "s",
            point(res["audit_seconds"]),
            notes=stages,
        )
    ]
    return rows, res


STAGES = ("generation", "feed", "losses", "train", "audit")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bench/run", description="debias speed benchmarks: ours vs the original-code style"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="2 repeats, part-epochs (first batches only), no audit stage",
    )
    parser.add_argument("--repeats", type=int, default=None, help="default 5, --quick 2")
    parser.add_argument(
        "--stages",
        nargs="+",
        choices=STAGES,
        default=None,
        help=f"run only these stages (default: all; 'audit' only without --quick): {STAGES}",
    )
    parser.add_argument("--root", default=None, help="data root (default $DEBIAS_DATA)")
    parser.add_argument("--out", default=str(RESULTS), help="results folder (bench/results)")
    parser.add_argument("-v", "--verbose", action="store_true", help="print every timed repeat")
    parser.add_argument(
        "--strict", action="store_true", help="exit with status 1 when a target is missed"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads for both sides (default: every usable core)",
    )
    return parser


def _log_settings(env: dict[str, Any], repeats: int, quick: bool, log) -> None:
    """Say up front what the numbers will depend on: cores, threads, allocator, OpenMP."""
    log(
        f"debias bench: {env['cpus_usable']} usable cores ({env['cpu_model']}), torch "
        f"{env['torch']} with {env['torch_threads']} threads, repeats {repeats}"
        f"{', quick' if quick else ''}; load average {env['loadavg']}"
    )
    log(
        "allocator/OpenMP env (every stage, ours and references alike): "
        + " ".join(f"{k}={v}" for k, v in {**env["malloc_env"], **env["omp_env"]}.items())
    )
    if any(os.environ.get(k) != v for k, v in {**MALLOC_DEFAULTS, **OMP_DEFAULTS}.items()):
        log(f"  note: differs from bench/run's defaults {MALLOC_DEFAULTS} {OMP_DEFAULTS}")
    log(
        "peak-memory workers (stages 4 and 6): "
        + " ".join(f"{k}={v}" for k, v in MEMORY_MALLOC.items())
        + " (RSS follows tensor lifetimes)"
    )


def _run_stages(
    stages: Sequence[str], args: argparse.Namespace, repeats: int, log, vlog
) -> tuple[list[Row], dict[str, Any]]:
    """Every stage's table rows (in table order) and raw results."""
    rows: list[Row] = []
    raw: dict[str, Any] = {}
    mem_rows: list[Row] = []
    for stage in stages:
        t0 = time.perf_counter()
        log(f"[{time.strftime('%H:%M:%S')}] stage {stage} ...")
        if stage == "generation":
            new, raw[stage] = stage_generation(args.root, repeats, vlog)
        elif stage == "feed":
            new, mem_rows, raw[stage] = stage_feed(args.root, repeats, args.quick, vlog)
        elif stage == "losses":
            new, raw[stage] = stage_losses(repeats, vlog)
        elif stage == "train":
            new, raw[stage] = stage_train(args.root, repeats, args.quick, vlog)
        else:
            new, raw[stage] = stage_audit(vlog)
        rows += new
        log(f"  done in {time.perf_counter() - t0:.1f} s")
    # Memory (stage 6) is measured alongside the feed stage but listed after training.
    return sorted(rows + mem_rows, key=lambda r: r.stage.split()[0]), raw


def _report(rows: list[Row], env: dict[str, Any], raw: dict[str, Any], out: Path) -> None:
    """Print the table and write ``bench.csv``, ``env.json`` and ``bench.json`` into ``out``."""
    print()
    print(format_table(rows))
    print()
    print(
        f"load average at start {env['loadavg']}, at end {env['loadavg_end']}; total "
        f"{env['total_seconds']} s; {env['cpus_usable']} cores, torch threads "
        f"{env['torch_threads']}"
    )
    csv_path = write_csv(rows, out / "bench.csv")
    (out / "env.json").write_text(json.dumps(env, indent=2) + "\n")
    raw_doc = {"env": env, "rows": [asdict(r) for r in rows], "raw": raw}
    (out / "bench.json").write_text(json.dumps(raw_doc, indent=1, default=str) + "\n")
    print(f"wrote {csv_path}, {out / 'env.json'}, {out / 'bench.json'}")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--losses-worker"]:
        print(json.dumps(losses_worker(json.loads(argv[1]))))
        return 0
    parser = _parser()
    args = parser.parse_args(argv)
    repeats = args.repeats or (2 if args.quick else 5)
    if repeats < 1:
        parser.error(f"--repeats must be >= 1; got {repeats}")
    stages = args.stages or [s for s in STAGES if not (args.quick and s == "audit")]
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads must be >= 1; got {args.threads}")

    set_threads(args.threads)
    env = environment()
    env["argv"] = ["bench/run", *argv]
    env["repeats"] = repeats
    env["quick"] = args.quick
    env["data_root"] = args.root or os.environ.get("DEBIAS_DATA", "(unset: ./data)")

    def log(msg: str) -> None:
        print(msg, flush=True)

    _log_settings(env, repeats, args.quick, log)
    env["memory_malloc_env"] = dict(MEMORY_MALLOC)
    t_all = time.perf_counter()
    rows, raw = _run_stages(stages, args, repeats, log, log if args.verbose else None)
    env["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    env["total_seconds"] = round(time.perf_counter() - t_all, 1)
    _report(rows, env, raw, Path(args.out))
    failed = [r for r in rows if r.status == "FAIL"]
    if failed:
        print("FAILED: " + "; ".join(f"{r.stage}: {r.measure} vs {r.reference}" for r in failed))
    return 1 if failed and args.strict else 0


if __name__ == "__main__":
    missing = {k: v for k, v in {**MALLOC_DEFAULTS, **OMP_DEFAULTS}.items() if k not in os.environ}
    if missing:
        # glibc and OpenMP read these once at start-up: re-execute with them (bench/run sets them).
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **missing})
    raise SystemExit(main())
