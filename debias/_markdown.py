"""The one Markdown-table writer (GitHub-flavoured) used by the reports, without ``tabulate``."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any


def _cell(x: Any) -> str:
    # A '|' would end the cell and a newline the row.
    return str(x).replace("|", "\\|").replace("\n", " ")


def markdown_table(header: Sequence[Any], rows: Iterable[Sequence[Any]]) -> str:
    """``| a | b |`` lines: the header, a ``|---|---|`` rule, then one line per row.

    Cells are written with ``str`` (format numbers before passing them); ``|`` is escaped and
    newlines become spaces.
    """
    lines = [
        "| " + " | ".join(_cell(h) for h in header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
    ]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
