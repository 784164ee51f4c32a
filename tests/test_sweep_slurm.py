"""The SLURM backend against a real one-node SLURM (:mod:`slurm_cluster`: Debian's slurm-wlm and
munge, started for the session): a sweep gives the numbers of the local backend, a second
submission runs only what is missing, a task cancelled with ``scancel`` mid-run and a task
signalled (``SIGUSR2``, as before a time limit) and requeued both resume to identical numbers.
A cluster that cannot start fails these tests; they are never skipped.

Runs use the ``digits`` dataset (coloured like Biased-MNIST, no download, seconds per run),
long enough (5 short epochs) that a run is caught between its first checkpoint and its end.
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from debias.sweep import SweepSpec, run_sweep
from debias.sweep.processes import available_cores
from debias.sweep.slurm_options import SlurmOptions, parse_time
from debias.sweep.status import _Sweep

SPEC = {
    "name": "slurmtest",
    "base": {
        "dataset": "digits",
        "model": "smallconvnet",
        "epochs": 5,
        "linear_epochs": 1,
        "max_steps": 6,
        "batch_size": 32,
        "device": "cpu",
        "rho": 0.99,
        "progress": False,
        "represent": False,
        "eval_every": 0,
    },
    "grid": {"seed": [0, 1, 2]},
    "slurm": {"time": 10, "max_parallel": 2},
}


def quiet(*_) -> None:
    pass


def rows(out: Path) -> dict[str, dict[str, str]]:
    with open(out / "sweep_status.csv") as fh:
        return {r["run"]: r for r in csv.DictReader(fh)}


def arrays(out: Path) -> list[dict]:
    return json.loads((out / "slurm" / "jobs.json").read_text())


def numbers(run: Path) -> tuple[str, str]:
    m = json.loads((run / "metrics.json").read_text())
    return json.dumps(m["splits"], sort_keys=True), json.dumps(m["selection"], sort_keys=True)


def attempts(run: Path) -> int:
    return (run / "log.txt").read_text().count("===== attempt")


def wait_for(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def queue(cluster, job: str) -> str:
    return cluster.run("squeue", "-h", "-r", "-t", "all", "-j", job, "-o", "%i %T %r", check=False)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The same sweep on the local backend: the numbers every SLURM run must give."""
    out = tmp_path_factory.mktemp("local") / "out"
    # One CPU thread per run, as each SLURM task has (cpus_per_task 1): jobs = cores gives
    # cores // jobs = 1. Another thread count sums in another order, and the last digits move.
    assert run_sweep(SPEC, out=out, jobs=available_cores(), log=quiet).ok
    return out


def test_slurm_options_and_errors():
    assert [parse_time(t) for t in (90, "90", "1:30", "1:30:00", "2-00:00:00", "0:0:30")] == [
        90,
        90,
        2,
        90,
        2880,
        1,
    ]
    with pytest.raises(ValueError, match="expected minutes"):
        parse_time("1h")
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['partion'\]"):
        SlurmOptions.from_dict({"partion": "gpu"})
    with pytest.raises(ValueError, match="runs_per_task must be an integer >= 1"):
        SlurmOptions.from_dict({"runs_per_task": 0})
    opts = SlurmOptions.from_dict({"time": "1:00:00", "options": {"qos": "low"}})
    flags = opts.updated({"partition": "gpu", "time": None, "options": {"constraint": "a100"}})
    assert (flags.partition, flags.time) == ("gpu", 60)
    assert flags.options == {"qos": "low", "constraint": "a100"}
    with pytest.raises(ValueError, match="slurm: unknown key"):
        run_sweep({**SPEC, "slurm": {"gpu": 1}}, backend="slurm", dry_run=True, log=quiet)


