"""Where datasets live: one rule for every loader.

Precedence: an explicit ``root`` argument, then the ``DEBIAS_DATA`` environment variable, then
``./data`` (the project's git-ignored data folder).
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "DEBIAS_DATA"
CACHE_ENV_VAR = "DEBIAS_CACHE"
DEFAULT_ROOT = Path("data")


def data_root(root: str | os.PathLike | None = None) -> Path:
    """Resolve the data root: ``root`` argument > ``$DEBIAS_DATA`` > ``./data``."""
    if root is not None:
        return _folder(Path(root).expanduser(), "root")
    env = os.environ.get(ENV_VAR)
    if env:
        return _folder(Path(env).expanduser(), ENV_VAR)
    return DEFAULT_ROOT


def cache_root(cache: str | os.PathLike | None = None) -> Path:
    """Resolve the cache directory: ``cache`` argument > ``$DEBIAS_CACHE`` > ``~/.cache/debias``.

    Never inside the data root: that may be read-only or shared between users.
    """
    if cache is not None:
        return _folder(Path(cache).expanduser(), "cache_dir")
    env = os.environ.get(CACHE_ENV_VAR)
    if env:
        return _folder(Path(env).expanduser(), CACHE_ENV_VAR)
    return Path("~/.cache/debias").expanduser()


def _folder(path: Path, what: str) -> Path:
    """``path`` unless it is an existing file (an error naming ``what``: a folder was meant)."""
    if path.exists() and not path.is_dir():
        raise ValueError(f"{what}={str(path)!r} is a file; expected a folder (new or existing)")
    return path


def find_holding(candidates: list[Path], name: str) -> tuple[Path | None, str]:
    """The first of ``candidates`` (duplicates dropped, order kept) that holds file ``name``,
    or None, with the paths looked at (for a dataset's one-line not-found error)."""
    candidates = list(dict.fromkeys(candidates))
    found = next((c for c in candidates if (c / name).is_file()), None)
    return found, ", ".join(str(c / name) for c in candidates)
