"""The run record: ``metrics.json`` (config, method, selection, reports, data, timings,
versions, the representation section), ``model.pt`` and ``embeddings.npz``:
:class:`TrainerRecord`, a part of :class:`debias.train.loop.Trainer`.
"""

from __future__ import annotations

import dataclasses
import platform
import shlex
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from debias._atomic import atomic_write
from debias.methods import SUPERVISION, run_supervision
from debias.train.checkpoint import save_json, save_torch
from debias.train.limits import eval_limit_note, limits_text, run_limits
from debias.train.represent import KEY as REPRESENTATION
from debias.train.represent import represent
from debias.train.runfolder import EMBEDDINGS, HISTORY, METRICS, MODEL


def git_commit() -> str | None:
    """The commit of the git checkout debias is imported from (``+dirty`` with uncommitted
    changes), or None when it is not in a repository (an installed wheel) or git is missing."""
    import debias

    where = Path(debias.__file__).resolve().parent
    try:
        head = subprocess.run(
            ["git", "-C", str(where), "rev-parse", "HEAD"], capture_output=True, text=True,
            timeout=10, check=True,
        ).stdout.strip()  # fmt: skip
        dirty = subprocess.run(
            ["git", "-C", str(where), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+dirty" if dirty else "") if head else None


def provenance() -> dict[str, Any]:
    """What made the run: the package version, its git commit (None outside a repository) and
    the command line of the process (for the Python API, the script or kernel that called it)."""
    import debias

    argv = [Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python", *sys.argv[1:]]
    return {"debias": debias.__version__, "git_commit": git_commit(), "command": shlex.join(argv)}


def versions() -> dict[str, str]:
    import debias

    out = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "debias": debias.__version__,
    }
    for name in ("torch", "torchvision", "numpy", "pandas", "sklearn", "fairlearn"):
        try:
            out[name] = __import__(name).__version__
        except Exception:  # a missing optional package is not a reason to fail a run
            out[name] = "not installed"
    return out | machine()


# CPU features that change which kernels torch runs, hence the last bits of a result.
_CPU_FLAGS = ("avx", "avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16")


def machine() -> dict[str, str]:
    """The CPU a run ran on: ``cpu`` (model name), ``cpu_flags`` (those of :data:`_CPU_FLAGS`
    it has) and ``cpu_capability`` (the vector kernels torch picked: ``AVX512``, ``AVX2``, ...).
    Results are bit-identical only on one kind of machine (PROTOCOLS: tolerances)."""
    import torch

    model, flags = platform.processor(), set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:  # Linux; elsewhere only the model
            for line in fh:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    model = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
                    break
    except OSError:
        pass
    capability = getattr(torch.backends.cpu, "get_cpu_capability", lambda: "unknown")()
    return {
        "cpu": model or "unknown",
        "cpu_flags": " ".join(f for f in _CPU_FLAGS if f in flags),
        "cpu_capability": str(capability),
    }


class TrainerRecord:
    """The files a finished :class:`~debias.train.loop.Trainer` run writes."""

    # the pretrained weights' own transforms as applied (load_data; None: no weights)
    preprocessing: dict[str, Any] | None = None

    def _method_record(self) -> dict[str, Any]:
        cls = type(self.method)
        kind = self.method.supervision_of(self.method.hp)
        return {
            "name": cls.name,
            "supervision": kind,
            "supervision_text": SUPERVISION[kind],
            "hparams": dict(self.method.hp),
            "stages": [dataclasses.asdict(s) for s in self.stages],
            "paper": cls.paper,
            **self.method.record(),
        }

    def _finish(self) -> dict[str, Any]:
        cfg = self.cfg
        self.eval_seconds = 0.0
        chosen_epoch, reports = self._final_reports()
        eval_seconds = self.eval_seconds + sum(r.get("eval_seconds", 0.0) for r in self.history)
        rule = "last epoch" if cfg.select == "last" else f"best {cfg.select} (validation split)"
        rule += "; ties go to the later epoch" if cfg.select != "last" else ""
        limits = run_limits(cfg)
        result = {
            "config": cfg.to_dict(),
            # Smoke-test limits change what every number below is measured on.
            "limits": limits,
            "limits_note": limits_text(limits),
            "provenance": provenance(),
            "method": self._method_record(),
            # What the whole run read: the method's kind, raised by a selection on a validation
            # metric that needs bias labels.
            "supervision": run_supervision(self.method.supervision_of(self.method.hp), cfg.select),
            "selection": {
                "rule": cfg.select,
                "description": rule,
                "epoch": chosen_epoch,
                "stage": self.stages[-1].name,
            },
            "splits": {
                split: {**rep.to_dict(), "groups": rep.groups.to_dict(orient="records")}
                for split, rep in reports.items()
            },
            "data": {
                split: {
                    "n": len(ds),
                    # the split's size before train_limit / eval_limit cut it
                    "n_before_limit": self.full_sizes.get(split, len(ds)),
                    "aligned_groups": [list(g) for g in ds.aligned_groups],
                    "n_aligned": int(ds.aligned.sum()),
                    # files the loader skipped (off-pattern names, unreadable images), by reason
                    "skipped": dict(getattr(ds, "skipped", {}) or {}),
                    "class_names": list(ds.class_names),
                    "bias_names": list(ds.bias_names),
                    # what audit --run / evaluate compare before reading this run's data again
                    "fingerprint": ds.fingerprint(),
                }
                for split, ds in self.splits.items()
            },
            "epochs_run": self.epochs_done,
            "wall_time_seconds": self.elapsed,
            # Forward passes over whole splits: in the epochs (part of wall_time_seconds) and in
            # the final evaluation (not).
            "eval_seconds": eval_seconds,
            "device": str(self.device),
            "versions": versions(),
            "history": HISTORY,
        }
        if self.continued_from:  # trained on from finished runs with fewer epochs
            result["continued_from"] = self.continued_from
        if self.preprocessing is not None:
            # the weights' own transforms (debias.models.model_preprocessing), as applied
            result["preprocessing"] = self.preprocessing
        if cfg.save_embeddings:
            self._save_embeddings()
            result["embeddings"] = EMBEDDINGS
        if cfg.represent and self.dist.is_main:
            result[REPRESENTATION] = self._representation(chosen_epoch)
        if self.dist.is_main:
            state = {"config": cfg.to_dict(), "model": self.model.state_dict()}
            save_torch(state, self.out / MODEL)
            save_json(result, self.out / METRICS)
        self.dist.barrier()
        return result

    def _representation(self, chosen_epoch: int) -> dict[str, Any]:
        """The representation section; a split too small for its probes (a fit that cannot
        run) is recorded as the section's ``error`` and warned about, and the run's own
        numbers are still written."""
        cfg = self.cfg
        try:
            return represent(
                self.model, self.splits, seed=cfg.seed, batch_size=cfg.eval_batch_size,
                features=self._runner.reusable_features(self, chosen_epoch), log=self.log,
                refits=cfg.represent_refits,
                limited=self._limited_note(),
            )  # fmt: skip
        except ValueError as err:
            warnings.warn(f"{self.out}: no representation section: {err}", stacklevel=2)
            return {"error": f"{type(err).__name__}: {err}"}

    def _limited_note(self) -> str:
        sizes = {
            name: (len(ds), self.full_sizes.get(name, len(ds))) for name, ds in self.splits.items()
        }
        return eval_limit_note(self.cfg.eval_limit, sizes)

    def _save_embeddings(self) -> None:
        ds = self.splits["test"]
        z = self.encode("test").float().cpu().numpy()
        if not self.dist.is_main:
            return
        arrays = dict(
            Z=z,
            targets=ds.targets.cpu().numpy(),
            bias=ds.bias.cpu().numpy(),
            aligned_groups=np.asarray(ds.aligned_groups, dtype=np.int64).reshape(-1, 2),
            split=np.asarray("test"),
        )
        atomic_write(self.out / EMBEDDINGS, lambda fh: np.savez_compressed(fh, **arrays))
