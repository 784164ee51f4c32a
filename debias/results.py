"""Tidy tables of finished runs: one place to read sweeps, single runs, or lists of both.

``path`` may be a sweep folder (one written by ``debias sweep``, with ``sweep.json``; or any
folder holding run folders), a run folder (holding ``metrics.json`` / ``history.csv``), or a
list of those. Every table carries, per run:

* ``sweep``: the sweep's name (or the folder's name), ``run``: the run folder relative to it
  (``rho=0.997/method=contex/seed=1``; a lone run folder is named by itself);
* ``status``: ``done`` (``metrics.json`` present), else the sweep's recorded status
  (``failed``, ``interrupted``, ``pending``) or ``incomplete`` (a checkpoint but no result);
* every option of the run's :class:`~debias.train.TrainConfig`, flattened (``loss_options``
  entries become ``loss_options.<key>``, ``data_options`` entries columns of their own name;
  lists become tuples so that columns stay hashable).

Tables:

* :func:`load`: one row per (run, split, metric) with ``split, metric, value,
  selection_rule, selection_description, selected_epoch, selected_stage, wall_time_seconds,
  device, supervision``: the numbers in ``metrics.json`` (the selected epoch's GroupReport on
  each split); ``supervision`` is what the run read (:func:`run_supervision_of`).
* :func:`load_history`: one row per (run, epoch): ``history.csv`` as written by ``train``
  (``epoch, stage, lr, train_loss, ..., <split>/<metric>, probe/<split>/<metric>``).
* :func:`load_groups`: one row per (run, split, y, b): ``n, correct, accuracy, aligned``.
* :func:`load_representation`: one row per (run, part, split, metric) of the runs'
  ``representation`` sections (the DFR head on each test split; the bias audit).
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from debias._types import UNFINISHED, RunStatus
from debias.train.runfolder import CHECKPOINT as _CHECKPOINT
from debias.train.runfolder import ERROR as _ERROR
from debias.train.runfolder import HISTORY as _HISTORY
from debias.train.runfolder import METRICS as _METRICS
from debias.train.runfolder import RUN_CONFIG as _RUN_CONFIG
from debias.train.runfolder import with_dataset_defaults

__all__ = [
    "RunRecord",
    "error_line",
    "find_runs",
    "flatten_config",
    "load",
    "load_groups",
    "load_history",
    "load_representation",
    "run_supervision_of",
]

PathLike = str | Path
_MANIFEST = "sweep.json"
_STATUS = "sweep_status.json"
_RUN_MARKERS = (_METRICS, _HISTORY, _RUN_CONFIG, _CHECKPOINT)
RESULT_COLUMNS = (
    "split",
    "metric",
    "value",
    "selection_rule",
    "selection_description",
    "selected_epoch",
    "selected_stage",
    "wall_time_seconds",
    "device",
    "supervision",
)


@dataclass
class RunRecord:
    """One run folder found under ``path``, with its options and status."""

    sweep: str
    run: str
    path: Path
    config: dict[str, Any]
    status: str
    problem: str = ""  # why a damaged or unlisted run is left out

    @property
    def metrics(self) -> dict[str, Any] | None:
        f = self.path / _METRICS
        return json.loads(f.read_text()) if f.exists() else None

    @property
    def error(self) -> str:
        """What went wrong: a damaged run's problem, else the line of ``error.txt`` naming the
        error ("" if the run has none)."""
        if self.problem:
            return self.problem
        f = self.path / _ERROR
        return error_line(f.read_text(errors="replace")) if f.exists() else ""


_EXC_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit|Warning)\b")


def error_line(text: str, limit: int = 300) -> str:
    """The line of a traceback that names the error (``FileNotFoundError: ...``), shortened."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    found = [ln for ln in lines if _EXC_LINE.match(ln)]
    line = found[-1] if found else (lines[-1] if lines else "")
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _is_run(d: Path) -> bool:
    return any((d / m).exists() for m in _RUN_MARKERS)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):  # missing, unreadable, truncated or not UTF-8
        return None
    return data if isinstance(data, dict) else None


def metrics_problem(path: Path) -> str:
    """What is wrong with a run's ``metrics.json`` ("" when it is a readable debias result)."""
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        return f"{path} cannot be read ({exc.strerror or exc})"
    except ValueError as exc:
        return f"{path} is not valid JSON ({str(exc).splitlines()[0]}): truncated or edited?"
    if not isinstance(data, dict):
        return f"{path} holds a {type(data).__name__}, not a debias metrics mapping"
    for key in ("config", "splits"):
        if not isinstance(data.get(key), dict):
            return f"{path} has no {key!r} mapping (not written by debias train, or edited)"
    bad = [s for s, v in data["splits"].items() if not isinstance(v, dict)]
    if bad:
        return f"{path}: splits {bad} are not mappings of metric: value"
    return ""


