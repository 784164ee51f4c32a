"""Where datasets live: one rule for every loader.

Precedence: an explicit ``root`` argument, then the ``DEBIAS_DATA`` environment variable, then
``./data`` (the project's git-ignored data folder).
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "DEBIAS_DATA"
DEFAULT_ROOT = Path("data")


def data_root(root: str | os.PathLike | None = None) -> Path:
    """Resolve the data root: ``root`` argument > ``$DEBIAS_DATA`` > ``./data``."""
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    return DEFAULT_ROOT


def cache_root(cache: str | os.PathLike | None = None) -> Path:
    """Resolve the cache directory: ``cache`` argument > ``$DEBIAS_CACHE`` > ``~/.cache/debias``.

    Never inside the data root: that may be read-only or shared between users.
    """
    if cache is not None:
        return Path(cache).expanduser()
    env = os.environ.get("DEBIAS_CACHE")
    if env:
        return Path(env).expanduser()
    return Path("~/.cache/debias").expanduser()
