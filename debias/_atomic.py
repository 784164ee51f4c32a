"""Crash-safe file writes, shared by the data cache and the training checkpoints.

Write to a temporary file in the target's folder, fsync, then rename over the target: a process
killed mid-write (Ctrl-C, OOM, a pre-empted node) leaves either the previous complete file or
the new one, never a torn file. The file gets the permissions the umask gives a new file (as
``open`` would), not ``mkstemp``'s private ``0600``: results and caches on a shared cluster are
readable by whom the umask says. A killed write leaves a ``.debias-tmp.<name>.<random>.tmp``
behind; :func:`remove_orphans` deletes those, and only those: the ``.debias-tmp.`` marker is a
name no user chooses, so a user's own ``.thesis.20241207.tmp`` is never touched.
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

# ".debias-tmp.<target name>.<mkstemp's random part>.tmp": exactly what debias creates, never a
# name a user would choose (a bare ".<name>.<8 chars>.tmp" may be a user's file: never deleted).
TMP_PREFIX = ".debias-tmp."
_TMP = re.compile(r"^\.debias-tmp\..+\.[A-Za-z0-9_]{8}\.tmp$")


def temp_name(target: str, random: str) -> str:
    """The name of debias's temporary file for ``target`` (what :func:`remove_orphans` removes)."""
    return f"{TMP_PREFIX}{target}.{random}.tmp"


def _umask() -> int:
    try:  # Linux >= 4.7 reports it without changing it (thread-safe)
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    # Elsewhere it can only be read by setting it; set it straight back.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Call ``write(fh)`` on a temporary file next to ``path``, then atomically rename it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f"{TMP_PREFIX}{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        if exc.filename is None and exc.errno is not None:
            # A failed write() names no file: name the one being written (a full disk).
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def create_new(path: Path, data: bytes) -> bool:
    """Write ``data`` to ``path`` only if no file has that name; True when this call created it.

    The content is complete before the name exists (a temporary file hard-linked to ``path``;
    ``link`` fails when the name is taken), so a rival process that finds the file never reads
    it half-written, as it could between ``open(O_EXCL)`` and ``write``.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f"{TMP_PREFIX}{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        except OSError:  # a file system without hard links: exclusive create, then write
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
            except FileExistsError:
                return False
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
        return True
    finally:
        Path(tmp).unlink(missing_ok=True)


def remove_orphans(folder: Path, older_than_s: float = 60.0) -> list[Path]:
    """Delete temporary files of killed :func:`atomic_write` calls in ``folder``.

    Only names of atomic_write's pattern older than ``older_than_s`` go: a write in progress in
    another process is younger than that. Returns the paths removed.
    """
    removed = []
    now = time.time()
    try:
        entries = list(os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return removed
    for e in entries:
        if not (_TMP.match(e.name) and e.is_file(follow_symlinks=False)):
            continue
        try:
            if now - e.stat().st_mtime > older_than_s:
                os.unlink(e.path)
                removed.append(Path(e.path))
        except FileNotFoundError:  # removed by another process meanwhile
            pass
    return removed
