"""Run every run of a sweep: locally in N processes or as Ray tasks; skip, resume, record.

Files under the sweep's out folder:

* ``sweep.json``: the sweep spec and every expanded run (name, grid values, options), written
  before anything runs; :func:`debias.results.load` reads it.
* ``sweep_status.csv`` / ``sweep_status.json``: one row per run (``run, status, returncode,
  seconds, started, finished, resumed, error, log``), rewritten as each run ends. Status is
  ``done`` (ran now), ``skipped`` (``metrics.json`` was already there), ``failed``,
  ``interrupted`` or ``pending`` (not reached / dry run).
* per run ``<run>/``: ``run_config.json`` (the options it runs with), ``log.txt`` (its stdout
  and stderr, appended per attempt), ``error.txt`` (the traceback, only if it failed) and what
  :func:`debias.train.train` writes (``checkpoint.pt``, ``history.csv``, ``metrics.json``, ...).

Local backend: ``jobs`` persistent worker processes (:mod:`debias.sweep.worker`), each running
runs in turn, so the fixed cost of a process (imports, loading and colouring the data) is paid
once per worker, not once per run; ``process_per_run=True`` (``--process-per-run``) starts a
fresh child process (``python -c ... _worker(<run dir>)``) for every run instead, as before.
Either way a crash, an out-of-memory kill or a C-level error in one run never takes the others
down (a dead worker fails only the run it held and is replaced), and a run's output (C-level
included) lands in its own log. A finished run is skipped without starting anything
(its recorded options must match, else it fails with the difference); an interrupted one is
resumed from its checkpoint by ``train``. Each worker or child gets ``cores // jobs`` threads
(``OMP_NUM_THREADS`` and ``torch.set_num_threads``) so parallel runs do not oversubscribe the
CPU; with CUDA present every run uses it (``device: auto``) and they share the GPU.

Ray (``backend="ray"``): each run is a Ray task asking for ``cluster CPUs // jobs`` CPUs (and
``GPUs / jobs`` of a GPU when the cluster has GPUs) that starts the same child process. With
``ray_address`` the sweep folder, the data root and this Python environment must be reachable
under the same paths on every node (a shared filesystem); relative ``DEBIAS_DATA`` /
``DEBIAS_CACHE`` are made absolute before they are passed on.
"""

from __future__ import annotations

import csv
import json
import os
import select
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from debias._atomic import atomic_write
from debias.results import error_line
from debias.sweep.config import RunSpec, SweepSpec
from debias.sweep.worker import (
    INTERRUPTED,
    PARENT_ENV,
    Worker,
    die_with_parent,
    run_in_process,
    watch_parent_from_env,
)
from debias.sweep.worker import now as _now
from debias.train import runfolder
from debias.train.config import TrainConfig
from debias.train.runfolder import CHECKPOINT, ERROR, LOG, METRICS, RUN_CONFIG, RunFolderError

__all__ = ["BACKENDS", "SweepResult", "die_with_parent", "run_sweep", "threads_per_job"]

BACKENDS = ("local", "ray")
MANIFEST = runfolder.SWEEP_MANIFEST
STATUS_CSV, STATUS_JSON = runfolder.SWEEP_STATUS
STATUS_FIELDS = (
    "run",
    "status",
    "returncode",
    "seconds",
    "started",
    "finished",
    "resumed",
    "error",
    "log",
)
# Kept from an earlier pass for a run this pass skips: when and how long it ran.
_TIMING_FIELDS = ("returncode", "seconds", "started", "finished", "resumed", "log")
# Environment variables that point at folders: children may start elsewhere (Ray workers do),
# so relative values are made absolute before they are passed on.
_PATH_ENV = ("DEBIAS_DATA", "DEBIAS_CACHE")
_THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "DEBIAS_NUM_THREADS")


