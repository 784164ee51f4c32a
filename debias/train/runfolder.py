"""The run folder: what debias writes there, whose folder it is, who may write, is it the same run.

A run folder (``debias train --out DIR``, or one run of a sweep) holds only files debias wrote:
:data:`OUTPUTS` (``metrics.json``, ``checkpoint.pt``, ``history.csv``, ``embeddings.npz``,
``model.pt``), in a sweep :data:`SWEEP_RUN_FILES`, the marker :data:`MARKER` and, while a process trains into it, the lock
:data:`LOCK`. Rules:

* **Ownership.** A folder is debias's when it holds :data:`MARKER` (a small JSON written when
  debias first uses the folder), or, for runs written before the marker existed, a
  ``metrics.json`` with a ``config`` mapping, or a ``history.csv`` whose header starts with
  ``epoch,stage``, a sweep's ``run_config.json`` or an audit's ``audit.json``. In a folder that is not debias's, an existing file with one of the
  :data:`OUTPUTS` names is the user's: the folder is refused with a message naming those files,
  with or without ``force``. Files with other names are never read, written or deleted.
  ``force`` deletes only :data:`OUTPUTS` of a debias folder.
* **One writer.** :data:`LOCK` holds the owner's ``pid`` and ``host``; it is created atomically
  and complete (a hard link of a written temporary file, :func:`debias._atomic.create_new`), so
  of two processes starting at once one wins and the other reads who. A lock whose process is
  gone (same host, pid not alive) is stale and taken over (moved aside first, so a rival's
  fresh lock is never deleted); a live one is refused. A lock from another host cannot be
  checked: it is refused with the way to remove it. ``--force`` deletes a run's files only
  once the lock is held. A folder that cannot be created or written is a one-line error.
* **Reports** never go into a run folder (:func:`is_run_folder`; ``debias report``).
* **Same run.** :func:`config_diff` compares a saved config with the one asked for, after
  filling options added since that run was written with their defaults and normalising the
  dataset options (each dataset's :class:`~debias.data.spec.DatasetSpec`); the trainer and the sweep
  both decide with it. A finished run asked for with more ``epochs`` and nothing else changed
  is continued from its checkpoint (:func:`is_continuation`), unless its lr schedule would move.
* **Readable files.** :func:`read_metrics` and :func:`load_checkpoint` turn a truncated or
  foreign file into an error naming the file and what to do.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import secrets
import socket
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from debias._atomic import atomic_write, create_new, remove_orphans, temp_name
from debias._checks import OptionTypeError
from debias._types import SWEEP_MANIFEST
from debias.train.checkpoint import METRIC_SECTIONS, nan_for_null
from debias.train.config import (
    DATA_FIELDS,
    RUNTIME_FIELDS,
    RunConflictError,
    TrainConfig,
    owned_options,
)

METRICS = "metrics.json"
CHECKPOINT = "checkpoint.pt"
HISTORY = "history.csv"
EMBEDDINGS = "embeddings.npz"
MODEL = "model.pt"
OUTPUTS = (METRICS, CHECKPOINT, HISTORY, EMBEDDINGS, MODEL)
# Written into a run folder by a sweep (debias.sweep.runner) around what train writes.
RUN_CONFIG = "run_config.json"
LOG = "log.txt"
ERROR = "error.txt"
SWEEP_RUN_FILES = (RUN_CONFIG, LOG, ERROR)
SWEEP_STATUS = ("sweep_status.csv", "sweep_status.json")
SWEEP_FILES = (SWEEP_MANIFEST, *SWEEP_STATUS)
MARKER = ".debias-run"
LOCK = ".debias-run.lock"
# Held by a running ``debias sweep`` in the sweep's root: a second sweep on it is refused.
SWEEP_LOCK = ".debias-sweep.lock"
# The kinds of folder debias writes (the marker's "kind"); one never goes into another's.
KINDS = ("run", "sweep", "audit", "report")
# What ``debias report`` writes (debias.report): a folder holding one of these that debias did
# not write is the user's and refused.
REPORT_FILES = (
    "report.md",
    "summary.csv",
    "paired.csv",
    "representation.csv",
    "representation_paired.csv",
    "search_selection.csv",
    "search_summary.csv",
    "search_paired.csv",
    "runs.csv",
    "groups.csv",
    "tables.json",
    "search_ranking.png",
    "accuracy_vs_bias.png",
    "group_heatmap.png",
    "convergence.png",
    "head_vs_dfr.png",
    "worst_group_gap.png",
)
_REPORT_TITLES = ("# Sweep report: ", "# Search report: ")
MARKER_VERSION = 1
# ``debias audit --out`` writes an audit.json with these keys (AuditReport.to_dict).
AUDIT_JSON = "audit.json"
_AUDIT_KEYS = {"overall", "bias_leakage"}
# A lock file still empty after this long was left by a process killed while creating it.
_EMPTY_LOCK_GRACE_S = 30.0

__all__ = [
    "CHECKPOINT",
    "EMBEDDINGS",
    "ERROR",
    "HISTORY",
    "LOCK",
    "LOG",
    "MARKER",
    "METRICS",
    "MODEL",
    "OUTPUTS",
    "KINDS",
    "REPORT_FILES",
    "RUN_CONFIG",
    "SWEEP_LOCK",
    "SWEEP_RUN_FILES",
    "RunFolderError",
    "RunLockedError",
    "check_out_path",
    "check_same_run",
    "claim_folder",
    "config_diff",
    "folder_kind",
    "foreign_files",
    "is_debias_folder",
    "is_continuation",
    "is_run_folder",
    "load_checkpoint",
    "lock",
    "lock_holder",
    "read_metrics",
    "run_folder",
    "saved_config",
    "with_dataset_defaults",
]


class RunFolderError(RuntimeError):
    """A run folder cannot be used: not a folder, holds a user's files, or holds a bad file."""


