"""The SLURM backend (``backend="slurm"``): one submitit job array per sweep.

The sweep process (on a login node) validates and prepares every run folder as for the local
backend, then submits one array through submitit (``map_array``): task ``i`` gets a chunk of
``runs_per_task`` runs, at most ``max_parallel`` tasks run at once (``--array=0-N%max``). A task
(:class:`SlurmTask`) runs its chunk in turn in one persistent :class:`~debias.sweep.worker.Worker`,
exactly what ``--jobs 1`` does locally: a run never knows where it runs. Each task merges its
rows into ``sweep_status.csv`` under the ledger lock (:func:`~debias.sweep.status.ledger_lock`),
so the ledger is right whatever order tasks finish in, and also when the sweep process has gone
(``--detach``). By default the sweep process waits, printing each run as it ends; Ctrl-C there
stops only the waiting (the tasks go on; ``debias sweep CONFIG --status``; ``scancel``).

Signals:

* time limit / preemption: SLURM sends ``SIGUSR2`` ``signal_delay_s`` before the end
  (``--signal=USR2@90``, set by submitit). submitit calls :meth:`SlurmTask.checkpoint`, which
  stops the run in flight (SIGTERM to the worker: the run keeps its last epoch's
  ``checkpoint.pt``, releases its lock and is marked ``interrupted``) and hands submitit the
  same task, which it requeues (``scontrol requeue``); the requeued task skips the finished runs
  of its chunk and resumes the interrupted one, to the numbers of an uninterrupted run (the
  trainer is seeded per epoch). The worker ignores ``SIGUSR2`` itself, so only this path acts.
* ``scancel``: SIGTERM reaches the worker, the run stops as after Ctrl-C (checkpoint kept, lock
  released, ``interrupted`` in the ledger) and the task ends; the next submission resumes it.

Shared filesystem: the sweep folder, the data and this Python environment must be at the same
paths on every node. The run-folder lock is created with ``link()``, atomic on NFS and
Lustre; a lock left by a node that died (host and pid cannot be checked from another node) is
refused with the path to delete. The ledger lock is the same kind.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from debias._types import FINISHED, UNFINISHED, RunStatus
from debias.sweep.config import RunSpec, SweepSpec
from debias.sweep.processes import _PATH_ENV, _child_env, _open_log
from debias.sweep.slurm_options import SlurmOptions
from debias.sweep.status import _read_status, _Sweep
from debias.sweep.worker import INTERRUPTED, Worker
from debias.sweep.worker import now as _now

__all__ = ["SlurmTask", "check_can_submit", "run_slurm", "slurm_status"]

SLURM_DIR = "slurm"  # <out>/slurm: submitit's files (pickles, logs) and jobs.json
JOBS = "jobs.json"
# squeue states of a task that may still run (anything else: it has ended).
LIVE = (
    "PENDING",
    "RUNNING",
    "CONFIGURING",
    "COMPLETING",
    "REQUEUED",
    "RESIZING",
    "SUSPENDED",
    "REQUEUE_HOLD",
    "REQUEUE_FED",
    "SIGNALING",
    "STAGE_OUT",
)
REQUEUED = "requeued by SLURM (time limit or preemption); resumes"
# squeue states of a task that ended without a failure of its own.
STOPPED = ("CANCELLED", "PREEMPTED", "TIMEOUT", "DEADLINE", "NODE_FAIL")


def _import_submitit():
    try:
        import submitit
    except ImportError:
        raise ImportError(
            "the slurm backend needs submitit: pip install 'debias-toolkit[slurm]' "
            "(or use --backend local)"
        ) from None
    return submitit


# -- the array task ------------------------------------------------------------------------------
class SlurmTask:
    """One array task: its runs in turn in one persistent worker; checkpointable (submitit
    calls :meth:`checkpoint` on SIGUSR2 and requeues what it returns)."""

    def __init__(self, spec: SweepSpec, out: str, threads: int, env: dict[str, str], cwd: str):
        self.spec, self.out, self.threads, self.env, self.cwd = spec, out, threads, env, cwd
        self._reset()

    def _reset(self) -> None:
        self._sweep: _Sweep | None = None
        self._worker: Worker | None = None
        self._run: tuple[RunSpec, float] | None = None  # the run in flight, since when

    def __getstate__(self) -> dict[str, Any]:  # submitit pickles the task to requeue it
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reset()

    def __call__(self, runs: list[RunSpec]) -> dict[str, str]:
        """Run ``runs`` (skipping finished ones); their ledger statuses."""
        sweep = self._sweep = _Sweep(self.spec, runs, Path(self.out), log=print)
        sweep.shared = True
        env = _child_env(self.threads) | self.env
        try:
            for run in runs:
                if sweep.prepare(run) is not None:  # finished (ledger kept) or refused
                    sweep.write_status()
                    continue
                if self._worker is None or not self._worker.alive:
                    self._worker = Worker(env, self.cwd, ignore=(signal.SIGUSR2,))
                sweep.started(run)
                sweep.write_status()
                _open_log(sweep.dir(run)).close()
                t0 = time.time()
                self._run = (run, t0)
                self._worker.submit(sweep.dir(run))
                rc = self._worker.poll(timeout=None)
                self._run = None
                sweep.finished(run, rc, time.time() - t0)
                if rc == INTERRUPTED:  # scancel or a preemption's SIGTERM: stop here
                    break
        finally:
            if self._worker is not None:
                self._worker.close()
        return {r.name: str(sweep.status[r.name]["status"]) for r in runs}

    def checkpoint(self, runs: list[RunSpec]) -> Any:
        """SIGUSR2 (time limit or preemption): stop the run in flight, which keeps its last
        epoch's checkpoint, then requeue this task with the same runs."""
        from submitit.helpers import DelayedSubmission

        worker, current = self._worker, self._run
        if worker is not None and worker.alive and current is not None:
            os.kill(worker.proc.pid, signal.SIGTERM)
            rc = worker.poll(timeout=60)
            run, t0 = current
            if self._sweep is not None:
                self._sweep.finished(run, INTERRUPTED if rc is None else rc, time.time() - t0)
                row = self._sweep.status[run.name]
                row["error"] = REQUEUED
                self._sweep.write_status()
            self._run = None
        print(f"[sweep] {_now()} requeued: {len(runs)} run(s) of this task", flush=True)
        return DelayedSubmission(self, runs)


