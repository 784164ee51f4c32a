"""Build docs/RESULTS.md from the CPU sweeps: one generated report per sweep, one page.

    python docs/build_results.py [--runs runs/sweeps] [--no-prior]

For each section in SECTIONS whose run folders all exist, ``debias report`` writes
``docs/results/<name>/`` (report.md, summary.csv, paired.csv, figures) with the hand-written
notes ``docs/results_notes/<name>.md`` (what the numbers show) appended. A section may read
several sweeps in one report (the Biased-MNIST grid and its ConTeX-weight companion); a random
search sweep gets the search report (every selection rule side by side, :mod:`debias.report.search`). The page is
``docs/results_notes/intro.md``, then per sweep ``docs/results_notes/<sweep>.intro.md`` (what
was run, how long it took, how to reproduce) and the generated report with its headings moved
one level down and its figure links pointed into ``docs/results/<sweep>/``. A sweep whose runs
are absent (any of a section's folders) is rebuilt from its committed tables instead (no run
folders needed): from ``runs.csv`` (one row per run, written by ``debias report``) where the
report has one, else from the committed ``report.md`` with its paired tables regenerated from
the committed paired CSVs and its notes from ``docs/results_notes`` (:func:`from_tables`). So
the page is rebuilt on a machine that ran only some sweeps, or none, and never loses a
section's companion sweep; ``tests/test_results_page.py`` rebuilds it from a copy of the
committed files and checks it equals ``docs/RESULTS.md``. A section whose committed
``runs.csv`` lists finished runs that the local folders lack (a sweep finished over several
sessions, docs/SWEEPS.md "Across sessions") is made from the local runs joined with the
table's (:func:`prior_for`), unless ``--no-prior``.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import NamedTuple

from debias.report import make_report

DOCS = Path(__file__).resolve().parent
NOTES = DOCS / "results_notes"


class Section(NamedTuple):
    """One section of the page: ``docs/results/<name>/``, built from ``runs/sweeps/<sweeps...>``."""

    name: str
    title: str
    sweeps: tuple[str, ...]
    search: bool = False  # a random-search sweep: the search report, not the grid report


# The page's order.
SECTIONS = (
    Section(
        "biased_mnist_cpu",
        "Biased-MNIST (CPU protocol)",
        ("biased_mnist_cpu", "biased_mnist_cpu_contex_weight", "biased_mnist_cpu_pairs"),
    ),
    # Issue 33's comparison; its ConTeX 0.7 companion joins when it has run.
    Section(
        "biased_mnist_contrastive_cpu",
        "Biased-MNIST: the contrastive losses under their papers' recipes (CPU-sized)",
        ("biased_mnist_contrastive_cpu",),
    ),
    Section("utkface_cpu", "UTKFace (CPU protocol)", ("utkface_cpu",)),
    Section("celeba_cpu", "CelebA (CPU protocol)", ("celeba_cpu",)),
    Section(
        "biased_mnist_cpu_search",
        "Biased-MNIST at rho .997: hyper-parameter search and selection rules",
        ("biased_mnist_cpu_search",),
        search=True,
    ),
)


def build_report(sec: Section, runs: Path, use_prior: bool = True) -> Path | None:
    """Regenerate ``docs/results/<name>/report.md``: from the runs if all the section's sweeps
    are in ``runs``, else from the committed tables (:func:`from_tables`). Where the committed
    ``runs.csv`` lists finished runs that ``runs`` lacks (a sweep finished over several
    sessions, some of its sweeps or runs made on another machine), the report joins them to
    the runs here (``make_report(..., prior=)``, :func:`prior_for`; not with ``use_prior``
    false: a new protocol's first slice)."""
    out = DOCS / "results" / sec.name
    folders = [runs / s for s in sec.sweeps]
    present = [f for f in folders if (f / "sweep.json").is_file()]
    notes = NOTES / f"{sec.name}.md"
    notes = notes if notes.is_file() else None
    prior = prior_for(sec, out, present) if use_prior and not sec.search else None
    if present and (len(present) == len(folders) or prior is not None):
        if sec.search:
            from debias.report.search import make_search_report

            _with_notes(make_search_report(folders[0], out)["report"], notes)
        else:
            source = present if len(present) > 1 else present[0]
            make_report(source, out, notes=notes, **({"prior": prior} if prior else {}))
    else:
        if any((f / "sweep.json").is_file() for f in folders):
            print(f"{sec.name}: not all of {', '.join(sec.sweeps)} in {runs}; rebuilt from the "
                  "committed tables")  # fmt: skip
        from_tables(sec, out, notes)
    return out / "report.md" if (out / "report.md").is_file() else None


def prior_for(sec: Section, out: Path, present: list[Path]) -> Path | None:
    """``out`` when its committed ``runs.csv`` lists finished runs that the sweep folders
    ``present`` do not hold finished, else None (the runs here cover the table)."""
    from debias import results
    from debias.done_table import RUNS_CSV, done_runs, read_runs

    if not present or not (out / RUNS_CSV).is_file():
        return None
    try:
        here = {(r.sweep, r.run) for r in results.find_runs(present) if r.status == "done"}
    except FileNotFoundError:  # sweep folders with no run (every run done in the table)
        here = set()
    missing = set(done_runs(read_runs(out))) - here
    if not missing or not here:  # nothing missing, or nothing here to add to the table
        return None
    print(f"{sec.name}: {len(missing)} finished run(s) of {out / RUNS_CSV} are not in "
          f"{', '.join(p.as_posix() for p in present)}; the report joins them (prior=)")  # fmt: skip
    return out


def from_tables(sec: Section, out: Path, notes: Path | None) -> None:
    """Rebuild a committed report without its runs: from ``runs.csv`` (every number, interval
    and test recomputed, :func:`debias.report.report.report_from_tables`) where the report has
    one; else (reports written before ``runs.csv`` existed, and search reports) the committed
    ``report.md`` with its paired tables regenerated from the committed paired CSVs (the Holm
    column added where missing) and its notes from ``docs/results_notes/<name>.md``."""
    from debias.report.report import report_from_tables
    from debias.report.tables import RUNS_CSV

    if not sec.search and (out / RUNS_CSV).is_file():
        report_from_tables(out, notes=notes)
    elif (out / "report.md").is_file():
        report = out / "report.md"
        text = _refreshed_search(out, report.read_text()) if sec.search else _refreshed(
            out, report.read_text())  # fmt: skip
        report.write_text(_with_current_notes(text, notes, sec.search))


def _paired_csv(path: Path):
    """A committed paired CSV as the report computed it (``variant`` "" not NaN), its Holm
    column (per ``rule`` for a search report) recomputed from its p-values and written back,
    so the CSV says what the page says."""
    import pandas as pd

    from debias.report.compare import with_holm

    paired = pd.read_csv(path).drop(columns="p_holm", errors="ignore")
    paired["variant"] = paired["variant"].astype(object).where(paired["variant"].notna(), "")
    if "rule" in paired:
        paired = pd.concat([with_holm(g) for _, g in paired.groupby("rule", sort=False)])
        paired = paired.loc[sorted(paired.index)]
    else:
        paired = with_holm(paired)
    paired.to_csv(path, index=False)
    return paired


def _replace_block(text: str, title: str, lines: list[str]) -> tuple[str, int]:
    """``text`` with the block from the line ``title`` to the next ``## `` heading replaced
    by ``lines`` (joined as the report joins them); and where the new block ends."""
    start = text.find(title + "\n")
    if start < 0:
        raise ValueError(f"no {title!r} in the committed report: regenerate it from the runs")
    end = text.find("\n## ", start + len(title)) + 1 or len(text)
    block = "\n".join(lines) + "\n"
    return text[:start] + block + text[end:], start + len(block)


def _level(out: Path) -> str | None:
    """The bias level the committed summary varies, as the report's paired tables sort by."""
    import pandas as pd

    from debias.data.registry import DATASETS

    if not (out / "summary.csv").is_file():
        return None
    summary = pd.read_csv(out / "summary.csv")
    keys = dict.fromkeys(k for spec in DATASETS.values() for k in spec.level_keys)
    numeric = [k for k in keys if k in summary and pd.api.types.is_numeric_dtype(summary[k])]
    return next((k for k in numeric if summary[k].nunique() > 1), None)


def _refreshed(out: Path, text: str) -> str:
    from debias.report.markdown import paired_markdown

    level = _level(out)
    blocks = (
        ("paired.csv", "## Paired comparisons"),
        ("representation_paired.csv", "### Paired comparisons on the representation (DFR head)"),
    )
    for name, title in blocks:
        if (out / name).is_file():
            text = _replace_block(text, title, paired_markdown(_paired_csv(out / name), level,
                                                                title))[0]  # fmt: skip
    return text


def _refreshed_search(out: Path, text: str) -> str:
    from debias.report.markdown import paired_markdown

    if not (out / "search_paired.csv").is_file():
        return text
    paired = _paired_csv(out / "search_paired.csv")
    for rule, mine in paired.groupby("rule", sort=False):
        title = f"## Paired comparisons of the re-runs under `{rule}`"
        lines = [*paired_markdown(mine.drop(columns="rule"), None, title), ""]
        text = _replace_block(text, title, lines)[0]
    return text


def _with_current_notes(text: str, notes: Path | None, search: bool) -> str:
    """The committed report's notes replaced by the notes file's (they sit before
    ``## Figures`` in a grid report, at the end of a search report)."""
    if notes is None:
        return text
    body = notes.read_text().strip()
    head = body.splitlines()[0]
    start = text.find(head + "\n")
    if start < 0:
        raise ValueError(f"{notes}: its first line {head!r} is not in the committed report")
    if search:
        return text[:start] + body + "\n"
    end = text.find("\n## Figures\n", start) + 1 or len(text)
    return text[:start] + body + "\n\n" + text[end:]


def _with_notes(report: Path, notes: Path | None) -> None:
    """Append the hand-written notes to a search report (the grid report takes ``notes=``)."""
    if notes is not None:
        report.write_text(report.read_text().rstrip() + "\n\n" + notes.read_text().strip() + "\n")


def section(name: str, title: str, report: Path) -> str:
    """The report as a page section: headings one level down, links relative to docs/."""
    body = report.read_text()
    body = re.sub(r"^(#+) ", lambda m: "#" + m.group(1) + " ", body, flags=re.M)
    body = re.sub(r"^## (Sweep|Search) report: .*\n", "", body, count=1, flags=re.M)
    body = re.sub(r"\]\((?!https?:|/)([^)]+\.png)\)", rf"](results/{name}/\1)", body)
    intro = NOTES / f"{name}.intro.md"
    head = intro.read_text().strip() + "\n\n" if intro.is_file() else ""
    return f"## {title}\n\n{head}{body.strip()}\n"


def not_run(sec: Section) -> str:
    """The page's section for a sweep that has neither runs here nor a committed report."""
    folders = ", ".join(f"`runs/sweeps/{s}`" for s in sec.sweeps)
    return f"## {sec.title}\n\nNot run yet: no {folders} and no report.\n"


def readme_table(name: str = "biased_mnist_cpu", metric: str = "unbiased") -> str:
    """The README's table: ``metric`` per method and bias level from a section's summary.csv."""
    import pandas as pd

    from debias._markdown import markdown_table
    from debias.report import summary_cell

    s = pd.read_csv(DOCS / "results" / name / "summary.csv")
    s = s[s["metric"] == metric]
    levels = sorted(s["rho"].unique(), reverse=True)
    rows = []
    for method, g in s.groupby("method", sort=False):
        cells = []
        for lv in levels:
            r = g[g["rho"] == lv]
            if r.empty:
                cells.append("–")
                continue
            # the page's cell (interval clipped to [0, 100]), so README and page agree
            cells.append(summary_cell(r.iloc[0]))
        rows.append([method, g["supervision"].iloc[0], *cells])
    return markdown_table(["method", "supervision", *(f"rho {lv:g}" for lv in levels)], rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, default=Path("runs/sweeps"), help="sweep folders")
    parser.add_argument(
        "--readme-table", action="store_true", help="print the README's Biased-MNIST table only"
    )
    parser.add_argument(
        "--no-prior",
        action="store_true",
        help="make a section whose runs are here from them alone, not joined with the runs its "
        "committed runs.csv holds (a new protocol's first slice; docs/SWEEPS.md)",
    )
    args = parser.parse_args(argv)
    if args.readme_table:
        print(readme_table())
        return
    parts = [(NOTES / "intro.md").read_text().strip() + "\n"]
    for sec in SECTIONS:
        report = build_report(sec, args.runs, use_prior=not args.no_prior)
        parts.append(section(sec.name, sec.title, report) if report else not_run(sec))
    (DOCS / "RESULTS.md").write_text("\n".join(parts))
    print(f"wrote {DOCS / 'RESULTS.md'}")


if __name__ == "__main__":
    main()
