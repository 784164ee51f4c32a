"""Shared timing helpers for the benches, and the driver behind ``bash bench/run``.

Helpers (used by ``bench_feed.py`` and ``bench_train.py``):

* :func:`interleave` runs several variants round-robin (``a, b, c, a, b, c, ...``) so that a drift
  in machine load hits every variant alike, and returns every variant's per-repeat seconds;
* :func:`summary` turns those into ``median`` / ``min`` / ``max``;
* :func:`child_json` runs a worker in a fresh interpreter (peak-memory measurements need one
  process per variant) with the same allocator settings as this one;
* :func:`environment` records what the numbers depend on (cores, threads, versions, allocator
  settings, load average).

Driver: ``python bench/common.py [--quick]`` (what ``bench/run`` calls) runs the seven stages,
prints one table and writes ``bench/results/bench.csv`` (the table), ``bench/results/env.json``
(the environment) and ``bench/results/bench.json`` (every raw result). See ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import csv
import gc
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
RESULTS = BENCH / "results"

# glibc's default trims freed top-of-heap memory and adapts its mmap threshold as it goes, so a
# benchmark that allocates and frees the same large temporaries faults in fresh pages on some
# calls and not on others (up to 2x on the loss timings). Fixed here, the same for ours and the
# references: blocks up to 32 MiB (glibc's largest allowed mmap threshold on 64-bit) come from
# the heap, and up to 1 GiB of freed heap is kept, so a steady-state training loop reuses its
# pages as it does after glibc's own warm-up. The opposite fix (a 64 KiB threshold: every large
# block mmapped and unmapped on free) is just as repeatable but makes every batch-sized
# temporary fault in fresh pages: measured here it made our feeds 3.3-5.5x and the references'
# 1.7-1.9x slower (bench/README.md). bench/run exports these unless they are already set.
MALLOC_DEFAULTS = {"MALLOC_MMAP_THRESHOLD_": "33554432", "MALLOC_TRIM_THRESHOLD_": "1073741824"}
# Peak-memory workers run with the opposite setting, which makes RSS follow tensor lifetimes
# (large blocks mmapped and returned on free): with freed heap kept, a variant's temporaries can
# land in pages that set-up (building the dataset) left resident, and show no RSS increase.
MEMORY_MALLOC = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "131072"}
# OpenMP threads that spin while waiting take the cores other processes need; on a shared
# machine this made batched ops 2.5-8x slower at 2 threads (bench/README.md). bench/run sets
# PASSIVE unless the variable is already set; recorded in env.json.
OMP_DEFAULTS = {"OMP_WAIT_POLICY": "PASSIVE"}

# Targets of the issue (2-core CPU machine): reference/ours speed-ups and the trainer's overhead.
TARGET_PLAIN_FEED = 30.0
TARGET_TWO_VIEW_FEED = 7.0
TARGET_EPOCH_OVER_MODEL = 1.10
TWO_VIEW_FULL_REPEATS = 3


# -- timing ---------------------------------------------------------------------------------------
def summary(values: Sequence[float]) -> dict[str, float]:
    """``{"median", "min", "max", "n"}`` of a non-empty list of measurements."""
    if len(values) == 0:
        raise ValueError("summary() needs at least one measurement; got an empty list")
    return {
        "median": float(statistics.median(values)),
        "min": float(min(values)),
        "max": float(max(values)),
        "n": len(values),
    }


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """``(seconds, fn())`` with a garbage collection before the clock starts."""
    gc.collect()
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def interleave(
    variants: dict[str, Callable[[], Any]],
    repeats: int,
    *,
    warmup: dict[str, Callable[[], Any]] | None = None,
    log: Callable[[str], None] | None = None,
) -> tuple[dict[str, list[float]], dict[str, Any]]:
    """Time every variant ``repeats`` times, round-robin, after one untimed call of each warm-up.

    Returns ``(seconds, last_results)``: per-variant lists of seconds, and each variant's return
    value from its last timed call (callers check these, e.g. that both sides fed the same
    number of images).
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1; got {repeats}")
    if not variants:
        raise ValueError("interleave() needs at least one variant")
    for fn in (warmup or {}).values():
        fn()
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    results: dict[str, Any] = {}
    # Long-lived objects (modules, datasets) go to the permanent generation, so the collection
    # before each timed call only scans what the variants themselves left behind (a full
    # collection with torch loaded takes ~0.1-0.4 s).
    gc.collect()
    gc.freeze()
    try:
        for r in range(repeats):
            for name, fn in variants.items():
                dt, results[name] = timed(fn)
                seconds[name].append(dt)
                if log is not None:
                    log(f"    repeat {r + 1}/{repeats} {name}: {dt:.3f} s")
    finally:
        gc.unfreeze()
    return seconds, results


