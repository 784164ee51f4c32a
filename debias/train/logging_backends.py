"""Optional experiment tracking: each epoch's history row sent to TensorBoard, MLflow or W&B.

Off by default (``TrainConfig.log_to=None``); ``log_to="tensorboard"`` (or a comma-separated list
such as ``"tensorboard,mlflow"``) turns it on. The history row is the one ``history.csv``
receives, so every tracker shows the same numbers as the run folder: every numeric column
(``train_loss``, ``lr``, ``val/accuracy``, ``test/worst_group_accuracy``, ... as fractions),
logged at step = epoch. Only the main process of a distributed run logs.

* ``tensorboard``: event files under ``<out>/tensorboard`` (``torch.utils.tensorboard``; needs
  the ``tensorboard`` package).
* ``mlflow``: the active MLflow run, or a new one named as below, in the tracking URI MLflow
  is configured with (``MLFLOW_TRACKING_URI``; default ``./mlruns``); the sweep and the grid
  values are its tags.
* ``wandb``: a W&B run named as below in project ``$WANDB_PROJECT`` (default ``debias``), the
  sweep as its group, the grid values as its tags and under ``sweep_grid`` in its config;
  ``WANDB_MODE=offline`` keeps it local.

Names (:func:`run_identity`): a run inside a sweep folder (one with ``sweep.json`` above it) is
named after its path in the sweep, ``method=ce/rho=0.997/seed=0``, not its last folder
(``seed=0``, which every method and rho of the sweep shares); a lone run after its folder.

A tracker whose package is missing is an error when the config is made, naming what to install.
"""

from __future__ import annotations

import atexit
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from debias._types import SWEEP_MANIFEST

__all__ = [
    "BACKENDS",
    "EpochLogger",
    "check_log_to",
    "log_epoch",
    "open_loggers",
    "run_identity",
]

# How many folders above a run are searched for its sweep's sweep.json.
_SWEEP_DEPTH = 12

# backend -> (module that must import, what to install)
BACKENDS: dict[str, tuple[str, str]] = {
    "tensorboard": ("torch.utils.tensorboard", "pip install tensorboard"),
    "mlflow": ("mlflow", "pip install mlflow"),
    "wandb": ("wandb", "pip install wandb"),
}


def _names(log_to: str | None) -> list[str]:
    if log_to is None or str(log_to).strip() in ("", "none"):
        return []
    names = [n.strip().lower() for n in str(log_to).split(",") if n.strip()]
    unknown = [n for n in names if n not in BACKENDS]
    if unknown:
        raise ValueError(
            f"log_to={log_to!r}: unknown tracker(s) {unknown}; expected one or more of "
            f"{sorted(BACKENDS)}, comma-separated, or None"
        )
    return names


def _require(name: str) -> None:
    module, install = BACKENDS[name]
    try:
        __import__(module)
    except ImportError as exc:
        raise ImportError(
            f"log_to={name!r} needs the {name} package, which is not installed here "
            f"({module} does not import: {exc}); install it with `{install}` or leave log_to unset"
        ) from None


def check_log_to(log_to: str | None) -> None:
    """Raise a one-line error for an unknown tracker name or one whose package is missing."""
    for name in _names(log_to):
        _require(name)


def _scalars(row: Mapping[str, Any]) -> dict[str, float]:
    out = {}
    for key, value in row.items():
        if key == "epoch" or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if math.isfinite(float(value)):
            out[key] = float(value)
    return out


def _grid_of(manifest: Mapping[str, Any], rel: str) -> dict[str, Any]:
    """The run's grid values: its ``params`` in the manifest, else read off its path."""
    for entry in manifest.get("runs", []) or []:
        if isinstance(entry, dict) and entry.get("run") == rel and entry.get("params"):
            return dict(entry["params"])
    return dict(part.split("=", 1) for part in rel.split("/") if "=" in part)


