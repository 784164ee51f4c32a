"""Sweep workers: a process that runs many runs in turn, and the child side of every run.

A fresh Python process per run pays a fixed cost every time: the interpreter, importing torch
and debias, torch's first ``use_deterministic_algorithms`` call (it imports inductor) and
loading the data (decoding, colouring): ~8 s of a ~90 s Biased-MNIST CPU run. A persistent
worker pays it once and keeps the last data splits it loaded (:class:`SplitCache`), so runs on
the same data (one rho, any method and seed) share them.

What stays per run, as with a process per run:

* seeding: :class:`debias.train.Trainer` seeds everything it draws from (``torch.manual_seed``
  at build, one generator per epoch), and colouring depends on ``data_seed`` only, not on the
  run's seed, so a run gives the same numbers in a reused worker as in a fresh process
  (``tests/test_sweep.py`` checks this bit for bit);
* its run folder, lock, ``log.txt`` (the worker's file descriptors 1 and 2 point at it while
  the run runs, so C-level output lands there too), ``error.txt`` and checkpoint, hence
  resuming;
* failures: a Python exception ends the run (``error.txt``, return code 1) and the worker takes
  the next one; KeyboardInterrupt / SIGTERM ends it with 130 (checkpoint kept) and the worker
  exits; a crash of the process (a signal, an out-of-memory kill) is seen by the parent as the
  worker's death with that run in flight: that run alone is failed, with the signal as its
  return code, and a new worker takes the rest.

Protocol: the parent (:class:`Worker`) starts ``python -c _SERVE <reply fd>``, writes one run
folder per line to its stdin and reads one return code per line from the reply pipe. Outside a
run the worker's output goes where the parent's does.
"""

from __future__ import annotations

import contextlib
import copy
import datetime as _dt
import gc
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from debias.train.runfolder import ERROR, LOG, RUN_CONFIG

__all__ = ["SplitCache", "Worker", "die_with_parent", "run_in_process", "serve"]

PARENT_ENV = "DEBIAS_SWEEP_PARENT"
_PR_SET_PDEATHSIG = 1  # linux/prctl.h
# Return code of a run ended by Ctrl-C or SIGTERM (as a shell reports SIGINT).
INTERRUPTED = 130
# Data splits a worker keeps: a grid ordered by its data key (rho) needs one; two cover the
# change of key while parallel workers cross it.
CACHED_DATASETS = 2


def now() -> str:
    return _dt.datetime.now().isoformat(timespec="seconds")


# -- the child side ------------------------------------------------------------------------------
def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(1.0)
    os.kill(os.getpid(), signal.SIGTERM)


def die_with_parent(parent: int | None = None) -> None:
    """End this process when ``parent`` (default: the current parent) dies, even by SIGKILL.

    SIGTERM becomes KeyboardInterrupt, so the run stops as after Ctrl-C (its last checkpoint
    stays, its lock is released). Linux: the kernel sends SIGTERM on the parent's death
    (``prctl(PR_SET_PDEATHSIG)``); elsewhere a daemon thread polls the parent pid every second.
    """
    parent = parent or os.getppid()
    signal.signal(signal.SIGTERM, _interrupt)
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            if libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) == 0:
                if os.getppid() != parent:  # it died before prctl took effect
                    os.kill(os.getpid(), signal.SIGTERM)
                return
        except (OSError, AttributeError):
            pass
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()


def watch_parent_from_env() -> None:
    """:func:`die_with_parent` for the sweep process named in the environment."""
    parent = os.environ.get(PARENT_ENV)
    die_with_parent(int(parent) if parent else None)


def run_in_process(run_dir: str, load: Callable[..., Any] | None = None) -> int:
    """Run the config in ``<run_dir>/run_config.json`` here; on failure write ``error.txt``.

    ``load`` stands in for :func:`debias.data.registry.load_splits` (a worker's cache).
    Returns 0, 1 (an exception) or :data:`INTERRUPTED`.
    """
    run = Path(run_dir)
    try:
        threads = os.environ.get("DEBIAS_NUM_THREADS")
        if threads:
            import torch

            torch.set_num_threads(int(threads))
        from debias.plugins import load_plugins
        from debias.train import train

        load_plugins()  # the user's registrations exist in this process too ($DEBIAS_PLUGINS)

        cfg = json.loads((run / RUN_CONFIG).read_text())
        print(
            f"[sweep] {run} | start {now()} | threads {threads or 'default'} | pid {os.getpid()}",
            flush=True,
        )
        train(cfg, log=lambda msg: print(msg, flush=True), load=load)
        print(f"[sweep] {run} | finished {now()}", flush=True)
        return 0
    except BaseException as exc:  # noqa: BLE001 - every failure must leave error.txt behind
        tb = traceback.format_exc()
        (run / ERROR).write_text(tb)
        print(tb, file=sys.stderr, flush=True)
        return INTERRUPTED if isinstance(exc, KeyboardInterrupt) else 1