def set_threads(threads: int | None = None) -> int:
    """Give torch every core this process may use (the same for ours and the references)."""
    import torch

    n = threads or cpu_count()
    torch.set_num_threads(n)
    return n


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


# -- peak memory in a fresh process -----------------------------------------------------------------
# Why not plain ``ru_maxrss``: on Linux a process started by fork/vfork + exec inherits its
# parent's peak RSS into its own ``ru_maxrss`` (the kernel folds the replaced address space's
# high-water mark into it at exec), so a worker started from a big parent reports a "peak"
# that it never reached, and increases measured against it come out as 0. ``VmHWM`` in
# ``/proc/self/status`` belongs to the process's own address space, and writing ``5`` to
# ``/proc/self/clear_refs`` resets it to the current RSS, so a measurement can start after
# set-up (e.g. after building the dataset, whose temporaries peak higher than an epoch does).
def maxrss_mb(who: int = resource.RUSAGE_SELF) -> float:
    """``ru_maxrss`` (Linux reports KiB) in MiB; for ``RUSAGE_CHILDREN``: the largest child."""
    return resource.getrusage(who).ru_maxrss / 1024.0


def _status_mb(key: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        pass
    return None


def rss_mb() -> float:
    """Current resident set size in MiB (``VmRSS``; ``ru_maxrss`` where /proc is missing)."""
    v = _status_mb("VmRSS")
    return maxrss_mb() if v is None else v


def reset_peak_rss() -> bool:
    """Reset this process's peak RSS to its current RSS; False where the kernel does not allow it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return _status_mb("VmHWM") is not None


def peak_rss_mb() -> float:
    """Peak RSS of this process's own address space in MiB (``VmHWM``; else ``ru_maxrss``)."""
    v = _status_mb("VmHWM")
    return maxrss_mb() if v is None else v


def child_json(
    script: Path | str,
    args: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    timeout: float | None = None,
) -> Any:
    """Run ``python script args...`` in a fresh interpreter; parse the JSON on its last line.

    The child gets this process's environment plus :data:`MALLOC_DEFAULTS` and
    :data:`OMP_DEFAULTS` for keys that are not set, then ``env`` on top, and the repository
    root on ``PYTHONPATH``.
    """
    env = {**MALLOC_DEFAULTS, **OMP_DEFAULTS, **os.environ, **(env or {})}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")]))
    proc = subprocess.run(
        [sys.executable, str(script), *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"bench worker {Path(script).name} {' '.join(args)} failed with exit code "
            f"{proc.returncode}:\n{proc.stderr[-3000:]}"
        )
    lines = proc.stdout.strip().splitlines()
    if not lines:
        raise RuntimeError(f"bench worker {Path(script).name} printed nothing on stdout")
    return json.loads(lines[-1])


# -- environment ------------------------------------------------------------------------------------
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def environment() -> dict[str, Any]:
    """What the numbers depend on: cores, threads, versions, allocator settings, load."""
    import numpy
    import PIL
    import torch
    import torchvision

    return {
        "cpu_count": os.cpu_count(),
        "cpus_usable": cpu_count(),
        "cpu_model": _cpu_model(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": numpy.__version__,
        "pillow": PIL.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "cuda_available": torch.cuda.is_available(),
        "malloc_env": {k: os.environ.get(k, "(unset)") for k in MALLOC_DEFAULTS},
        "omp_env": {
            k: os.environ.get(k, "(unset)")
            for k in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "GOMP_SPINCOUNT")
        },
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "time": time.strftime("%Y-%m-%d %H:%M:%S %z"),
    }


# -- the table ----------------------------------------------------------------------------------------
@dataclass
class Row:
    """One line of the table: ours vs a reference, the ratio and the target it is held to.

    ``ratio`` is defined per row by ``ratio_def`` (e.g. ``"ref/ours"``: a speed-up, or
    ``"epoch/model"``); ``target`` is a string like ``">= 30"`` or ``""`` for information only.
    """

    stage: str
    measure: str
    unit: str
    ours: dict[str, float] | None
    reference: str = ""
    ref: dict[str, float] | None = None
    ratio: float = math.nan
    ratio_def: str = ""
    target: str = ""
    notes: str = ""
    status: str = field(default="")

    def __post_init__(self) -> None:
        self.status = self.status or check_target(self.ratio, self.target)


def check_target(ratio: float, target: str) -> str:
    """``"PASS"``/``"FAIL"`` for ``">= x"`` / ``"<= x"`` targets; ``""`` when there is none."""
    if not target:
        return ""
    op, _, value = target.partition(" ")
    bound = float(value)
    if math.isnan(ratio):
        return "FAIL"
    if op == ">=":
        return "PASS" if ratio >= bound else "FAIL"
    if op == "<=":
        return "PASS" if ratio <= bound else "FAIL"
    raise ValueError(f"target must look like '>= 30' or '<= 1.1'; got {target!r}")


def _fmt(v: float) -> str:
    if math.isnan(v):
        return "-"
    a = abs(v)
    if a >= 1000:
        return f"{v:.0f}"
    if a >= 100:
        return f"{v:.1f}"
    if a >= 1:
        return f"{v:.2f}"
    return f"{v:.3g}"


def _cell(s: dict[str, float] | None) -> str:
    if not s:
        return "-"
    if s.get("n", 1) > 1 and not math.isclose(s["min"], s["max"]):
        return f"{_fmt(s['median'])} ({_fmt(s['min'])}-{_fmt(s['max'])})"
    return _fmt(s["median"])


def format_table(rows: Sequence[Row]) -> str:
    """The printed table: repeats, median (min-max) of ours and the reference, ratio, target."""
    head = [
        "stage",
        "measure",
        "unit",
        "n",
        "ours",
        "reference",
        "ref value",
        "ratio",
        "target",
        "",
    ]
    body = []
    for r in rows:
        ratio = "-" if math.isnan(r.ratio) else f"{_fmt(r.ratio)} {r.ratio_def}"
        body.append(
            [
                r.stage,
                r.measure,
                r.unit,
                str((r.ours or {}).get("n", "-")),
                _cell(r.ours),
                r.reference or "-",
                _cell(r.ref),
                ratio,
                r.target or "-",
                r.status,
            ]
        )
    widths = [max(len(str(x[i])) for x in [head, *body]) for i in range(len(head))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(head, widths)).rstrip()]
    lines.append("-" * len(lines[0]))
    last_stage = None
    for r, cells in zip(rows, body):
        if last_stage is not None and r.stage != last_stage:
            lines.append("")
        last_stage = r.stage
        lines.append("  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip())
    return "\n".join(lines)


CSV_FIELDS = [
    "stage",
    "measure",
    "unit",
    "ours_median",
    "ours_min",
    "ours_max",
    "reference",
    "ref_median",
    "ref_min",
    "ref_max",
    "repeats",
    "ratio",
    "ratio_def",
    "target",
    "status",
    "notes",
]


def write_csv(rows: Sequence[Row], path: Path | str) -> Path:
    """One CSV line per table row (medians, min, max, ratio, target, PASS/FAIL, notes)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=CSV_FIELDS)
        w.writeheader()
        for r in rows:
            o, f = r.ours or {}, r.ref or {}
            w.writerow(
                {
                    "stage": r.stage,
                    "measure": r.measure,
                    "unit": r.unit,
                    "ours_median": o.get("median", ""),
                    "ours_min": o.get("min", ""),
                    "ours_max": o.get("max", ""),
                    "reference": r.reference,
                    "ref_median": f.get("median", ""),
                    "ref_min": f.get("min", ""),
                    "ref_max": f.get("max", ""),
                    "repeats": o.get("n", ""),
                    "ratio": "" if math.isnan(r.ratio) else r.ratio,
                    "ratio_def": r.ratio_def,
                    "target": r.target,
                    "status": r.status,
                    "notes": r.notes,
                }
            )
    return path


def point(value: float) -> dict[str, float]:
    """A single measurement in the shape of :func:`summary`."""
    return {"median": float(value), "min": float(value), "max": float(value), "n": 1}


def rate(s: dict[str, float], amount: float) -> dict[str, float]:
    """Seconds summary -> ``amount / seconds`` summary (min and max swap places)."""
    return {
        "median": amount / s["median"],
        "min": amount / s["max"],
        "max": amount / s["min"],
        "n": s.get("n", 1),
    }


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


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--losses-worker"]:
        print(json.dumps(losses_worker(json.loads(argv[1]))))
        return 0
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
    out = Path(args.out)

    def log(msg: str) -> None:
        print(msg, flush=True)

    vlog = log if args.verbose else None
    log(
        f"debias bench: {env['cpus_usable']} usable cores ({env['cpu_model']}), torch "
        f"{env['torch']} with {env['torch_threads']} threads, repeats {repeats}"
        f"{', quick' if args.quick else ''}; load average {env['loadavg']}"
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
    env["memory_malloc_env"] = dict(MEMORY_MALLOC)

    rows: list[Row] = []
    raw: dict[str, Any] = {}
    t_all = time.perf_counter()
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
    rows = sorted(rows + mem_rows, key=lambda r: r.stage.split()[0])
    env["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    env["total_seconds"] = round(time.perf_counter() - t_all, 1)

    table = format_table(rows)
    print()
    print(table)
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
