"""Time and memory of the contrastive losses against a straightforward SupContrast-style one.

Measures forward + backward at B = 256 and 1024, V = 2, D = 128 on CPU in float32 for our
SupCon, ConTeX, SimCLR and CACR and for two references written here in the structure of the
official code: ``ref_supcon`` (HobbitLong/SupContrast ``SupConLoss``: explicit float masks built
with ``scatter``, ``logits_mask``, ``exp``, ``log``, ``sum``) and ``ref_contex`` (the same
structure with ConTeX's second term, as in hdeng26/Contex). The bar (task brief): ConTeX, with
two terms, costs no more time and no more peak memory than the one-term ``ref_supcon``.

How it measures:

* Time: one worker process runs all variants interleaved (variant order inside each repeat),
  after warm-up; median and min–max of the repeats, in ms.
* Peak memory: one fresh process per (variant, B). It records ``ru_maxrss`` after building
  the inputs and a small warm-up call, runs one forward + backward, and reports the increase
  of ``ru_maxrss``. To make RSS follow tensor lifetimes, every worker runs with the same glibc
  settings ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` (large blocks are mmapped
  and returned on free; the script re-executes itself with them if they are not set and
  prints the values used). ``saved_mb`` is a second, allocator-independent view: the bytes of
  distinct storages autograd saves for backward (``saved_tensors_hooks``).

Run: ``.venv/bin/python bench/bench_losses.py [--repeats 11] [--batch-sizes 256 1024]``.
``run(...)`` returns the rows as a list of dicts for ``bench/run``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "131072"}
OURS = ("supcon", "contex", "simclr", "cacr")
REFS = ("ref_supcon", "ref_contex")
VARIANTS = OURS + REFS
REPO = Path(__file__).resolve().parents[1]


# -- the straightforward references (SupContrast structure) -----------------------------------
def ref_supcon(features, labels, temperature: float = 0.07, base_temperature: float = 0.07):
    """SupContrast ``SupConLoss`` (contrast_mode 'all'), structure kept, normalisation added."""
    import torch
    import torch.nn.functional as F

    features = F.normalize(features, dim=-1)
    device = features.device
    batch_size = features.shape[0]
    labels = labels.contiguous().view(-1, 1)
    mask = torch.eq(labels, labels.T).float().to(device)
    contrast_count = features.shape[1]
    contrast_feature = torch.cat(torch.unbind(features, dim=1), dim=0)
    anchor_feature, anchor_count = contrast_feature, contrast_count
    anchor_dot_contrast = torch.div(torch.matmul(anchor_feature, contrast_feature.T), temperature)
    logits_max, _ = torch.max(anchor_dot_contrast, dim=1, keepdim=True)
    logits = anchor_dot_contrast - logits_max.detach()
    mask = mask.repeat(anchor_count, contrast_count)
    logits_mask = torch.scatter(
        torch.ones_like(mask),
        1,
        torch.arange(batch_size * anchor_count, device=device).view(-1, 1),
        0,
    )
    mask = mask * logits_mask
    exp_logits = torch.exp(logits) * logits_mask
    log_prob = logits - torch.log(exp_logits.sum(1, keepdim=True))
    mean_log_prob_pos = (mask * log_prob).sum(1) / mask.sum(1)
    loss = -(temperature / base_temperature) * mean_log_prob_pos
    return loss.view(anchor_count, batch_size).mean()


def ref_contex(features, labels, temperature: float = 0.07, base_temperature: float = 0.07):
    """ConTeX in the official code's structure (hdeng26/Contex ``SupConTupletLoss``)."""
    import torch
    import torch.nn.functional as F

    features = F.normalize(features, dim=-1)
    device = features.device
    batch_size = features.shape[0]
    labels = labels.contiguous().view(-1, 1)
    mask = torch.eq(labels, labels.T).float().to(device)
    contrast_count = features.shape[1]
    contrast_feature = torch.cat(torch.unbind(features, dim=1), dim=0)
    anchor_feature, anchor_count = contrast_feature, contrast_count
    anchor_dot_contrast = torch.div(torch.matmul(anchor_feature, contrast_feature.T), temperature)
    logits_max, _ = torch.max(anchor_dot_contrast, dim=1, keepdim=True)
    logits = anchor_dot_contrast - logits_max.detach()
    mask = mask.repeat(anchor_count, contrast_count)
    self_mask = torch.scatter(
        torch.ones_like(mask),
        1,
        torch.arange(batch_size * anchor_count, device=device).view(-1, 1),
        0,
    )
    logits_mask = torch.square(mask - 1)
    mask = mask * self_mask
    exp_logits = torch.exp(logits) * logits_mask
    log_prob = logits - torch.log(exp_logits.sum(1, keepdim=True))
    mean_log_prob_pos = (mask * log_prob).sum(1) / mask.sum(1)
    sim_mask = torch.eye(batch_size, dtype=torch.float32, device=device)
    sim_mask = sim_mask.repeat(anchor_count, contrast_count) * self_mask
    logits_neg = torch.exp(logits) * self_mask
    log_self_diff = logits - torch.log(logits_neg.sum(1, keepdim=True))
    triplet_loss = (sim_mask * log_self_diff).sum(1) / sim_mask.sum(1)
    loss = -(temperature / base_temperature) * (triplet_loss + mean_log_prob_pos) / 2
    return loss.view(anchor_count, batch_size).mean()


