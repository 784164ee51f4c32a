"""A run made with smoke-test limits (``train_limit``, ``eval_limit``, ``max_steps``) says so
wherever its numbers appear: ``metrics.json`` (``limits``), the representation section's
reasons, ``report.md``, :func:`debias.train.load_trained` and ``debias audit --run``.

These options change what the numbers are measured on (``eval_limit`` cuts the validation split
too, so selection and the DFR read-out see the subset), so a limited run's numbers are not
comparable to a full run's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["LIMITS", "eval_limit_note", "limits_text", "run_limits"]

#: The config fields that limit a run, with what each does.
LIMITS: dict[str, str] = {
    "train_limit": "training split cut to its first {} images",
    "eval_limit": "every evaluation split (validation included) cut to a seeded {} images",
    "max_steps": "at most {} optimisation steps per epoch, in every stage",
}


def run_limits(config: Mapping[str, Any] | Any) -> dict[str, int]:
    """The limits set in ``config`` (a TrainConfig or its dict), ``{}`` for a full run."""
    get = config.get if isinstance(config, Mapping) else lambda k: getattr(config, k, None)
    return {name: int(get(name)) for name in LIMITS if get(name) is not None}


def limits_text(limits: Mapping[str, int]) -> str:
    """One sentence naming the limits (empty for a full run).

    Example:
        >>> limits_text({"eval_limit": 200})
        'limited run (eval_limit=200: every evaluation split (validation included) cut to a seeded 200 images); its numbers are not comparable to full runs'
    """
    if not limits:
        return ""
    parts = [f"{k}={v}: {LIMITS[k].format(v)}" for k, v in limits.items() if k in LIMITS]
    return f"limited run ({'; '.join(parts)}); its numbers are not comparable to full runs"


def eval_limit_note(eval_limit: int | None, sizes: Mapping[str, tuple[int, int]]) -> str:
    """What ``eval_limit`` did to the evaluation splits, ``sizes[name] = (kept, before)``
    ("" when it cut nothing): the reason a representation part that cannot run cites.

    Example:
        >>> eval_limit_note(200, {"train": (5000, 5000), "val": (200, 6000)})
        'eval_limit=200 cut the evaluation splits (val to 200 of 6000 images)'
    """
    cut = [
        f"{name} to {kept} of {before}"
        for name, (kept, before) in sizes.items()
        if name != "train" and kept < before
    ]
    if eval_limit is None or not cut:
        return ""
    return f"eval_limit={eval_limit} cut the evaluation splits ({', '.join(cut)} images)"
