"""The runs a report's per-run table (``runs.csv``) lists as finished, and whether a run of
today is the run the table recorded at its path.

A sweep longer than a session is finished over several (docs/SWEEPS.md, "Across sessions"):
each session commits its report's ``runs.csv`` (:mod:`debias.report.tables`); the next, on a
fresh machine without the run folders, skips the runs it lists as done (``debias sweep CONFIG
--done-in TABLE``) and reports its own runs together with the table's (``debias report ...
--prior FOLDER``). Both ask the same question of a run at the same ``(sweep, run)`` path, and
this module answers it once (:func:`options_diff`): the flattened options
(:func:`debias.results.flatten_config`) compared one by one, where

* runtime options are left out (:data:`~debias.train.config.RUNTIME_FIELDS`: where and how a
  run executes, as when a sweep decides whether to resume a run), except
  ``represent_refits``: the DFR head's refits change the representation section's numbers;
* numbers compare as numbers (a CSV column with empty cells writes ``3`` as ``3.0``), other
  values as the text ``runs.csv`` holds (``str`` of the value: ``(20, 40)``, ``True``), an
  empty cell as an unset option (None);
* an option the table has no column for (no run of it set one, or debias added the option
  after the table was written) is taken at its default today.

Example:
    >>> table = read_runs("docs/results/biased_mnist_cpu")  # doctest: +SKIP
    >>> done = done_runs(table)  # {(sweep, run): its row}  # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

import pandas as pd

from debias._types import RunStatus
from debias.results import RESULT_COLUMNS, flatten_config
from debias.train.config import RUNTIME_FIELDS

__all__ = [
    "REP",
    "RUNS_CSV",
    "done_runs",
    "option_columns",
    "options_diff",
    "outside_grid",
    "read_runs",
    "run_options",
    "table_file",
]

RUNS_CSV = "runs.csv"
REP = "representation:"  # the prefix of the representation section's columns
# The columns that say which run a row is and where it was read, not what it ran with.
RUN_COLUMNS = ("sweep", "run", "status", "error", "source")
_NOT_OPTIONS = ("versions.", "dfr.", REP)  # the machine, the DFR tuning, the section's numbers


def table_file(path: str | Path) -> Path:
    """``path``'s ``runs.csv``: ``path`` itself, or the report folder holding it."""
    path = Path(path)
    file = path / RUNS_CSV if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(
            f"{file} does not exist; expected a report's {RUNS_CSV} (written by debias report) "
            "or the folder holding it"
        )
    return file


def read_runs(path: str | Path) -> pd.DataFrame:
    """``runs.csv`` (or its folder) as text, one row per run, empty cells ``""``."""
    file = table_file(path)
    table = pd.read_csv(file, dtype=str, keep_default_na=False)
    missing = [c for c in ("sweep", "run", "status") if c not in table]
    if missing:
        raise ValueError(
            f"{file} has no {', '.join(missing)} column(s); expected the runs.csv a report writes"
        )
    return table


def option_columns(columns: Any) -> list[str]:
    """The columns of ``runs.csv`` that hold a run's options (in their order): neither which run
    it is, nor a number it reported (``<split>/<metric>``), nor its selection, machine or DFR
    tuning record."""
    return [
        c for c in columns
        if c not in RUN_COLUMNS and c not in RESULT_COLUMNS and "/" not in c
        and not c.startswith(_NOT_OPTIONS)
    ]  # fmt: skip


def done_runs(table: pd.DataFrame) -> dict[tuple[str, str], dict[str, str]]:
    """``{(sweep, run): row}`` of the table's finished runs."""
    done = table[table["status"] == RunStatus.DONE]
    return {(r["sweep"], r["run"]): r for r in done.to_dict("records")}


def outside_grid(table: pd.DataFrame, sweep: str, grid: set[str]) -> str:
    """One line naming the finished runs of ``sweep`` in ``table`` that its grid (the run
    names ``grid``) does not have (a grid changed since the table was written: joining them
    would bring them back), else ``""``."""
    mine = table[(table["sweep"] == sweep) & (table["status"] == RunStatus.DONE)]
    extra = [r for r in mine["run"] if r not in grid]
    if not extra:
        return ""
    more = f" and {len(extra) - 1} more" if len(extra) > 1 else ""
    return (
        f"it lists run {extra[0]}{more} of sweep {sweep} as done, which the sweep's grid does "
        "not have (the grid changed since the table was written)"
    )


def run_options(config: Mapping[str, Any]) -> dict[str, Any]:
    """A run's options as ``runs.csv`` records them: its config in today's terms
    (:func:`~debias.train.runfolder.with_dataset_defaults`, as :func:`debias.results.load`
    reads a finished run's), flattened."""
    from debias.train.runfolder import with_dataset_defaults

    return flatten_config(with_dataset_defaults(config))


def options_diff(
    row: Mapping[str, str], columns: Any, options: Mapping[str, Any]
) -> dict[str, tuple[str, str]]:
    """``{option: (the table's value, this run's)}`` for every option that differs between a
    row of ``runs.csv`` (its ``columns``: the table's) and a run's flattened ``options``
    (:func:`run_options`); empty: the same run. Rules: the module docstring."""
    columns = option_columns(columns)
    dataset = str(options.get("dataset", row.get("dataset", "")))
    keys = [k for k in dict.fromkeys([*columns, *options]) if not _runtime(k)]
    have = set(columns)
    diff = {}
    for key in keys:
        there = row.get(key, "") if key in have else _default(dataset, key)
        if not _same(there, options.get(key)):
            diff[key] = (_text(there) or "unset", _text(options.get(key)) or "unset")
    return diff


# Runtime options that change a number the report shows (the DFR head is averaged over them).
_COMPARED_RUNTIME = frozenset({"represent_refits"})


def _runtime(key: str) -> bool:
    top = key.split(".", 1)[0]
    return top in RUNTIME_FIELDS and top not in _COMPARED_RUNTIME


@cache
def _defaults(dataset: str) -> dict[str, Any]:
    from debias.train.runfolder import saved_config

    return flatten_config(saved_config({"dataset": dataset} if dataset else {}))


def _default(dataset: str, key: str) -> Any:
    """An option's default today (what a table written before the option existed ran with)."""
    return _defaults(dataset).get(key)


def _text(value: Any) -> str:
    """A value as ``runs.csv`` writes it; ``""`` for unset (None, NaN, an empty cell)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value)


def _same(a: Any, b: Any) -> bool:
    a, b = _text(a), _text(b)
    if a == b:
        return True
    try:
        x, y = float(a), float(b)
    except ValueError:
        return False
    return x == y or math.isclose(x, y, rel_tol=1e-12, abs_tol=0.0)
