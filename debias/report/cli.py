"""``debias report SWEEP_DIR [--out DIR] [--notes FILE] [--prior FOLDER]``: Markdown + CSV +
figures for a sweep."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

__all__ = ["cmd_report", "register"]


def cmd_report(args: argparse.Namespace) -> int:
    from debias.report.report import make_report
    from debias.report.search import is_search_sweep, make_search_report

    # An empty --out is refused (report folder checks), not read as "the default".
    out = args.out if args.out is not None else str(Path(args.sweep_dir[0]) / "report")
    source = args.sweep_dir if len(args.sweep_dir) > 1 else args.sweep_dir[0]
    if len(args.sweep_dir) == 1 and is_search_sweep(source):
        # A random search: every method under every selection rule (debias.report.search).
        if args.prior is not None:
            raise ValueError(f"--prior takes a grid sweep's report; {source} is a random search")
        paths = make_search_report(source, out)
    else:
        notes = None if args.notes is None else Path(args.notes)
        paths = make_report(source, out, notes=notes, prior=args.prior)
    for key, path in paths.items():
        print(f"{key:>16}: {path}")
    return 0


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``report`` sub-command to an argparse ``add_subparsers()`` object."""
    p = subparsers.add_parser(
        "report",
        help="summarise a sweep: mean ± 95%% CI over seeds per method x bias level, figures",
        description="Write report.md, summary.csv and PNG figures (accuracy vs bias level, "
        "group-accuracy heatmap, convergence) for one or more sweep (or run) folders.",
    )
    p.add_argument("sweep_dir", nargs="+", help="sweep folder(s) written by debias sweep")
    p.add_argument("--out", help="output folder (default: <first sweep_dir>/report)")
    p.add_argument(
        "--notes",
        help="a Markdown file appended after the paired comparisons (e.g. what we learned)",
    )
    p.add_argument(
        "--prior",
        metavar="FOLDER",
        help="a report folder of an earlier session (its runs.csv): report these runs together "
        "with the ones it holds and these lack (a run in both: this one); see docs/SWEEPS.md",
    )
    p.set_defaults(func=cmd_report)
    return p
