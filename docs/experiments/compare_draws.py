"""How much the intervals widen when the seeds vary the data draw (issue 35, item 2).

Compares two versions of a report's ``summary.csv`` (and ``representation.csv``): the grid run
on one data draw for every seed (``data_draw: fixed``, the results of 2026-12-04) and the grid
rerun with each seed drawing its own data (``data_draw: seed``). Per (table, method, rho) it
pairs the two 95% t-interval half widths on unbiased accuracy and writes their ratio; the
printout gives the median ratio per table and per method.

The like-for-like check is CE at the old budget (3 epochs, no decay): the budget sweep
(``sweeps/biased_mnist_cpu_budget.yaml``, seeded draws) scores those runs on the test splits
once, at the end, and ``--budget-runs`` writes their unbiased accuracy per seed
(``ce_3_epochs_seeded.csv``) beside the fixed-draw grid's CE row; every other comparison also
changes the budget (3 -> 8 epochs) and so mixes the two effects.

Usage, as run for docs/experiments/data_draw/ (the fixed-draw tables from git at 4e52696, the
last commit of the 2026-12-04 grid; the seeded ones from a report of the main grid alone, where
every condition has n = 3 -- the page's report adds ConTeX and SupCon seeds 3-4)::

    git show 4e52696:docs/results/biased_mnist_cpu/summary.csv > /tmp/fixed_summary.csv
    git show 4e52696:docs/results/biased_mnist_cpu/representation.csv > /tmp/fixed_rep.csv
    debias report runs/sweeps/biased_mnist_cpu --out /tmp/rep_main
    python docs/experiments/compare_draws.py --fixed /tmp/fixed_summary.csv /tmp/fixed_rep.csv \\
        --seeded /tmp/rep_main/summary.csv /tmp/rep_main/representation.csv \\
        --out docs/experiments/data_draw --budget-runs runs/sweeps/biased_mnist_cpu_budget
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
    weight = df["loss_options.self_weight"] if "loss_options.self_weight" in df else None
    # the ConTeX-weight variant's key, as text on both sides (empty: the default weight)
    weight = "" if weight is None else weight.map(lambda w: "" if pd.isna(w) else f"{float(w):g}")
    df = df.assign(**{"loss_options.self_weight": weight})
    return df[KEYS + ["mean_pct", "std_pct", "ci95_half_width_pct"]]


def widening(fixed: Path, seeded: Path, table: str) -> pd.DataFrame:
    """Per condition: the two half widths and seeded / fixed."""
    both = unbiased(fixed).merge(unbiased(seeded), on=KEYS, suffixes=("_fixed", "_seeded"))
    ratio = both["ci95_half_width_pct_seeded"] / both["ci95_half_width_pct_fixed"]
    return both.assign(table=table, ratio=ratio)


def ce_seeded(budget_runs: Path, epochs: int = 3) -> pd.DataFrame:
    """CE's test unbiased accuracy (%) per seed in the budget sweep's no-decay runs of ``epochs``
    epochs (:func:`debias.results.load` rows)."""
    from debias import results

    df = results.load(budget_runs)
    keep = (
        (df["lr_schedule"] == "constant") & (df["epochs"] == epochs)
        & (df["split"] == "test") & (df["metric"] == "unbiased_accuracy")
    )  # fmt: skip
    rows = df[keep][["rho", "seed", "epochs", "value"]].sort_values(["rho", "seed"])
    return rows.assign(value=rows["value"] * 100).rename(columns={"value": "unbiased_pct"})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    two = {"type": Path, "nargs": 2, "required": True, "help": "summary.csv representation.csv"}
    parser.add_argument("--fixed", **two)
    parser.add_argument("--seeded", **two)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--budget-runs", type=Path, help="runs/sweeps/biased_mnist_cpu_budget")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.budget_runs is not None:
        ce = ce_seeded(args.budget_runs)
        ce.to_csv(args.out / "ce_3_epochs_seeded.csv", index=False)
        print(ce.groupby("rho")["unbiased_pct"].agg(["mean", "std", "count"]).round(2))
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
