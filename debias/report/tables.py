"""A report's per-run tables: what a reader needs to recompute it without the run folders.

:func:`write_tables` writes, beside ``report.md``:

* ``runs.csv``: one row per run (done or not): ``sweep, run, status, error, source`` (the sweep
  folder the report read), the run's flattened options (``data_seed``, ``seed``, ``rho``, ...),
  its selection (``selection_rule``, ``selection_description``, ``selected_epoch``,
  ``selected_stage``), ``supervision``, ``wall_time_seconds``, ``device``, the machine and
  versions it recorded (``versions.platform``, ``versions.cpu``, ``versions.cpu_flags``,
  ``versions.torch``, ...; empty for runs written before they were recorded), one column
  ``<split>/<metric>`` per number of ``metrics.json`` (fractions, as written), one column
  ``representation:<split>/<metric>`` per number of the representation section (the DFR head on
  each test split, ``representation:audit/<metric>`` the bias audit) and the DFR tuning's
  ``dfr.C``, ``dfr.C_tied`` (the Cs that tied with it) and ``dfr.refits``.
* ``groups.csv``: one row per (run, split, target, bias) group of the splits the report reads
  group counts of (``n``, ``correct``, names), for the worst-group table, the heatmap and a
  one-seed condition's bootstrap interval.
* ``tables.json``: the report's sources, generation time and debias version.

:func:`load_tables` reads them back into the :class:`~debias.report.sweep_data.SweepData` the
report is rendered from, so ``report.md`` is rebuilt from the tables alone
(:func:`debias.report.report.report_from_tables`; the figures are not redrawn: they need the
runs' histories).
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd

from debias import results
from debias._types import RunStatus
from debias.done_table import REP, RUNS_CSV, option_columns

__all__ = [
    "GROUPS_CSV", "META_JSON", "RUNS_CSV", "Merged", "TableRun", "load_tables", "merge_prior",
    "read_prior", "runs_table",
]  # fmt: skip

GROUPS_CSV = "groups.csv"
META_JSON = "tables.json"
_RESULT = [c for c in results.RESULT_COLUMNS if c not in ("split", "metric", "value")]
_GROUP_COLUMNS = [
    "sweep", "run", "split", "y", "b", "y_name", "b_name", "aligned", "n", "correct", "accuracy"
]  # fmt: skip


class TableRun(NamedTuple):
    """A run that did not finish, as ``runs.csv`` keeps it (what the report lists)."""

    run: str
    status: str
    error: str


def _sources(sweep_dir: Any) -> list[str]:
    many = isinstance(sweep_dir, (list, tuple))
    return [Path(s).as_posix() for s in (sweep_dir if many else [sweep_dir])]


def _run_extras(sweep_dir: Any) -> pd.DataFrame:
    """Per run: status, error, source folder, machine and versions, the DFR tuning record."""
    rows = []
    paths = sweep_dir if isinstance(sweep_dir, (list, tuple)) else [sweep_dir]
    for src in paths:
        for r in results.find_runs(src):
            m = {} if r.problem else (r.metrics or {})  # a damaged run has no numbers to read
            dfr = (m.get("representation") or {}).get("dfr") or {}
            tied = dfr.get("C_tied")
            if tied is None:  # a run written before the record named its ties
                tuning = dfr.get("tuning_worst_group_accuracy") or {}
                best = max((v for v in tuning.values() if v is not None), default=math.nan)
                tied = [c for c, v in tuning.items() if v is not None and v == best]
            rows.append(
                {"sweep": r.sweep, "run": r.run, "status": r.status, "error": r.error,
                 "source": Path(src).as_posix()}
                | {f"versions.{k}": v for k, v in (m.get("versions") or {}).items()}
                | {"dfr.C": dfr.get("C"), "dfr.C_tied": " ".join(tied) if len(tied) > 1 else "",
                   "dfr.refits": dfr.get("refits")}
            )  # fmt: skip
    return pd.DataFrame(rows)


def _wide(frame: pd.DataFrame, prefix: str = "") -> pd.DataFrame:
    """``split, metric, value`` rows -> one ``<prefix><split>/<metric>`` column per number."""
    if frame.empty:
        return pd.DataFrame(columns=["sweep", "run"])
    col = prefix + frame["split"].astype(str) + "/" + frame["metric"].astype(str)
    wide = frame.assign(_col=col).pivot_table(
        index=["sweep", "run"],
        columns="_col",
        values="value",
        aggfunc="first",
        sort=False,
        dropna=False,
    )
    return wide[list(dict.fromkeys(col))].reset_index()


def runs_table(df: pd.DataFrame, rep: pd.DataFrame | None, sweep_dir: Any) -> pd.DataFrame:
    """``runs.csv`` (module docstring) from :func:`debias.results.load` rows ``df``, the
    representation rows ``rep`` (:func:`~debias.report.representation.
    load_representation_results`, or None) and the sweep folder(s) for what ``df`` lacks."""
    extras = _run_extras(sweep_dir)
    config = [c for c in df.columns if c not in ("status", *results.RESULT_COLUMNS)]
    per_run = df.drop_duplicates(["sweep", "run"])[[*config, *_RESULT]]
    table = extras[["sweep", "run", "status", "error", "source"]].merge(
        per_run, on=["sweep", "run"], how="left"
    )
    table = table.merge(_wide(df), on=["sweep", "run"], how="left")
    if rep is not None and len(rep):
        table = table.merge(_wide(rep, REP), on=["sweep", "run"], how="left")
    rest = extras.drop(columns=["status", "error", "source"])
    table = table.merge(rest, on=["sweep", "run"], how="left")
    # A run not finished has empty options and numbers: keep integers written as integers.
    for c in per_run.columns:
        if pd.api.types.is_integer_dtype(per_run[c]) and not pd.api.types.is_bool_dtype(per_run[c]):
            table[c] = table[c].astype("Int64")
    return table


def group_rows(groups: pd.DataFrame, splits: Sequence[str]) -> pd.DataFrame:
    """``groups.csv``: the group counts of ``splits`` (those the report reads)."""
    keep = groups[groups["split"].isin(list(splits))]
    return keep[[c for c in _GROUP_COLUMNS if c in keep]]


def write_tables(
    out: Path, table: pd.DataFrame, groups: pd.DataFrame, meta: dict[str, Any]
) -> dict[str, Path]:
    """Write ``runs.csv``, ``groups.csv`` and ``tables.json`` into ``out``; their paths."""
    paths = {"runs": out / RUNS_CSV, "groups": out / GROUPS_CSV, "tables": out / META_JSON}
    table.to_csv(paths["runs"], index=False)
    groups.to_csv(paths["groups"], index=False)
    paths["tables"].write_text(json.dumps(meta, indent=1) + "\n")
    return paths


def _long(table: pd.DataFrame, columns: list[str], front: list[str], prefix: str = ""):
    """The inverse of :func:`_wide`: ``front`` columns, then ``split, metric, value``."""
    long = table[front + columns].melt(
        id_vars=front, value_vars=columns, var_name="_col", value_name="value"
    )
    long = long.dropna(subset=["value"])
    split_metric = long["_col"].str.slice(len(prefix)).str.split("/", n=1, expand=True)
    long = long.assign(split=split_metric[0], metric=split_metric[1]).drop(columns="_col")
    # run by run, in runs.csv's column order (as debias.results.load reads metrics.json)
    order = {c: i for i, c in enumerate(columns)}
    long["_o"] = (prefix + long["split"] + "/" + long["metric"]).map(order)
    long["_r"] = long.index % len(table) if len(table) else 0
    long = long.sort_values(["_r", "_o"], kind="stable").drop(columns=["_o", "_r"])
    return long[front + ["split", "metric", "value"]].reset_index(drop=True)


def _typed(rows: pd.DataFrame) -> pd.DataFrame:
    """``rows`` (read as text) with the column types ``pandas.read_csv`` infers from them."""
    typed = pd.read_csv(io.StringIO(rows.to_csv(index=False)), keep_default_na=False,
                        na_values=[""])  # fmt: skip
    typed["error"] = ["" if pd.isna(e) else str(e) for e in typed["error"]]
    return typed


def load_tables(folder: str | Path) -> dict[str, Any]:
    """``runs.csv``, ``groups.csv`` and ``tables.json`` of a report folder as the frames the
    report is made of: ``df`` (:func:`debias.results.load` rows), ``representation`` (rows
    as :func:`~debias.report.representation.load_representation_results` gives them, empty
    when no run has the section), ``groups`` (with each run's options), ``not_done``
    (:class:`TableRun`), ``source`` and ``meta``."""
    folder = Path(folder)
    if not (folder / RUNS_CSV).is_file():
        raise FileNotFoundError(f"{folder / RUNS_CSV} does not exist (written by debias report)")
    meta = json.loads((folder / META_JSON).read_text())
    text = pd.read_csv(folder / RUNS_CSV, dtype=str, keep_default_na=False)
    # Types as debias.results.load infers them from the finished runs only (a failed run's
    # empty seed would otherwise turn every seed into a float).
    done = _typed(text[text["status"] == RunStatus.DONE])
    table = _typed(text)
    extra = {"error", "source"} | {c for c in table if c.startswith(("versions.", "dfr."))}
    numbers = [c for c in table if "/" in c and not c.startswith(REP) and c not in extra]
    rep_cols = [c for c in table if c.startswith(REP)]
    options = set(option_columns(table.columns))
    config = [c for c in table if c in ("sweep", "run", "status") or c in options]
    df = _long(done, numbers, config)
    df = df.merge(done[["sweep", "run", *_RESULT]], on=["sweep", "run"], how="left")
    rep = pd.DataFrame()
    if rep_cols and done[rep_cols].notna().any().any():
        have = done[done[rep_cols].notna().any(axis=1)].reset_index(drop=True)
        rep = _long(have, rep_cols, config, REP)
        rep = rep.merge(done[["sweep", "run", *_RESULT]], on=["sweep", "run"], how="left")
    groups = pd.read_csv(folder / GROUPS_CSV, keep_default_na=False, na_values=[""])
    for c in ("y_name", "b_name"):
        if c in groups:
            groups[c] = groups[c].astype(str)
    groups = done[config].merge(groups, on=["sweep", "run"], how="inner")
    not_done = [
        TableRun(r.run, r.status, r.error)
        for r in table[table["status"] != RunStatus.DONE].itertuples()
    ]
    return {
        "df": df, "representation": rep, "groups": groups, "not_done": not_done,
        "source": meta["source"][0] if len(meta["source"]) == 1 else meta["source"],
        "meta": meta,
    }  # fmt: skip


# -- a report over several sessions (--prior) ---------------------------------------------------
class Prior(NamedTuple):
    """A committed report's tables as text (read before anything is written: the report being
    made may replace them)."""

    folder: Path
    runs: pd.DataFrame
    groups: pd.DataFrame
    meta: dict[str, Any]


class Merged(NamedTuple):
    """The rows of this session's runs and the prior table's (text), and what was taken."""

    runs: pd.DataFrame
    groups: pd.DataFrame
    record: dict[str, Any]  # tables.json's "prior": the table, counts, its own tables.json


def read_prior(folder: str | Path) -> Prior:
    """A report folder's ``runs.csv``, ``groups.csv`` and ``tables.json``, as text."""
    from debias.done_table import read_runs, table_file

    folder = table_file(folder).parent
    missing = [n for n in (GROUPS_CSV, META_JSON) if not (folder / n).is_file()]
    if missing:
        raise FileNotFoundError(f"--prior {folder}: no {', '.join(missing)} beside {RUNS_CSV}")
    groups = pd.read_csv(folder / GROUPS_CSV, dtype=str, keep_default_na=False)
    meta = json.loads((folder / META_JSON).read_text())
    return Prior(folder, read_runs(folder), groups, meta)


