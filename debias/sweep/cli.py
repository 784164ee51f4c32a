"""``debias sweep CONFIG.yaml [--jobs N] [--backend local|ray|slurm] [--out DIR] [--set K=V]
[--only K=V1,V2] [--done-in TABLE] [--process-per-run] [--dry-run] [--status]`` and the SLURM
options (:data:`debias.sweep.slurm_options.FIELDS`: ``--partition``, ``--time``, ``--max-parallel``,
``--runs-per-task``, ``--sbatch KEY=VALUE``, ..., ``--detach``)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from debias.sweep.slurm_options import FIELDS as SLURM_FIELDS

BACKENDS = ("local", "ray", "slurm")  # as debias.sweep.runner.BACKENDS (not imported: keeps
# --help fast)
# SLURM options given as flags of another name (the rest: --<name with dashes>).
_SLURM_FLAGS = {"options": "--sbatch", "setup": "--setup"}
_SLURM_STR = ("partition", "account", "mem", "time")
DATA_DRAWS = ("fixed", "seed")  # as debias.sweep.config.DATA_DRAWS (a test checks they agree)

__all__ = ["cmd_sweep", "register"]


def _parse_set(items: list[str], dashes: bool = False) -> dict[str, Any]:
    """``["epochs=2", "device=cpu"]`` -> ``{"epochs": 2, "device": "cpu"}`` (values read as YAML;
    ``dashes``: keys kept as written, e.g. #SBATCH options)."""
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
        out[key.strip() if dashes else key.strip().replace("-", "_")] = parsed
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


def _slurm_flags(args: argparse.Namespace) -> dict[str, Any]:
    """The SLURM options given on the command line (None where not given)."""
    flags = {name: getattr(args, f"slurm_{name}") for name in SLURM_FIELDS}
    if flags["options"]:
        flags["options"] = _parse_set(flags["options"], dashes=True)
    return flags


def _status(args: argparse.Namespace) -> int:
    from pathlib import Path

    from debias.sweep.config import load_sweep
    from debias.sweep.slurm import slurm_status

    out = Path(args.out) if args.out else load_sweep(args.config).default_out
    if not (out / "sweep_status.csv").exists():
        print(
            f"debias sweep: error: {out} has no sweep_status.csv; nothing was run there",
            file=sys.stderr,
        )
        return 2
    counts = slurm_status(out)
    return 0 if not set(counts) & {"failed", "interrupted"} else 1


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

    if args.status:
        return _status(args)
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
            done_in=args.done_in,
            process_per_run=args.process_per_run,
            slurm=_slurm_flags(args),
            wait=not args.detach,
        )
    except ImportError as exc:  # --backend ray/slurm without Ray/submitit installed
        print(f"debias sweep: error: {exc}", file=sys.stderr)
        return 2
    if args.detach and args.backend == "slurm":
        return 0
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
        description="Run every run of a sweep YAML. Finished runs are skipped, interrupted "
        "ones resumed, failed ones recorded in <out>/sweep_status.csv and <run>/error.txt "
        "without stopping the others.",
        epilog="YAML: base (options of every run), grid (lists whose product gives the runs), "
        "methods (per-method options), search (a random search); e.g. "
        "'base: {dataset: biased-mnist, model: lenet, epochs: 3}' and "
        "'grid: {rho: [0.997, 0.99], method: [ce, reweight], seed: [0, 1, 2]}'. The schema "
        "with a commented example: docs/SWEEPS.md; worked examples: sweeps/*.yaml.",
    )
    p.add_argument("config", help="sweep YAML file, e.g. sweeps/biased_mnist_quick.yaml")
    p.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="runs at once, each with cores // jobs threads (default 1: one run at a time)",
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
        help="local processes, Ray tasks (pip install 'debias-toolkit[ray]') or a SLURM job "
        "array through submitit (pip install 'debias-toolkit[slurm]'; options below)",
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
        "--done-in",
        metavar="TABLE",
        help="a report's runs.csv (or its folder) from an earlier session: leave out the runs "
        "it lists as done with the same options (refused if it lists one with other options); "
        "see docs/SWEEPS.md, 'Across sessions'",
    )
    p.add_argument(
        "--process-per-run",
        action="store_true",
        help="local backend: start a fresh process for every run instead of --jobs persistent "
        "workers (each pays the imports and data loading again; same numbers)",
    )
    p.add_argument("--dry-run", action="store_true", help="validate and list the runs; run nothing")
    p.add_argument(
        "--status",
        action="store_true",
        help="show the sweep's progress (its ledger, and squeue for a SLURM sweep); run nothing",
    )
    _add_slurm_flags(p)
    p.set_defaults(func=cmd_sweep)
    return p


def _add_slurm_flags(p: argparse.ArgumentParser) -> None:
    """One flag per SLURM option (debias.sweep.slurm_options.FIELDS); each overrides the YAML's
    ``slurm:`` block."""
    g = p.add_argument_group(
        "SLURM (--backend slurm; the same keys in the YAML's slurm: block)",
        "one submitit job array per sweep; see docs/SCALING.md",
    )
    for name, help in SLURM_FIELDS.items():
        flag = _SLURM_FLAGS.get(name, "--" + name.replace("_", "-"))
        dest = f"slurm_{name}"
        if name in _SLURM_FLAGS:
            metavar = "KEY=VALUE" if name == "options" else "LINE"
            g.add_argument(flag, dest=dest, action="append", metavar=metavar, help=help)
        elif name in _SLURM_STR:
            g.add_argument(flag, dest=dest, metavar=name.upper(), help=help)
        else:
            g.add_argument(flag, dest=dest, type=int, metavar="N", help=help)
    g.add_argument(
        "--detach",
        action="store_true",
        help="submit the job array and return (follow it with --status)",
    )
