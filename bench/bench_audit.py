"""Embedding-audit speed on synthetic 100k x 512 embeddings (Biased-MNIST shaped).

10 classes, 10 bias values, 90% of each class bias-aligned (``b = y``), the rest spread over the
other values; ``Z = relu(H W) + noise`` with ``H`` carrying the target strongly and the bias
weakly, so the probes have something to learn and do not converge in two iterations. Prints
seconds per stage of :func:`debias.audit.audit_embeddings` (leakage probe, target probe,
geometry, knn, projection) and, with ``--compare-solvers``, one fit of the L-BFGS probe against
``SGDClassifier(loss="log_loss")`` on the same 80% split (time and held-out balanced accuracy),
the measurement behind the probe's solver choice.

Usage::

    .venv/bin/python bench/bench_audit.py                 # 100k x 512
    .venv/bin/python bench/bench_audit.py --n 20000 --compare-solvers
"""

from __future__ import annotations

import argparse
import json
import time
import warnings

import numpy as np

from debias.audit import audit_embeddings


def synthetic(n: int = 100_000, d: int = 512, *, seed: int = 0, rho: float = 0.9):
    """``(Z, y, b)``: Biased-MNIST-like labels and nonlinear features of a 64-d latent."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, n)
    other = (y + rng.integers(1, 10, n)) % 10
    b = np.where(rng.random(n) < rho, y, other)
    latent = rng.normal(size=(n, 64)).astype(np.float32)
    latent[np.arange(n), y] += 2.0
    latent[np.arange(n), 20 + b] += 1.0
    W = (rng.normal(size=(64, d)) / 8).astype(np.float32)
    Z = np.maximum(latent @ W, 0.0)
    Z += 0.1 * rng.normal(size=Z.shape).astype(np.float32)
    return Z, y.astype(np.int64), b.astype(np.int64)


def compare_solvers(Z: np.ndarray, labels: np.ndarray, *, seed: int = 0) -> dict:
    """One fit each of L-BFGS (max_iter 100) and SGD log-loss on 80% of rows, scored on 20%,
    single-threaded like the audit's probes."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression, SGDClassifier
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    n = len(labels)
    order = np.random.default_rng(seed).permutation(n)
    train, test = order[: int(0.8 * n)], order[int(0.8 * n) :]
    out = {}
    for name, clf in (
        ("lbfgs", LogisticRegression(max_iter=100)),
        ("sgd", SGDClassifier(loss="log_loss", max_iter=20, tol=1e-3, random_state=seed)),
    ):
        pipe = make_pipeline(StandardScaler(), clf)
        t = time.perf_counter()
        # One thread, as audit_embeddings(threads=1) runs its probes.
        with warnings.catch_warnings(), threadpool_limits(limits=1):
            warnings.simplefilter("ignore", ConvergenceWarning)
            pipe.fit(Z[train], labels[train])
        seconds = time.perf_counter() - t
        acc = balanced_accuracy_score(labels[test], pipe.predict(Z[test]))
        out[name] = {"seconds": round(seconds, 3), "balanced_accuracy": round(float(acc), 4)}
    out["sgd_over_lbfgs_time"] = round(out["sgd"]["seconds"] / out["lbfgs"]["seconds"], 3)
    return out


def run(n: int = 100_000, d: int = 512, *, seed: int = 0, solvers: bool = False) -> dict:
    """Time one full audit of synthetic ``n x d`` embeddings; return timings and headline values."""
    t = time.perf_counter()
    Z, y, b = synthetic(n, d, seed=seed)
    make_s = time.perf_counter() - t
    t = time.perf_counter()
    report = audit_embeddings(Z, y, b, seed=seed)
    total = time.perf_counter() - t
    result = {
        "n": n,
        "d": d,
        "data_seconds": round(make_s, 3),
        "audit_seconds": round(total, 3),
        "stage_seconds": report.timings,
        "bias_leakage": round(report.bias_leakage, 4),
        "bias_leakage_within_class_mean": round(
            float(report.bias_leakage_by_class["leakage"].mean()), 4
        ),
        "probe_accuracy": round(float(report.target_report.accuracy), 4),
        "probe_worst_group_accuracy": round(float(report.target_report.worst_group_accuracy), 4),
        "knn_purity": round(report.geometry["knn_purity"], 4),
        "knn_queries_used": report.settings["knn_queries_used"],
        "notes": report.notes,
    }
    if solvers:
        result["solvers_bias_probe"] = compare_solvers(Z, b, seed=seed)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--d", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--compare-solvers", action="store_true")
    args = parser.parse_args()
    result = run(args.n, args.d, seed=args.seed, solvers=args.compare_solvers)
    for stage, seconds in result["stage_seconds"].items():
        print(f"{stage:>14s}: {seconds:8.2f} s")
    print(f"{'total':>14s}: {result['audit_seconds']:8.2f} s  (n={args.n}, d={args.d})")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
