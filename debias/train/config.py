"""The configuration of one training run: everything that determines its numbers."""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import asdict, dataclass, field
from typing import Any

from debias.methods import METHODS, get_method, resolve_hparams
from debias.train.logging_backends import check_log_to

__all__ = ["METHODS", "MODES", "RUNTIME_FIELDS", "RunConflictError", "TrainConfig"]

# "ce": one classifier trained end to end on a (possibly re-weighted) cross-entropy objective;
# "two-stage" and "joint": the contrastive protocols (see debias.methods.contrastive).
MODES = ("ce", "two-stage", "joint")

# Fields that say where or how a run executes, not what it computes: they may differ between
# an interrupted run and its resumption.
RUNTIME_FIELDS = frozenset(
    {"out", "device", "root", "save_embeddings", "progress", "download", "eval_batch_size"}
    | {"log_to"}
)


class RunConflictError(RuntimeError):
    """The output folder holds a different run than the one asked for."""


@dataclass
class TrainConfig:
    """One run. Defaults follow ReBias on Biased-MNIST (PROTOCOLS §1).

    Smoke-test options (change the protocol; recorded in the config like everything else):
    ``max_steps`` caps the optimisation steps per epoch; ``train_limit`` keeps only the first N
    images of the (already seeded, already biased) training split.

    Speed options: ``amp="bf16"`` runs the network under bfloat16 autocast (losses are computed in
    float32); ``channels_last`` stores activations NHWC, faster for convolutions on GPUs.

    Selection (``select``): ``"last"`` reports the last epoch; ``"val/<metric>"`` (e.g.
    ``"val/worst_group_accuracy"``) reports the epoch with the best value of that GroupReport
    metric on the validation split. Test splits are never used for selection.
    """

    out: str = "runs/run"
    # data
    dataset: str = "biased-mnist"
    rho: float | None = None
    target: str | None = None
    bias: str | None = None
    # Data options that only some datasets take default to None: the dataset supplies its
    # default (debias.data.registry.DATASET_OPTIONS) and an inapplicable one stays None.
    bias_rate: float | None = None
    protocol: str | None = None
    image_size: int | None = None
    val_size: int | None = None
    palette: str | None = None
    data_seed: int = 0
    root: str | None = None
    download: bool = False
    # method
    method: str = "ce"
    mode: str = "auto"
    model: str = "simpleconvnet"
    weights: str | None = None
    temperature: float | None = None
    base_temperature: float | None = None
    loss_options: dict[str, Any] = field(default_factory=dict)
    lambda_con: float = 1.0
    method_options: dict[str, Any] = field(default_factory=dict)
    # optimisation
    epochs: int = 80
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-4
    lr_milestones: list[int] | None = None
    lr_gamma: float = 0.1
    linear_epochs: int = 10
    linear_lr: float = 1e-3
    augment: bool | None = None
    colour_jitter: float = 0.0
    max_steps: int | None = None
    train_limit: int | None = None
    seed: int = 0
    amp: str | None = None
    channels_last: bool = False
    # evaluation and output
    select: str = "last"
    eval_batch_size: int = 1024
    save_embeddings: bool = False
    device: str = "auto"
    progress: bool = True
    log_to: str | None = None  # trackers, comma-separated: tensorboard, mlflow, wandb

    def __post_init__(self) -> None:
        self._check_method()
        check_log_to(self.log_to)  # an unknown or uninstalled tracker fails here, not mid-run
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 2:
            raise ValueError(f"batch_size must be >= 2, got {self.batch_size}")
        if self.select != "last":
            split, _, metric = self.select.partition("/")
            if split != "val" or not metric:
                raise ValueError(
                    f"select={self.select!r}: expected 'last' or 'val/<metric>' such as "
                    "'val/worst_group_accuracy'; selection on a test split is not allowed"
                )
        if self.amp not in (None, "bf16"):
            # fp16 would need loss scaling; bf16 has float32's range and needs none.
            raise ValueError(f"amp={self.amp!r}: expected None or 'bf16'")
        if self.augment is None:
            # ReBias trains cross-entropy without augmentation; contrastive methods need views.
            self.augment = self.mode != "ce"
        if self.lr_milestones is None:
            # ReBias: x0.1 every 20 of 80 epochs, i.e. at each quarter of the run.
            q = max(self.epochs // 4, 1)
            self.lr_milestones = [q * k for k in (1, 2, 3) if q * k < self.epochs]
        self._validate_options()

    def _validate_options(self) -> None:
        """Reject values that cannot run or would change nothing; fill the dataset's defaults.

        Checked here, at construction, so that ``debias sweep --dry-run`` and the CLI catch what
        would otherwise fail (or silently do nothing) at run time.
        """
        from debias.data.registry import DATA_OPTIONS, REQUIRED_OPTIONS, dataset_options

        takes = dataset_options(self.dataset)
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        given = [k for k in DATA_OPTIONS if getattr(self, k) != defaults[k]]
        wrong = [f"{k}={getattr(self, k)!r}" for k in given if k not in takes]
        if wrong:
            raise ValueError(
                f"option(s) {', '.join(wrong)} do not apply to dataset {self.dataset!r}; "
                f"it takes {sorted(takes)} (plus data_seed, root)"
            )
        for k in REQUIRED_OPTIONS.get(self.dataset, ()):
            if getattr(self, k) is None:
                raise ValueError(
                    f"dataset {self.dataset!r} needs {k} (e.g. {k}=0.99, or --{k} 0.99 on the command line)"
                )
        for k, default in takes.items():
            if getattr(self, k) is None:
                setattr(self, k, default)
        _check_data_values(self)
        _check_optimisation_values(self)

    def _check_method(self) -> None:
        """The method exists, takes this mode, and takes every method/loss option given."""
        cls = get_method(self.method)
        if self.mode == "auto":
            self.mode = cls.modes[0]
        if self.mode not in cls.modes:
            raise ValueError(
                f"method {self.method!r} with mode {self.mode!r}: expected one of "
                f"{list(cls.modes)} (cross-entropy runs use mode 'ce'; contrastive methods use "
                "'two-stage' or 'joint')"
            )
        if not cls.uses_contrastive_options:
            given = [
                k
                for k, unset in (
                    ("temperature", None),
                    ("base_temperature", None),
                    ("loss_options", {}),
                    ("lambda_con", 1.0),
                )
                if getattr(self, k) != unset
            ]
            if given:
                raise ValueError(
                    f"method {self.method!r} takes no contrastive-loss option, got "
                    f"{', '.join(given)}; these apply to the contrastive methods only"
                )
        elif self.mode != "joint" and self.lambda_con != 1.0:
            raise ValueError(
                f"lambda_con={self.lambda_con} applies to mode 'joint' only, not {self.mode!r}"
            )
        if not isinstance(self.method_options, dict):
            raise ValueError(f"method_options must be a mapping, got {self.method_options!r}")
        resolve_hparams(self.method, self.method_options)  # raises on an unknown option

    def hparams(self) -> dict[str, Any]:
        """The method's hyper-parameters: its registry defaults with ``method_options`` applied."""
        return resolve_hparams(self.method, self.method_options)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def identity(self) -> dict[str, Any]:
        """The fields that decide the numbers (compared before resuming a run)."""
        return {k: v for k, v in self.to_dict().items() if k not in RUNTIME_FIELDS}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown training option(s) {unknown}; known: {sorted(names)}")
        return cls(**d)


def _check_number(
    name: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    integer: bool = False,
) -> None:
    """``value`` is a (whole, with ``integer``) finite number in the given range, or an error."""
    kind = numbers.Integral if integer else numbers.Real
    ok = isinstance(value, kind) and not isinstance(value, bool) and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value <= high
    if not ok:
        lo = "" if low is None else f"{'>' if low_open else '>='} {low:g}"
        hi = "" if high is None else f"<= {high:g}"
        what = " and ".join(p for p in (lo, hi) if p)
        raise ValueError(
            f"{name} must be {'an integer' if integer else 'a number'}"
            + (f" {what}" if what else "")
            + f"; got {value!r}"
        )


def _check_data_values(cfg: TrainConfig) -> None:
    """Ranges of the data options that apply (inapplicable ones are None by now)."""
    _check_number("data_seed", cfg.data_seed, low=0, high=2**32 - 1, integer=True)
    if cfg.rho is not None:
        _check_number("rho (the bias-aligned fraction of training images)", cfg.rho, low=0, high=1)
    if cfg.val_size is not None:
        # MNIST-train has 60,000 images; the val split must hold some and train keep the rest.
        _check_number("val_size", cfg.val_size, low=1, high=59_999, integer=True)
    if cfg.bias_rate is not None:
        _check_number("bias_rate", cfg.bias_rate, low=0, high=1)
    if cfg.image_size is not None:
        _check_number("image_size", cfg.image_size, low=8, integer=True)
    if cfg.palette is not None:
        from debias.data.biased_mnist import PALETTES

        if cfg.palette not in PALETTES:
            raise ValueError(f"unknown palette {cfg.palette!r}; expected one of {sorted(PALETTES)}")
    if cfg.protocol is not None:
        from debias.data.celeba import PROTOCOLS

        if cfg.protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {list(PROTOCOLS)}; got {cfg.protocol!r}")
    if cfg.dataset == "utkface":
        from debias.data.utkface import BIASES

        if cfg.target != "gender":
            raise ValueError(f"UTKFace target must be 'gender'; got {cfg.target!r}")
        if cfg.bias not in BIASES:
            raise ValueError(f"UTKFace bias must be one of {list(BIASES)}; got {cfg.bias!r}")


def _check_optimisation_values(cfg: TrainConfig) -> None:
    """Options whose bad values would train nothing, or train without saying it is broken."""
    if cfg.max_steps is not None:
        _check_number(
            "max_steps (optimisation steps per epoch)", cfg.max_steps, low=1, integer=True
        )
    if cfg.train_limit is not None:
        # A batch needs two rows (BatchNorm, contrastive pairs): fewer images train nothing.
        _check_number("train_limit (training images kept)", cfg.train_limit, low=2, integer=True)
    if cfg.mode == "two-stage":
        _check_number("linear_epochs", cfg.linear_epochs, low=1, integer=True)
    _check_number("seed", cfg.seed, low=0, integer=True)
    for name in ("lr", "linear_lr", "lr_gamma"):
        _check_number(name, getattr(cfg, name), low=0, low_open=True)
    _check_number("weight_decay", cfg.weight_decay, low=0)
    _check_number("colour_jitter", cfg.colour_jitter, low=0)
    _check_number("lambda_con", cfg.lambda_con, low=0)
    _check_number("eval_batch_size", cfg.eval_batch_size, low=1, integer=True)
    for name in ("temperature", "base_temperature"):
        if getattr(cfg, name) is not None:
            _check_number(name, getattr(cfg, name), low=0, low_open=True)