@dataclass
class SweepResult:
    """What :func:`run_sweep` did: one status dict per run (see ``sweep_status.csv``)."""

    out: Path
    runs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def failed(self) -> list[str]:
        return [r["run"] for r in self.runs if r["status"] in ("failed", "interrupted")]

    @property
    def ok(self) -> bool:
        return not self.failed

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.runs:
            out[r["status"]] = out.get(r["status"], 0) + 1
        return out


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def threads_per_job(jobs: int, cores: int | None = None) -> int:
    """``cores // jobs`` (at least 1): the CPU threads each of ``jobs`` parallel runs gets."""
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    return max(1, (cores or available_cores()) // jobs)


# -- the child process -------------------------------------------------------------------------
def _worker(run_dir: str) -> int:
    """A child process of its own for one run (``process_per_run``); see :func:`run_in_process`."""
    try:
        watch_parent_from_env()
    except KeyboardInterrupt:  # the parent died (or Ctrl-C) before the run started
        return INTERRUPTED
    return run_in_process(run_dir)


def _child_env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    for key in _THREAD_ENV:
        env[key] = str(threads)
    for key in _PATH_ENV:
        if env.get(key):
            env[key] = os.path.abspath(env[key])
    # The child must import this very debias, wherever it is started.
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    env[PARENT_ENV] = str(os.getpid())
    return env


# Not ``-m debias.sweep.runner``: the package imports this module first, which runpy warns about.
_CHILD = "import sys; from debias.sweep.runner import _worker; sys.exit(_worker(sys.argv[1]))"


def _open_log(run_dir: Path):
    """The run's ``log.txt``, opened for appending, with this attempt's header written."""
    log = open(run_dir / LOG, "a")  # noqa: SIM115 - closed by the caller
    log.write(f"\n===== attempt {_now()} =====\n")
    log.flush()
    return log


def _launch(run_dir: Path, env: Mapping[str, str], cwd: str) -> tuple[subprocess.Popen, Any]:
    log = _open_log(run_dir)
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(run_dir)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=dict(env),
        cwd=cwd,
    )
    return proc, log


def execute_run(run_dir: str, threads: int, env_extra: Mapping[str, str], cwd: str) -> dict:
    """Run one prepared run folder in a child process and wait (what a Ray task executes)."""
    env = _child_env(threads) | dict(env_extra)
    t0 = time.time()
    proc, log = _launch(Path(run_dir), env, cwd)
    try:
        rc = proc.wait()
    finally:
        log.close()
    return {"returncode": rc, "seconds": time.time() - t0}


