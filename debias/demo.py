"""``debias demo``: the colour shortcut and a cure, shown in a few minutes on two CPU cores.

Trains two models on the same Biased-MNIST split at a high bias level with the CPU stand-in
encoder (:class:`~debias.models.LeNet`): plain cross-entropy, which learns the shortcut
(near-perfect accuracy when the background colour agrees with the digit, far lower unbiased
accuracy), and group reweighting, which weights each training image by 1 / n(digit, colour)
and learns the digits. It prints both rows and saves one figure with both 10x10
digit-by-colour accuracy maps. Real MNIST comes from the data root, else from a download;
where neither works the demo runs on the real handwritten digits shipped inside scikit-learn
and says so.
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

from debias.data.root import ENV_VAR, data_root

# The two methods the demo compares: the shortcut and one cure (a bias-label method).
DEMO_METHODS = ("ce", "reweight")
METHOD_TITLES = {"ce": "cross-entropy", "reweight": "group reweighting 1/n(y, b)"}


def _pick_dataset(root: str | None) -> tuple[str, str]:
    """``("biased-mnist", note)`` when MNIST can be had, else ``("digits", note)``."""
    from debias.data.mnist import load_mnist

    try:
        load_mnist("train", root=root)
        load_mnist("test", root=root)
        return "biased-mnist", f"MNIST from {data_root(root)}"
    except FileNotFoundError:
        pass
    try:
        load_mnist("train", root=root, download=True)
        load_mnist("test", root=root, download=True)
        return "biased-mnist", f"MNIST downloaded to {data_root(root)}"
    except Exception:  # offline, proxy, mirror down: the fallback below is the point of the demo
        return "digits", (
            f"MNIST not found under {data_root(root)} and could not be downloaded: running on "
            "scikit-learn's 1,797 real handwritten digits instead. For the full MNIST demo set "
            f"{ENV_VAR}=/path/with/mnist or run once with a network."
        )


def run_demo(
    out: str = "runs/demo",
    rho: float = 0.997,
    epochs: int = 2,
    device: str = "auto",
    root: str | None = None,
    force: bool = False,
) -> dict[str, dict]:
    """Train :data:`DEMO_METHODS` on the same split; returns ``{method: metrics.json dict}``.

    Runs are written to ``<out>/<dataset>/<method>`` (the offline fallback never collides
    with a real-MNIST demo); ``force`` discards what debias wrote there before.
    """
    t0 = time.perf_counter()
    dataset, note = _pick_dataset(root)
    print(f"debias demo: {note}", flush=True)
    results = {}
    for method in DEMO_METHODS:
        cfg = _demo_config(Path(out) / dataset / method, dataset, method, rho, epochs, device, root)
        print(
            f"\ntraining {METHOD_TITLES[method]} ({cfg.model}, {cfg.epochs} epochs) on {dataset} "
            f"at rho={rho}: {100 * rho:.1f}% of training digits have the colour of their class",
            flush=True,
        )
        results[method] = _train(cfg, force)
    summarise(results, Path(out) / dataset)
    print(f"demo finished in {time.perf_counter() - t0:.0f}s; files in {Path(out) / dataset}/")
    return results


def _demo_config(out: Path, dataset: str, method: str, rho, epochs, device, root):
    from debias.train import TrainConfig

    small = dataset == "digits"
    return TrainConfig(
        out=str(out),
        dataset=dataset,
        rho=rho,
        root=root,
        method=method,
        model="lenet",
        # 1,400 digits make ~20 batches an epoch: more epochs for the same number of steps.
        epochs=epochs if not small else max(epochs, 15),
        batch_size=256 if not small else 64,
        lr_milestones=[],
        # The DFR read-out averages 3 refits, not the official 20: the demo's minutes go to
        # training (the CPU sweeps do the same; PROTOCOLS §9, bench/bench_dfr_refits.py).
        represent_refits=3,
        device=device,
    )


def _train(cfg, force: bool) -> dict:
    from debias.train import train

    return train(cfg, force=force, log=lambda line: print("  " + line, flush=True))


def summarise(results: dict[str, dict], out: str | Path) -> None:
    """Print the shortcut and the cure in numbers and save the figure ``shortcut.png``."""
    first = next(iter(results.values()))
    n_train = first["data"]["train"]["n"]
    n_conf = n_train - first["data"]["train"]["n_aligned"]
    print(
        f"\ntraining set: {n_train} images, {n_conf} bias-conflicting (digit and colour disagree)"
    )
    table = summary_table(results)
    print("\n" + (100 * table).round(1).to_string())
    maps = {
        m: accuracy_table(r["splits"]["test"]["groups"], r["data"]["test"].get("bias_names"))
        for m, r in results.items()
    }
    for method, acc in maps.items():
        print(
            f"\n{METHOD_TITLES.get(method, method)}: unbiased test accuracy (%) by digit (rows) "
            "and background colour (columns):"
        )
        print((100 * acc).round(0).astype("Int64").to_string())
    path = save_figure(maps, table, Path(out) / "shortcut.png")
    print(f"\nfigure: {path}")


def summary_table(results: dict[str, dict]) -> pd.DataFrame:
    """One row per method: biased, unbiased, worst-group and bias-conflicting test accuracy."""
    rows = []
    for method, result in results.items():
        splits = result["splits"]
        rows.append(
            {
                "method": METHOD_TITLES.get(method, method),
                "biased test": splits["test_biased"]["accuracy"],
                "unbiased test": splits["test"]["unbiased_accuracy"],
                "worst-group": splits["test"]["worst_group_accuracy"],
                "conflicting test": splits["test_conflicting"]["accuracy"],
            }
        )
    return pd.DataFrame(rows).set_index("method")


def accuracy_table(groups: list[dict], colour_names: list[str] | None = None) -> pd.DataFrame:
    """Pivot GroupReport group records into a digit x colour accuracy table (fractions); columns
    named by ``colour_names`` (the run's recorded ``bias_names``) when given, else indices."""
    df = pd.DataFrame(groups)
    tab = df.pivot(index="y", columns="b", values="accuracy")
    if colour_names is not None:
        tab = tab.rename(columns=lambda b: colour_names[int(b)])
    tab.index.name, tab.columns.name = "digit", "colour"
    return tab


def save_figure(maps: dict[str, pd.DataFrame], table: pd.DataFrame, path: Path) -> Path:
    """Both digit-by-colour accuracy maps and the headline numbers in one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    fig, axes = plt.subplots(
        1, len(maps) + 1, figsize=(6 * len(maps) + 6, 5), gridspec_kw={"wspace": 0.35}
    )
    for ax, (method, acc) in zip(axes, maps.items()):
        sns.heatmap(
            100 * acc,
            annot=True,
            fmt=".0f",
            vmin=0,
            vmax=100,
            cmap="viridis",
            ax=ax,
            cbar=ax is axes[len(maps) - 1],
            cbar_kws={"label": "accuracy (%)"},
        )
        unbiased = 100 * table.loc[METHOD_TITLES.get(method, method), "unbiased test"]
        ax.set_title(
            f"{METHOD_TITLES.get(method, method)}: unbiased {unbiased:.0f}%\n"
            "accuracy by digit x background colour (diagonal = bias-aligned)",
            fontsize=10,
        )
    data = (100 * table).reset_index().melt(id_vars="method", var_name="split", value_name="%")
    ax = axes[-1]
    sns.barplot(data=data, y="split", x="%", hue="method", ax=ax)
    for bars in ax.containers:
        # Label every bar, so a 0% bar is visible as "0" rather than as nothing.
        ax.bar_label(bars, fmt="%.0f", fontsize=8, padding=2)
    ax.set_xlim(0, 110)
    ax.set_ylabel("")
    ax.set_xlabel("accuracy (%)")
    ax.set_title("the shortcut (cross-entropy) and a cure", fontsize=10)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


__all__ = [
    "DEMO_METHODS",
    "accuracy_table",
    "run_demo",
    "save_figure",
    "summarise",
    "summary_table",
]
