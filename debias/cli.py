"""The ``debias`` command line: ``debias {train,demo,sweep,report,audit} ...``."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from debias.train.config import METHODS, MODES, RunConflictError
from debias.train.runfolder import RunFolderError


def _add_train_arguments(p: argparse.ArgumentParser) -> None:
    d = p.add_argument_group("data")
    d.add_argument(
        "--dataset", default="biased-mnist", help="biased-mnist | utkface | celeba | digits"
    )
    d.add_argument(
        "--rho", type=float, help="Biased-MNIST: fraction of bias-aligned training images"
    )
    d.add_argument(
        "--target", help="faces: target attribute (UTKFace: gender; CelebA: any of the 40)"
    )
    d.add_argument("--bias", help="faces: bias attribute (UTKFace: race|age; CelebA: e.g. Male)")
    d.add_argument("--bias-rate", type=float, help="UTKFace training bias rate (0.9)")
    d.add_argument("--protocol", help="CelebA: groupdro (default) | biascon")
    d.add_argument("--image-size", type=int, help="faces: side length in pixels (64)")
    d.add_argument("--val-size", type=int, help="Biased-MNIST held-out validation images (5000)")
    d.add_argument("--palette", help="Biased-MNIST palette: rebias (default) | fairkl")
    d.add_argument("--data-seed", type=int, default=0, help="seed of the data splits and colouring")
    d.add_argument("--root", help="data root (default: $DEBIAS_DATA, else ./data)")
    d.add_argument(
        "--download", action="store_true", help="download MNIST if missing (needs a network)"
    )

    m = p.add_argument_group("method")
    m.add_argument(
        "--method",
        default="ce",
        help=f"training method: {', '.join(METHODS)} (`debias methods` lists them)",
    )
    m.add_argument(
        "--mode",
        default="auto",
        choices=("auto", *MODES),
        help="auto: ce for --method ce, two-stage otherwise",
    )
    m.add_argument(
        "--model", default="simpleconvnet", help="simpleconvnet | smallconvnet | resnet18"
    )
    m.add_argument("--weights", help="resnet18: local file of ImageNet weights (never downloaded)")
    m.add_argument(
        "--temperature", type=float, help="InfoNCE temperature (loss default if omitted)"
    )
    m.add_argument("--base-temperature", type=float, help="SupContrast scale τ/τ_base (0.07)")
    m.add_argument(
        "--loss-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra loss argument, e.g. tau_neg=2.0 or symmetric=true (repeatable)",
    )
    m.add_argument(
        "--lambda-con", type=float, default=1.0, help="joint mode: weight of the contrastive term"
    )
    m.add_argument(
        "--method-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="method hyper-parameter, e.g. upweight=20 for jtt (repeatable; `debias methods`)",
    )

    o = p.add_argument_group("optimisation")
    o.add_argument("--epochs", type=int, default=80)
    o.add_argument("--batch-size", type=int, default=256)
    o.add_argument("--lr", type=float, default=1e-3)
    o.add_argument("--weight-decay", type=float, default=1e-4)
    o.add_argument(
        "--lr-milestones", type=int, nargs="*", help="epochs where lr is multiplied by 0.1"
    )
    o.add_argument(
        "--linear-epochs", type=int, default=10, help="two-stage: linear classifier epochs"
    )
    o.add_argument(
        "--augment",
        dest="augment",
        action="store_true",
        default=None,
        help="augment the training images (default: on for contrastive methods)",
    )
    o.add_argument("--no-augment", dest="augment", action="store_false")
    o.add_argument(
        "--colour-jitter",
        type=float,
        default=0.0,
        help="colour jitter strength; perturbs the colour bias of Biased-MNIST (warns)",
    )
    o.add_argument("--max-steps", type=int, help="cap on steps per epoch (smoke tests)")
    o.add_argument(
        "--train-limit", type=int, help="keep only the first N training images (smoke tests)"
    )
    o.add_argument("--seed", type=int, default=0)
    o.add_argument("--amp", choices=("bf16",), help="bfloat16 autocast for the network (GPU speed)")
    o.add_argument("--channels-last", action="store_true", help="NHWC activations (GPU speed)")

    e = p.add_argument_group("evaluation and output")
    e.add_argument(
        "--select",
        default="last",
        help="'last' or 'val/<metric>' e.g. val/worst_group_accuracy (never a test split)",
    )
    e.add_argument("--out", required=True, help="run directory (resumed if it holds a checkpoint)")
    e.add_argument(
        "--save-embeddings", action="store_true", help="write test embeddings to embeddings.npz"
    )
    e.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:1 ...")
    e.add_argument("--force", action="store_true", help="discard what --out holds and start over")
    e.add_argument("--quiet", action="store_true", help="no progress bar")


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
    from debias.train.config import TrainConfig

    loss_options = _key_values("--loss-option", args.loss_option)
    method_options = _key_values("--method-option", args.method_option)
    return TrainConfig(
        out=args.out,
        dataset=args.dataset,
        rho=args.rho,
        target=args.target,
        bias=args.bias,
        bias_rate=args.bias_rate,
        protocol=args.protocol,
        image_size=args.image_size,
        val_size=args.val_size,
        palette=args.palette,
        data_seed=args.data_seed,
        root=args.root,
        download=args.download,
        method=args.method,
        mode=args.mode,
        model=args.model,
        weights=args.weights,
        temperature=args.temperature,
        base_temperature=args.base_temperature,
        loss_options=loss_options,
        lambda_con=args.lambda_con,
        method_options=method_options,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        lr_milestones=args.lr_milestones,
        linear_epochs=args.linear_epochs,
        augment=args.augment,
        colour_jitter=args.colour_jitter,
        max_steps=args.max_steps,
        seed=args.seed,
        train_limit=args.train_limit,
        amp=args.amp,
        channels_last=args.channels_last,
        select=args.select,
        save_embeddings=args.save_embeddings,
        device=args.device,
        progress=not args.quiet,
    )


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
    """List the registered methods: supervision, modes, hyper-parameters with defaults."""
    from debias.methods import METHODS, SUPERVISION

    for name, cls in METHODS.items():
        print(f"{name:<10} {SUPERVISION[cls.supervision]}; modes: {', '.join(cls.modes)}")
        print(f"{'':<10} {cls.paper}")
        for key, hp in cls.hparams.items():
            print(f"{'':<10}   {key} = {hp.default!r}: {hp.help} [{hp.source}]")
    return 0


def build_parser() -> argparse.ArgumentParser:
    import debias

    parser = argparse.ArgumentParser(
        prog="debias", description="Measure and reduce shortcut bias in image representations."
    )
    parser.add_argument("--version", action="version", version=f"debias {debias.__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train one model and write metrics.json")
    _add_train_arguments(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("methods", help="list the training methods and their hyper-parameters")
    p.set_defaults(func=cmd_methods)

    p = sub.add_parser(
        "demo", help="show the colour shortcut and a cure on Biased-MNIST in a few CPU minutes"
    )
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--rho", type=float, default=0.997)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--force", action="store_true", help="discard the demo runs debias wrote")
    p.add_argument("--device", default="auto")
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
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except (ValueError, FileNotFoundError, RunConflictError, RunFolderError) as exc:
        print(f"debias {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