class RunLockedError(RunFolderError):
    """Another live process is training into the folder."""


# -- ownership -----------------------------------------------------------------------------------
def check_out_path(out: str | os.PathLike, what: str = "--out") -> Path:
    """``out`` as a Path; an error when it is empty or exists and is not a folder."""
    if out is None or not isinstance(out, (str, os.PathLike)):
        raise OptionTypeError(f"{what} must be a folder path (str or Path); got {out!r}")
    if not str(out).strip():
        # Path("") is the current directory: an empty value is a mistake, not "here".
        raise ValueError(f"{what} is empty; expected a folder path (use . for this folder)")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise RunFolderError(f"{what} {out} is an existing file; expected a folder (new or a run)")
    return out


def _legacy_kind(out: Path) -> str | None:
    """The kind of a folder written before the marker existed (by its files' contents), or None."""
    try:
        m = json.loads((out / METRICS).read_text())
        if isinstance(m, dict) and isinstance(m.get("config"), dict):
            return "run"
    except (OSError, ValueError):
        pass
    known = (
        (SWEEP_MANIFEST, {"name", "spec", "runs"}, "sweep"),
        (RUN_CONFIG, {"dataset", "method", "out"}, "run"),
        (AUDIT_JSON, _AUDIT_KEYS, "audit"),
    )
    for name, keys, kind in known:
        try:
            c = json.loads((out / name).read_text())
            if isinstance(c, dict) and keys <= set(c):
                return kind
        except (OSError, ValueError):
            pass
    for name, starts, kind in (
        (HISTORY, ("epoch,stage",), "run"),
        ("report.md", _REPORT_TITLES, "report"),
    ):
        try:
            with open(out / name, errors="replace") as fh:
                if fh.readline().startswith(starts):
                    return kind
        except OSError:
            pass
    return None


def _legacy_run(out: Path) -> bool:
    """A folder written by debias before the marker existed (by its files' contents)."""
    return _legacy_kind(out) is not None


