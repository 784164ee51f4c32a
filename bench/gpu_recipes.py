"""Short versions of the published-recipe sweeps, end to end: every method of
``sweeps/{waterbirds,celeba}_subpopbench.yaml`` and ``sweeps/{utkface,celeba}_biascon*.yaml``,
one run each (seed 0, every training recipe, the first value of the other grid keys), a few steps, so that the first
session on a GPU proves the path: pretrained torchvision weights from TORCH_HOME, their
preprocessing, SGD with momentum, Waterbirds' official layout, the adjusted average.

    python bench/gpu_recipes.py            # on a GPU: 1 epoch of 20 steps per run
    python bench/gpu_recipes.py --toy      # the same path on a CPU: 2 steps, 32 px images

The runs are the YAMLs' own (loaded and expanded by ``debias.sweep``), with only the length
shortened (``epochs`` 1 at a constant lr, ``max_steps``, JTT's ``identify_epochs`` 1, ``eval_limit``; ``--toy``
also 32 px images, batch 8 and a contrastive stream of 8). Their numbers mean nothing beyond "it trains": the published
numbers need the full sweeps.

Data: Waterbirds from ``$DEBIAS_DATA`` when the official release is there, else a synthetic
tree in its layout (``official_counts`` off); CelebA and UTKFace from ``$DEBIAS_DATA`` (a
recipe whose data is missing is reported and skipped). Weights: when the file torchvision
expects is absent, the one-line offline error is printed, then a randomly initialised
stand-in with the same keys is written into a separate TORCH_HOME under the output folder and
the run says so: the path is checked, the weights are not ImageNet's.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RECIPES = (
    "waterbirds_subpopbench", "celeba_subpopbench", "utkface_biascon", "celeba_biascon",
    "celeba_biascon_blond",
)  # fmt: skip
SHORT = {
    "gpu": {
        "epochs": 1, "lr_milestones": [], "lr_schedule": "constant", "max_steps": 20,
        "eval_limit": 512, "device": "cuda",
    },
    "toy": {
        "epochs": 1, "lr_milestones": [], "lr_schedule": "constant", "max_steps": 2, "eval_limit": 16, "batch_size": 8, "image_size": 32,
        "device": "cpu", "represent": False, "eval_batch_size": 64,
    },
}  # fmt: skip


def short_runs(recipe: str, scale: str) -> list[dict]:
    """One shortened config per method (and training recipe: BiasCon and BC+BB) of
    ``sweeps/<recipe>.yaml``, with its training recipe's options merged in."""
    from debias.recipes import recipe_options
    from debias.sweep.config import load_sweep

    spec = load_sweep(REPO / "sweeps" / f"{recipe}.yaml")
    first = {k: [v[0]] for k, v in spec.grid.items() if k not in ("method", "recipe")}
    out = []
    for run in spec.expand(only=first):
        cfg = dict(run.config)
        if cfg.get("recipe"):
            cfg = recipe_options(cfg["recipe"], cfg)  # its model and weights, for run_one
        cfg = {**cfg, **SHORT[scale], "progress": False}
        options = dict(cfg.get("method_options") or {})
        if "identify_epochs" in options:
            options["identify_epochs"] = 1
        if "stream_batch_size" in options and scale == "toy":
            options["stream_batch_size"] = SHORT[scale]["batch_size"]
        cfg["method_options"] = options
        out.append({"name": f"{recipe}/{run.name}", **cfg})
    return out


def waterbirds_root(out: Path) -> tuple[str | None, bool]:
    """(root, official): the real release under $DEBIAS_DATA, else a synthetic tree."""
    from debias.data.waterbirds import find_folder, write_synthetic_release

    try:
        return str(find_folder()), True
    except FileNotFoundError:
        folder = out / "waterbirds_synthetic"
        if not (folder / "waterbird_complete95_forest2water2" / "metadata.csv").exists():
            write_synthetic_release(folder, size=64)
        return str(folder), False


def ensure_weights(model: str, weights: str, out: Path) -> bool:
    """True when the real file is there; else print the offline error once and write a random
    stand-in into ``out/torch_stand_in`` (TORCH_HOME is pointed there)."""
    import torch

    from debias.models import WeightsNotFoundError, check_weights
    from debias.models.pretrained import expected_weights_file, resolve_weights
    from debias.models.registry import TORCHVISION_MODELS

    try:
        check_weights(model, weights)
        return "torch_stand_in" not in os.environ.get("TORCH_HOME", "")
    except WeightsNotFoundError as err:
        print(f"  offline message (as a user sees it): {err}")
    os.environ["TORCH_HOME"] = str(out / "torch_stand_in")
    arch = TORCHVISION_MODELS[model]
    path = expected_weights_file(resolve_weights(arch, weights))
    if not path.exists():
        import torchvision.models as tvm

        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(getattr(tvm, arch)(weights=None).state_dict(), path)
    return False


def run_one(cfg: dict, out: Path) -> str:
    from debias.train import train

    name = cfg["name"]
    cfg = {k: v for k, v in cfg.items() if k != "name"}
    real = ensure_weights(cfg["model"], cfg["weights"], out)
    t0 = time.perf_counter()
    m = train({**cfg, "out": str(out / name)}, force=True, log=lambda *a, **k: None)
    test = m["splits"]["test"]
    adjusted = test.get("adjusted_accuracy")
    pre = m.get("preprocessing") or {}
    return (
        f"{name}: {time.perf_counter() - t0:.1f} s, test acc {100 * test['accuracy']:.1f}%, "
        f"worst-group {100 * test['worst_group_accuracy']:.1f}%"
        + (f", adjusted {100 * adjusted:.1f}%" if adjusted is not None else "")
        + f"; input {pre.get('applied', {}).get('input')} normalised by {pre.get('weights')}"
        + ("" if real else " (random stand-in weights: path check only)")
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--toy", action="store_true", help="CPU, toy scale")
    p.add_argument("--out", default=os.environ.get("GPU_CHECK_OUT", "runs/gpu_check"))
    p.add_argument("--recipes", nargs="*", default=list(RECIPES))
    p.add_argument("--methods", nargs="*", default=None, help="only these methods")
    args = p.parse_args(argv)
    out = Path(args.out) / ("recipes_toy" if args.toy else "recipes")
    out.mkdir(parents=True, exist_ok=True)
    status = 0
    for recipe in args.recipes:
        runs = short_runs(recipe, "toy" if args.toy else "gpu")
        runs = [r for r in runs if args.methods is None or r["method"] in args.methods]
        if runs[0]["dataset"] == "waterbirds":
            root, official = waterbirds_root(out)
            extra = {"root": root, "data_options": {"official_counts": official}}
            runs = [{**r, **extra} for r in runs]
            print(f"{recipe}: Waterbirds {'release' if official else 'synthetic tree'} at {root}")
        for cfg in runs:
            try:
                print("  " + run_one(cfg, out), flush=True)
            except (FileNotFoundError, ValueError) as err:
                print(f"  {cfg.get('name', recipe)}: not run: {err}", flush=True)
                status = 1
            except Exception:  # report every recipe, then fail
                traceback.print_exc()
                status = 1
    return status


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.exit(main())
