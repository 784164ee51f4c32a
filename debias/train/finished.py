"""Work on a finished run's files: :func:`evaluate_run` adds the representation section
(:mod:`debias.train.represent`) to a run trained without it (``debias evaluate RUN...``).

It rebuilds the run's classifier with :func:`debias.train.loop.load_trained`, so it lives
above the training loop: the loop's record writes the section at the end of a run through
:mod:`debias.train.represent`, which therefore imports nothing of the loop.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from debias.train import runfolder
from debias.train.checkpoint import save_json
from debias.train.limits import limits_text, run_limits
from debias.train.loop import load_trained
from debias.train.represent import KEY, REFITS, _summary, represent

__all__ = ["evaluate_run"]


def evaluate_run(
    run_dir: str | Path,
    *,
    root: str | None = None,
    device: str = "auto",
    force: bool = False,
    refits: int = REFITS,
    log: Callable[..., None] = print,
) -> dict[str, Any]:
    """Add the ``representation`` section to a finished run's ``metrics.json``, from the
    classifier in its ``model.pt``; every other entry of the file is kept as it was.

    A run that has the section already is left alone unless ``force``. ``root`` overrides the
    data root the run recorded; ``refits``: DFR refits averaged (the official code: 20). Raises FileNotFoundError / RunFolderError for a folder that is
    not a finished debias run (no ``metrics.json`` and ``model.pt`` written by ``debias
    train``).
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir} is not a folder (expected a finished debias run)")
    if not runfolder.is_debias_folder(run_dir):
        raise runfolder.RunFolderError(
            f"{run_dir} is not a debias run folder (no {runfolder.MARKER} marker and no "
            f"{runfolder.METRICS} written by `debias train`); nothing was written"
        )
    path = run_dir / runfolder.METRICS
    if KEY in (runfolder.read_metrics(path) if path.is_file() else {}) and not force:
        log(f"{run_dir}: {runfolder.METRICS} has a {KEY} section already (--force recomputes it)")
        return runfolder.read_metrics(path)[KEY]
    with warnings.catch_warnings(record=True) as caught:  # the limits go into the section
        warnings.simplefilter("always")
        model, splits, cfg = load_trained(run_dir, root=root, device=device)
    for w in caught:
        log(f"{run_dir}: note: {w.message}")
    limited = limits_text(run_limits(cfg)) if cfg.eval_limit is not None else ""
    with runfolder.lock(run_dir):
        section = represent(
            model, splits, seed=cfg.seed, batch_size=cfg.eval_batch_size, refits=refits,
            limited=limited,
        )  # fmt: skip
        # Re-read under the lock: the file written is the one on disk plus this section.
        save_json(runfolder.read_metrics(path) | {KEY: section}, path)
    log(f"{run_dir}: {_summary(section)}")
    return section
