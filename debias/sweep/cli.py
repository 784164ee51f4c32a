"""``debias sweep CONFIG.yaml [--jobs N] [--backend local|ray] [--out DIR] [--set K=V]
[--only K=V1,V2] [--process-per-run] [--dry-run]``."""

from __future__ import annotations

import argparse
import sys
from typing import Any

BACKENDS = ("local", "ray")  # as debias.sweep.runner.BACKENDS (not imported: keeps --help fast)
DATA_DRAWS = ("fixed", "seed")  # as debias.sweep.config.DATA_DRAWS (a test checks they agree)

__all__ = ["cmd_sweep", "register"]


def _parse_set(items: list[str]) -> dict[str, Any]:
    """``["epochs=2", "device=cpu"]`` -> ``{"epochs": 2, "device": "cpu"}`` (values read as YAML)."""
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set {item!r}: expected KEY=VALUE, e.g. --set device=cpu")
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            parsed = value
        out[key.strip().replace("-", "_")] = parsed
    return out


def _parse_only(items: list[str]) -> dict[str, list[Any]]:
    """``["rho=0.997,0.99", "method=ce"]`` -> ``{"rho": [0.997, 0.99], "method": ["ce"]}``
    (the values are read as one YAML list, so ``lr_milestones=[20,40],[]`` works too)."""
    import yaml

    out: dict[str, list[Any]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise ValueError(
                f"--only {item!r}: expected KEY=VALUE[,VALUE...], e.g. --only rho=0.997"
            )
        try:
            values = yaml.safe_load(f"[{value}]")
        except yaml.YAMLError:
            values = value.split(",")
        key = key.strip().replace("-", "_")
        out[key] = [*out.get(key, []), *values]
    return out


def _with_data_draw(config: str, data_draw: str | None) -> Any:
    """The sweep YAML, or its spec with ``--data-draw`` replacing its ``data_draw``."""
    if data_draw is None:
        return config
    from debias.sweep.config import SweepSpec

    spec = SweepSpec.load(config)
    return SweepSpec.from_dict({**spec.to_dict(), "data_draw": data_draw}, source=spec.source)


def cmd_sweep(args: argparse.Namespace) -> int:
    """Run the sweep; exit code 1 when any run failed (the others still ran)."""
    from debias.sweep.runner import run_sweep

    try:
        result = run_sweep(
            _with_data_draw(args.config, args.data_draw),
            jobs=args.jobs,
            backend=args.backend,
            out=args.out,
            dry_run=args.dry_run,
            ray_address=args.ray_address,
            overrides=_parse_set(args.set),
            only=_parse_only(args.only),
            process_per_run=args.process_per_run,
        )
    except ImportError as exc:  # --backend ray without Ray installed
        print(f"debias sweep: error: {exc}", file=sys.stderr)
        return 2
    if result.failed:
        print(
            f"{len(result.failed)} run(s) failed; see error.txt in: "
            + ", ".join(result.failed[:10])
            + (" ..." if len(result.failed) > 10 else "")
        )
        return 1
    return 0


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``sweep`` sub-command to an argparse ``add_subparsers()`` object."""
    p = subparsers.add_parser(
        "sweep",
        help="run a grid of training runs from a YAML file (skips finished runs, resumes others)",
        description="Run every run of a sweep YAML (see debias.sweep.config for the schema). "
        "Finished runs are skipped, interrupted ones resumed, failed ones recorded in "
        "<out>/sweep_status.csv and <run>/error.txt without stopping the others.",
    )
    p.add_argument("config", help="sweep YAML file, e.g. sweeps/biased_mnist_quick.yaml")
    p.add_argument(
        "--jobs", type=int, default=1, help="runs at once (each gets cores // jobs threads)"
    )
    p.add_argument(
        "--data-draw",
        choices=DATA_DRAWS,
        help="override the YAML's data_draw: 'seed' (each run's data_seed is its seed) or "
        "'fixed' (every run on base's data_seed: how the sweeps of 2026-12-04 and before ran)",
    )
    p.add_argument(
        "--backend",
        default="local",
        choices=BACKENDS,
        help="local processes or Ray tasks (pip install 'debias-toolkit[ray]')",
    )
    p.add_argument("--ray-address", help="Ray cluster address (default: start a local Ray)")
    p.add_argument("--out", help="sweep folder (default: the YAML's out, else runs/sweeps/<name>)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a base option for every run, e.g. --set device=cpu; on a grid key, "
        "narrow the grid to that value (one of its values) (repeatable)",
    )
    p.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="KEY=VALUE[,VALUE]",
        help="run only these values of a grid key, e.g. --only rho=0.997,0.99 --only seed=0 "
        "(repeatable; values must be in the grid)",
    )
    p.add_argument(
        "--process-per-run",
        action="store_true",
        help="local backend: start a fresh process for every run instead of --jobs persistent "
        "workers (each pays the imports and data loading again; same numbers)",
    )
    p.add_argument("--dry-run", action="store_true", help="validate and list the runs; run nothing")
    p.set_defaults(func=cmd_sweep)
    return p
