"""The processes of a sweep run: the threads each parallel run gets (``cores // jobs``), the
environment of a child process, and one run in a child process of its own
(``process_per_run``, and what a Ray task executes). See :mod:`debias.sweep.runner`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from debias.sweep.worker import (
    INTERRUPTED,
    PARENT_ENV,
    run_in_process,
    watch_parent_from_env,
)
from debias.sweep.worker import now as _now
from debias.train.runfolder import LOG

# Environment variables that point at folders: children may start elsewhere (Ray workers do),
# so relative values are made absolute before they are passed on.
_PATH_ENV = ("DEBIAS_DATA", "DEBIAS_CACHE")


_THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "DEBIAS_NUM_THREADS")


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


# Not ``-m debias.sweep.processes``: the package imports this module first, which runpy warns
# about.
_CHILD = "import sys; from debias.sweep.processes import _worker; sys.exit(_worker(sys.argv[1]))"


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
