"""Choose the CPU protocol's training budget on the validation split (issue 35).

Reads the runs of ``sweeps/biased_mnist_cpu_budget.yaml`` (CE for 2-8 epochs, with the default
lr schedule and without decay) and writes into ``--out``:

* ``curves.csv``: every run's validation numbers at every epoch (``val/accuracy``,
  ``val/unbiased_accuracy``, ``val/worst_group_accuracy``, %), with its schedule, budget,
  rho and seed: the curves the choice rests on;
* ``budgets.csv``: per (schedule, epochs, rho) the mean over seeds of the last epoch's
  ``val/accuracy`` with its 95% t-interval, and per (schedule, epochs) the mean over rho;
* ``choice.json``: the chosen schedule and epochs, the budgets tied with it and the rule;
* ``curves.png``: validation accuracy against the epoch, one panel per rho.

Rule: the highest mean last-epoch ``val/accuracy`` over seeds and rho levels (the validation
split is coloured at rho 0.1, near-uniform, so its plain accuracy tracks unbiased accuracy and
reads no bias label: the search's ``val_accuracy`` rule); budgets within :data:`TIE_POINTS`
of the best are tied and the one with fewer epochs wins (then: no decay, the simpler). Nothing
of the test splits is read.

Usage::

    python docs/experiments/choose_budget.py runs/sweeps/biased_mnist_cpu_budget \\
        --out docs/experiments/budget
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from debias import results
from debias.report.summary import mean_ci

TIE_POINTS = 0.5  # percentage points of mean validation accuracy
METRIC = "val/accuracy"
CURVE_METRICS = ("val/accuracy", "val/unbiased_accuracy", "val/worst_group_accuracy")
RULE = (
    f"highest mean last-epoch {METRIC} over seeds and rho levels; budgets within {TIE_POINTS} "
    "points of the best are tied and the fewest epochs win (then no decay); test splits unread"
)


def curves(sweep: str | Path) -> pd.DataFrame:
    """One row per (run, epoch) of the final stage: schedule, epochs, rho, seed, the metrics in %.
    The schedule is read from the run's folder name (``lr_schedule=cosine`` or ``=constant``)."""
    h = results.load_history(sweep)
    h = h[h["stage"] == h.groupby("run")["stage"].transform("last")]
    decay = h["run"].str.contains("lr_schedule=cosine", regex=False)
    out = h[["run", "rho", "epochs", "seed", "epoch"]].assign(
        schedule=decay.map({True: "cosine", False: "no decay"})
    )
    for m in CURVE_METRICS:
        out[m] = 100 * h[m] if m in h else float("nan")
    return out.reset_index(drop=True)


def budgets(c: pd.DataFrame) -> pd.DataFrame:
    """Per (schedule, epochs, rho): the last epoch's ``METRIC``, mean and 95% interval over
    seeds; rows with rho ``"mean"`` average the levels' means."""
    last = c[c["epoch"] == c["epochs"]]
    rows = []
    for (schedule, epochs, rho), g in last.groupby(["schedule", "epochs", "rho"], sort=True):
        s = mean_ci(g[METRIC].tolist())
        rows.append({"schedule": schedule, "epochs": epochs, "rho": rho, "n": s["n"],
                     "mean_pct": s["mean"], "ci95_low_pct": s["ci95_low"],
                     "ci95_high_pct": s["ci95_high"]})  # fmt: skip
    per = pd.DataFrame(rows)
    both = per.groupby(["schedule", "epochs"], as_index=False).agg(
        n=("n", "sum"), mean_pct=("mean_pct", "mean")
    )
    return pd.concat([per, both.assign(rho="mean")], ignore_index=True)


def choose(b: pd.DataFrame) -> dict:
    """The rule (module docstring) applied to :func:`budgets`' mean rows."""
    mean = b[b["rho"] == "mean"].copy()
    best = mean["mean_pct"].max()
    tied = mean[mean["mean_pct"] >= best - TIE_POINTS].copy()
    tied["_decay"] = tied["schedule"] != "no decay"
    pick = tied.sort_values(["epochs", "_decay"]).iloc[0]
    return {
        "schedule": pick["schedule"],
        "epochs": int(pick["epochs"]),
        "mean_val_accuracy_pct": float(pick["mean_pct"]),
        "best_mean_val_accuracy_pct": float(best),
        "tied": [f"{r.schedule}, {int(r.epochs)} epochs" for r in tied.itertuples()],
        "rule": RULE,
    }


def plot(c: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = sorted(c["rho"].unique(), reverse=True)
    fig, axes = plt.subplots(1, len(levels), figsize=(5 * len(levels), 3.6), squeeze=False)
    for ax, rho in zip(axes[0], levels):
        mine = c[c["rho"] == rho]
        for (schedule, epochs), g in mine.groupby(["schedule", "epochs"]):
            m = g.groupby("epoch")[METRIC].mean()
            ax.plot(m.index, m.values, "-" if schedule == "no decay" else "--", marker=".",
                    label=f"{schedule}, {epochs} ep")  # fmt: skip
        ax.set(title=f"rho {rho:g}", xlabel="epoch", ylabel=f"{METRIC} (%), mean over seeds")
    axes[0][0].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep", help="the folder of sweeps/biased_mnist_cpu_budget.yaml")
    parser.add_argument("--out", type=Path, required=True, help="folder for the files written")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    c = curves(args.sweep)
    b = budgets(c)
    choice = choose(b)
    c.to_csv(args.out / "curves.csv", index=False)
    b.to_csv(args.out / "budgets.csv", index=False)
    (args.out / "choice.json").write_text(json.dumps(choice, indent=1) + "\n")
    plot(c, args.out / "curves.png")
    print(b[b["rho"] == "mean"].to_string(index=False))
    print(f"chosen: {choice['schedule']}, {choice['epochs']} epochs ({RULE})")


if __name__ == "__main__":
    main()