class SplitCache:
    """:func:`~debias.data.registry.load_splits` keeping its last ``size`` results.

    The key is the dataset name and every data option (the run's training seed is not one:
    colouring and splits depend on ``data_seed``). Each call returns new shallow copies of the
    split objects (a run may rebind their attributes, e.g. ``.to(device)``); the tensors are
    shared and never written by a run.
    """

    def __init__(self, size: int = CACHED_DATASETS) -> None:
        self.size = size
        self._items: OrderedDict[str, dict[str, Any]] = OrderedDict()

    def __call__(self, name: str, **options: Any) -> dict[str, Any]:
        from debias.data.registry import load_splits

        key = json.dumps([name, options], sort_keys=True, default=repr)
        if key in self._items:
            self._items.move_to_end(key)
        else:
            self._items[key] = load_splits(name, **options)
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return {split: copy.copy(ds) for split, ds in self._items[key].items()}


@contextlib.contextmanager
def _output_to(path: Path):
    """Point file descriptors 1 and 2 (Python's and C's output) at ``path``, appending."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for f in (fd, *saved):
            os.close(f)


def _release_memory() -> None:
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def serve(reply_fd: int) -> int:
    """The worker's loop: run each run folder read from stdin, reply its return code."""
    os.set_inheritable(reply_fd, False)  # processes a run starts must not hold the pipe open
    replies = os.fdopen(reply_fd, "w", buffering=1)
    try:
        watch_parent_from_env()
        cache = SplitCache()
        for line in sys.stdin:
            run_dir = line.strip()
            if not run_dir:
                continue
            with _output_to(Path(run_dir) / LOG):
                rc = run_in_process(run_dir, load=cache)
            replies.write(f"{rc}\n")
            replies.flush()
            if rc == INTERRUPTED:
                return rc
            _release_memory()
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM between runs
        return INTERRUPTED
    return 0


_SERVE = "import sys; from debias.sweep.worker import serve; sys.exit(serve(int(sys.argv[1])))"


# -- the parent side -----------------------------------------------------------------------------
class Worker:
    """A persistent worker process, seen from the sweep: :meth:`submit` a prepared run folder,
    then :meth:`poll` until it returns the run's return code."""

    def __init__(self, env: Mapping[str, str], cwd: str, ignore: tuple[int, ...] = ()) -> None:
        """``ignore``: signals the worker ignores from its start (a SLURM task's SIGUSR2 is
        for the task, which then stops the worker itself)."""
        read, write = os.pipe()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _SERVE, str(write)],
            stdin=subprocess.PIPE,
            env=dict(env),
            cwd=cwd,
            pass_fds=(write,),
            preexec_fn=(lambda: [signal.signal(s, signal.SIG_IGN) for s in ignore])
            if ignore
            else None,
        )
        os.close(write)  # the worker holds the only write end: end of file = it died
        self.fd = read
        self._buffer = b""
        self.run: str | None = None  # the run folder in flight
        self.alive = True

    def submit(self, run_dir: str | os.PathLike) -> None:
        if self.run is not None or not self.alive:
            raise RuntimeError(f"worker {self.proc.pid} cannot take {run_dir}: busy or ended")
        self.run = str(run_dir)
        self.proc.stdin.write(f"{self.run}\n".encode())
        self.proc.stdin.flush()

    def poll(self, timeout: float = 0.0) -> int | None:
        """The return code of the run in flight once it ended (within ``timeout`` s), else None.
        A worker that died mid-run gives its own return code (``-signal`` when killed)."""
        while b"\n" not in self._buffer:
            if not select.select([self.fd], [], [], timeout)[0]:
                return None
            data = os.read(self.fd, 4096)
            if not data:  # the worker is gone
                self.alive = False
                self.run = None
                rc = self.proc.wait()
                return rc if rc != 0 else 1  # exited without a reply: never a success
            self._buffer += data
        line, self._buffer = self._buffer.split(b"\n", 1)
        rc = int(line)
        self.run = None
        if rc == INTERRUPTED:  # the worker exits after an interrupted run
            self.alive = False
        return rc

    def close(self, timeout: float = 10.0) -> None:
        """Let the worker finish (end of its input), killing it after ``timeout`` s."""
        with contextlib.suppress(OSError):
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        with contextlib.suppress(OSError):
            os.close(self.fd)
        self.alive = False