def _run_config(d: Path, fallback: dict[str, Any] | None = None) -> dict[str, Any]:
    # Runs written before data options were recorded per dataset compare as written today.
    m = _read_json(d / _METRICS)
    if m and isinstance(m.get("config"), dict):
        return with_dataset_defaults(m["config"])
    c = _read_json(d / _RUN_CONFIG)
    if c:
        return with_dataset_defaults(c)
    return dict(fallback or {})


def _record(sweep: str, run: str, d: Path, config: dict[str, Any], recorded: str | None):
    """The RunRecord of folder ``d``; a damaged ``metrics.json`` makes it ``damaged``, with why."""
    problem = metrics_problem(d / _METRICS) if (d / _METRICS).exists() else ""
    status = RunStatus.DAMAGED if problem else _status(d, recorded)
    return RunRecord(sweep, run, d, config, status, problem)


def _status(d: Path, recorded: str | None) -> str:
    if (d / _METRICS).exists():
        return RunStatus.DONE
    if recorded in UNFINISHED:
        return RunStatus(recorded)
    if (d / _CHECKPOINT).exists() or (d / _HISTORY).exists():
        return RunStatus.INCOMPLETE
    # A ledger that says done, skipped or running for a folder without metrics.json is stale.
    return RunStatus.PENDING


def _runs_under(root: Path) -> list[RunRecord]:
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"{root} does not exist (expected a sweep or run folder)")
    if not root.is_dir():
        raise ValueError(f"{root} is not a folder (expected a sweep or run folder)")
    manifest = _read_json(root / _MANIFEST)
    if manifest is not None:
        recorded = {
            r["run"]: r["status"] for r in (_read_json(root / _STATUS) or {}).get("runs", [])
        }
        name = manifest.get("name") or root.name
        listed = [r for r in manifest.get("runs", []) if isinstance(r, dict) and "run" in r]
        out = [
            _record(
                name,
                r["run"],
                root / r["run"],
                _run_config(root / r["run"], r.get("config")),
                recorded.get(r["run"]),
            )
            for r in listed
        ]
        return out + _unlisted(root, name, {r["run"] for r in listed})
    if _is_run(root):
        return [_record(root.parent.name or root.name, root.name, root, _run_config(root), None)]
    # A folder of runs without a manifest: every folder below that looks like a run.
    dirs = sorted({p.parent for m in _RUN_MARKERS for p in root.rglob(m)})
    return [
        _record(root.name, d.relative_to(root).as_posix(), d, _run_config(d), None) for d in dirs
    ]


def _unlisted(root: Path, name: str, listed: set[str]) -> list[RunRecord]:
    """Finished runs under a sweep folder that its manifest does not list (a ``debias train
    --out`` into it, another sweep's copy): not reported as the sweep's, but named."""
    found = sorted({p.parent for p in root.rglob(_METRICS)})
    out = []
    for d in found:
        rel = d.relative_to(root).as_posix()
        if rel in listed or rel == "." or any(rel.startswith(f"{x}/") for x in listed):
            continue
        problem = (
            f"{d} is not a run of this sweep ({_MANIFEST} does not list it); report it on its own"
        )
        out.append(RunRecord(name, rel, d, _run_config(d), RunStatus.UNLISTED, problem))
    return out


def find_runs(path: PathLike | Sequence[PathLike]) -> list[RunRecord]:
    """Every run folder under ``path`` (see the module docstring for what ``path`` may be)."""
    paths: Iterable[PathLike] = [path] if isinstance(path, (str, Path)) else path
    runs: list[RunRecord] = []
    for p in paths:
        runs += _runs_under(Path(p))
    if not runs:
        raise FileNotFoundError(f"no run folders (with {_METRICS} or {_HISTORY}) under {path}")
    return runs


