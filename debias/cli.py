"""The ``debias`` command line: ``debias {train,methods,recipes,evaluate,demo,sweep,report,audit} ...``."""

from __future__ import annotations

import argparse
import dataclasses
import errno
import json
import os
import sys
import types
import typing
import warnings
from collections.abc import Sequence
from typing import Any

from debias.train.config import RunConflictError
from debias.train.runfolder import RunFolderError


def _base_type(hint: Any) -> tuple[Any, bool]:
    """``(type, is_list)`` of a field's annotation without its ``None``: ``list[int] | None`` ->
    ``(int, True)``, ``float | None`` -> ``(float, False)``."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and len(args) == 1:
        hint = args[0]
    if typing.get_origin(hint) is list:
        return typing.get_args(hint)[0], True
    return hint, False


def _add_field_argument(group: argparse._ArgumentGroup, f: dataclasses.Field, hint: Any) -> None:
    """One ``--flag`` for TrainConfig field ``f``; type, help and default come from the field."""
    cli = dict(f.metadata["cli"])
    flag = cli.pop("flag", "--" + f.name.replace("_", "-"))
    aliases = cli.pop("aliases", ())
    false_flag = cli.pop("false_flag", None)
    required = cli.pop("required", False)
    default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    shown = required or default in (None, {}) or isinstance(default, bool)
    help_text = f.metadata["help"] + ("" if shown else f" ({default})")
    # Every generated option defaults to "not given": the dataclass (or --config) decides.
    kw: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS, "help": help_text, **cli}
    typ, is_list = _base_type(hint)
    if typ is bool:
        # On by default: only the flag that turns it off is shown (--quiet for progress).
        group.add_argument(
            flag, action="store_true", **(kw | {"help": argparse.SUPPRESS} if default else kw)
        )
        if default is None:  # None: decided from other options; both ways can be forced
            group.add_argument(
                "--no-" + flag[2:], action="store_false", **(kw | {"help": f"not {flag}"})
            )
        if false_flag:
            group.add_argument(false_flag, action="store_false", **kw)
    elif typing.get_origin(typ) is dict or typ is dict:
        group.add_argument(flag, action="append", metavar="KEY=VALUE", **kw)
    elif is_list:
        group.add_argument(flag, type=typ, nargs="*", **kw)
    else:
        group.add_argument(flag, *aliases, type=typ, **kw)


def _add_train_arguments(p: argparse.ArgumentParser) -> None:
    """``debias train``'s options: one per TrainConfig field (debias.train.config), plus
    ``--config`` and ``--force``."""
    from debias.train.config import OPTION_GROUPS, TrainConfig, method_shortcuts

    hints = typing.get_type_hints(TrainConfig)
    groups = {key: p.add_argument_group(title) for key, title in OPTION_GROUPS.items()}
    for f in dataclasses.fields(TrainConfig):
        _add_field_argument(groups[f.metadata["group"]], f, hints[f.name])
    for name, hp in method_shortcuts().items():
        _add_shortcut_argument(groups["method"], name, hp)
    e = groups["eval"]
    e.add_argument(
        "--config",
        metavar="FILE",
        help="YAML or JSON file of training options (keys as in TrainConfig, e.g. linear_lr); "
        "options given on the command line override it",
    )
    e.add_argument("--force", action="store_true", help="discard what --out holds and start over")


def _add_shortcut_argument(group: argparse._ArgumentGroup, name: str, hp: Any) -> None:
    """``--name`` for a method hyper-parameter that is also a top-level option (its
    ``HParam.shortcut``), its help naming the methods that take it."""
    from debias.methods import methods_taking

    takers = methods_taking(name)
    default = "" if hp.default is None else f" ({hp.default})"
    group.add_argument(
        "--" + name.replace("_", "-"),
        dest=name,
        type=hp.type or type(hp.default),
        default=argparse.SUPPRESS,
        help=f"{hp.help}{default}; methods {', '.join(takers)} (= --method-option {name}=VALUE)",
    )


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        low = text.lower()
        if low in ("true", "false"):
            return low == "true"
        return text


def _key_values(flag: str, items: list[str]) -> dict[str, Any]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"{flag} {item!r}: expected KEY=VALUE")
        out[key.replace("-", "_")] = _parse_value(value)
    return out


def config_from_args(args: argparse.Namespace):
    """The TrainConfig of ``debias train``: ``--config`` file values, then the options given on
    the command line (dict options such as ``--method-option`` are merged key by key)."""
    from debias.train.config import TrainConfig, load_config_file, method_shortcuts

    names = {f.name: f for f in dataclasses.fields(TrainConfig)}
    shortcuts = method_shortcuts()
    values = load_config_file(args.config) if args.config else {}
    for name, value in vars(args).items():
        if name in shortcuts:
            values[name] = value
        if name not in names:
            continue
        if names[name].default_factory is dict:  # --loss-option / --method-option KEY=VALUE
            flag = names[name].metadata["cli"]["flag"]
            value = {**(values.get(name) or {}), **_key_values(flag, value)}
        values[name] = value
    if "out" not in values:
        raise ValueError("--out is required (on the command line or as out: in --config)")
    return TrainConfig.from_dict(values)


def cmd_train(args: argparse.Namespace) -> int:
    from debias.train import train

    cfg = config_from_args(args)
    result = train(cfg, force=args.force)
    if os.environ.get("RANK", "0") != "0":  # under torchrun only rank 0 reports
        return 0
    test = result["splits"].get("test", {})
    print(
        f"done: {cfg.out}/metrics.json | selected epoch {result['selection']['epoch']} "
        f"({result['selection']['description']}) | test unbiased "
        f"{100 * test.get('unbiased_accuracy', float('nan')):.2f}% worst-group "
        f"{100 * test.get('worst_group_accuracy', float('nan')):.2f}%"
    )
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from debias.demo import run_demo
    from debias.train.runfolder import check_out_path

    check_out_path(args.out)  # --out '' is a mistake, not the current folder
    run_demo(
        out=args.out,
        rho=args.rho,
        epochs=args.epochs,
        device=args.device,
        root=args.root,
        force=args.force,
    )
    return 0


def cmd_methods(args: argparse.Namespace) -> int:
    """List the registered methods (the shared hyper-parameters once) and the search spaces a
    sweep's ``search:`` block draws from; with names, those methods in full."""
    from debias.methods.describe import describe_method, describe_methods
    from debias.train.config import TrainConfig, search_spaces

    if args.names:
        print("\n\n".join(describe_method(n) for n in args.names))
        return 0
    print(describe_methods())
    print("training options a sweep's search block may draw (search.options), for every method:")
    for key, space in search_spaces().items():
        default = getattr(TrainConfig, key)
        print(f"{'':<10}   {key} = {default!r}: {space.describe()} [{space.source}]")
    return 0