def folder_kind(out: str | os.PathLike) -> str | None:
    """What kind of debias folder ``out`` is (one of :data:`KINDS`), or None when it is not
    debias's (or does not exist): the marker's kind, else what its files say."""
    out = Path(out)
    try:
        kind = json.loads((out / MARKER).read_text()).get("kind")
        if kind in KINDS:
            return kind
    except (OSError, ValueError, AttributeError):
        pass
    kind = _legacy_kind(out)
    if kind is None and (out / MARKER).is_file():
        return "run"  # the first markers had no kind: only runs wrote them
    return kind


def is_debias_folder(out: str | os.PathLike) -> bool:
    """True when debias wrote this folder (marker, or a pre-marker run's files)."""
    out = Path(out)
    return (out / MARKER).is_file() or _legacy_run(out)


def is_run_folder(out: str | os.PathLike) -> bool:
    """True when debias trains or trained a run in ``out`` (finished, in progress or failed):
    a run's marker, or a file a run or a sweep's run writes there (older runs have no marker).
    Audit, sweep and report folders are not run folders."""
    out = Path(out)
    if not is_debias_folder(out):
        return False
    if any((out / n).exists() for n in (*OUTPUTS, *SWEEP_RUN_FILES, LOCK)):
        return True
    try:
        return json.loads((out / MARKER).read_text()).get("kind") == "run"
    except (OSError, ValueError, AttributeError):
        return False


def foreign_files(out: str | os.PathLike, names: tuple[str, ...] = OUTPUTS) -> list[str]:
    """Files in ``out`` with a name debias would write, that debias did not write (sorted)."""
    out = Path(out)
    if not out.is_dir() or is_debias_folder(out):
        return []
    return sorted(n for n in names if (out / n).exists())


def claim_folder(
    out: str | os.PathLike,
    *,
    force: bool = False,
    names: tuple[str, ...] = OUTPUTS,
    kind: str = "run",
    what: str = "--out",
) -> bool:
    """Make ``out`` a debias folder of ``kind`` (create it, write the marker); returns whether it
    was created now. Refuses a folder holding the user's files named like ``names``; with
    ``force`` deletes ``names`` of a debias folder. Orphan temporary files are removed."""
    created = _claim(Path(out), names=names, kind=kind, what=what, force=force)
    if force:
        _clear(Path(out), names)
    return created


def _claim(out: Path, *, names: tuple[str, ...], kind: str, what: str, force: bool) -> bool:
    """:func:`claim_folder` without deleting anything."""
    out = check_out_path(out, what)
    check_kind(out, kind, what)
    foreign = foreign_files(out, names)
    if foreign:
        raise RunFolderError(
            f"{what} {out} holds {', '.join(foreign)} that debias did not write (no {MARKER} "
            f"marker); they are never overwritten{', not even with --force' if force else ''}. "
            f"Use another {what}, or move those files away."
        )
    created = not out.exists()
    with _writable(out, what):
        out.mkdir(parents=True, exist_ok=True)
        remove_orphans(out)
        if not (out / MARKER).is_file():
            import debias

            marker = {"debias": debias.__version__, "kind": kind, "version": MARKER_VERSION}
            text = json.dumps(marker, indent=2) + "\n"
            atomic_write(out / MARKER, lambda fh: fh.write(text.encode()))
    return created


def check_kind(out: Path, kind: str, what: str = "--out") -> None:
    """An error when ``out`` is a debias folder of another kind than ``kind`` (a run, sweep,
    audit or report folder): their files would mix, and a report would read them as another's."""
    there = folder_kind(out)
    if there is not None and there != kind:
        hint = {"report": f" (e.g. {out / 'report'})", "audit": f" (e.g. {out / 'audit'})"}
        raise RunFolderError(
            f"{what} {out} is a debias {there} folder; a {kind} is never written into it. Use a "
            f"folder of its own{hint.get(kind, '')}."
        )


def _clear(out: Path, names: tuple[str, ...]) -> None:
    """``--force``: delete the files named ``names`` (only ever called on a debias folder)."""
    for name in names:
        (out / name).unlink(missing_ok=True)