def flatten_config(config: dict[str, Any]) -> dict[str, Any]:
    """Config as flat, hashable columns: dicts -> ``key.sub``, lists -> tuples; a dataset's own
    options (``data_options``) are columns of their own name, like the built-in ones (``rho``)."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        if key == "data_options" and isinstance(value, dict):
            out.update(flatten_config(value))
        elif isinstance(value, dict):
            for sub, v in value.items():
                out[f"{key}.{sub}"] = tuple(v) if isinstance(v, list) else v
        elif isinstance(value, list):
            out[key] = tuple(value)
        else:
            out[key] = value
    return out


def run_supervision_of(metrics: dict[str, Any], config: dict[str, Any]) -> str | None:
    """What a finished run read (:data:`debias.methods.SUPERVISION` kinds): its
    ``metrics.json`` ``supervision``; for runs written before it was recorded, the method's
    recorded kind (``"target"`` / ``"bias"`` mapped) or its registered one, raised by the
    run's selection rule (:func:`debias.methods.run_supervision`). None when unknown."""
    from debias.methods import METHODS, run_supervision, supervision_kind

    try:
        if "supervision" in metrics:
            return supervision_kind(metrics["supervision"])
        method = metrics.get("method", {}).get("supervision")
        if method is None and config.get("method") in METHODS:
            method = METHODS[config["method"]].supervision
        return None if method is None else run_supervision(method, config.get("select", "last"))
    except ValueError:  # a kind this version does not know
        return None


def _frame(rows: list[dict[str, Any]], front: Sequence[str]) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    cols = [c for c in front if c in df.columns] + [c for c in df.columns if c not in front]
    return df[cols] if len(df.columns) else df


def _drop_incomplete(runs: list[RunRecord], what: str) -> list[RunRecord]:
    done = [r for r in runs if r.status == RunStatus.DONE]
    if len(done) < len(runs):
        missing = [
            f"{r.run} ({r.status}{': ' + r.problem if r.problem else ''})"
            for r in runs
            if r.status != RunStatus.DONE
        ]
        warnings.warn(
            f"{what}: {len(missing)} run(s) without metrics.json left out: "
            + ", ".join(missing[:5])
            + (" ..." if len(missing) > 5 else ""),
            stacklevel=3,
        )
    return done


def load(path: PathLike | Sequence[PathLike], *, include_incomplete: bool = False) -> pd.DataFrame:
    """One row per (run, split, metric) of every finished run under ``path``.

    Columns: ``sweep, run, status``, the flattened config, then ``split, metric, value,
    selection_rule, selection_description, selected_epoch, selected_stage,
    wall_time_seconds, device, supervision``. ``value`` is the number in ``metrics.json`` (accuracies are
    fractions in [0, 1]). Runs without ``metrics.json`` are left out with a warning, or kept
    as one row with empty split/metric/value when ``include_incomplete`` is true.
    """
    runs = find_runs(path)
    if not include_incomplete:
        runs = _drop_incomplete(runs, "debias.results.load")
    rows: list[dict[str, Any]] = []
    for r in runs:
        head = {"sweep": r.sweep, "run": r.run, "status": r.status} | flatten_config(r.config)
        m = r.metrics
        if m is None:
            rows.append(head | dict.fromkeys(RESULT_COLUMNS))
            continue
        sel = m.get("selection", {})
        tail = {
            "selection_rule": sel.get("rule"),
            "selection_description": sel.get("description"),
            "selected_epoch": sel.get("epoch"),
            "selected_stage": sel.get("stage"),
            "wall_time_seconds": m.get("wall_time_seconds"),
            "device": m.get("device"),
            "supervision": run_supervision_of(m, r.config),
        }
        for split, values in m.get("splits", {}).items():
            for metric, value in values.items():
                if isinstance(value, (list, dict)):  # "groups": see load_groups
                    continue
                rows.append(
                    head
                    | {
                        "split": split,
                        "metric": metric,
                        "value": float("nan") if value is None else float(value),
                    }
                    | tail
                )
    return _frame(rows, ["sweep", "run", "status"])


def load_history(path: PathLike | Sequence[PathLike]) -> pd.DataFrame:
    """One row per (run, epoch): every run's ``history.csv`` with run and config columns.

    Interrupted runs are included (their history is what they finished), with their status.
    """
    rows = []
    for r in find_runs(path):
        f = r.path / _HISTORY
        if not f.exists():
            continue
        h = _read_history(f)
        if h is None:
            continue
        meta = {"sweep": r.sweep, "run": r.run, "status": r.status} | flatten_config(r.config)
        meta = {k: v for k, v in meta.items() if k not in h.columns}
        h = pd.concat([pd.DataFrame([meta] * len(h), index=h.index), h], axis=1)
        rows.append(h)
    if not rows:
        raise FileNotFoundError(f"no {_HISTORY} under {path}")
    return pd.concat(rows, ignore_index=True)


