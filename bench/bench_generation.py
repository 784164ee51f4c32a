"""Biased-MNIST generation speed: vectorised ``colour_bias`` vs a per-sample PIL generator.

The reference is written the way the original ReBias code works with images: one
``PIL.Image`` per digit (``Image.fromarray`` -> RGB -> recolour through numpy -> ``Image``),
appended to a list, after a ReBias-style colour assignment (index tensors per colour,
``torch.split`` into chunks). Both generate the 60,000-image training set at rho 0.99; the runs
are interleaved (ours, reference, ours, ...) so machine load affects both alike. The script also
checks that both give identical colours for every image and identical pixels on a random subset.

Usage::

    DEBIAS_DATA=../shared/data .venv/bin/python bench/bench_generation.py --repeats 5
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import time

import numpy as np
import torch
from PIL import Image

from debias.data.biased_mnist import PALETTES, colour_bias
from debias.data.mnist import load_mnist

RHO = 0.99
SEED = 0
CHECK_SUBSET = 500


def reference_colours(labels: np.ndarray, rho: float, seed: int) -> np.ndarray:
    """ReBias' ``_update_bias_indices`` loop (index tensors per colour), seeded RandomState."""
    rng = np.random.RandomState(seed)
    targets = torch.from_numpy(labels)
    bias_indices = {label: torch.LongTensor() for label in range(10)}
    for label in range(10):
        indices = np.where((targets == label).numpy())[0]
        rng.shuffle(indices)
        indices = torch.LongTensor(indices)
        n_corr = int(len(indices) * rho)
        n_decorr = int(np.ceil((len(indices) - n_corr) / 9))
        bias_indices[label] = torch.cat([bias_indices[label], indices[:n_corr]])
        other = [lab % 10 for lab in range(label + 1, label + 10)]
        rng.shuffle(other)
        for k, chunk in enumerate(torch.split(indices[n_corr:], n_decorr)):
            bias_indices[other[k]] = torch.cat([bias_indices[other[k]], chunk])
    colours = np.full(len(labels), -1, dtype=np.int64)
    for colour, rows in bias_indices.items():
        colours[rows.numpy()] = colour
    return colours


def reference_generate(
    images: np.ndarray, labels: np.ndarray, rho: float, seed: int, palette: str = "rebias"
) -> tuple[list[Image.Image], np.ndarray]:
    """Per-sample generator: one PIL RGB image per digit, in a list (the slow, common way)."""
    colours = reference_colours(labels, rho, seed)
    pal = PALETTES[palette]
    out = []
    for i in range(len(images)):
        digit = images[i]
        rgb = np.array(Image.fromarray(digit, mode="L").convert("RGB"))
        background = digit == 0
        rgb[background] = pal[colours[i]]
        rgb[~background] = 255
        out.append(Image.fromarray(rgb, mode="RGB"))
    return out, colours


def _summary(times: list[float]) -> dict[str, float]:
    return {"median": statistics.median(times), "min": min(times), "max": max(times)}


def run(root: str | os.PathLike | None = None, repeats: int = 5) -> dict:
    """Time both generators ``repeats`` times, interleaved; return timings, ratio and checks."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1; got {repeats}")
    images, labels = load_mnist("train", root=root)
    images_np, labels_np = images.numpy(), labels.numpy()
    ours_t: list[float] = []
    ref_t: list[float] = []
    ds = ref_imgs = ref_colours = None
    for _ in range(repeats):
        del ds, ref_imgs, ref_colours
        gc.collect()
        t0 = time.perf_counter()
        ds = colour_bias(images, labels, RHO, seed=SEED)
        ours_t.append(time.perf_counter() - t0)
        gc.collect()
        t0 = time.perf_counter()
        ref_imgs, ref_colours = reference_generate(images_np, labels_np, RHO, SEED)
        ref_t.append(time.perf_counter() - t0)

    same_colours = bool(np.array_equal(ds.bias.numpy(), ref_colours))
    rows = np.random.RandomState(1).choice(len(ref_imgs), CHECK_SUBSET, replace=False)
    ours_hwc = ds.images.permute(0, 2, 3, 1).numpy()
    same_pixels = all(np.array_equal(np.asarray(ref_imgs[i]), ours_hwc[i]) for i in rows)
    ours, ref = _summary(ours_t), _summary(ref_t)
    return {
        "n_images": len(ds),
        "rho": RHO,
        "repeats": repeats,
        "torch_threads": torch.get_num_threads(),
        "colour_bias_s": ours,
        "reference_s": ref,
        "speedup_median": ref["median"] / ours["median"],
        "identical_colours": same_colours,
        "identical_images_subset": same_pixels,
        "subset_size": CHECK_SUBSET,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", default=None, help="data root (default: $DEBIAS_DATA, ./data)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of each generator")
    parser.add_argument("--json", action="store_true", help="print the result dict as JSON")
    args = parser.parse_args(argv)
    res = run(root=args.root, repeats=args.repeats)
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        print(
            f"Biased-MNIST train generation, {res['n_images']} images, rho {res['rho']}, "
            f"{res['repeats']} interleaved repeats, torch threads {res['torch_threads']}"
        )
        for key, label in (("colour_bias_s", "colour_bias"), ("reference_s", "per-sample PIL")):
            s = res[key]
            print(
                f"  {label:<15} median {s['median']:.3f} s  min {s['min']:.3f} s  "
                f"max {s['max']:.3f} s"
            )
        print(f"  speed ratio (reference / colour_bias, medians): {res['speedup_median']:.1f}x")
        print(
            f"  identical colours (all images): {res['identical_colours']}; identical images "
            f"({res['subset_size']} random rows): {res['identical_images_subset']}"
        )
    ok = res["identical_colours"] and res["identical_images_subset"]
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
