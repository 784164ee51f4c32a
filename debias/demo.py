"""``debias demo``: the colour shortcut, shown in a few minutes on two CPU cores.

Trains the cross-entropy baseline (the CPU-sized :class:`~debias.models.SmallConvNet`) on
Biased-MNIST at a high bias level and prints what it learned: near-perfect accuracy when the
background colour agrees with the digit, far lower unbiased accuracy, and the 10x10
digit-by-colour accuracy table that shows where it fails. Real MNIST comes from the data root,
else from a download; where neither works the demo runs on the real handwritten digits shipped
inside scikit-learn and says so.
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

from debias.data.root import ENV_VAR, data_root


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
    epochs: int = 3,
    device: str = "auto",
    root: str | None = None,
) -> dict:
    from debias.train import TrainConfig, train

    t0 = time.perf_counter()
    dataset, note = _pick_dataset(root)
    print(f"debias demo: {note}", flush=True)
    small = dataset == "digits"
    cfg = TrainConfig(
        out=out,
        dataset=dataset,
        rho=rho,
        root=root,
        method="ce",
        model="smallconvnet",
        epochs=epochs if not small else max(epochs, 30),
        batch_size=256 if not small else 64,
        lr_milestones=[],
        device=device,
    )
    print(
        f"training cross-entropy ({cfg.model}, {cfg.epochs} epochs) on {dataset} at rho={rho}: "
        f"{100 * rho:.1f}% of training digits have the background colour of their class",
        flush=True,
    )
    result = train(cfg, log=lambda line: print("  " + line, flush=True))
    summarise(result, out)
    print(f"demo finished in {time.perf_counter() - t0:.0f}s; files in {out}/")
    return result


def summarise(result: dict, out: str | Path) -> None:
    """Print the shortcut in numbers and save the figure ``shortcut.png``."""
    splits = result["splits"]
    n_train = result["data"]["train"]["n"]
    n_conf = n_train - result["data"]["train"]["n_aligned"]
    print(
        f"\ntraining set: {n_train} images, {n_conf} bias-conflicting (digit and colour disagree)"
    )
    rows = []
    labels = {
        "test_biased": "biased test (colour = digit)",
        "test": "unbiased test (colours ~uniform)",
        "test_conflicting": "conflicting test (colour != digit)",
        "val": "validation (held out, rho 0.1)",
    }
    for split, label in labels.items():
        if split in splits:
            s = splits[split]
            rows.append(
                {
                    "split": label,
                    "accuracy": s["accuracy"],
                    "unbiased": s["unbiased_accuracy"],
                    "worst-group": s["worst_group_accuracy"],
                    "bias-aligned": s["aligned_accuracy"],
                    "bias-conflicting": s["conflicting_accuracy"],
                }
            )
    table = pd.DataFrame(rows).set_index("split")
    print("\n" + (100 * table).round(1).to_string())
    acc = accuracy_table(splits["test"]["groups"])
    print("\nunbiased test accuracy (%) by digit (rows) and background colour index (columns):")
    print((100 * acc).round(0).astype("Int64").to_string())
    path = save_figure(acc, table, Path(out) / "shortcut.png")
    print(f"\nfigure: {path}")


def accuracy_table(groups: list[dict]) -> pd.DataFrame:
    """Pivot GroupReport group records into a digit x colour accuracy table."""
    df = pd.DataFrame(groups)
    tab = df.pivot(index="y", columns="b", values="accuracy")
    tab.index.name, tab.columns.name = "digit", "colour"
    return tab


def save_figure(acc: pd.DataFrame, table: pd.DataFrame, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), gridspec_kw={"width_ratios": [1.1, 1]})
    sns.heatmap(
        100 * acc,
        annot=True,
        fmt=".0f",
        vmin=0,
        vmax=100,
        cmap="viridis",
        cbar_kws={"label": "accuracy (%)"},
        ax=axes[0],
    )
    axes[0].set_title(
        "Unbiased test: accuracy by digit x background colour\n(diagonal = bias-aligned)"
    )
    data = (
        (100 * table[["accuracy", "worst-group"]])
        .reset_index()
        .melt(id_vars="split", var_name="metric", value_name="accuracy (%)")
    )
    sns.barplot(data=data, y="split", x="accuracy (%)", hue="metric", ax=axes[1])
    axes[1].set_xlim(0, 100)
    axes[1].set_ylabel("")
    axes[1].set_title("Right when the colour agrees,\nwrong when it does not")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


__all__ = ["run_demo", "summarise", "accuracy_table", "save_figure"]
