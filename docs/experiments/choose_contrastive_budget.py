"""Choose each recipe's CPU budget for the contrastive comparison, on the validation split
(issue 33, item 4).

Reads the runs of ``sweeps/biased_mnist_contrastive_cpu_budget.yaml`` (ConTeX and SupCon under
each published recipe, LeNet, up to 16 two-view epochs with the recipe's schedule scaled to
them, ``represent_every: 1``) and writes into ``--out``:

* ``curves.csv``: every run's validation read-out (``readout/val/*``, %: a DFR head fitted on
  each half of the validation split and scored on the other half, :mod:`debias.train.readout`)
  after every epoch that trained the encoder, with its recipe, method and seed;
* ``curve_means.csv``: per (recipe, method, epoch) the mean over seeds;
* ``budgets.csv``: per (recipe, method) the smallest budget meeting the rule, whether any did,
  and per recipe the chosen budget;
* ``choice.json``: the chosen budget of each recipe, the rule and the runs read;
* ``curves.png``: the seed-mean read-out against the epoch, one panel per recipe.

Rule, on the seed-mean curve ``c`` of :data:`METRIC` (points): a budget ``B`` (from
:data:`MIN_BUDGET` epochs to the longest run's) has stopped improving when the read-out gained
less than :data:`GAIN_POINTS` over the last quarter of its epochs, ``c[B] − c[B − ceil(B/4)] <
1``, and ``c[B]`` is within :data:`NEAR_BEST_POINTS` of the best point of the whole curve (an
early plateau the curve later leaves does not count). A loss's budget is the smallest such
``B``; one whose curve never meets it gets the longest run's, marked not converged. A recipe's
budget is the largest of its losses' (the same budget for every loss in a recipe). Nothing of
any test split is read. The curves are those of the longest runs' schedule (cosine over, or
steps at a third and two thirds of, 16 epochs): a run of ``B`` epochs with the schedule scaled
to ``B`` decays sooner, which the rule does not see.

Usage::

    python docs/experiments/choose_contrastive_budget.py \\
        runs/sweeps/biased_mnist_contrastive_cpu_budget --out docs/experiments/contrastive_budget
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import pandas as pd

METRIC = "readout/val/unbiased_accuracy"
CURVE_METRICS = (METRIC, "readout/val/accuracy", "readout/val/worst_group_accuracy")
GAIN_POINTS = 1.0  # what the last quarter of a budget may still add
NEAR_BEST_POINTS = 1.0  # how far below the curve's best a budget may stop
MIN_BUDGET = 4  # a quarter of fewer epochs is not a quarter
KEYS = ["recipe", "method"]
RULE = (
    f"seed-mean {METRIC} (a DFR head cross-fitted on the validation split's halves; no test "
    f"split read): the smallest budget B >= {MIN_BUDGET} whose last quarter of epochs gained "
    f"< {GAIN_POINTS:g} point (c[B] - c[B - ceil(B/4)]) and whose read-out is within "
    f"{NEAR_BEST_POINTS:g} point of the curve's best; a recipe takes the largest budget of its "
    "losses (the same for every loss); a loss that never meets it gets the longest run's"
)


def curves(history: pd.DataFrame) -> pd.DataFrame:
    """The read-out rows of a :func:`debias.results.load_history` frame: one per (run, epoch)
    with a read-out, ``recipe``, ``method``, ``seed``, the epoch within the run, metrics in %."""
    if METRIC not in history:
        raise ValueError(
            f"no {METRIC} column in the runs' history.csv: they ran without represent_every "
            "(sweeps/biased_mnist_contrastive_cpu_budget.yaml sets it)"
        )
    skipped = f"{METRIC.rsplit('/', 1)[0]}/skipped"
    if skipped in history and history[skipped].notna().any():
        bad = history[history[skipped].notna()].drop_duplicates("run").iloc[0]
        raise ValueError(
            f"run {bad['run']} has epochs without a read-out ({bad[skipped]}): its curve would "
            "be missing from the seed means; rerun the study with a validation split every "
            "group fills (the YAML's val_size)"
        )
    h = history[history[METRIC].notna()]
    last = h.groupby("run")["epoch"].max()
    if len(last) and last.min() < last.max():
        short = last[last < last.max()]
        raise ValueError(
            f"run {short.index[0]} has read-outs up to epoch {int(short.iloc[0])} of the longest "
            f"run's {int(last.max())}: unfinished runs ({len(short)}) would cut their curves "
            "short; let the sweep finish (it resumes) before choosing"
        )
    out = h[["run", *KEYS, "seed", "epoch"]].copy()
    out["recipe"] = out["recipe"].fillna("none")
    for m in CURVE_METRICS:
        out[m] = 100 * h[m]
    return out.reset_index(drop=True)


def mean_curves(c: pd.DataFrame) -> pd.DataFrame:
    """Per (recipe, method, epoch): the mean over seeds and how many seeds reached it."""
    g = c.groupby([*KEYS, "epoch"], sort=True)
    return g[list(CURVE_METRICS)].mean().join(g["seed"].nunique().rename("seeds")).reset_index()


def loss_budget(curve: pd.Series) -> tuple[int, bool]:
    """``(budget, converged)`` of one seed-mean curve (index: epoch, values: points) by the
    rule (module docstring)."""
    curve = curve.sort_index()
    best, last = float(curve.max()), int(curve.index.max())
    for b in curve.index:
        b = int(b)
        start = b - math.ceil(b / 4)
        if b < MIN_BUDGET or start not in curve.index:
            continue
        gain = float(curve[b] - curve[start])
        if gain < GAIN_POINTS and float(curve[b]) >= best - NEAR_BEST_POINTS:
            return b, True
    return last, False


def choose(means: pd.DataFrame) -> pd.DataFrame:
    """Per (recipe, method): its budget and whether it converged; per recipe (``method`` =
    ``"recipe"``): the largest of its losses' budgets, converged if all of them did."""
    rows = []
    for (recipe, method), g in means.groupby(KEYS, sort=True):
        curve = g.set_index("epoch")[METRIC]
        budget, ok = loss_budget(curve)
        rows.append({"recipe": recipe, "method": method, "budget": budget, "converged": ok,
                     "readout_at_budget": float(curve[budget]), "best": float(curve.max()),
                     "epochs_run": int(curve.index.max()), "seeds": int(g["seeds"].min())})  # fmt: skip
    per = pd.DataFrame(rows)
    mine = per.groupby("recipe", as_index=False).agg(
        budget=("budget", "max"), converged=("converged", "all"), seeds=("seeds", "min")
    )
    return pd.concat([per, mine.assign(method="recipe")], ignore_index=True)