@pytest.mark.slow
def test_slurm_sweep_matches_local_and_a_second_submission_runs_only_what_is_missing(
    slurm_cluster,
    reference,
    tmp_path,
    capsys,
):
    from debias.cli import main

    out = tmp_path / "out"
    # Two array tasks at once (2 CPUs), each writing the shared ledger.
    first = run_sweep(
        SPEC,
        backend="slurm",
        out=out,
        only={"seed": [0, 2]},
        slurm={"runs_per_task": 1},
        log=quiet,
    )
    assert first.ok and first.counts() == {"done": 2}
    (array,) = arrays(out)
    assert array["tasks"] == {"0": ["seed=0"], "1": ["seed=2"]}
    assert array["options"]["max_parallel"] == 2
    assert (
        "#SBATCH --array=0-1%2" in (out / "slurm" / f"{array['array']}_submission.sh").read_text()
    )
    ledger = rows(out)
    assert {ledger[f"seed={s}"]["status"] for s in (0, 2)} == {"done"}
    assert "seed=1" not in ledger  # not in this narrowed pass
    for s in (0, 2):
        assert numbers(out / f"seed={s}") == numbers(reference / f"seed={s}")
    mtime = (out / "seed=0" / "metrics.json").stat().st_mtime_ns

    # The full grid from the command line, flags over the YAML: only seed=1 is submitted.
    yaml_path = tmp_path / "sweep.yaml"
    yaml_path.write_text(json.dumps(SPEC))
    argv = ["sweep", str(yaml_path), "--out", str(out), "--backend", "slurm"]
    flags = ["--runs-per-task", "3", "--time", "0:10:00", "--sbatch", "comment=debias-test"]
    assert main([*argv, *flags, "--setup", "export DEBIAS_SETUP_RAN=1"]) == 0
    assert arrays(out)[-1]["tasks"] == {"0": ["seed=1"]}
    assert arrays(out)[-1]["options"]["runs_per_task"] == 3
    script = (out / "slurm" / f"{arrays(out)[-1]['array']}_submission.sh").read_text()
    assert "#SBATCH --comment=debias-test" in script and "#SBATCH --time=10" in script
    assert "export DEBIAS_SETUP_RAN=1" in script
    ledger = rows(out)
    assert ledger["seed=1"]["status"] == "done"
    assert ledger["seed=0"]["status"] == ledger["seed=2"]["status"] == "skipped"
    assert (out / "seed=0" / "metrics.json").stat().st_mtime_ns == mtime
    assert attempts(out / "seed=0") == attempts(out / "seed=1") == 1
    assert numbers(out / "seed=1") == numbers(reference / "seed=1")
    capsys.readouterr()
    assert main([*argv, "--status"]) == 0
    printed = capsys.readouterr().out
    assert "3 run(s): 1 done, 2 skipped" in printed
    assert f"job array {arrays(out)[-1]['array']}" in printed


@pytest.mark.slow
def test_scancel_mid_run_leaves_the_run_resumable(slurm_cluster, reference, tmp_path):
    out = tmp_path / "out"
    run_sweep(SPEC, backend="slurm", out=out, only={"seed": [0]}, wait=False, log=quiet)
    run, array = out / "seed=0", arrays(out)[-1]["array"]
    wait_for(lambda: (run / "checkpoint.pt").exists(), 180, "seed=0's first epoch")
    slurm_cluster.run("scancel", array)
    wait_for(lambda: rows(out)["seed=0"]["status"] == "interrupted", 60, "the ledger")
    wait_for(
        lambda: (
            not queue(slurm_cluster, array).strip() or "CANCELLED" in queue(slurm_cluster, array)
        ),
        60,
        "the task to end",
    )
    assert not (run / "metrics.json").exists(), "the run ended before scancel reached it"
    assert not (run / ".debias-run.lock").exists()  # released: no stale lock left behind
    # The sweep refuses nothing and resumes the run.
    again = run_sweep(SPEC, backend="slurm", out=out, only={"seed": [0]}, log=quiet)
    assert again.ok and rows(out)["seed=0"]["resumed"] == "True"
    assert "resuming" in (run / "log.txt").read_text() and attempts(run) == 2
    assert numbers(run) == numbers(reference / "seed=0")