def _read_history(path: Path) -> pd.DataFrame | None:
    """A run's ``history.csv``, or None with a warning naming it and what is wrong."""
    try:
        h = pd.read_csv(path)
    except (OSError, ValueError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        why = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        warnings.warn(f"{path} cannot be read ({why}); its history is left out", stacklevel=3)
        return None
    if "epoch" not in h.columns or not pd.api.types.is_numeric_dtype(h["epoch"]):
        warnings.warn(
            f"{path} is not a debias history (no numeric 'epoch' column); left out",
            stacklevel=3,
        )
        return None
    return h


def _representation_rows(section: dict[str, Any]) -> list[dict[str, Any]]:
    """``part, split, metric, value`` rows of one run's representation section."""
    rows = []
    for split, rep in section.get("dfr", {}).get("splits", {}).items():
        for metric, value in rep.items():
            if not isinstance(value, (list, dict)):
                rows.append({"part": "dfr", "split": split, "metric": metric, "value": value})
    audit = section.get("audit", {})
    if "bias_leakage" in audit:
        split = audit.get("split")
        for metric in ("bias_leakage", "bias_leakage_chance", "n"):
            rows.append({"part": "audit", "split": split, "metric": metric, "value": audit[metric]})
        # The leakage's permutation baseline and verdict (sections written since issue 36).
        for metric in ("bias_leakage_null_mean", "bias_leakage_leaking"):
            if audit.get(metric) is not None:
                value = float(audit[metric])
                rows.append({"part": "audit", "split": split, "metric": metric, "value": value})
        for metric, value in audit.get("target_probe", {}).items():
            if not isinstance(value, (list, dict)):
                rows.append(
                    {"part": "audit", "split": split, "metric": f"target_probe/{metric}",
                     "value": value}
                )  # fmt: skip
    return rows


def load_representation(path: PathLike | Sequence[PathLike]) -> pd.DataFrame:
    """One row per (run, part, split, metric) of the finished runs' ``representation`` sections
    (:mod:`debias.train.represent`): part ``dfr``, the DFR head's GroupReport on each test split
    (it read the validation split's bias labels), with ``dfr_C``; part ``audit``,
    ``bias_leakage``, its chance level, the audited ``n`` and ``target_probe/<metric>`` on the
    audit split. Runs without the section are left out with a warning (``debias evaluate RUN``
    adds it)."""
    rows: list[dict[str, Any]] = []
    missing = []
    for r in _drop_incomplete(find_runs(path), "debias.results.load_representation"):
        section = (r.metrics or {}).get("representation")
        if section is None:
            missing.append(r.run)
            continue
        head = {"sweep": r.sweep, "run": r.run, "status": r.status} | flatten_config(r.config)
        head["dfr_C"] = section.get("dfr", {}).get("C")
        rows += [head | row for row in _representation_rows(section)]
    if missing:
        warnings.warn(
            f"debias.results.load_representation: {len(missing)} run(s) without a representation "
            f"section left out (`debias evaluate RUN` adds it): " + ", ".join(missing[:5]),
            stacklevel=2,
        )
    return _frame(rows, ["sweep", "run", "status"])


def load_groups(path: PathLike | Sequence[PathLike]) -> pd.DataFrame:
    """One row per (run, split, y, b) of every finished run: ``n, correct, accuracy, aligned``.

    ``accuracy`` is ``correct / n`` inside the group (a fraction, as are ``ci_low`` / ``ci_high``,
    its exact interval, in runs that recorded it); on Biased-MNIST ``y`` is the digit and ``b``
    the background colour index. ``y_name`` / ``b_name`` say what the codes mean ("female",
    "White", "red"): the names the run recorded, else the dataset's built-in names, else the
    codes.
    """
    rows: list[dict[str, Any]] = []
    for r in _drop_incomplete(find_runs(path), "debias.results.load_groups"):
        head = {"sweep": r.sweep, "run": r.run, "status": r.status} | flatten_config(r.config)
        m = r.metrics
        for split, values in m.get("splits", {}).items():
            y_names, b_names = _names_of(m, split, r.config)
            for g in values.get("groups", []):
                names = {
                    "y_name": _name(y_names, g["y"]),
                    "b_name": _name(b_names, g["b"]),
                }
                rows.append(head | {"split": split} | g | names)
    return _frame(rows, ["sweep", "run", "status"])


def _names_of(
    metrics: dict[str, Any], split: str, config: dict[str, Any]
) -> tuple[Sequence[str] | None, Sequence[str] | None]:
    data = metrics.get("data", {}).get(split, {})
    if "class_names" in data:
        return data["class_names"], data.get("bias_names")
    from debias.data.registry import label_names

    found = label_names(str(config.get("dataset", "")), config)
    return found if found is not None else (None, None)


def _name(names: Sequence[str] | None, code: Any) -> str:
    code = int(code)
    return str(names[code]) if names is not None and 0 <= code < len(names) else str(code)