def _make_fn(variant: str):
    if variant == "ref_supcon":
        return ref_supcon
    if variant == "ref_contex":
        return ref_contex
    from debias.losses import get_loss

    loss = get_loss(variant)
    return lambda f, y: loss(f, y)


def _inputs(b: int, v: int, d: int, seed: int = 0):
    import torch

    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(b, v, d, generator=g).requires_grad_(True)
    labels = torch.randint(0, 10, (b,), generator=g)
    return feats, labels


def _step(fn, feats, labels) -> None:
    fn(feats, labels).backward()
    feats.grad = None


# -- workers (run in subprocesses with MALLOC_ENV) ----------------------------------------------
def _worker_time(sizes: list[int], v: int, d: int, repeats: int, warmup: int) -> dict[str, Any]:
    import torch

    fns = {name: _make_fn(name) for name in VARIANTS}
    out: dict[str, Any] = {"threads": torch.get_num_threads(), "times": {}}
    for b in sizes:
        feats, labels = _inputs(b, v, d)
        for _ in range(warmup):
            for fn in fns.values():
                _step(fn, feats, labels)
        times: dict[str, list[float]] = {name: [] for name in fns}
        for _ in range(repeats):
            for name, fn in fns.items():  # interleaved: drifts in machine load hit every variant
                t0 = time.perf_counter()
                _step(fn, feats, labels)
                times[name].append((time.perf_counter() - t0) * 1e3)
        out["times"][str(b)] = times
    return out


def _saved_bytes(fn, feats, labels) -> int:
    import torch

    seen: dict[int, int] = {}

    def pack(t):
        st = t.untyped_storage()
        seen[st.data_ptr()] = st.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = fn(feats, labels)
    loss.backward()
    feats.grad = None
    return sum(seen.values())


def _worker_memory(variant: str, b: int, v: int, d: int) -> dict[str, Any]:
    fn = _make_fn(variant)
    small, small_y = _inputs(8, v, d)
    _step(fn, small, small_y)  # lazy initialisation outside the measured window
    feats, labels = _inputs(b, v, d)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    _step(fn, feats, labels)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    saved = _saved_bytes(fn, feats, labels)
    return {"peak_mb": (after - before) / 1024.0, "saved_mb": saved / 2**20}


