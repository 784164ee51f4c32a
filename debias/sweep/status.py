"""The ledger of a sweep: ``sweep.json`` (the spec and every expanded run) and
``sweep_status.csv`` / ``sweep_status.json`` (one row per run, rewritten as each run ends), and
what each run would do (skip, resume, run, fail) before anything starts. See
:mod:`debias.sweep.runner` for the files.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from debias._atomic import atomic_write, create_new
from debias._types import FINISHED, UNFINISHED, RunStatus
from debias.results import error_line
from debias.sweep.config import RunSpec, SweepSpec
from debias.sweep.worker import now as _now
from debias.train import runfolder
from debias.train.config import RunConflictError, TrainConfig
from debias.train.runfolder import (
    CHECKPOINT,
    ERROR,
    LOG,
    METRICS,
    RUN_CONFIG,
    RunFolderError,
    _remove_stale,
)

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


# Taken while a process of a shared sweep (SLURM tasks) rewrites the ledger; a rewrite takes
# milliseconds, so a lock older than this was left by a process killed while holding it.
LEDGER_LOCK = ".sweep_status.lock"
_LEDGER_STALE_S = 30.0
_held_ledgers: set[str] = set()  # ledgers this process holds (a signal handler may write too)


@contextlib.contextmanager
def ledger_lock(out: Path, timeout_s: float = 120.0) -> Iterator[None]:
    """Hold ``out``'s ledger lock (re-entrant in one process), so that processes on several
    nodes each merge their rows into the latest ledger and none writes over another's rows.

    The lock is the run folder's kind (:func:`create_new`: a hard link, atomic on NFS too).
    """
    path = out / LEDGER_LOCK
    key = str(path.resolve())
    if key in _held_ledgers:
        yield
        return
    me = json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode()
    deadline = time.time() + timeout_s
    while not create_new(path, me):
        try:
            seen, age = path.read_text(), time.time() - path.stat().st_mtime
        except FileNotFoundError:
            continue
        if age > _LEDGER_STALE_S:
            _remove_stale(path, seen)
        elif time.time() > deadline:
            raise TimeoutError(f"{path} was held for {timeout_s:.0f} s; delete it if no sweep runs")
        time.sleep(0.02)
    _held_ledgers.add(key)
    try:
        yield
    finally:
        _held_ledgers.discard(key)
        path.unlink(missing_ok=True)


# Kept from an earlier pass for a run this pass skips: when and how long it ran.
_TIMING_FIELDS = ("returncode", "seconds", "started", "finished", "resumed", "log")


@dataclass
class SweepResult:
    """What :func:`run_sweep` did: one status dict per run (see ``sweep_status.csv``)."""

    out: Path
    runs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def failed(self) -> list[str]:
        return [r["run"] for r in self.runs if r["status"] in UNFINISHED]

    @property
    def ok(self) -> bool:
        return not self.failed

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.runs:
            out[r["status"]] = out.get(r["status"], 0) + 1
        return out


# -- the parent ---------------------------------------------------------------------------------
class _Sweep:
    def __init__(self, spec: SweepSpec, runs: list[RunSpec], out: Path, log: Callable) -> None:
        self.spec, self.runs, self.out, self.log = spec, runs, out, log
        self.status: dict[str, dict[str, Any]] = {
            r.name: {
                "run": r.name,
                "status": RunStatus.PENDING,
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
        # Shared (SLURM): several processes write the ledger; each merges the rows it changed.
        self.shared = False
        self.touched: set[str] = set()
        # The runs an earlier session's runs.csv lists as done, left out (--done-in).
        self.done_in: Any = None

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
        if self.shared:
            with ledger_lock(self.out):
                self.previous = _read_status(self.out)
                mine = {name: self.status[name] for name in self.touched}
                rows = [mine.pop(name, row) for name, row in self.previous.items()]
                self._write_rows(rows + list(mine.values()))
            return
        rows = [self.status[r.name] for r in self.runs]
        rows += [row for name, row in self.previous.items() if name not in self.status]
        self._write_rows(rows)

    def _write_rows(self, rows: list[dict[str, Any]]) -> None:
        buf = io.StringIO(newline="")
        w = csv.DictWriter(buf, fieldnames=STATUS_FIELDS)
        w.writeheader()
        w.writerows(rows)
        _atomic_write(self.out / STATUS_CSV, buf.getvalue())
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
                before, after = diff.get("epochs", (0, 0))
                if before < after and set(diff) <= {"epochs"} | runfolder.SCHEDULE_KEYS:
                    # More epochs, nothing else: the run is continued from its checkpoint
                    # (train refuses it with the reason if its schedule would change).
                    try:
                        runfolder.is_continuation(done["config"], self.config(run), d)
                    except RunConflictError as exc:
                        return "fail", str(exc)
                    return "resume", ""
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
            row["status"] = RunStatus.SKIPPED
            before = self.previous.get(run.name, {})
            if before.get("status") in FINISHED and before.get("seconds") != "":
                # An earlier pass ran it: keep when and how long.
                row |= {k: before[k] for k in _TIMING_FIELDS if k in before}
            else:
                # The run's own recorded training time.
                wall = runfolder.read_metrics(d / METRICS).get("wall_time_seconds")
                if isinstance(wall, (int, float)):
                    row["seconds"] = round(wall, 1)
            return RunStatus.SKIPPED
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
        self.status[run.name] |= {"status": RunStatus.FAILED, "error": error_line(message)}
        self.touched.add(run.name)
        return RunStatus.FAILED

    def started(self, run: RunSpec) -> None:
        self.status[run.name]["started"] = _now()
        self.status[run.name]["status"] = RunStatus.RUNNING
        self.touched.add(run.name)

    def finished(self, run: RunSpec, returncode: int, seconds: float) -> None:
        d = self.dir(run)
        row = self.status[run.name]
        row |= {"returncode": returncode, "seconds": round(seconds, 1), "finished": _now()}
        self.touched.add(run.name)
        if _finished_run(d):
            # A finished run is never called failed (whatever this attempt's exit said): an
            # error.txt of this attempt beside a good metrics.json would contradict it.
            row["status"] = RunStatus.DONE
            if returncode != 0:
                (d / ERROR).unlink(missing_ok=True)
        else:
            err = d / ERROR
            if not err.exists():  # killed before the child could write it
                tail = _tail(d / LOG)
                err.write_text(
                    f"run exited with code {returncode} without a traceback; "
                    f"last lines of {LOG}:\n{tail}\n"
                )
            interrupted = returncode in (130, -2)
            row["status"] = RunStatus.INTERRUPTED if interrupted else RunStatus.FAILED
            row["error"] = error_line(err.read_text())
        self.log(
            f"[{self.progress()}] {row['status']:>7} {run.name} ({seconds:.1f}s)"
            + (f": {row['error']}" if row["error"] else "")
        )
        self.write_status()

    def progress(self) -> str:
        n_end = sum(s["status"] in FINISHED + UNFINISHED for s in self.status.values())
        return f"{n_end}/{len(self.runs)}"


def _manifest_entry(run: RunSpec) -> dict[str, Any]:
    entry = {"run": run.name, "params": run.params, "config": run.config}
    if run.search is not None:  # a search sweep's draw or re-run (debias.sweep.search)
        entry["search"] = run.search
    return entry


def _finished_run(d: Path) -> bool:
    """``d`` holds a readable metrics.json (a finished run)."""
    try:
        runfolder.read_metrics(d / METRICS)
    except (OSError, RunFolderError):
        return False
    return True


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
