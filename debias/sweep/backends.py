"""The backends that execute a sweep's runs: persistent local workers (the default), a child
process per run (``process_per_run``), Ray tasks (``backend="ray"``) or a SLURM job array
(``backend="slurm"``, :mod:`debias.sweep.slurm`). See :mod:`debias.sweep.runner`.
"""

from __future__ import annotations

import os
import select
import subprocess
import time
from collections import deque
from typing import Any

from debias._types import RunStatus
from debias.sweep.config import RunSpec
from debias.sweep.processes import (
    _PATH_ENV,
    _child_env,
    _launch,
    _open_log,
    available_cores,
    execute_run,
    threads_per_job,
)
from debias.sweep.status import _Sweep
from debias.sweep.worker import (
    INTERRUPTED,
    Worker,
)
from debias.train.runfolder import ERROR

BACKENDS = ("local", "ray", "slurm")


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
                sweep.status[run.name] |= {
                    "status": RunStatus.INTERRUPTED,
                    "error": "sweep interrupted",
                }
            sweep.write_status()
            raise
    finally:
        if started_here:
            ray.shutdown()
