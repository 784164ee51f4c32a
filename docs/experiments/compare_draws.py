"""How much the intervals widen when the seeds vary the data draw (issue 35, item 2).

Compares two versions of a report's ``summary.csv`` (and ``representation.csv``): the grid run
on one data draw for every seed (``data_draw: fixed``, the results of 2026-12-04) and the grid
rerun with each seed drawing its own data (``data_draw: seed``). Per (table, method, rho) it
pairs the two 95% t-interval half widths on unbiased accuracy and writes their ratio; the
printout gives the median ratio per table and per method.

Usage (the fixed-draw tables from git, the seeded ones from the working tree)::

    git show 1c0ffee:docs/results/biased_mnist_cpu/summary.csv > /tmp/fixed_summary.csv
    git show 1c0ffee:docs/results/biased_mnist_cpu/representation.csv > /tmp/fixed_rep.csv
    python docs/experiments/compare_draws.py --fixed /tmp/fixed_summary.csv /tmp/fixed_rep.csv \\
        --seeded docs/results/biased_mnist_cpu/summary.csv \\
        docs/results/biased_mnist_cpu/representation.csv --out docs/experiments/data_draw
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

KEYS = ["method", "loss_options.self_weight", "rho"]
TABLES = ("head", "dfr")  # the runs' own heads (summary.csv), the DFR read-out (representation.csv)


def unbiased(path: Path, seeds: int = 3) -> pd.DataFrame:
    """The unbiased-accuracy rows of a summary table, at ``seeds`` seeds (widths at equal n)."""
    df = pd.read_csv(path)
    df = df[(df["metric"] == "unbiased") & (df["n"] == seeds)]
    df = df.assign(**{"loss_options.self_weight": df.get("loss_options.self_weight")})
    return df[KEYS + ["mean_pct", "std_pct", "ci95_half_width_pct"]]


def widening(fixed: Path, seeded: Path, table: str) -> pd.DataFrame:
    """Per condition: the two half widths and seeded / fixed."""
    both = unbiased(fixed).merge(unbiased(seeded), on=KEYS, suffixes=("_fixed", "_seeded"))
    ratio = both["ci95_half_width_pct_seeded"] / both["ci95_half_width_pct_fixed"]
    return both.assign(table=table, ratio=ratio)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fixed", type=Path, nargs=2, required=True, help="summary, representation")
    parser.add_argument("--seeded", type=Path, nargs=2, required=True, help="summary, representation")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    frames = [widening(f, s, t) for t, f, s in zip(TABLES, args.fixed, args.seeded)]
    df = pd.concat(frames, ignore_index=True)
    args.out.mkdir(parents=True, exist_ok=True)
    df.to_csv(args.out / "widening.csv", index=False)
    print("median ratio of 95% half widths (seeded / fixed draw), unbiased accuracy, n = 3:")
    print(df.groupby("table")["ratio"].describe()[["count", "25%", "50%", "75%"]].round(2))
    print(df.groupby(["table", "rho"])["ratio"].median().unstack("rho").round(2))
    print(df.groupby(["table", "method"])["ratio"].median().unstack("table").round(2))


if __name__ == "__main__":
    main()
