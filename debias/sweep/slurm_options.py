"""The options of the SLURM backend (``debias sweep --backend slurm``): the ``slurm:`` block of a
sweep YAML and the ``debias sweep`` flags generated from the same table (:data:`FIELDS`).

Standard library only: ``debias sweep --help`` reads it without importing submitit or torch.

Example ``slurm:`` block (every key optional; a flag given on the command line wins)::

    slurm:
      partition: gpu
      account: my_lab
      time: "04:00:00"       # per array task: minutes, MM:SS, HH:MM:SS or D-HH:MM:SS
      mem: 16G
      gpus: 1                # per task
      cpus_per_task: 8       # also the threads each run uses
      max_parallel: 20       # array tasks running at once (SLURM's %N throttle)
      runs_per_task: 4       # runs one task runs in turn (one worker, data loaded once)
      options: {qos: normal, constraint: a100}   # any other #SBATCH option
      setup: ["module load cuda/12.1"]           # shell lines before the task starts
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["FIELDS", "SlurmOptions", "parse_time"]

_TIME = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")


def parse_time(value: Any) -> int:
    """A SLURM time limit in minutes: ``90``, ``"90"``, ``"1:30:00"``, ``"2-00:00:00"``.

    Example: ``parse_time("1:30:00") == 90``; seconds round up to the next minute.
    """
    if isinstance(value, bool):
        raise ValueError(f"slurm time {value!r}: expected minutes or [D-]HH:MM:SS")
    if isinstance(value, int):
        minutes = value
    else:
        m = _TIME.match(str(value).strip())
        if not m:
            raise ValueError(
                f"slurm time {value!r}: expected minutes (90) or [D-]HH:MM:SS (1:30:00, 2-00:00:00)"
            )
        days, a, b, c = (int(x) if x else None for x in m.groups())
        if c is not None:  # H:M:S
            seconds = a * 3600 + b * 60 + c
        elif b is not None:  # M:S, or D-H:M
            seconds = a * 3600 + b * 60 if days is not None else a * 60 + b
        else:  # minutes, or D-H
            seconds = a * 3600 if days is not None else a * 60
        minutes = -(-(seconds + (days or 0) * 86400) // 60)
    if minutes < 1:
        raise ValueError(f"slurm time {value!r}: must be at least one minute")
    return minutes


def _opt(help: str, default: Any = None, **kw: Any) -> Any:
    return field(default=default, metadata={"help": help}, **kw)


@dataclass
class SlurmOptions:
    """Where and how the array tasks of a SLURM sweep run (see the module docstring)."""

    partition: str | None = _opt("SLURM partition (default: the cluster's default)")
    account: str | None = _opt("SLURM account to charge")
    time: int = _opt("time limit per array task: minutes or [D-]HH:MM:SS", 60)
    mem: str | None = _opt("memory per task, e.g. 16G")
    gpus: int = _opt("GPUs per task", 0)
    cpus_per_task: int = _opt("CPUs per task (each run uses as many threads)", 1)
    max_parallel: int = _opt("array tasks running at once (SLURM's %%N throttle)", 256)
    runs_per_task: int = _opt("runs per array task, run in turn by one worker", 1)
    signal_delay_s: int = _opt("seconds before the time limit SLURM signals a task to save", 90)
    max_requeues: int = _opt("times a task is requeued after reaching its time limit", 3)
    options: dict[str, Any] = _opt("extra #SBATCH option KEY=VALUE", None)
    setup: list[str] = _opt("shell lines run before each task (module load ...)", None)

    def __post_init__(self) -> None:
        self.options = dict(self.options or {})
        self.setup = list(self.setup or [])
        self.time = parse_time(self.time)
        for name in (
            "gpus",
            "cpus_per_task",
            "max_parallel",
            "runs_per_task",
            "signal_delay_s",
            "max_requeues",
        ):
            value = getattr(self, name)
            low = 0 if name in ("gpus", "max_requeues", "signal_delay_s") else 1
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"slurm.{name} must be an integer >= {low}, got {value!r}")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None, where: str = "slurm") -> SlurmOptions:
        """Validate a ``slurm:`` block: unknown keys and bad values are one-line errors."""
        if d is None:
            return cls()
        if not isinstance(d, Mapping):
            raise ValueError(f"{where} must be a mapping of {list(FIELDS)}, got {d!r}")
        unknown = sorted(set(d) - set(FIELDS))
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {unknown}; expected {list(FIELDS)}")
        if not isinstance(d.get("options") or {}, Mapping):
            raise ValueError(f"{where}.options must be a mapping of #SBATCH options")
        if isinstance(d.get("setup"), str):
            d = {**d, "setup": [d["setup"]]}
        try:
            return cls(**d)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{where}: {exc}") from None

    def updated(self, flags: Mapping[str, Any]) -> SlurmOptions:
        """These options with the flags that were given (None = not given) on top."""
        given = {k: v for k, v in flags.items() if v is not None}
        if "options" in given:
            given["options"] = {**self.options, **given["options"]}
        return SlurmOptions.from_dict({**self.to_dict(), **given}, "slurm flags")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# name -> help: one entry per option, for the YAML check and the generated flags.
FIELDS = {f.name: f.metadata["help"] for f in dataclasses.fields(SlurmOptions)}
