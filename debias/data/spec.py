"""What a dataset is, declared once: :class:`DatasetSpec` and the options it takes.

A spec holds every fact the rest of debias needs about a dataset: the factory that builds its
splits, the options it takes (default, check, help, whether it is required), its two-view
augmentation, whether its bias is the image colour, which options say how biased its training
data is, its label names and what its report shows. :func:`debias.data.registry.register_dataset`
takes one; the training config, the loop, the run folder and the report read it.

An option named like a :class:`~debias.train.TrainConfig` field (``rho``, ``target``,
``image_size``, ...) is given with that field (``--rho``); any other is a key of the config's
``data_options`` (``--data-option NAME=VALUE``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from debias._checks import check_number
from debias._hints import did_you_mean
from debias.data.base import TensorImageDataset

__all__ = ["COMMON_OPTIONS", "DataOption", "DatasetSpec", "Splits", "number"]

Splits = dict[str, TensorImageDataset]
# Every factory receives these besides its own options: the seed of its splits and colouring,
# and the data root (None: $DEBIAS_DATA, else ./data).
COMMON_OPTIONS = ("data_seed", "root")

Check = Callable[[str, Any], Any]


def number(
    *,
    low: float | None = None,
    high: float | None = None,
    integer: bool = False,
    label: str | None = None,
) -> Check:
    """A :attr:`DataOption.check`: a (whole) finite number in ``[low, high]``; ``label`` names
    the option in the error (default: its name)."""

    def check(name: str, value: Any) -> Any:
        check_number(label or name, value, low=low, high=high, integer=integer)
        return value

    return check


@dataclass(frozen=True)
class DataOption:
    """One option a dataset takes.

    ``default`` None means none (the loader decides, or ``required`` says it must be given);
    ``choices`` the values allowed; ``check(name, value) -> value`` raises ValueError on a bad
    value and may return it normalised (a deprecated name replaced). ``help`` is one phrase,
    shown by ``debias train --help``.
    """

    name: str
    default: Any = None
    help: str = ""
    required: bool = False
    choices: tuple[Any, ...] | None = None
    check: Check | None = None

    def validate(self, value: Any, dataset: str) -> Any:
        """``value`` checked (and normalised); None stays None (not given, no default)."""
        if value is None:
            return None
        if self.choices is not None and value not in self.choices:
            raise ValueError(
                f"dataset {dataset!r}: {self.name} must be one of {list(self.choices)}; "
                f"got {value!r}"
            )
        return self.check(self.name, value) if self.check is not None else value


@dataclass(frozen=True, eq=False)
class DatasetSpec:
    """A dataset, registered once under ``name`` (see the module docstring).

    Attributes:
        factory: ``factory(**options) -> {split: TensorImageDataset}`` with a ``"train"``, a
            ``"val"`` (model selection; never a test set) and at least one test split. It gets
            :data:`COMMON_OPTIONS` and every option of ``options`` (defaults filled in); with
            ``argument`` its first positional argument is the text after ``name:``.
        options: the options it takes.
        augment: :class:`~debias.data.augment.AugmentConfig` fields of its two-view
            augmentation (digits must not be flipped; faces may).
        colour_bias: its bias attribute is the image colour (colour jitter perturbs it).
        level_keys: the options that say how biased its training data is (reports group by
            them and plot against the first).
        label_names: ``label_names(options) -> (class_names, bias_names)`` without loading the
            data, or None when only the data can tell (results written before runs recorded
            the names).
        table_metrics: the report labels its results table shows (None: the report's default).
        group_axes: ``(target axis, bias axis)`` names of its per-group figure (None: the
            ``target``/``bias`` options name them).
        published: ``{method: {level: value %}}`` a report prints beside its runs, the level
            being the first of ``level_keys``.
        adjusted_average: its reports add the "adjusted average" (test group accuracies
            weighted by the training split's group frequencies; Waterbirds papers report it
            beside worst-group accuracy).
        argument: what the text after ``name:`` is (``"PATH"`` for ``metadata:PATH.csv``);
            None: the dataset is named ``name`` alone.
        summary: what it is, in a few words (``debias train --help``).
    """

    name: str
    factory: Callable[..., Splits]
    options: tuple[DataOption, ...] = ()
    augment: Mapping[str, Any] = field(default_factory=dict)
    colour_bias: bool = False
    level_keys: tuple[str, ...] = ()
    label_names: Callable[[Mapping[str, Any]], tuple[tuple[str, ...], ...] | None] | None = None
    table_metrics: tuple[str, ...] | None = None
    group_axes: tuple[str, str] | None = None
    published: Mapping[str, Mapping[float, float]] = field(default_factory=dict)
    argument: str | None = None
    summary: str = ""
    adjusted_average: bool = False

    def __post_init__(self) -> None:
        names = [o.name for o in self.options]
        clash = sorted(
            {n for n in names if names.count(n) > 1} | (set(names) & set(COMMON_OPTIONS))
        )
        if clash:
            raise ValueError(f"dataset {self.name!r}: option(s) {clash} declared twice")
        missing = sorted(set(self.level_keys) - set(names))
        if missing:
            raise ValueError(f"dataset {self.name!r}: level key(s) {missing} are not options")

    @property
    def defaults(self) -> dict[str, Any]:
        """``{option: default}``."""
        return {o.name: o.default for o in self.options}

    @property
    def required(self) -> tuple[str, ...]:
        return tuple(o.name for o in self.options if o.required)

    @property
    def display_name(self) -> str:
        """How a user names it: ``biased-mnist``, ``metadata:PATH``."""
        return f"{self.name}:{self.argument}" if self.argument else self.name

    def option(self, name: str) -> DataOption:
        return next(o for o in self.options if o.name == name)

    def resolve(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """Its own options from ``options``: defaults filled in, each checked; an option it
        does not take, or a required one missing, is an error."""
        takes = self.defaults
        # None is "not given" (what a config records for another dataset's option)
        given = {k for k, v in options.items() if v is not None}
        unknown = sorted(given - set(takes) - set(COMMON_OPTIONS))
        if unknown:
            hint = "".join(did_you_mean(k, takes) for k in unknown)
            raise ValueError(
                f"dataset {self.name!r} takes no option(s) {unknown}{hint}; it takes "
                f"{sorted(takes)} (plus {', '.join(COMMON_OPTIONS)})"
            )
        out = {}
        for opt in self.options:
            value = options.get(opt.name)
            value = opt.default if value is None else value
            if value is None and opt.required:
                raise ValueError(f"dataset {self.name!r} needs {opt.name} ({opt.help})")
            out[opt.name] = opt.validate(value, self.name)
        return out

    def load(self, argument: str | None = None, **options: Any) -> Splits:
        """All splits, from ``options`` (this dataset's and :data:`COMMON_OPTIONS`)."""
        common = {k: options.get(k) for k in COMMON_OPTIONS}
        common["data_seed"] = common["data_seed"] or 0
        own = self.resolve(options)
        if self.argument is None:
            return self.factory(**common, **own)
        return self.factory(argument or "", **common, **own)

    __call__ = load

    def replace(self, **changes: Any) -> DatasetSpec:
        """A copy with ``changes`` (``spec.replace(augment={...})``), to register again."""
        return dataclasses.replace(self, **changes)