def as_text(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` as its CSV holds it (every cell text, empty ``""``)."""
    if frame.columns.empty:  # no rows of any run (e.g. no group counts)
        return pd.DataFrame(columns=["sweep", "run"], dtype=str)
    return pd.read_csv(io.StringIO(frame.to_csv(index=False)), dtype=str, keep_default_na=False)


def _keys(frame: pd.DataFrame) -> list[tuple[str, str]]:
    return list(zip(frame["sweep"], frame["run"]))


# How to report a session's runs without an earlier table (a new protocol's first slice).
_ALONE = "debias report without --prior; python docs/build_results.py --no-prior"


def check_prior(
    prior: Prior, options: dict[tuple[str, str], dict[str, Any]], grids: dict[str, set[str]]
) -> None:
    """A ValueError (one line) when a run the prior table lists as done has other options
    than this session's run at the same path (``options``: the local runs' flattened options,
    :func:`debias.done_table.run_options`, of those that recorded them), or is not in its
    sweep's grid (``grids``: the run names of each local sweep whose grid is known)."""
    from debias.done_table import done_runs, options_diff, outside_grid

    for sweep, names in grids.items():
        stray = outside_grid(prior.runs, sweep, names)
        if stray:
            raise ValueError(f"--prior {prior.folder}: {stray}; report this session's runs "
                             f"without it ({_ALONE}), or remove those rows from the table")  # fmt: skip
    for key, row in done_runs(prior.runs).items():
        if key not in options:
            continue
        diff = options_diff(row, prior.runs.columns, options[key])
        if diff:
            option, (there, here) = next(iter(diff.items()))
            raise ValueError(
                f"--prior {prior.folder}: run {key[1]} of sweep {key[0]} has other options "
                f"there than here ({option}: {there} there vs {here} here); a changed protocol "
                f"does not mix with that table: report this session's runs without it ({_ALONE})"
            )


def merge_prior(local: pd.DataFrame, local_groups: pd.DataFrame, prior: Prior) -> Merged:
    """This session's rows (``local``: :func:`runs_table`, ``local_groups``: :func:`group_rows`)
    and the prior table's rows of the runs not finished here, keyed by ``(sweep, run)``: a run
    finished in both is this session's; a run not finished here but done there is the table's.
    Order: per sweep (the table's first), the table's runs this session has no row of, then
    this session's in its order (a sweep cut along rho, its grid's outer key, keeps the grid's
    order)."""
    local = as_text(local)
    mine, theirs = _keys(local), _keys(prior.runs)
    done_here = set(_keys(local[local["status"] == RunStatus.DONE]))
    done_there = set(_keys(prior.runs[prior.runs["status"] == RunStatus.DONE]))
    take = {k for k in theirs if k not in mine or (k in done_there and k not in done_here)}
    at = {k: i for i, k in enumerate(theirs)}
    picks = []  # (frame, row) in the merged order
    for sweep in dict.fromkeys([*prior.runs["sweep"], *local["sweep"]]):
        picks += [(prior.runs, i) for i, k in enumerate(theirs) if k[0] == sweep and k not in mine]
        picks += [
            (prior.runs, at[k]) if k in take else (local, i)
            for i, k in enumerate(mine) if k[0] == sweep
        ]  # fmt: skip
    columns = list(dict.fromkeys([*local.columns, *prior.runs.columns]))
    runs = pd.concat([f.iloc[[i]] for f, i in picks], ignore_index=True)
    runs = runs.reindex(columns=columns).fillna("")
    order = {k: i for i, k in enumerate(_keys(runs))}
    groups = as_text(local_groups)
    groups = pd.concat(
        [groups[[k not in take for k in _keys(groups)]],
         prior.groups[[k in take for k in _keys(prior.groups)]]], ignore_index=True,
    ).fillna("")  # fmt: skip
    rank = [order.get(k, len(order)) for k in _keys(groups)]
    groups = groups.iloc[sorted(range(len(groups)), key=rank.__getitem__)]
    record = {
        "table": (prior.folder / RUNS_CSV).as_posix(),
        "runs": len(take & done_there), "finished_in_both": len(done_here & done_there),
        "meta": prior.meta,
    }  # fmt: skip
    return Merged(runs, groups.reset_index(drop=True), record)
