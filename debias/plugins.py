"""A user's registrations in every debias process: the ``DEBIAS_PLUGINS`` environment variable.

A dataset, model, loss or method registered in a script exists in that process only; a sweep
runs each run in worker processes of its own, and ``debias train`` is a process of its own.
``DEBIAS_PLUGINS`` names what to import first, in every one of them (the CLI and each sweep
run): module names (``mylab.data``) or Python files (``/work/mine/register.py``), separated by
``os.pathsep`` (``:`` on Linux and macOS), each imported once per process.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
from pathlib import Path

__all__ = ["ENV", "load_plugins"]

ENV = "DEBIAS_PLUGINS"
_LOADED: set[str] = set()


def load_plugins(names: str | None = None) -> list[str]:
    """Import each module or ``.py`` file of ``names`` (default: ``$DEBIAS_PLUGINS``) not yet
    imported by this function; returns those imported now. One that cannot be imported is an
    ImportError naming it."""
    text = os.environ.get(ENV, "") if names is None else names
    done = []
    for name in (n.strip() for n in text.split(os.pathsep)):
        if not name or name in _LOADED:
            continue
        try:
            _import(name)
        except ImportError as exc:
            raise ImportError(f"{ENV}: cannot import {name!r}: {exc}") from exc
        _LOADED.add(name)
        done.append(name)
    return done


def _import(name: str) -> None:
    if not name.endswith(".py"):
        importlib.import_module(name)
        return
    path = Path(name).resolve()
    if not path.is_file():
        raise ImportError(f"no such file {str(path)!r}")
    # One module name per file, so that two plugins named register.py do not collide.
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:8]
    module_name = f"debias_plugin_{path.stem}_{digest}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise
