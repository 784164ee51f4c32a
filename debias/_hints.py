"""'Did you mean' hints for misspelt names (options, methods, attributes), declared once."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def close_names(name: object, choices: Iterable[str], n: int = 1, cutoff: float = 0.6) -> list[str]:
    """The ``n`` names of ``choices`` closest to ``name`` (difflib's ratio >= ``cutoff``), then
    any that differ from it in case only: every "did you mean" of the toolkit asks this."""
    choices = [str(c) for c in choices]
    close = difflib.get_close_matches(str(name), choices, n=n, cutoff=cutoff)
    return close + [c for c in choices if c.lower() == str(name).lower() and c not in close]


def did_you_mean(name: object, choices: Iterable[str]) -> str:
    """``" (did you mean 'lr_gamma'?)"`` for the closest of ``choices``, or ``""``."""
    close = close_names(name, choices)
    return f" (did you mean {close[0]!r}?)" if close else ""


def unknown_names(what: str, unknown: Iterable[str], known: Iterable[str]) -> str:
    """``"unknown training option(s) ['lr_gama'] (did you mean 'lr_gamma'?); known: [...]"``."""
    known, unknown = sorted(known), sorted(unknown)
    close = [c[0] for c in (close_names(k, known) for k in unknown) if c]
    hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
    return f"unknown {what}(s) {unknown}{hint}; known: {known}"
