"""Bias sweeps: a YAML grid over training options, run locally or on Ray (``debias sweep``).

README-ready summary::

    debias sweep sweeps/biased_mnist_quick.yaml --jobs 2     # run (or resume) the grid
    debias sweep sweeps/biased_mnist_quick.yaml --dry-run    # list the runs, run nothing
    debias report runs/sweeps/biased_mnist_quick --out report/

A sweep YAML has ``name``, ``out``, ``base`` (options for every run), ``grid`` (lists whose
cartesian product gives the runs) and ``methods`` (per-method overrides); any ``debias train``
option may appear in ``base``, ``grid`` or ``methods``. See :mod:`debias.sweep.config` for the
schema and the run-folder naming, :mod:`debias.sweep.runner` for the files a sweep writes.

A ``search`` block instead asks for a random search (:mod:`debias.sweep.search`): seeded draws
per method, then the draws picked by the selection rules (:mod:`debias.sweep.selection`)
re-run with fresh seeds; ``debias report`` then shows every method under every rule.
"""

from __future__ import annotations

import importlib
from typing import Any

# Loaded on first use, so that `debias --help` (which registers this sub-command) stays fast.
_EXPORTS = {
    "RunSpec": "debias.sweep.config",
    "SweepSpec": "debias.sweep.config",
    "load_sweep": "debias.sweep.config",
    "run_dir_name": "debias.sweep.config",
    "SweepResult": "debias.sweep.runner",
    "run_sweep": "debias.sweep.runner",
    "threads_per_job": "debias.sweep.runner",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'debias.sweep' has no attribute {name!r}")
