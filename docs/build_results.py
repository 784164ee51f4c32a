"""Build docs/RESULTS.md from the CPU sweeps: one generated report per sweep, one page.

    python docs/build_results.py [--runs runs/sweeps]

For each section in SECTIONS whose run folders all exist, ``debias report`` writes
``docs/results/<name>/`` (report.md, summary.csv, paired.csv, figures) with the hand-written
notes ``docs/results_notes/<name>.md`` (what the numbers show) appended. A section may read
several sweeps in one report (the Biased-MNIST grid and its ConTeX-weight companion); a random
search sweep gets the search report (every selection rule side by side, :mod:`debias.report.search`). The page is
``docs/results_notes/intro.md``, then per sweep ``docs/results_notes/<sweep>.intro.md`` (what
was run, how long it took, how to reproduce) and the generated report with its headings moved
one level down and its figure links pointed into ``docs/results/<sweep>/``. A sweep whose runs
are absent (any of a section's folders) keeps the report already committed, so the page can be
rebuilt on a machine that ran only some of them, and never loses a section's companion sweep.
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
        ("biased_mnist_cpu", "biased_mnist_cpu_contex_weight"),
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


def build_report(sec: Section, runs: Path) -> Path | None:
    """Regenerate ``docs/results/<name>/report.md`` if all the section's sweeps are in ``runs``."""
    out = DOCS / "results" / sec.name
    folders = [runs / s for s in sec.sweeps]
    if all((f / "sweep.json").is_file() for f in folders):
        notes = NOTES / f"{sec.name}.md"
        notes = notes if notes.is_file() else None
        if sec.search:
            from debias.report.search import make_search_report

            _with_notes(make_search_report(folders[0], out)["report"], notes)
        else:
            make_report(folders if len(folders) > 1 else folders[0], out, notes=notes)
    elif any((f / "sweep.json").is_file() for f in folders):
        print(
            f"{sec.name}: not all of {', '.join(sec.sweeps)} in {runs}; kept the committed report"
        )
    return out / "report.md" if (out / "report.md").is_file() else None


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
    args = parser.parse_args(argv)
    if args.readme_table:
        print(readme_table())
        return
    parts = [(NOTES / "intro.md").read_text().strip() + "\n"]
    for sec in SECTIONS:
        report = build_report(sec, args.runs)
        parts.append(section(sec.name, sec.title, report) if report else not_run(sec))
    (DOCS / "RESULTS.md").write_text("\n".join(parts))
    print(f"wrote {DOCS / 'RESULTS.md'}")


if __name__ == "__main__":
    main()
