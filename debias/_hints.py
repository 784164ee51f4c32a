"""'Did you mean' hints for misspelt names (options, methods, attributes), declared once."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def did_you_mean(name: object, choices: Iterable[str]) -> str:
    """``" (did you mean 'lr_gamma'?)"`` for the closest of ``choices``, or ``""``."""
    close = difflib.get_close_matches(str(name), list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def unknown_names(what: str, unknown: Iterable[str], known: Iterable[str]) -> str:
    """``"unknown training option(s) ['lr_gama'] (did you mean 'lr_gamma'?); known: [...]"``."""
    known, unknown = sorted(known), sorted(unknown)
    close = [c for k in unknown for c in difflib.get_close_matches(str(k), known, n=1)]
    hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
    return f"unknown {what}(s) {unknown}{hint}; known: {known}"
