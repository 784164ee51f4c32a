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

SLURM (``backend="slurm"``): one submitit job array per sweep, each task running a chunk of
runs in a persistent worker as above; options from the YAML's ``slurm:`` block and ``slurm``
(:mod:`debias.sweep.slurm_options`); signals, requeueing and what the shared filesystem must
offer: :mod:`debias.sweep.slurm`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

# The runner's parts, one module per job (backends, processes, the status ledger); their names
# are re-exported here, where they were.
from debias._types import RunStatus
from debias.sweep.backends import (  # noqa: F401
    BACKENDS,
    _import_ray,
    _run_processes,
    _run_ray,
    _run_workers,
)
from debias.sweep.config import RunSpec, SweepSpec
from debias.sweep.processes import (  # noqa: F401
    _child_env,
    _worker,
    available_cores,
    execute_run,
    threads_per_job,
)
from debias.sweep.slurm_options import SlurmOptions
from debias.sweep.status import (  # noqa: F401
    MANIFEST,
    STATUS_CSV,
    STATUS_FIELDS,
    STATUS_JSON,
    SweepResult,
    _read_status,
    _Sweep,
)
from debias.sweep.worker import die_with_parent
from debias.train import runfolder

__all__ = ["BACKENDS", "SweepResult", "die_with_parent", "run_sweep", "threads_per_job"]


_DRY = {"skip": "finished: skip", "resume": "resume from checkpoint", "run": "run"}


def _dry_run(sweep: _Sweep, log: Callable[[str], Any]) -> SweepResult:
    """List what each run would do after the checks a real pass makes; an error if any fails."""
    problems = []
    done_in = sweep.done_in
    for r in done_in.runs if done_in is not None else ():
        cfg = r.train_config(sweep.out)
        log(f"{r.name}: done in {done_in.table}: skip | method {cfg.method}, mode {cfg.mode}, "
            f"epochs {cfg.epochs}")  # fmt: skip
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
    log(f"dry run: {len(sweep.runs)} run(s) in {sweep.out}{_done_in_text(sweep)}; nothing was "
        "started")  # fmt: skip
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
    done_in: str | Path | None = None,
    process_per_run: bool = False,
    slurm: Mapping[str, Any] | None = None,
    wait: bool = True,
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
        done_in: a report's ``runs.csv`` (or its folder) from an earlier session: the runs it
            lists as done with the same options are left out of this pass (``--done-in``;
            :mod:`debias.sweep.done_in`), a run it lists with other options is refused.
        process_per_run: local backend: a fresh process for every run instead of ``jobs``
            persistent workers (slower by the fixed cost of a process; ``--process-per-run``).
        slurm: SLURM options over the YAML's ``slurm:`` block (``partition``, ``time``,
            ``max_parallel``, ``runs_per_task``, ...; :class:`SlurmOptions`).
        wait: SLURM: follow the job array until it ends (False: submit and return, the runs
            then show as ``pending``; ``debias sweep CONFIG --status``).
        log: where progress lines go.

    Example::

        run_sweep("sweeps/biased_mnist_quick.yaml", backend="slurm",
                  slurm={"partition": "gpu", "gpus": 1, "max_parallel": 20})

    Every run is validated before any starts (ValueError otherwise). A failing run is recorded
    (``error.txt``, ``sweep_status.csv``) and the others go on; check ``result.ok``.
    """
    if isinstance(spec, (str, Path)):
        spec = SweepSpec.load(spec)
    elif not isinstance(spec, SweepSpec):
        spec = SweepSpec.from_dict(spec)
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {list(BACKENDS)}")
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be an integer >= 1 (runs at once); got {jobs!r}")
    options = SlurmOptions.from_dict(spec.slurm, "sweep slurm").updated(slurm or {})
    runs = spec.expand(overrides=overrides, only=only)
    # check_out_path before Path(): Path("") is the current folder, an empty --out is a mistake.
    out_dir = runfolder.check_out_path(out, "sweep out") if out is not None else spec.default_out
    runfolder.check_out_path(out_dir, "sweep out")
    sweep = _sweep_of(spec, runs, out_dir, log, done_in)
    if dry_run:
        return _dry_run(sweep, log)

    if backend == "slurm":
        from debias.sweep.slurm import check_can_submit

        check_can_submit(out_dir)
    # A sweep folder is debias's like a run folder: a user's sweep.json is never overwritten.
    runfolder.claim_folder(out_dir, names=runfolder.SWEEP_FILES, kind="sweep", what="sweep out")
    # One sweep at a time per folder: a second would race the first for every run and its
    # ledger would call the first one's finished runs failed.
    with runfolder.lock(out_dir, runfolder.SWEEP_LOCK, "running a sweep in"):
        how = (options, wait) if backend == "slurm" else (ray_address, process_per_run)
        return _run_phases(sweep, jobs, backend, how)


def _sweep_of(
    spec: SweepSpec, runs: list[RunSpec], out: Path, log: Callable, done_in: str | Path | None
) -> _Sweep:
    """The pass's :class:`_Sweep`: ``runs`` less those ``done_in`` lists as finished."""
    if done_in is None:
        return _Sweep(spec, runs, out, log)
    from debias.sweep.done_in import split_done

    todo, done = split_done(spec, runs, out, done_in)
    if not done.runs:
        held = ", ".join(done.sweeps[:5]) or "none"
        log(f"sweep {spec.name}: {done.table} lists none of this pass's {len(runs)} run(s) as "
            f"finished (its sweeps: {held})")  # fmt: skip
    sweep = _Sweep(spec, todo, out, log)
    sweep.done_in = done
    return sweep


