"""Type aliases and the group code shared across subpackages (declared once, imported where
needed; no torch, so the metrics stay array-only)."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

#: A ``(target, bias)`` group, e.g. one bias-aligned pair ``(y, b)``.
Group = tuple[int, int]


def group_code(y: Any, b: Any, num_bias: int) -> Any:
    """The flat code ``g = y·num_bias + b`` of each ``(target, bias)`` pair (torch tensors or
    numpy arrays alike)."""
    return y * num_bias + b


class RunStatus(StrEnum):
    """A run's state in a sweep's ledger (``sweep_status.csv``) and in :func:`debias.results.load`.

    A ``str`` subclass, so the ledger's CSV cells and a plain ``"done"`` compare equal to it.
    ``incomplete`` (a checkpoint or history but no ``metrics.json``), ``damaged`` and
    ``not in sweep`` are read from a folder, never written to the ledger.
    """

    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    SKIPPED = "skipped"
    FAILED = "failed"
    INTERRUPTED = "interrupted"
    INCOMPLETE = "incomplete"
    # Read from a folder, never written to the ledger: a metrics.json that cannot be read
    # (truncated, no config or splits), or a run folder the sweep's manifest does not list.
    DAMAGED = "damaged"
    UNLISTED = "not in sweep"


#: Statuses of a run that has its ``metrics.json`` (run in this pass, or an earlier one).
FINISHED = (RunStatus.DONE, RunStatus.SKIPPED)
#: Statuses of a run that ended without it: a rerun of the sweep runs it again.
UNFINISHED = (RunStatus.FAILED, RunStatus.INTERRUPTED)

#: The manifest a sweep writes in its folder (the sweep's spec and its runs): read by the run
#: folders' checks (debias.train.runfolder) and by the trackers' run names (logging_backends).
SWEEP_MANIFEST = "sweep.json"