@pytest.mark.slow
def test_a_signalled_task_is_requeued_and_resumes(slurm_cluster, reference, tmp_path):
    """SIGUSR2 as SLURM sends before a time limit: the task stops its run (checkpoint kept) and
    submitit requeues it; the requeued task resumes it, then runs the rest of its chunk."""
    out = tmp_path / "out"
    run_sweep(
        SPEC,
        backend="slurm",
        out=out,
        only={"seed": [1, 2]},
        slurm={"runs_per_task": 2},
        wait=False,
        log=quiet,
    )
    run, task = out / "seed=1", arrays(out)[-1]["jobs"]["0"]
    assert task == arrays(out)[-1]["array"]  # one task: submitit submits a plain job
    wait_for(lambda: (run / "checkpoint.pt").exists(), 180, "seed=1's first epoch")
    slurm_cluster.run("scancel", "--signal=USR2", task)
    # SLURM holds a requeued job ~2 min before it may start again (BeginTime); release it.
    wait_for(lambda: "BeginTime" in queue(slurm_cluster, task), 60, "the task to be requeued")
    assert rows(out)["seed=1"]["status"] == "interrupted"
    assert not (run / "metrics.json").exists(), "the run ended before the signal reached it"
    # While the requeued task waits, a second submission is refused (they would race) ...
    with pytest.raises(ValueError, match=f"still has SLURM job array {task} queued or running"):
        run_sweep(SPEC, backend="slurm", out=out, only={"seed": [1, 2]}, log=quiet)
    # ... and --status shows the task pending and why the run stopped.
    from debias.sweep.slurm import slurm_status

    lines: list[str] = []
    slurm_status(out, log=lines.append)
    assert "2 run(s): 1 interrupted, 1 pending" in lines[0]
    assert f"job array {task}" in lines[1] and "1 pending" in lines[1]
    assert "interrupted: seed=1: requeued by SLURM" in lines[2]
    slurm_cluster.run("scontrol", "update", f"JobId={task}", "StartTime=now")
    wait_for(lambda: rows(out)["seed=2"]["status"] == "done", 180, "the requeued task")
    ledger = rows(out)
    assert ledger["seed=1"]["status"] == "done" and ledger["seed=1"]["resumed"] == "True"
    assert "resuming" in (run / "log.txt").read_text() and attempts(run) == 2
    assert attempts(out / "seed=2") == 1
    for s in (1, 2):
        assert numbers(out / f"seed={s}") == numbers(reference / f"seed={s}")
    task_log = (out / "slurm" / f"{task}_0_log.out").read_text()
    assert "Calling checkpoint method" in task_log and f"Requeued job {task}" in task_log


def _update_rows(out: Path, names: list[str], rounds: int) -> None:
    """A task's side of the ledger: rewrite its own rows ``rounds`` times (shared mode)."""
    spec = SweepSpec.from_dict({**SPEC, "grid": {"seed": list(range(8))}})
    runs = [r for r in spec.expand() if r.name in names]
    sweep = _Sweep(spec, runs, out, log=quiet)
    sweep.shared = True
    for i in range(rounds):
        for run in runs:
            sweep.status[run.name]["seconds"] = i
            sweep.touched.add(run.name)
            sweep.write_status()


def test_tasks_merge_their_rows_into_the_ledger_whatever_the_order(tmp_path):
    """Four processes rewrite their own rows of one ledger at once: under the ledger lock
    every last value survives (without it a process would write back rows it read before
    another's last write) and the rows keep the sweep's order."""
    import multiprocessing

    spec = SweepSpec.from_dict({**SPEC, "grid": {"seed": list(range(8))}})
    out = tmp_path / "out"
    out.mkdir()
    first = _Sweep(spec, spec.expand(), out, log=quiet)
    first.write_status()
    names = [r.name for r in spec.expand()]
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_update_rows, args=(out, names[i::4], 30)) for i in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0] * 4
    ledger = rows(out)
    assert list(ledger) == names
    assert {r["seconds"] for r in ledger.values()} == {"29"}
    assert not (out / ".sweep_status.lock").exists()