def _done_in_text(sweep: _Sweep) -> str:
    """`` and N done in TABLE`` for a pass given ``--done-in`` (else ``""``)."""
    done = sweep.done_in
    return "" if done is None else f" and {len(done.runs)} done in {done.table}"


def _run_phases(sweep: _Sweep, jobs: int, backend: str, how: tuple[Any, Any]) -> SweepResult:
    """The sweep's runs, then (a search sweep) the re-runs of the draws its rules pick
    (``how``: the backend's own arguments, as :func:`_execute` takes them)."""
    spec, runs, out_dir, log = sweep.spec, sweep.runs, sweep.out, sweep.log

    def execute(phase: _Sweep, what: str) -> SweepResult:
        return _execute(phase, what, jobs, backend, *how)

    result = execute(sweep, "draws" if spec.search is not None else "")
    if spec.search is None:
        return result
    reruns = _selected_reruns(spec, runs, out_dir, log)
    if not reruns:
        return result
    second = execute(_Sweep(spec, reruns, out_dir, log), "re-runs of the selected draws")
    return SweepResult(out=out_dir, runs=result.runs + second.runs)


def _execute(sweep: _Sweep, what: str, jobs: int, backend: str, *how: Any) -> SweepResult:
    """Record, prepare and run ``sweep.runs`` (skipping finished ones); their statuses.
    ``how``: ``(ray address, process per run)``, or for SLURM ``(SlurmOptions, wait)``."""
    spec, runs, out_dir, log = sweep.spec, sweep.runs, sweep.out, sweep.log
    sweep.write_manifest()
    todo = [r for r in runs if sweep.prepare(r) is None]
    sweep.write_status()
    n_skip = sum(s["status"] == RunStatus.SKIPPED for s in sweep.status.values())
    name = f"{spec.name} ({what})" if what else spec.name
    log(
        f"sweep {name}: {len(runs)} run(s) in {out_dir}{_done_in_text(sweep)} | {n_skip} "
        "already finished | "
        f"{len(todo)} to run {_how(backend, jobs, *how)}"
    )
    if todo:
        if backend == "local":
            (_run_processes if how[1] else _run_workers)(sweep, todo, jobs)
        elif backend == "ray":
            _run_ray(sweep, todo, jobs, how[0])
        else:
            from debias.sweep.slurm import run_slurm

            run_slurm(sweep, todo, *how)
    sweep.write_status()
    result = SweepResult(out=out_dir, runs=[sweep.status[r.name] for r in runs])
    counts = ", ".join(f"{n} {s}" for s, n in sorted(result.counts().items()))
    log(f"sweep {name}: {counts}; status in {out_dir / STATUS_CSV}")
    return result


def _how(backend: str, jobs: int, *how: Any) -> str:
    if backend == "slurm":
        opts = how[0]
        return (
            f"as a SLURM job array ({opts.runs_per_task} run(s) per task, {opts.cpus_per_task} "
            f"CPU(s) and thread(s) each, at most {opts.max_parallel} tasks at once)"
        )
    workers = ""
    if backend == "local":
        workers = ", a process per run" if how[1] else ", persistent workers"
    return f"with {jobs} job(s) on {backend}{workers} ({threads_per_job(jobs)} thread(s) each)"


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