@contextlib.contextmanager
def _writable(out: Path, what: str) -> Iterator[None]:
    """A folder debias cannot create or write to (read-only parent or file system, no space)
    is a one-line error naming it, not a traceback."""
    try:
        yield
    except OSError as exc:
        if isinstance(exc, FileExistsError):
            raise
        reason = exc.strerror or type(exc).__name__
        where = f" ({exc.filename})" if exc.filename and str(exc.filename) != str(out) else ""
        raise RunFolderError(
            f"{what} {out}: cannot create or write this folder: {reason}{where}; expected a "
            f"folder you can write to. Use another {what}, or fix the folder's permissions."
        ) from None


# -- the lock ------------------------------------------------------------------------------------
def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def lock_holder(out: str | os.PathLike) -> dict[str, Any] | None:
    """The live owner ``{"pid", "host", "started"}`` of ``out``'s lock, or None (free or stale)."""
    return _lock_state(Path(out) / LOCK)[1]


def _lock_state(path: Path) -> tuple[str | None, dict[str, Any] | None]:
    """``(text of the lock file or None if there is none, its live holder or None)``."""
    try:
        text = path.read_text()
        age = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return None, None
    try:
        holder = json.loads(text)
        pid, host = int(holder["pid"]), str(holder["host"])
    except (ValueError, KeyError, TypeError):
        # Not debias's format, or a lock of an older debias killed while writing it: stale once
        # it is clearly not being written.
        if age > _EMPTY_LOCK_GRACE_S:
            return text, None
        return text, {"pid": "?", "host": "?", "started": "?"}
    if host == socket.gethostname() and (pid == os.getpid() or not _alive(pid)):
        return text, None
    return text, holder


def _remove_stale(path: Path, seen: str) -> None:
    """Delete the stale lock whose text was ``seen``, never a fresh one a rival created since:
    the lock is moved aside (atomic), compared, and given back if it is not the stale one."""
    aside = path.with_name(temp_name(path.name, secrets.token_hex(4)))
    try:
        os.rename(path, aside)
    except FileNotFoundError:  # a rival removed it first
        return
    try:
        if aside.read_text() != seen:
            with contextlib.suppress(FileExistsError):
                os.link(aside, path)
    finally:
        aside.unlink(missing_ok=True)


def acquire_lock(out: str | os.PathLike, name: str = LOCK, doing: str = "training into") -> None:
    """Create ``out``'s lock for this process, taking over a stale one; error if held.

    Creating the lock is atomic and it is complete when it appears (:func:`create_new`): of two
    processes starting at the same moment one gets it, the other reads who holds it.
    """
    path = Path(out) / name
    me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
    for _ in range(3):  # a stale lock removed by a rival at the same moment: look again
        if create_new(path, json.dumps(me).encode()):
            return
        seen, holder = _lock_state(path)
        if holder is not None:
            where = "this machine" if holder["host"] == socket.gethostname() else holder["host"]
            raise RunLockedError(
                f"{out} is in use: process {holder['pid']} on {where} is {doing} it "
                f"({path}). Wait for it to finish, or if that process is gone, delete {path}."
            )
        if seen is not None:
            _remove_stale(path, seen)
    raise RunLockedError(f"could not take the lock {path}; another process keeps creating it")


def release_lock(out: str | os.PathLike, name: str = LOCK) -> None:
    """Remove ``out``'s lock if this process holds it."""
    path = Path(out) / name
    try:
        holder = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    if holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def lock(out: str | os.PathLike, name: str = LOCK, doing: str = "training into") -> Iterator[None]:
    """Hold ``out``'s lock (``name``: :data:`LOCK`, or :data:`SWEEP_LOCK` for a sweep's root) for
    the duration of the block."""
    acquire_lock(out, name, doing)
    try:
        yield
    finally:
        release_lock(out, name)