# -- the sweep process ---------------------------------------------------------------------------
def _squeue(job: str) -> dict[str, str]:
    """``{task id: state}`` of a job array's tasks that SLURM still knows (empty once purged)."""
    proc = subprocess.run(
        ["squeue", "-h", "-r", "-t", "all", "-j", job, "-o", "%i %T"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if proc.returncode:  # an id SLURM no longer knows
        return {}
    out = {}
    for line in proc.stdout.splitlines():
        task, _, state = line.strip().partition(" ")
        out[task] = state
    return out


def _read_jobs(out: Path) -> list[dict[str, Any]]:
    try:
        return json.loads((out / SLURM_DIR / JOBS).read_text())
    except (OSError, ValueError):
        return []


def check_can_submit(out: Path) -> None:
    """Before anything is prepared: submitit is installed, ``sbatch`` is there, and no earlier
    array of this sweep is queued or running (its tasks and new ones would race for runs)."""
    _import_submitit()
    if shutil.which("sbatch") is None:
        raise FileNotFoundError(
            "the slurm backend needs SLURM's sbatch on PATH: run debias sweep on a login node "
            "of the cluster (or use --backend local)"
        )
    for entry in _read_jobs(out):
        live = [t for t, s in _squeue(entry["array"]).items() if s in LIVE]
        if live:
            raise ValueError(
                f"sweep {out} still has SLURM job array {entry['array']} queued or running "
                f"({len(live)} task(s)); wait for it (debias sweep CONFIG --status) or cancel "
                f"it (scancel {entry['array']}), then submit again"
            )


def _executor(opts: SlurmOptions, folder: Path, name: str) -> Any:
    submitit = _import_submitit()
    ex = submitit.SlurmExecutor(folder=folder, max_num_timeout=opts.max_requeues)
    params: dict[str, Any] = {
        "job_name": f"debias-{name}",
        "time": opts.time,
        "cpus_per_task": opts.cpus_per_task,
        "array_parallelism": opts.max_parallel,
        "signal_delay_s": opts.signal_delay_s,
        "additional_parameters": dict(opts.options),
        "setup": list(opts.setup),
    }
    for key in ("partition", "account", "mem"):
        if getattr(opts, key):
            params[key] = getattr(opts, key)
    if opts.gpus:
        params["gpus_per_task"] = opts.gpus
    ex.update_parameters(**params)
    return ex


def run_slurm(sweep: _Sweep, todo: list[RunSpec], opts: SlurmOptions, wait: bool = True) -> str:
    """Submit ``todo`` as one job array; wait for it unless ``wait`` is False. Its id."""
    out = sweep.out.resolve()
    k = opts.runs_per_task
    chunks = [todo[i : i + k] for i in range(0, len(todo), k)]
    env = {key: os.path.abspath(os.environ[key]) for key in _PATH_ENV if os.environ.get(key)}
    task = SlurmTask(sweep.spec, str(out), opts.cpus_per_task, env, os.getcwd())
    ex = _executor(opts, out / SLURM_DIR, sweep.spec.name)
    jobs = ex.map_array(task, chunks)
    array = jobs[0].job_id.split("_")[0]
    entry = {
        "array": array,
        "submitted": _now(),
        "tasks": {str(i): [r.name for r in chunk] for i, chunk in enumerate(chunks)},
        # SLURM's id of each task: <array>_<i>, or <array> alone for a single task (submitit
        # submits one chunk as a plain job)
        "jobs": {str(i): job.job_id for i, job in enumerate(jobs)},
        "options": opts.to_dict(),
    }
    (out / SLURM_DIR / JOBS).write_text(json.dumps([*_read_jobs(out), entry], indent=2))
    sweep.shared = True  # from now on the tasks write the ledger too
    sweep.log(
        f"submitted SLURM job array {array}: {len(chunks)} task(s) of up to {k} run(s), "
        f"at most {opts.max_parallel} at once; progress: debias sweep {sweep.spec.source or ''} "
        f"--status; stop: scancel {array} (runs stay resumable)"
    )
    if wait:
        try:
            _wait(sweep, array, entry["tasks"], entry["jobs"])
        except KeyboardInterrupt:
            sweep.log(f"stopped waiting; job array {array} goes on (scancel {array} to stop it)")
            raise
    return array


def _wait(
    sweep: _Sweep,
    array: str,
    tasks: dict[str, list[str]],
    job_ids: dict[str, str],
    poll_s: float = 1.0,
    squeue_s: float = 30.0,
) -> None:
    """Follow the ledger until no task of ``array`` is left; then settle the runs no task
    recorded (a task cancelled before it started, or one that died). ``squeue`` is asked
    every ``squeue_s`` seconds, or as soon as the ledger says every run has ended."""
    names = {n for chunk in tasks.values() for n in chunk}
    shown: dict[str, str] = {}
    asked = 0.0
    while True:
        ended = _show_progress(sweep, names, shown)
        if ended or time.time() - asked > squeue_s:
            states, asked = _squeue(array), time.time()
            if not any(s in LIVE for s in states.values()):
                break
        time.sleep(poll_s)
    _show_progress(sweep, names, shown)
    ledger = _read_status(sweep.out)
    for task, chunk in tasks.items():
        job = job_ids[task]
        for name in chunk:
            row = ledger.get(name, {})
            if row.get("status") in (RunStatus.PENDING, RunStatus.RUNNING, None):
                _settle(sweep, name, states.get(job, "gone"), job)
    for name in names:
        sweep.status[name] = {**sweep.status[name], **_read_status(sweep.out).get(name, {})}


def _show_progress(sweep: _Sweep, names: set[str], shown: dict[str, str]) -> bool:
    """Log each run of ``names`` whose ledger status changed; True once all have ended (and
    none waits for a requeue)."""
    ledger = _read_status(sweep.out)
    for name in sorted(names & set(ledger)):
        row = ledger[name]
        if shown.get(name) != row["status"] and row["status"] != RunStatus.PENDING:
            shown[name] = row["status"]
            error = f": {row['error']}" if row.get("error") else ""
            sweep.log(f"{row['status']:>11} {name}{error}")
    return all(
        ledger.get(n, {}).get("status") in FINISHED + UNFINISHED
        and not ledger[n].get("error", "").startswith(REQUEUED)
        for n in names
    )


def _settle(sweep: _Sweep, name: str, state: str, task: str) -> None:
    """A run its task never recorded as ended: interrupted (resumable) when SLURM stopped the
    task, failed with the task's own log otherwise."""
    log = sweep.out.resolve() / SLURM_DIR / f"{task}_0_log.err"
    ended = state.split()[0] if state else "gone"
    stopped = ended in STOPPED
    row = sweep.status[name]
    row |= {
        "status": RunStatus.INTERRUPTED if stopped else RunStatus.FAILED,
        "finished": _now(),
        "error": f"SLURM task {task} ended ({ended}) before recording this run; see {log}",
    }
    sweep.touched.add(name)
    sweep.write_status()


def slurm_status(out: Path, log: Callable[[str], Any] = print) -> dict[str, int]:
    """Print a sweep's progress from its ledger and ``squeue``; the ledger's counts.

    Example: ``debias sweep sweeps/biased_mnist_paper.yaml --status``, or
    ``slurm_status(Path("runs/sweeps/biased_mnist_paper"))``.
    """
    ledger = _read_status(out)
    counts: dict[str, int] = {}
    for row in ledger.values():
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    log(f"{out}: {len(ledger)} run(s): " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    jobs = _read_jobs(out)
    if not jobs:
        log("no SLURM job array was submitted for this sweep")
        return counts
    entry = jobs[-1]
    states = _squeue(entry["array"]) if shutil.which("squeue") else {}
    by_state: dict[str, int] = {}
    for state in states.values():
        by_state[state] = by_state.get(state, 0) + 1
    queue = ", ".join(f"{n} {s.lower()}" for s, n in sorted(by_state.items()))
    queue = queue or "none left in squeue (ended, or no SLURM controller reachable)"
    log(f"job array {entry['array']} (submitted {entry['submitted']}): tasks {queue}")
    for name, row in ledger.items():
        if row["status"] == RunStatus.RUNNING:
            log(f"  running since {row['started']}: {name}")
        elif row["status"] in (RunStatus.FAILED, RunStatus.INTERRUPTED):
            log(f"  {row['status']}: {name}: {row['error']}")
    return counts