def run_identity(out: str | Path) -> dict[str, Any]:
    """How trackers name run folder ``out``: ``name`` (its path in the sweep, or its folder
    name outside one), ``group`` (the sweep's name, None outside one), ``tags``
    (``key=value`` per grid value) and ``grid`` (the values).

    Example:
        >>> run_identity("sweeps/bm/method=ce/seed=0")  # doctest: +SKIP
        {'name': 'method=ce/seed=0', 'group': 'bm', 'tags': ['method=ce', 'seed=0'], ...}
    """

    out = Path(out).resolve()
    for root in list(out.parents)[:_SWEEP_DEPTH]:
        if not (root / SWEEP_MANIFEST).is_file():
            continue
        try:
            manifest = json.loads((root / SWEEP_MANIFEST).read_text())
        except (OSError, ValueError):
            manifest = {}
        manifest = manifest if isinstance(manifest, dict) else {}
        rel = out.relative_to(root).as_posix()
        grid = _grid_of(manifest, rel)
        return {
            "name": rel,
            "group": str(manifest.get("name") or root.name),
            "tags": [f"{k}={v}"[:64] for k, v in grid.items()],  # W&B caps a tag at 64
            "grid": grid,
        }
    return {"name": out.name, "group": None, "tags": [], "grid": {}}


class EpochLogger:
    """One tracker; :meth:`log` sends a history row at ``step``."""

    def __init__(self, name: str, out: Path, config: Mapping[str, Any]) -> None:
        _require(name)
        self.name = name
        self._started = False
        who = run_identity(out)
        if name == "tensorboard":
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(out / "tensorboard"))
        elif name == "mlflow":
            import mlflow

            self._mlflow = mlflow  # the module the run was started with (closed at exit)
            if mlflow.active_run() is None:
                mlflow.start_run(run_name=who["name"])
                self._started = True
            if who["group"] is not None:
                mlflow.set_tags(
                    {"sweep": who["group"], **{k: str(v) for k, v in who["grid"].items()}}
                )
            mlflow.log_params({k: str(v)[:250] for k, v in config.items()})
        else:
            import wandb

            project = os.environ.get("WANDB_PROJECT", "debias")
            self._run = wandb.init(
                project=project, name=who["name"], group=who["group"], tags=who["tags"],
                config=dict(config) | {"sweep_grid": who["grid"]}, dir=out,
            )  # fmt: skip

    def log(self, row: Mapping[str, Any], step: int) -> None:
        values = _scalars(row)
        if self.name == "tensorboard":
            for key, v in values.items():
                self._writer.add_scalar(key, v, step)
            self._writer.flush()  # an interrupted run keeps what it logged
        elif self.name == "mlflow":
            self._mlflow.log_metrics({k.replace("/", "."): v for k, v in values.items()}, step=step)
        else:
            self._run.log(values, step=step)

    def close(self) -> None:
        if self.name == "tensorboard":
            self._writer.close()
        elif self.name == "mlflow" and self._started:
            self._mlflow.end_run()
        elif self.name == "wandb":
            self._run.finish()


def open_loggers(
    log_to: str | None, out: str | Path, config: Mapping[str, Any]
) -> list[EpochLogger]:
    """The trackers ``log_to`` names, opened for run folder ``out``; closed at exit."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    loggers = [EpochLogger(name, out, config) for name in _names(log_to)]
    for logger in loggers:
        atexit.register(logger.close)
    return loggers


def log_epoch(trainer: Any, row: Mapping[str, Any]) -> None:
    """Send ``row`` (a history row) to the trainer's trackers, opening them on first use."""
    cfg = trainer.cfg
    if not getattr(cfg, "log_to", None):
        return
    if getattr(trainer, "_epoch_loggers", None) is None:
        trainer._epoch_loggers = open_loggers(cfg.log_to, trainer.out, cfg.to_dict())
    for logger in trainer._epoch_loggers:
        logger.log(row, step=int(row["epoch"]))
