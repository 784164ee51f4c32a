"""The sweep report: :func:`make_report` writes ``report.md``, ``summary.csv``, ``paired.csv``
and the figures for a sweep (``debias report SWEEP_DIR --out DIR``).

``runs.csv`` (one row per run), ``groups.csv`` and ``tables.json`` beside it are the report's
per-run tables (:mod:`debias.report.tables`): :func:`report_from_tables` rebuilds ``report.md``
and the CSVs from them alone, without the run folders.

The jobs live in their own modules: the metric vocabulary (:mod:`debias.report.vocabulary`),
the summary over seeds (:mod:`debias.report.summary`), the paired comparisons
(:mod:`debias.report.compare`), the representation section (:mod:`debias.report.representation`),
loading all of it once (:mod:`debias.report.sweep_data`), the Markdown
(:mod:`debias.report.markdown`) and the figures (:mod:`debias.report.figures`). This module
puts them together and keeps the names it used to define importable from here.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import debias
from debias import results
from debias.report.compare import PAIRED_BASELINE, PAIRED_CLAIMS, paired_tables
from debias.report.figures import make_figures
from debias.report.markdown import (
    PUBLISHED_COLUMN,
    _generated_at,
    format_ci,
    render_markdown,
    summary_cell,
)
from debias.report.summary import (
    REBIAS_VANILLA,
    SUPERVISION_MARK,
    SummaryInfo,
    mean_ci,
    summarize,
    supervision_mark,
    table_metrics,
    worst_groups,
)
from debias.report.sweep_data import SweepData, load_sweep_data, sweep_data_from_tables
from debias.report.tables import (
    check_prior,
    group_rows,
    merge_prior,
    read_prior,
    runs_table,
    write_tables,
)
from debias.report.vocabulary import (
    DEFAULT_TABLE_METRICS,
    DERIVED_METRICS,
    METRIC_LABELS,
    PAIRED_METRICS,
    POINTS,
    unit,
)
from debias.train.runfolder import (
    REPORT_FILES,
    RunFolderError,
    check_kind,
    check_out_path,
    claim_folder,
    foreign_files,
    is_run_folder,
)

__all__ = [
    "DEFAULT_TABLE_METRICS",
    "DERIVED_METRICS",
    "METRIC_LABELS",
    "PAIRED_BASELINE",
    "PAIRED_CLAIMS",
    "PAIRED_METRICS",
    "POINTS",
    "PUBLISHED_COLUMN",
    "REBIAS_VANILLA",
    "SUPERVISION_MARK",
    "SummaryInfo",
    "SweepData",
    "format_ci",
    "load_sweep_data",
    "make_figures",
    "make_report",
    "mean_ci",
    "paired_tables",
    "report_from_tables",
    "summarize",
    "summary_cell",
    "supervision_mark",
    "table_metrics",
    "unit",
    "worst_groups",
]


def make_report(
    sweep_dir: str | Path | Sequence[str | Path],
    out_dir: str | Path,
    *,
    notes: str | Path | None = None,
    prior: str | Path | None = None,
    log: Callable[[str], Any] = print,
) -> dict[str, Path]:
    """Write ``report.md``, ``summary.csv``, ``paired.csv`` and the figures for a sweep; returns
    their paths.

    Keys of the returned dict: ``report``, ``runs``, ``groups``, ``tables`` (the per-run
    tables, :mod:`debias.report.tables`), ``summary``, ``paired``, ``accuracy_vs_bias``,
    ``group_heatmap`` and ``convergence`` (the last two only when group records / histories
    exist). ``notes``: a Markdown file (or text) appended after the comparisons, for the
    reader-facing conclusions a person writes from the numbers.

    ``prior``: a report folder of an earlier session (its ``runs.csv``, ``groups.csv``,
    ``tables.json``; it may be ``out_dir`` itself): the report is made of this session's runs
    and the table's runs not finished here (:func:`~debias.report.tables.merge_prior`; a run
    finished in both is this session's, how many is logged and kept in ``tables.json``), every
    number recomputed from the merged tables; the convergence figure draws this session's runs
    only (histories are not in the tables). A run there with other options than the run at the
    same path here, or one its sweep's grid (``sweep.json``) no longer has, is refused before
    anything is written (a one-line ValueError naming it): docs/SWEEPS.md, "Across sessions".

    Example:
        >>> make_report(["runs/sweeps/biased_mnist_cpu"], "docs/results/biased_mnist_cpu",
        ...             prior="docs/results/biased_mnist_cpu")  # doctest: +SKIP
    """
    out = check_out_path(out_dir, "report folder")  # before Path(): Path("") is "."
    _check_report_folder(out)
    text = "" if notes is None else read_notes(notes)
    before = None if prior is None else read_prior(prior)  # before out (maybe prior) is written
    if before is not None:
        check_prior(before, _recorded_options(sweep_dir), _grids(sweep_dir))
    data = load_sweep_data(sweep_dir)
    data.generated, data.version = _generated_at(), debias.__version__
    claim_folder(out, names=REPORT_FILES, kind="report", what="report folder")
    table, groups, meta = _tables(data, sweep_dir)
    if before is None:
        paths = write_tables(out, table, groups, meta)
    else:
        merged = merge_prior(table, groups, before)
        paths = write_tables(out, merged.runs, merged.groups, meta | {"prior": merged.record})
        data = _merged_data(out, data.history)
        log(f"report: {_prior_counts(merged.record)}")
    paths |= _write_csvs(data, out)
    for name in make_figures(data, out):
        paths[name] = out / f"{name}.png"
    paths["report"] = out / "report.md"
    paths["report"].write_text(render_markdown(data, paths, out, text))
    return paths


def report_from_tables(folder: str | Path, *, notes: str | Path | None = None) -> dict[str, Path]:
    """Rebuild ``report.md`` and its CSVs in ``folder`` from the per-run tables :func:`make_report`
    wrote there (``runs.csv``, ``groups.csv``, ``tables.json``), without the run folders: the
    numbers, intervals and tests are recomputed from ``runs.csv``; the figures already there are
    linked, not redrawn (they need the runs' histories). Returns the paths written.

    Example:
        >>> report_from_tables("docs/results/biased_mnist_cpu",
        ...                    notes="docs/results_notes/biased_mnist_cpu.md")  # doctest: +SKIP
    """
    out = Path(folder)
    data = sweep_data_from_tables(out)
    paths = _write_csvs(data, out)
    paths |= {p.stem: p for p in sorted(out.glob("*.png"))}
    paths["report"] = out / "report.md"
    paths["report"].write_text(render_markdown(data, paths, out, _notes_text(notes)))
    return paths


def _notes_text(notes: str | Path | None) -> str:
    if notes is None:
        return ""
    return Path(notes).read_text() if Path(str(notes)).is_file() else str(notes)


def _recorded_options(sweep_dir: Any) -> dict[tuple[str, str], dict[str, Any]]:
    """``{(sweep, run): flattened options}`` of the local runs that recorded their options
    (``metrics.json`` or ``run_config.json``; a run not started has only the manifest's)."""
    from debias.done_table import run_options
    from debias.train.runfolder import METRICS, RUN_CONFIG

    return {
        (r.sweep, r.run): run_options(r.config)
        for r in results.find_runs(sweep_dir)
        if (r.path / METRICS).is_file() or (r.path / RUN_CONFIG).is_file()
    }


def _grids(sweep_dir: Any) -> dict[str, set[str]]:
    """``{sweep name: its grid's run names}`` of the local sweep folders whose ``sweep.json``
    records the sweep's spec (a grid sweep written by ``debias sweep``)."""
    import json

    from debias.sweep.config import SweepSpec

    grids = {}
    for folder in _as_list(sweep_dir):
        try:
            manifest = json.loads((Path(folder) / "sweep.json").read_text())
            spec = SweepSpec.from_dict(manifest["spec"], source=manifest.get("source"))
            if spec.search is None:
                grids[spec.name] = {r.name for r in spec.expand()}
        except (OSError, ValueError, KeyError, TypeError):  # no spec: a run folder, an old sweep
            continue
    return grids


def _merged_data(out: Path, history: Any) -> SweepData:
    """The report's data from the merged tables just written in ``out``, with this session's
    histories (the convergence figure's)."""
    data = sweep_data_from_tables(out, history=history)
    if data.history is not None:  # an option only the table's runs vary: unset here
        missing = [k for k in data.info.keys if k not in data.history]
        data.history = data.history.assign(**dict.fromkeys(missing))
    return data


def _prior_counts(record: dict[str, Any]) -> str:
    """What a report took from the prior table, in words."""
    return (
        f"{record['runs']} finished run(s) taken from {record['table']}; "
        f"{record['finished_in_both']} finished both there and here (this session's kept)"
    )


def _tables(data: SweepData, sweep_dir: Any) -> tuple[Any, Any, dict[str, Any]]:
    """``runs.csv``, ``groups.csv`` and ``tables.json``'s rows (:mod:`debias.report.tables`)."""
    rep = data.representation.frame if data.representation is not None else None
    table = runs_table(data.df, rep, sweep_dir)
    splits = {"test"} | {s.split("/")[0] for v in data.info.sources.values() for s in v}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the runs not finished are in runs.csv's status
        groups = group_rows(results.load_groups(sweep_dir), sorted(splits))
    meta = {
        "source": [Path(s).as_posix() for s in _as_list(sweep_dir)],
        "generated": data.generated,
        "debias": data.version,
    }
    return table, groups, meta


def _as_list(sweep_dir: Any) -> list:
    return list(sweep_dir) if isinstance(sweep_dir, (list, tuple)) else [sweep_dir]


def _write_csvs(data: SweepData, out: Path) -> dict[str, Path]:
    """``summary.csv``, ``paired.csv`` and the representation's CSVs."""
    paths: dict[str, Path] = {"summary": out / "summary.csv"}
    data.summary[[c for c in data.summary.columns if c != "label"]].to_csv(
        paths["summary"], index=False
    )
    if len(data.paired):
        paths["paired"] = out / "paired.csv"
        data.paired.to_csv(paths["paired"], index=False)
    if data.representation is not None:
        rep = data.representation
        paths["representation"] = out / "representation.csv"
        rep.summary[[c for c in rep.summary.columns if c != "label"]].to_csv(
            paths["representation"], index=False
        )
        if len(rep.paired):
            paths["representation_paired"] = out / "representation_paired.csv"
            rep.paired.to_csv(paths["representation_paired"], index=False)
    return paths


def read_notes(notes: str | Path) -> str:
    """The text of ``--notes``: a file's contents. A Path, or a one-line string ending in
    ``.md``/``.txt`` or holding a ``/``, names a file and must exist (a typo is an error, not
    the path pasted into the report); other text is used as it is (the Python API)."""
    looks_like_path = isinstance(notes, Path) or (
        "\n" not in notes and (notes.endswith((".md", ".txt", ".markdown")) or "/" in notes)
    )
    if looks_like_path:
        path = Path(notes)
        if not path.is_file():
            raise FileNotFoundError(f"--notes {notes}: no such file; expected a Markdown file")
        try:
            return path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise ValueError(f"--notes {notes}: not UTF-8 text; save it as UTF-8") from None
    return str(notes)


def _check_report_folder(out: Path) -> None:
    """A report never goes into a training run's folder (its files would sit beside the
    checkpoint, outlive a ``--force`` retrain that replaces the run, and describe another model),
    nor into a sweep or audit folder, nor over a user's own ``report.md`` & co."""
    check_out_path(out, "report folder")
    if is_run_folder(out):
        raise RunFolderError(
            f"report folder {out} is a training run's folder; report.md, summary.csv and the "
            "figures would mix with the run's files and outlive a --force retrain. Use a folder "
            f"of its own, e.g. {out / 'report'} (the default for `debias report {out}`)"
        )
    check_kind(out, "report", "report folder")
    foreign = foreign_files(out, REPORT_FILES)
    if foreign:
        raise RunFolderError(
            f"report folder {out} holds {', '.join(foreign)} that debias did not write; they are "
            "never overwritten. Use another --out, or move those files away."
        )
