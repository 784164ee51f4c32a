"""The configuration of one training run: everything that determines its numbers."""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field
from typing import Any

from debias.methods import METHODS, get_method, resolve_hparams

__all__ = ["METHODS", "MODES", "RUNTIME_FIELDS", "RunConflictError", "TrainConfig"]

# "ce": one classifier trained end to end on a (possibly re-weighted) cross-entropy objective;
# "two-stage" and "joint": the contrastive protocols (see debias.methods.contrastive).
MODES = ("ce", "two-stage", "joint")

# Fields that say where or how a run executes, not what it computes: they may differ between
# an interrupted run and its resumption.
RUNTIME_FIELDS = frozenset(
    {"out", "device", "root", "save_embeddings", "progress", "download", "eval_batch_size"}
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
    bias_rate: float = 0.9
    protocol: str = "groupdro"
    image_size: int = 64
    val_size: int = 5000
    palette: str = "rebias"
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

    def __post_init__(self) -> None:
        self._check_method()
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