def _child(args: list[str]) -> dict[str, Any]:
    env = {**os.environ, **MALLOC_ENV}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")]))
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--worker", *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"bench worker {args} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -- public entry point -----------------------------------------------------------------------
def run(
    batch_sizes: tuple[int, ...] = (256, 1024),
    views: int = 2,
    dim: int = 128,
    repeats: int = 11,
    warmup: int = 2,
    memory: bool = True,
) -> list[dict[str, Any]]:
    """Benchmark every variant; one dict per (variant, B) with times, memory and ratios.

    Ratios are ours / ``ref_supcon`` (the bar) and, for ConTeX, also ours / ``ref_contex``.
    """
    timing = _child(
        [
            "time",
            json.dumps(
                {
                    "sizes": list(batch_sizes),
                    "v": views,
                    "d": dim,
                    "repeats": repeats,
                    "warmup": warmup,
                }
            ),
        ]
    )
    rows: list[dict[str, Any]] = []
    for b in batch_sizes:
        per_b: dict[str, dict[str, Any]] = {}
        for name in VARIANTS:
            ts = timing["times"][str(b)][name]
            row: dict[str, Any] = {
                "bench": "losses",
                "variant": name,
                "impl": "reference" if name.startswith("ref_") else "ours",
                "B": b,
                "V": views,
                "D": dim,
                "device": "cpu",
                "dtype": "float32",
                "threads": timing["threads"],
                "repeats": repeats,
                "time_ms_median": statistics.median(ts),
                "time_ms_min": min(ts),
                "time_ms_max": max(ts),
                "malloc_env": dict(MALLOC_ENV),
            }
            if memory:
                row.update(
                    _child(["memory", json.dumps({"variant": name, "b": b, "v": views, "d": dim})])
                )
            per_b[name] = row
        for name, row in per_b.items():
            for ref in ("ref_supcon",) + (("ref_contex",) if name == "contex" else ()):
                r = per_b[ref]
                row[f"time_ratio_vs_{ref}"] = row["time_ms_median"] / r["time_ms_median"]
                if memory:
                    row[f"peak_ratio_vs_{ref}"] = row["peak_mb"] / max(r["peak_mb"], 1e-9)
                    row[f"saved_ratio_vs_{ref}"] = row["saved_mb"] / max(r["saved_mb"], 1e-9)
            rows.append(row)
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    head = (
        f"{'B':>5} {'variant':<11} {'median ms':>10} {'min-max ms':>17} {'peak MB':>8} "
        f"{'saved MB':>9} {'t/ref_supcon':>12} {'mem/ref_supcon':>14}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['B']:>5} {r['variant']:<11} {r['time_ms_median']:>10.2f} "
            f"{r['time_ms_min']:>8.2f}-{r['time_ms_max']:<8.2f} "
            f"{r.get('peak_mb', float('nan')):>8.1f} {r.get('saved_mb', float('nan')):>9.1f} "
            f"{r['time_ratio_vs_ref_supcon']:>12.2f} {r.get('peak_ratio_vs_ref_supcon', float('nan')):>14.2f}"
        )
    for r in rows:
        if r["variant"] == "contex" and "time_ratio_vs_ref_contex" in r:
            lines.append(
                f"B={r['B']}: contex vs ref_contex: time x{r['time_ratio_vs_ref_contex']:.2f}, "
                f"peak x{r.get('peak_ratio_vs_ref_contex', float('nan')):.2f}"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--worker":
        kind, params = argv[1], json.loads(argv[2])
        if kind == "time":
            res = _worker_time(
                params["sizes"], params["v"], params["d"], params["repeats"], params["warmup"]
            )
        else:
            res = _worker_memory(params["variant"], params["b"], params["v"], params["d"])
        print(json.dumps(res))
        return
    if any(os.environ.get(k) != v for k, v in MALLOC_ENV.items()):
        # Same allocator behaviour here as in the workers (they get MALLOC_ENV explicitly too).
        os.execve(
            sys.executable,
            [sys.executable, str(Path(__file__).resolve()), *argv],
            {**os.environ, **MALLOC_ENV},
        )
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[256, 1024])
    p.add_argument("--repeats", type=int, default=11)
    p.add_argument("--no-memory", action="store_true")
    p.add_argument("--json", action="store_true", help="print the rows as JSON too")
    a = p.parse_args(argv)
    print("malloc env: " + " ".join(f"{k}={os.environ.get(k)}" for k in MALLOC_ENV))
    rows = run(tuple(a.batch_sizes), repeats=a.repeats, memory=not a.no_memory)
    print(f"torch threads: {rows[0]['threads']}, V={rows[0]['V']}, D={rows[0]['D']}, float32, CPU")
    print(format_table(rows))
    if a.json:
        print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
