"""Shared timing helpers for the benches (``bench_feed.py``, ``bench_train.py`` and the driver).

* :func:`interleave` runs several variants round-robin (``a, b, c, a, b, c, ...``) so that a drift
  in machine load hits every variant alike, and returns every variant's per-repeat seconds;
* :func:`summary` turns those into ``median`` / ``min`` / ``max``;
* :func:`child_json` runs a worker in a fresh interpreter (peak-memory measurements need one
  process per variant) with the same allocator settings as this one;
* :func:`environment` records what the numbers depend on (cores, threads, versions, allocator
  settings, load average);
* :class:`Row`, :func:`format_table` and :func:`write_csv`: the table every stage reports into.

This module imports no bench; the driver behind ``bash bench/run`` is ``bench/driver.py``.
"""

from __future__ import annotations

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
from dataclasses import dataclass, field
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

    from debias.sweep.runner import available_cores

    n = threads or available_cores()
    torch.set_num_threads(n)
    return n


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

    from debias.sweep.runner import available_cores

    return {
        "cpu_count": os.cpu_count(),
        "cpus_usable": available_cores(),
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
