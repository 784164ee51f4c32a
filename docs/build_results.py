"""Build docs/RESULTS.md from the CPU sweeps: one generated report per sweep, one page.

    python docs/build_results.py [--runs runs/sweeps]

For each sweep in SECTIONS whose run folder exists, ``debias report`` writes
``docs/results/<sweep>/`` (report.md, summary.csv, paired.csv, figures) with the hand-written
notes ``docs/results_notes/<sweep>.md`` (what the numbers show) appended. The page is
``docs/results_notes/intro.md``, then per sweep ``docs/results_notes/<sweep>.intro.md`` (what
was run, how long it took, how to reproduce) and the generated report with its headings moved
one level down and its figure links pointed into ``docs/results/<sweep>/``. A sweep whose runs
are absent keeps the report already committed, so the page can be rebuilt on a machine that
ran only some of them.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from debias.report import make_report

DOCS = Path(__file__).resolve().parent
NOTES = DOCS / "results_notes"
# (sweep name, section title): the page's order.
SECTIONS = (
    ("biased_mnist_cpu", "Biased-MNIST (CPU protocol)"),
    ("utkface_cpu", "UTKFace (CPU protocol)"),
    ("celeba_cpu", "CelebA (CPU protocol)"),
)


def build_report(name: str, runs: Path) -> Path | None:
    """Regenerate ``docs/results/<name>/report.md`` from ``runs/<name>`` if the runs are here."""
    out = DOCS / "results" / name
    if (runs / name / "sweep.json").is_file():
        notes = NOTES / f"{name}.md"
        make_report(runs / name, out, notes=notes if notes.is_file() else None)
    return out / "report.md" if (out / "report.md").is_file() else None


def section(name: str, title: str, report: Path) -> str:
    """The report as a page section: headings one level down, links relative to docs/."""
    body = report.read_text()
    body = re.sub(r"^(#+) ", lambda m: "#" + m.group(1) + " ", body, flags=re.M)
    body = re.sub(r"^## Sweep report: .*\n", "", body, count=1, flags=re.M)
    body = re.sub(r"\]\((?!https?:|/)([^)]+\.png)\)", rf"](results/{name}/\1)", body)
    intro = NOTES / f"{name}.intro.md"
    head = intro.read_text().strip() + "\n\n" if intro.is_file() else ""
    return f"## {title}\n\n{head}{body.strip()}\n"


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
    for name, title in SECTIONS:
        report = build_report(name, args.runs)
        if report is None:
            parts.append(f"## {title}\n\nNot run yet: no `runs/sweeps/{name}` and no report.\n")
        else:
            parts.append(section(name, title, report))
    (DOCS / "RESULTS.md").write_text("\n".join(parts))
    print(f"wrote {DOCS / 'RESULTS.md'}")


if __name__ == "__main__":
    main()