# -- the parent ---------------------------------------------------------------------------------
class _Sweep:
    def __init__(self, spec: SweepSpec, runs: list[RunSpec], out: Path, log: Callable) -> None:
        self.spec, self.runs, self.out, self.log = spec, runs, out, log
        self.status: dict[str, dict[str, Any]] = {
            r.name: {
                "run": r.name,
                "status": "pending",
                "returncode": "",
                "seconds": "",
                "started": "",
                "finished": "",
                "resumed": "",
                "error": "",
                "log": f"{r.name}/{LOG}",
            }
            for r in runs
        }
        # Rows of an earlier pass: kept for runs this pass does not touch (merge, not overwrite).
        self.previous = _read_status(out)

    def dir(self, run: RunSpec) -> Path:
        return self.out / run.name

    def write_manifest(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        manifest = {
            "name": self.spec.name,
            "description": self.spec.description,
            "source": self.spec.source,
            "spec": self.spec.to_dict(),
            "written": _now(),
            "runs": [_manifest_entry(r) for r in self.runs],
        }
        # A narrowed pass (--set on a grid key, --only) keeps the runs an earlier pass listed.
        mine = {r.name for r in self.runs}
        try:
            before = json.loads((self.out / MANIFEST).read_text()).get("runs", [])
        except (OSError, ValueError, AttributeError):
            before = []
        manifest["runs"] += [r for r in before if isinstance(r, dict) and r.get("run") not in mine]
        _atomic_write(self.out / MANIFEST, json.dumps(manifest, indent=2, default=str))

    def write_status(self) -> None:
        rows = [self.status[r.name] for r in self.runs]
        rows += [row for name, row in self.previous.items() if name not in self.status]
        tmp = self.out / (STATUS_CSV + ".tmp")
        with open(tmp, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=STATUS_FIELDS)
            w.writeheader()
            w.writerows(rows)
        tmp.replace(self.out / STATUS_CSV)
        counts: dict[str, int] = {}
        for r in rows:
            counts[r["status"]] = counts.get(r["status"], 0) + 1
        _atomic_write(
            self.out / STATUS_JSON,
            json.dumps(
                {"name": self.spec.name, "updated": _now(), "counts": counts, "runs": rows},
                indent=2,
            ),
        )

    def config(self, run: RunSpec) -> TrainConfig:
        cfg = run.train_config(self.out.resolve())
        if cfg.root is not None:
            cfg.root = os.path.abspath(cfg.root)
        return cfg

    def inspect(self, run: RunSpec) -> tuple[str, str]:
        """What this run would do now, without writing: ``("skip" | "resume" | "run", "")``, or
        ``("fail", why)`` for a folder it cannot use (the same checks as ``train``)."""
        d = self.dir(run)
        try:
            runfolder.check_out_path(d, "run folder")
            foreign = runfolder.foreign_files(d, runfolder.OUTPUTS + runfolder.SWEEP_RUN_FILES)
            if foreign:
                return "fail", (
                    f"{d} holds {', '.join(foreign)} that debias did not write; they are never "
                    "overwritten: use another sweep out folder or move them away"
                )
            holder = runfolder.lock_holder(d)
            if holder is not None:
                return "fail", (
                    f"{d} is in use by process {holder['pid']} on {holder['host']} (another sweep "
                    f"or train); wait for it, or delete {d / runfolder.LOCK} if it is gone"
                )
            if (d / METRICS).exists():
                done = runfolder.read_metrics(d / METRICS)
                diff = runfolder.config_diff(done["config"], self.config(run))
                if diff:
                    return "fail", (
                        f"{d} holds a finished run with different options "
                        + ", ".join(f"{k}: {a!r} there vs {b!r} now" for k, (a, b) in diff.items())
                        + "; use another sweep out folder or delete that run"
                    )
                return "skip", ""
        except RunFolderError as exc:
            return "fail", str(exc)
        return ("resume" if (d / CHECKPOINT).exists() else "run"), ""

    def prepare(self, run: RunSpec) -> str | None:
        """Write run_config.json; return None to run it, or a final status (skip / conflict)."""
        d = self.dir(run)
        what, why = self.inspect(run)
        if what == "fail":
            return self._fail(run, why)
        row = self.status[run.name]
        if what == "skip":
            row["status"] = "skipped"
            before = self.previous.get(run.name, {})
            if before.get("status") in ("done", "skipped") and before.get("seconds") != "":
                # An earlier pass ran it: keep when and how long.
                row |= {k: before[k] for k in _TIMING_FIELDS if k in before}
            else:
                # The run's own recorded training time.
                wall = runfolder.read_metrics(d / METRICS).get("wall_time_seconds")
                if isinstance(wall, (int, float)):
                    row["seconds"] = round(wall, 1)
            return "skipped"
        runfolder.claim_folder(
            d, names=runfolder.OUTPUTS + runfolder.SWEEP_RUN_FILES, what="run folder"
        )
        row["resumed"] = what == "resume"
        (d / ERROR).unlink(missing_ok=True)
        _atomic_write(d / RUN_CONFIG, json.dumps(self.config(run).to_dict(), indent=2))
        return None

    def _fail(self, run: RunSpec, message: str) -> str:
        d = self.dir(run)
        if d.is_dir() and (runfolder.is_debias_folder(d) or not (d / ERROR).exists()):
            _atomic_write(d / ERROR, message + "\n")
        self.status[run.name] |= {"status": "failed", "error": error_line(message)}
        return "failed"

    def started(self, run: RunSpec) -> None:
        self.status[run.name]["started"] = _now()
        self.status[run.name]["status"] = "running"

    def finished(self, run: RunSpec, returncode: int, seconds: float) -> None:
        d = self.dir(run)
        row = self.status[run.name]
        row |= {"returncode": returncode, "seconds": round(seconds, 1), "finished": _now()}
        if returncode == 0 and (d / METRICS).exists():
            row["status"] = "done"
        else:
            err = d / ERROR
            if not err.exists():  # killed before the child could write it
                tail = _tail(d / LOG)
                err.write_text(
                    f"run exited with code {returncode} without a traceback; "
                    f"last lines of {LOG}:\n{tail}\n"
                )
            row["status"] = "interrupted" if returncode in (130, -2) else "failed"
            row["error"] = error_line(err.read_text())
        self.log(
            f"[{self.progress()}] {row['status']:>7} {run.name} ({seconds:.1f}s)"
            + (f": {row['error']}" if row["error"] else "")
        )
        self.write_status()

    def progress(self) -> str:
        n_end = sum(
            s["status"] in ("done", "skipped", "failed", "interrupted")
            for s in self.status.values()
        )
        return f"{n_end}/{len(self.runs)}"


def _manifest_entry(run: RunSpec) -> dict[str, Any]:
    entry = {"run": run.name, "params": run.params, "config": run.config}
    if run.search is not None:  # a search sweep's draw or re-run (debias.sweep.search)
        entry["search"] = run.search
    return entry


def _read_status(out: Path) -> dict[str, dict[str, Any]]:
    """The rows of an earlier pass's ``sweep_status.csv`` by run name (empty if none)."""
    try:
        with open(out / STATUS_CSV, newline="") as fh:
            return {row["run"]: row for row in csv.DictReader(fh) if row.get("run")}
    except (OSError, csv.Error, KeyError):
        return {}


def _tail(path: Path, n: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except FileNotFoundError:
        return "(no log)"


def _atomic_write(path: Path, text: str) -> None:
    atomic_write(path, lambda fh: fh.write(text.encode()))


def _run_workers(sweep: _Sweep, todo: list[RunSpec], jobs: int) -> None:
    """``jobs`` persistent workers take the runs in order; a dead worker is replaced."""
    env, cwd = _child_env(threads_per_job(jobs)), os.getcwd()
    queue = deque(todo)
    idle: list[Worker] = []
    busy: dict[Worker, tuple[RunSpec, float]] = {}
    try:
        while queue or busy:
            while queue and len(busy) < jobs:
                worker = idle.pop() if idle else Worker(env, cwd)
                run = queue.popleft()
                sweep.started(run)
                _open_log(sweep.dir(run)).close()  # the attempt header; the worker appends
                worker.submit(sweep.dir(run))
                busy[worker] = (run, time.time())
            select.select([w.fd for w in busy], [], [], 0.5)
            for worker, (run, t0) in list(busy.items()):
                rc = worker.poll()
                if rc is None:
                    continue
                del busy[worker]
                if worker.alive:
                    idle.append(worker)
                else:
                    worker.close()
                sweep.finished(run, rc, time.time() - t0)
    except KeyboardInterrupt:
        # Ctrl-C reached the workers too (same process group); give them a moment to save.
        for worker, (run, t0) in busy.items():
            rc = worker.poll(timeout=10)
            sweep.finished(run, INTERRUPTED if rc is None else rc, time.time() - t0)
        raise
    finally:
        for worker in [*idle, *busy]:
            worker.close()


def _run_processes(sweep: _Sweep, todo: list[RunSpec], jobs: int) -> None:
    """One fresh child process per run, ``jobs`` at a time (``process_per_run``)."""
    env = _child_env(threads_per_job(jobs))
    cwd = os.getcwd()
    queue = deque(todo)
    active: dict[str, tuple[RunSpec, subprocess.Popen, Any, float]] = {}
    try:
        while queue or active:
            while queue and len(active) < jobs:
                run = queue.popleft()
                sweep.started(run)
                proc, log = _launch(sweep.dir(run), env, cwd)
                active[run.name] = (run, proc, log, time.time())
            time.sleep(0.05)
            for name, (run, proc, log, t0) in list(active.items()):
                rc = proc.poll()
                if rc is None:
                    continue
                log.close()
                del active[name]
                sweep.finished(run, rc, time.time() - t0)
    except KeyboardInterrupt:
        # Ctrl-C reached the children too (same process group); give them a moment to save.
        for run, proc, log, t0 in active.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.close()
            sweep.finished(run, 130, time.time() - t0)
        raise


def _import_ray():
    try:
        import ray
    except ImportError:
        raise ImportError(
            "the ray backend needs Ray: pip install 'debias-toolkit[ray]' (or use --backend local)"
        ) from None
    return ray


def _run_ray(sweep: _Sweep, todo: list[RunSpec], jobs: int, address: str | None) -> None:
    ray = _import_ray()
    started_here = False
    if not ray.is_initialized():
        if address:
            ray.init(address=address)
        else:
            ray.init(num_cpus=available_cores(), include_dashboard=False)
        started_here = True
    try:
        res = ray.cluster_resources()
        cpus, gpus = float(res.get("CPU", 1)), float(res.get("GPU", 0))
        num_cpus = max(1, int(cpus // jobs))
        num_gpus = min(1.0, gpus / jobs) if gpus else 0
        task = ray.remote(num_cpus=num_cpus, num_gpus=num_gpus, max_retries=0)(execute_run)
        env_extra = {k: os.path.abspath(os.environ[k]) for k in _PATH_ENV if os.environ.get(k)}
        cwd = os.getcwd()
        pending = {}
        for run in todo:
            sweep.started(run)
            ref = task.remote(str(sweep.dir(run).resolve()), num_cpus, env_extra, cwd)
            pending[ref] = run
        sweep.write_status()
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                run = pending.pop(ready[0])
                try:
                    result = ray.get(ready[0])
                    sweep.finished(run, result["returncode"], result["seconds"])
                except Exception as exc:  # the task itself broke (worker died, ...)
                    (sweep.dir(run) / ERROR).write_text(f"Ray task failed: {exc!r}\n")
                    sweep.finished(run, -1, 0.0)
        except KeyboardInterrupt:
            for ref, run in pending.items():
                ray.cancel(ref, force=True)
                sweep.status[run.name] |= {"status": "interrupted", "error": "sweep interrupted"}
            sweep.write_status()
            raise
    finally:
        if started_here:
            ray.shutdown()


_DRY = {"skip": "finished: skip", "resume": "resume from checkpoint", "run": "run"}


def _dry_run(sweep: _Sweep, log: Callable[[str], Any]) -> SweepResult:
    """List what each run would do after the checks a real pass makes; an error if any fails."""
    problems = []
    for r in sweep.runs:
        what, why = sweep.inspect(r)
        cfg = sweep.config(r)
        log(
            f"{r.name}: {_DRY.get(what, 'cannot run')} | method {cfg.method}, mode {cfg.mode}, "
            f"epochs {cfg.epochs}"
        )
        if what == "fail":
            problems.append(f"  {r.name}: {why}")
    if problems:
        raise ValueError(
            f"dry run: {len(problems)} run(s) cannot run in {sweep.out}:\n" + "\n".join(problems)
        )
    search = sweep.spec.search
    if search is not None:
        log(
            f"then, once a method's draws have finished: its draws picked by "
            f"{', '.join(search.rerun_rules)} re-run with seeds {list(search.rerun_seeds)} "
            "(under rerun/)"
        )
    log(f"dry run: {len(sweep.runs)} run(s) in {sweep.out}; nothing was started")
    return SweepResult(out=sweep.out, runs=list(sweep.status.values()))


def run_sweep(
    spec: SweepSpec | str | Path | Mapping[str, Any],
    *,
    jobs: int = 1,
    backend: str = "local",
    out: str | Path | None = None,
    dry_run: bool = False,
    ray_address: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    only: Mapping[str, list[Any]] | None = None,
    process_per_run: bool = False,
    log: Callable[[str], Any] = print,
) -> SweepResult:
    """Run (or resume, or dry-run) a sweep; returns every run's status.

    Args:
        spec: a :class:`SweepSpec`, a path to its YAML file, or the YAML's dict.
        jobs: runs at once (local processes, or the Ray concurrency used to size each task).
        backend: ``"local"`` (child processes) or ``"ray"`` (one Ray task per run; joins the
            cluster at ``ray_address`` or the running Ray instance, else starts a local one).
        out: the sweep folder (default: the YAML's ``out``, else ``runs/sweeps/<name>``).
        dry_run: validate, list the runs and what would happen to each, run nothing.
        overrides: options that replace the YAML's ``base`` (e.g. ``{"device": "cpu"}``); one
            on a grid key narrows the grid to that value (see :meth:`SweepSpec.narrowed`).
        only: ``{grid key: [values]}``: run only these values of the grid (``--only``).
        process_per_run: local backend: a fresh process for every run instead of ``jobs``
            persistent workers (slower by the fixed cost of a process; ``--process-per-run``).
        log: where progress lines go.

    Every run is validated before any starts (ValueError otherwise). A failing run is recorded
    (``error.txt``, ``sweep_status.csv``) and the others go on; check ``result.ok``.
    """
    if isinstance(spec, (str, Path)):
        spec = SweepSpec.load(spec)
    elif not isinstance(spec, SweepSpec):
        spec = SweepSpec.from_dict(spec)
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {list(BACKENDS)}")
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    runs = spec.expand(overrides=overrides, only=only)
    out_dir = Path(out) if out is not None else spec.default_out
    sweep = _Sweep(spec, runs, out_dir, log)
    runfolder.check_out_path(out_dir, "sweep out")
    if dry_run:
        return _dry_run(sweep, log)

    # A sweep folder is debias's like a run folder: a user's sweep.json is never overwritten.
    runfolder.claim_folder(out_dir, names=runfolder.SWEEP_FILES, kind="sweep", what="sweep out")

    def execute(phase: _Sweep, what: str) -> SweepResult:
        return _execute(phase, what, jobs, backend, ray_address, process_per_run)

    result = execute(sweep, "draws" if spec.search is not None else "")
    if spec.search is None:
        return result
    reruns = _selected_reruns(spec, runs, out_dir, log)
    if not reruns:
        return result
    second = execute(_Sweep(spec, reruns, out_dir, log), "re-runs of the selected draws")
    return SweepResult(out=out_dir, runs=result.runs + second.runs)


def _execute(
    sweep: _Sweep, what: str, jobs: int, backend: str, address: str | None, per_run: bool
) -> SweepResult:
    """Record, prepare and run ``sweep.runs`` (skipping finished ones); their statuses."""
    spec, runs, out_dir, log = sweep.spec, sweep.runs, sweep.out, sweep.log
    sweep.write_manifest()
    todo = [r for r in runs if sweep.prepare(r) is None]
    sweep.write_status()
    n_skip = sum(s["status"] == "skipped" for s in sweep.status.values())
    how = ""
    if backend == "local":
        how = ", a process per run" if per_run else ", persistent workers"
    name = f"{spec.name} ({what})" if what else spec.name
    log(
        f"sweep {name}: {len(runs)} run(s) in {out_dir} | {n_skip} already finished | "
        f"{len(todo)} to run with {jobs} job(s) on {backend}{how} "
        f"({threads_per_job(jobs)} thread(s) each)"
    )
    if todo:
        if backend == "local":
            (_run_processes if per_run else _run_workers)(sweep, todo, jobs)
        else:
            _run_ray(sweep, todo, jobs, address)
    sweep.write_status()
    result = SweepResult(out=out_dir, runs=[sweep.status[r.name] for r in runs])
    counts = ", ".join(f"{n} {s}" for s, n in sorted(result.counts().items()))
    log(f"sweep {name}: {counts}; status in {out_dir / STATUS_CSV}")
    return result


def _selected_reruns(
    spec: SweepSpec, draws: list[RunSpec], out_dir: Path, log: Callable[[str], Any]
) -> list[RunSpec]:
    """Phase 2 of a search sweep: the re-runs of the draws its rerun rules pick, for every
    (grid point, method) whose draws have all finished (the others wait for a later pass)."""
    from debias.sweep.selection import complete, group_keys, search_frame, select_all

    frame = search_frame(out_dir, runs=[r.name for r in draws])
    keys = group_keys(frame, spec.grid)
    ready = complete(frame, keys)
    waiting = frame[frame["phase"] == "draw"].groupby(keys, dropna=False).ngroups - (
        ready.groupby(keys, dropna=False).ngroups if len(ready) else 0
    )
    if waiting:
        log(f"sweep {spec.name}: {waiting} method(s) with unfinished draws are not re-run yet")
    if ready.empty:
        return []
    chosen = select_all(ready, keys, rules=spec.search.rerun_rules)
    for row in chosen.itertuples():
        log(f"  {row.rule}: {row.run} ({row.value:.4f})")
    return spec.rerun_runs(draws, chosen.to_dict("records"))
