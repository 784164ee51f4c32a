"""``debias sweep CONFIG --done-in TABLE``: leave out the runs an earlier session finished.

A sweep longer than a session is finished over several, each on a machine that may hold none of
the others' run folders (docs/SWEEPS.md, "Across sessions"); what a session leaves behind is its
committed report's per-run table, ``runs.csv``. Given it, a sweep runs only the runs of its grid
that the table does not list as done: a run it lists as done at the same ``(sweep, run)`` path
with the same options (:func:`debias.done_table.options_diff`) is left out of this pass, neither
run nor written to ``sweep.json`` or the ledger (its numbers are the table's;
``debias report ... --prior FOLDER`` joins them to this pass's runs). A run the table lists as
done with *other* options is refused before anything starts, with the run and the option that
differs: the protocol changed since the table was written, and its runs and this pass's would
not be one sweep (drop ``--done-in`` to run the whole grid again under the new options). So is a
table listing a finished run of this sweep that its grid does not have (a changed grid).
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from debias.sweep.config import RunSpec, SweepSpec

__all__ = ["DoneIn", "split_done"]


class DoneIn(NamedTuple):
    """The runs of this pass that ``table`` lists as finished (left out of it), and the sweeps
    the table holds runs of (to name them when it holds none of this one)."""

    table: Path
    runs: list[RunSpec]
    sweeps: list[str]


class _Split(NamedTuple):
    todo: list[RunSpec]
    done: DoneIn


def split_done(spec: SweepSpec, runs: list[RunSpec], out: Path, table: str | Path) -> _Split:
    """``runs`` split into those to run and those ``table`` (a ``runs.csv`` or its folder)
    lists as done with the same options; a ValueError naming the run and the option when the
    table lists one as done with other options."""
    from debias.done_table import (
        done_runs,
        options_diff,
        outside_grid,
        read_runs,
        run_options,
        table_file,
    )

    file = table_file(table)
    if spec.search is not None:
        raise ValueError(
            f"--done-in {table}: {spec.name} is a random search, whose re-runs depend on every "
            "draw; --done-in takes a grid sweep"
        )
    rows = read_runs(file)
    stray = outside_grid(rows, spec.name, {r.name for r in spec.expand()})
    if stray:
        raise ValueError(f"--done-in {file}: {stray}; remove its rows from the table, or "
                         "run without --done-in")  # fmt: skip
    done = done_runs(rows)
    todo, skipped, conflicts = [], [], []
    for run in runs:
        row = done.get((spec.name, run.name))
        if row is None:
            todo.append(run)
            continue
        diff = options_diff(row, rows.columns, run_options(run.train_config(out).to_dict()))
        (conflicts if diff else skipped).append((run, diff))
    if conflicts:
        raise ValueError(_conflict_line(file, spec.name, conflicts))
    sweeps = list(dict.fromkeys(rows["sweep"]))
    return _Split(todo, DoneIn(file, [r for r, _ in skipped], sweeps))


def _conflict_line(file: Path, name: str, conflicts: list) -> str:
    run, diff = conflicts[0]
    key, (there, now) = next(iter(diff.items()))
    more = f" (and {len(conflicts) - 1} more run(s))" if len(conflicts) > 1 else ""
    return (
        f"--done-in {file}: it lists {name} {run.name} as done with other options ({key}: "
        f"{there} there vs {now} now){more}; its runs and this sweep's would not be one "
        "protocol: drop --done-in to run the grid again, or run it with the table's options"
    )
