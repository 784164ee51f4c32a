"""``debias audit``: audit saved embeddings, or a finished run's encoder on its test split."""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

# What AuditReport.save writes (with plots).
AUDIT_FILES = (
    "audit.md",
    "audit.csv",
    "groups.csv",
    "audit.json",
    "projection.png",
    "groups.png",
    "leakage.png",
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "audit",
        help="bias leakage, group metrics and geometry of embeddings",
        description="Audit an embeddings file (written by `debias train --save-embeddings`) or, "
        "with --run, embed a finished run's split with its encoder and audit that.",
    )
    p.add_argument(
        "embeddings", nargs="?", help="an .npz with Z, targets, bias (aligned_groups optional)"
    )
    p.add_argument("--run", help="a finished `debias train` run directory (uses its model.pt)")
    p.add_argument("--split", default="test", help="with --run: the split to embed (test)")
    p.add_argument("--root", help="with --run: data root, if not where the run was trained")
    p.add_argument("--out", required=True, help="directory for audit.md, CSV and PNG files")
    p.add_argument(
        "--seed", type=int, default=0,
        help="seed of the probes' folds and of every subsample (0): same seed, same numbers",
    )  # fmt: skip
    p.add_argument(
        "--cv", type=int, default=5,
        help="cross-validation folds of the linear probes (5); a bias value with fewer images "
        "in a class than folds is left out of that class's probe (NaN with the reason)",
    )  # fmt: skip
    p.add_argument(
        "--device", default="auto",
        help="with --run: where the encoder embeds the split: auto (a GPU when there is one), "
        "cpu, cuda, cuda:1 (auto); the probes run on the CPU",
    )  # fmt: skip
    p.add_argument(
        "--permutations", type=int, default=5,
        help="permuted refits of each leakage probe, bias shuffled within class: the chance "
        "level measured on the data (default 5; 0 skips the baseline)",
    )  # fmt: skip
    p.add_argument("--no-plots", action="store_true", help="write no PNG figures")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from debias.audit import Embeddings, audit_embeddings, embed
    from debias.train.runfolder import check_out_path, claim_folder

    check_out_path(args.out)  # before minutes of probing, not after

    if (args.embeddings is None) == (args.run is None):
        raise ValueError("give exactly one of EMBEDDINGS.npz or --run RUN_DIR")
    if args.run is not None:
        from debias.train import load_trained

        with warnings.catch_warnings(record=True) as caught:  # a limited run: into the notes
            warnings.simplefilter("always")
            model, splits, _ = load_trained(args.run, root=args.root, device=args.device)
        limited = [str(w.message) for w in caught if "limited run" in str(w.message)]
        if args.split not in splits:
            raise ValueError(f"--split {args.split!r}: the run's dataset has {sorted(splits)}")
        ds = splits[args.split]
        emb = embed(model, ds, device=ds.device, feature_fn=lambda m, x: m.features(x))
        source = f"{args.run} ({args.split} split)"
    else:
        path = Path(args.embeddings)
        if not path.is_file():
            raise FileNotFoundError(f"embeddings file not found: {path}")
        emb = Embeddings.load(path)
        source, limited = str(path), []
    report = audit_embeddings(
        emb.Z, emb.targets, emb.bias, aligned_groups=emb.aligned_groups, seed=args.seed,
        cv=args.cv, permutations=args.permutations,
    )  # fmt: skip
    report.notes.extend(limited)
    # Never over a user's own audit.md & co.: the folder must be new, debias's, or free of them.
    claim_folder(args.out, names=AUDIT_FILES, kind="audit")
    paths = report.save(args.out, plots=not args.no_plots)
    print(f"audit of {source}: {len(emb)} embeddings of dimension {emb.Z.shape[1]}")
    print(report.summary())
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0