def cmd_recipes(args: argparse.Namespace) -> int:
    """List the recipes (debias/recipes/*.yaml): title, own loss, sources, options, notes.

    Example: ``debias recipes``, then ``debias train --recipe biascon --method contex ...``."""
    from debias.recipes import RECIPES

    for name, r in RECIPES.items():
        print(f"{name:<13} {r.title} (own loss: {r.loss}; --recipe {name})")
        for source in r.sources:
            print(f"{'':<13}   source: {source}")
        for key, value in r.options.items():
            print(f"{'':<13}   {key}: {value}")
        for note in r.notes:
            print(f"{'':<13}   note: {note}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Add the representation section (DFR head, bias leakage) to finished runs."""
    from debias.train.finished import evaluate_run

    for run in args.runs:
        evaluate_run(run, root=args.root, device=args.device, force=args.force, refits=args.refits)
    return 0


def build_parser() -> argparse.ArgumentParser:
    import debias
    from debias.train.represent import REFITS as REPRESENT_REFITS

    parser = argparse.ArgumentParser(
        prog="debias", description="Measure and reduce shortcut bias in image representations."
    )
    parser.add_argument("--version", action="version", version=f"debias {debias.__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train one model and write metrics.json")
    _add_train_arguments(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("methods", help="list the training methods and their hyper-parameters")
    p.add_argument(
        "names", nargs="*", metavar="NAME", help="show these methods in full (e.g. contex)"
    )
    p.set_defaults(func=cmd_methods)

    p = sub.add_parser("recipes", help="list the published training recipes and their sources")
    p.set_defaults(func=cmd_recipes)

    p = sub.add_parser(
        "evaluate",
        help="add the representation section (DFR head, bias leakage) to finished runs",
        description="Judge a finished run's encoder, not only its head: fit a DFR head on the "
        "frozen features of its validation split (it reads that split's bias labels, nothing "
        "of the test splits), score it on every test split, audit the bias leakage of the "
        "features, and write it all to the run's metrics.json under 'representation'. The "
        "run's own numbers are left as they are. `debias train` does this at the end of every "
        "run unless --no-represent.",
    )
    p.add_argument("runs", nargs="+", metavar="RUN", help="finished `debias train` run folders")
    p.add_argument("--root", help="data root, if not where the runs were trained")
    p.add_argument("--device", default="auto", help="auto (a GPU when there is one), cpu, cuda")
    p.add_argument("--force", action="store_true", help="recompute an existing section")
    p.add_argument(
        "--refits",
        type=int,
        default=REPRESENT_REFITS,
        help=f"DFR refits averaged ({REPRESENT_REFITS}, as at the end of training; the official "
        "code and the dfr method average 20)",
    )
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser(
        "demo", help="show the colour shortcut and a cure on Biased-MNIST in a few CPU minutes"
    )
    p.add_argument(
        "--out", default="runs/demo", help="folder of the two runs and the figure (runs/demo)"
    )
    p.add_argument(
        "--rho", type=float, default=0.997,
        help="fraction of training digits on their own colour (0.997: 171 of 55,000 are not)",
    )  # fmt: skip
    p.add_argument("--epochs", type=int, default=2, help="epochs of each of the two runs (2)")
    p.add_argument("--force", action="store_true", help="discard the demo runs debias wrote")
    p.add_argument("--device", default="auto", help="auto (a GPU when there is one), cpu, cuda")
    p.add_argument("--root", help="data root (default: $DEBIAS_DATA, else ./data)")
    p.set_defaults(func=cmd_demo)

    # Sub-commands that live beside their concept add their own parsers.
    from debias.audit.cli import register as register_audit
    from debias.report.cli import register as register_report
    from debias.sweep.cli import register as register_sweep

    register_sweep(sub)
    register_report(sub)
    register_audit(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)

    def one_line(message, category, *_: Any, **__: Any) -> str:
        return f"debias {args.command}: warning: {_error_line(message)}\n"

    try:
        with warnings.catch_warnings():
            warnings.formatwarning = one_line  # restored on leaving the block
            from debias.plugins import load_plugins

            load_plugins()  # a user's datasets, models and methods ($DEBIAS_PLUGINS)
            return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except (
        ValueError,
        FileNotFoundError,
        ImportError,
        RunConflictError,
        RunFolderError,
        FloatingPointError,  # a diverged run (--lr 1e10): the message says what to change
    ) as exc:
        print(f"debias {args.command}: error: {_error_line(exc)}", file=sys.stderr)
        return 2
    except OSError as exc:  # a full disk, a read-only folder: name it, say what to do
        print(f"debias {args.command}: error: {os_error_line(exc)}", file=sys.stderr)
        return 2


def _error_line(exc: BaseException) -> str:
    """An error's message on one line (a multi-line one is joined with " | ")."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return " | ".join(lines) or type(exc).__name__


_OS_HINTS = {
    errno.ENOSPC: "the disk is full: free space or use a folder on another disk",
    errno.EDQUOT: "the disk quota is used up: free space or use a folder on another disk",
    errno.EFBIG: "the file is larger than this process may write (ulimit -f): raise the limit",
    errno.EROFS: "the file system is read-only: use a writable folder (--out, DEBIAS_CACHE)",
    errno.EACCES: "permission denied: fix its permissions or use a writable folder",
    errno.EPERM: "not permitted: fix its permissions or use a writable folder",
}


def os_error_line(exc: OSError) -> str:
    """``<file>: <reason>; <what to do>`` for an OSError; files already written are kept (every
    write goes to a temporary file renamed into place)."""
    where = exc.filename if exc.filename is not None else "a file"
    hint = _OS_HINTS.get(exc.errno or 0, "check that path")
    return f"{where}: {exc.strerror or _error_line(exc)}; {hint}. Files already written are kept"


if __name__ == "__main__":
    raise SystemExit(main())