def plot(means: pd.DataFrame, budgets: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recipes = sorted(means["recipe"].unique())
    fig, axes = plt.subplots(1, len(recipes), figsize=(4.5 * len(recipes), 3.6), squeeze=False)
    for ax, recipe in zip(axes[0], recipes):
        for method, g in means[means["recipe"] == recipe].groupby("method"):
            ax.plot(g["epoch"], g[METRIC], marker=".", label=method)
        chosen = budgets[(budgets["recipe"] == recipe) & (budgets["method"] == "recipe")]
        ax.axvline(int(chosen["budget"].iloc[0]), color="grey", ls="--", lw=0.8)
        ax.set(title=f"{recipe} (budget: dashed)", xlabel="epoch", ylabel="val read-out, %")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep", help="the folder of sweeps/biased_mnist_contrastive_cpu_budget")
    parser.add_argument("--out", type=Path, required=True, help="folder for the files written")
    args = parser.parse_args(argv)
    from debias import results

    c = curves(results.load_history(args.sweep))
    means = mean_curves(c)
    budgets = choose(means)
    args.out.mkdir(parents=True, exist_ok=True)
    c.to_csv(args.out / "curves.csv", index=False)
    means.to_csv(args.out / "curve_means.csv", index=False)
    budgets.to_csv(args.out / "budgets.csv", index=False)
    chosen = budgets[budgets["method"] == "recipe"]
    choice = {
        "budgets": {
            r.recipe: {"epochs": int(r.budget), "converged": bool(r.converged)}
            for r in chosen.itertuples()
        },  # fmt: skip
        "rule": RULE,
        "runs": sorted(c["run"].unique().tolist()),
    }
    (args.out / "choice.json").write_text(json.dumps(choice, indent=1) + "\n")
    plot(means, budgets, args.out / "curves.png")
    print(budgets.to_string(index=False))
    print(f"rule: {RULE}")


if __name__ == "__main__":
    main()