@contextlib.contextmanager
def run_folder(
    out: str | os.PathLike, *, force: bool = False, owner: bool = True
) -> Iterator[Path]:
    """Claim ``out`` as a run folder and hold its lock while the block trains into it.

    ``owner=False`` (the non-zero ranks of a distributed run) only checks that ``out`` is a
    folder: rank 0 claims and locks it for all. A folder created here and left holding nothing
    but the marker (the run failed before its first epoch) is removed again.
    """
    out = check_out_path(out)
    if not owner:
        yield out
        return
    created = _claim(out, names=OUTPUTS, kind="run", what="--out", force=force)
    # The lock first: a process refused here (a live rival trains into ``out``) has deleted
    # nothing, not even with ``force``, and leaves the rival's folder as it is.
    with _writable(out, "--out"):
        acquire_lock(out)
    try:
        if force:
            _clear(out, OUTPUTS)
        yield out
    finally:
        empty = created and all(not (out / n).exists() for n in OUTPUTS)
        if empty:  # while still locked: a rival that takes the folder next keeps its marker
            (out / MARKER).unlink(missing_ok=True)
        release_lock(out)
        if empty:
            with contextlib.suppress(OSError):
                out.rmdir()  # only if empty: never anything else in it


# -- same run? -----------------------------------------------------------------------------------
def _field_defaults() -> dict[str, Any]:
    out = {}
    for f in dataclasses.fields(TrainConfig):
        if f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
        elif f.default is not dataclasses.MISSING:
            out[f.name] = f.default
    return out


def saved_config(saved: Mapping[str, Any]) -> dict[str, Any]:
    """A config saved by any debias version, in today's terms (``TrainConfig.from_dict`` takes it).

    An option added to TrainConfig after that run was written had its default value then; a data
    option the dataset does not take was ignored then (None now); one it takes but left unset
    had the dataset's default.
    """
    return with_dataset_defaults(_field_defaults() | dict(saved))


def with_dataset_defaults(config: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` with its data options as today's TrainConfig records them: None for those the
    dataset does not take, the dataset's default for those it takes but left unset, and a
    protocol's deprecated name (``groupdro``) replaced by today's (``official``); and with the
    methods' options that configs once wrote flat (``temperature``, ``linear_epochs``...) in
    ``method_options`` (:func:`~debias.train.config.owned_options`)."""
    from debias.data.celeba import canonical_protocol
    from debias.data.registry import find_spec

    d = owned_options(config, strict=False)
    # "metadata:PATH" takes the options of the metadata spec (a miss here would blank them
    # and make a finished metadata run differ from the same command given again). A dataset
    # this process has not registered keeps what was recorded.
    spec = find_spec(str(d.get("dataset", "biased-mnist")))
    takes = spec.defaults if spec is not None else None
    defaults = _field_defaults()
    for k in DATA_FIELDS if takes is not None else ():
        if k not in takes:
            if k in d:
                d[k] = defaults[k]
        elif d.get(k) is None:
            d[k] = takes[k]
    own = {k: v for k, v in (takes or {}).items() if k not in DATA_FIELDS}
    if own:
        given = d.get("data_options") or {}
        d["data_options"] = {**given, **{k: v for k, v in own.items() if given.get(k) is None}}
    if isinstance(d.get("protocol"), str):
        # A run written under a protocol's old name is the same run as under its new one.
        d["protocol"] = canonical_protocol(d["protocol"], warn=False)
    return d


def config_diff(saved: Mapping[str, Any], cfg: TrainConfig) -> dict[str, tuple[Any, Any]]:
    """``{option: (value there, value now)}`` for every option that differs; empty: same run.

    Runtime fields (``RUNTIME_FIELDS``: where and how a run executes) are not compared.
    """
    there = {k: v for k, v in saved_config(saved).items() if k not in RUNTIME_FIELDS}
    mine = cfg.identity()
    keys = sorted(set(there) | set(mine))
    return {k: (there.get(k), mine.get(k)) for k in keys if there.get(k) != mine.get(k)}


def check_same_run(
    saved: Mapping[str, Any], cfg: TrainConfig, out: Path, what: str, *, longer: bool = False
) -> None:
    """RunConflictError when ``out`` holds ``what`` (a checkpoint, a finished run) of another
    configuration than ``cfg``; with ``longer``, ``cfg`` may ask for more ``epochs``."""
    diff = config_diff(saved, cfg)
    if longer and "epochs" in diff and diff["epochs"][0] < diff["epochs"][1]:
        del diff["epochs"]
    if diff:
        lines = ", ".join(f"{k}: {a!r} there vs {b!r} now" for k, (a, b) in diff.items())
        raise RunConflictError(
            f"{out} already holds {what} with a different configuration ({lines}). "
            "Use another --out, or --force to start over in this folder."
        )


# The options that say how the lr moves with the epochs: a change of only these (and a larger
# ``epochs``) is a continuation that would change the schedule, refused with that reason.
SCHEDULE_KEYS = frozenset({"lr_milestones", "lr_schedule"})


def is_continuation(saved: Mapping[str, Any], cfg: TrainConfig, out: Path) -> bool:
    """Whether ``cfg`` continues the finished run ``out`` (config ``saved``) to more epochs.

    False: it is the same run. True: only ``epochs`` is larger (runtime options aside). A
    RunConflictError otherwise, and when the lr schedule would change with the epochs (the
    milestones are absolute epochs, resolved into the saved config): continuing a run whose
    lr was divided at the quarters of 4 epochs under the quarters of 8 would train a run
    that neither command describes.
    """
    diff = config_diff(saved, cfg)
    if not diff:
        return False
    before, after = diff.get("epochs", (0, 0))
    moved = set(diff) - {"epochs"}
    if before < after and moved and moved <= SCHEDULE_KEYS:
        there, now = diff.get("lr_milestones", (saved.get("lr_milestones"),) * 2)
        keep = " ".join(map(str, there)) if there else "with no value (a constant lr)"
        changes = ", ".join(
            f"{k} {diff[k][0]!r} there vs {diff[k][1]!r} now" for k in sorted(moved)
        )
        raise RunConflictError(
            f"cannot continue {out} from {before} to {after} epochs: the lr schedule would "
            f"change ({changes}); give --lr-milestones {keep} to keep it, or use another "
            "--out, or --force to start over"
        )
    if before < after and not moved and cfg.lr_schedule == "cosine":
        raise RunConflictError(
            f"cannot continue {out} from {before} to {after} epochs: its cosine lr schedule "
            f"spans the {before} epochs it was run for, so more epochs would change every lr "
            "after the first; use another --out, or --force to start over"
        )
    if set(diff) != {"epochs"} or before > after:
        check_same_run(saved, cfg, out, "a finished run")
    return True


# -- reading run files -----------------------------------------------------------------------------
def read_metrics(path: str | os.PathLike) -> dict[str, Any]:
    """A run's ``metrics.json``; an error naming the file when it is truncated or not debias's."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except ValueError as exc:
        raise RunFolderError(
            f"{path} is not valid JSON ({exc}): truncated or edited? Delete it to re-evaluate "
            "the run from its checkpoint, or use --force to start over"
        ) from None
    data = _require_config(data, path, "metrics.json")
    # NaN metrics are written as null (strict JSON); read them back as the NaN they were.
    return data | {k: nan_for_null(data[k]) for k in METRIC_SECTIONS if k in data}


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """A run's ``checkpoint.pt``; an error naming the file when it is truncated or foreign."""
    import pickle

    import torch

    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except (RuntimeError, EOFError, pickle.UnpicklingError, ValueError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RunFolderError(
            f"{path} cannot be read ({first}): truncated or corrupt. Delete it to restart this "
            "run from epoch 0 (or use --force)"
        ) from None
    return _require_config(state, path, "checkpoint")


def _require_config(data: Any, path: Path, what: str) -> dict[str, Any]:
    """``data`` if it is a mapping with a ``config`` mapping (what debias writes), else an error."""
    if not isinstance(data, dict) or not isinstance(data.get("config"), dict):
        raise RunFolderError(
            f"{path} is not a debias {what} (no 'config' mapping); use another --out, or "
            "move that file away"
        )
    return data
