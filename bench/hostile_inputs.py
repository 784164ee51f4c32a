"""Hostile inputs through the ``debias`` CLI (a subprocess each) and the Python API (issue 34).

Each case gives one bad (or tricky) input and what must happen: ``refuse`` (exit 2, exactly one
``debias <cmd>: error: ...`` line on stderr, no traceback; an API call raises the named
exception type) or ``ok`` (exit 0, no traceback), and optionally a check that nothing of the
user's was lost. Outcomes: PASS; LOSS (a user's file deleted, overwritten or a run's record
corrupted); SILENT (accepted what should be refused); UNCLEAR (a traceback, several lines, a
wrong exit code).

    python bench/hostile_inputs.py [--tree PATH] [--only ID,ID] [--md docs/HOSTILE_INPUTS.md]

``--tree`` runs the cases against another checkout (e.g. the merge base, for a before/after
table). Fixtures (small PNG tables, tiny digits runs) are made in a temporary folder; nothing
is downloaded. By default every CLI case calls ``debias.cli.main(argv)`` in this process with
stderr captured (an uncaught exception is a traceback, exit 1), so the imports are paid once;
``--subprocess`` starts ``python -m debias`` for each case instead (the replay's way; about
30 s a case on 2 busy cores).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parents[1]
TINY = [
    "--dataset", "digits", "--model", "smallconvnet", "--epochs", "1", "--max-steps", "2",
    "--batch-size", "32", "--device", "cpu", "--quiet", "--no-represent", "--rho", "0.99",
]  # fmt: skip


LIVE: list[subprocess.Popen] = []  # processes started to hold a lock; ended at the end


@dataclass
class Case:
    id: str
    cls: str
    what: str
    argv: list[str] | None = None  # CLI: debias ARGV
    code: str | None = None  # API: Python source; prints "RAISED <Type>" or "OK"
    expect: str = "refuse"  # refuse | ok
    raises: tuple[str, ...] = ("ValueError", "TypeError")
    setup: Callable[[Path], None] | None = None
    keep: Callable[[Path], bool] | None = None  # True when nothing of the user's was lost
    keep_fails: str = "LOSS"  # what a failed keep check means (SILENT: something not mentioned)
    own_process: bool = False  # an API case that changes process limits: always a subprocess


# -- fixtures --------------------------------------------------------------------------------------
def grey_table(folder: Path, n: int = 48, classes: int = 2, name: str = "meta.csv") -> Path:
    """``n`` seeded 12x12 grey PNGs and a metadata table (filename, y, a, split)."""
    from PIL import Image

    img = folder / "img"
    img.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        if not (img / f"g{i}.png").exists():
            Image.fromarray(rng.integers(0, 256, (12, 12), dtype=np.uint8), mode="L").save(
                img / f"g{i}.png"
            )
    y = [(i // 4) % classes for i in range(n)]
    table = pd.DataFrame(
        {
            "filename": [f"img/g{i}.png" for i in range(n)],
            "y": y,
            "a": [(i // 8) % 2 for i in range(n)],  # every (y, a) group in every split
            "split": [0 if i % 4 < 2 else i % 4 - 1 for i in range(n)],
        }
    )
    table.to_csv(folder / name, index=False)
    return folder / name


def meta_args(path: Path) -> list[str]:
    return [
        "--dataset", f"metadata:{path}", "--target", "y", "--bias", "a", "--model",
        "smallconvnet", "--epochs", "1", "--max-steps", "1", "--batch-size", "8",
        "--image-size", "16", "--device", "cpu", "--quiet", "--no-represent",
    ]  # fmt: skip


def old(path: Path) -> None:
    t = time.time() - 3600
    os.utime(path, (t, t))


def write(path: Path, text: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)


def fixtures(tmp: Path, run: Callable[[list[str]], subprocess.CompletedProcess]) -> None:
    """The shared fixtures: a metadata table and a finished run on it, a finished digits run,
    an embeddings file and a finished 2-run sweep."""
    table = grey_table(tmp / "meta")
    r = run(["train", *meta_args(table), "--out", str(tmp / "metarun"), "--save-embeddings"])
    assert r.returncode == 0, r.stderr
    r = run(["train", *TINY, "--out", str(tmp / "digitsrun")])
    assert r.returncode == 0, r.stderr
    sweep = {
        "name": "s",
        "base": {
            "dataset": "digits", "model": "smallconvnet", "epochs": 1, "max_steps": 2,
            "batch_size": 32, "device": "cpu", "rho": 0.99, "represent": False,
        },
        "grid": {"seed": [0, 1]},
    }  # fmt: skip
    write(tmp / "sweep.yaml", json.dumps(sweep))
    r = run(["sweep", str(tmp / "sweep.yaml"), "--out", str(tmp / "sweep")])
    assert r.returncode == 0, r.stderr


def copy_tree(src: Path, dst: Path) -> None:
    import shutil

    shutil.copytree(src, dst)


# -- the cases -------------------------------------------------------------------------------------
def cases(t: Path) -> list[Case]:
    meta = t / "meta" / "meta.csv"
    user_tmp = ".thesis.20241207.tmp"
    c: list[Case] = []

    def user_file(folder: Path, name: str = user_tmp, text: str = "my thesis") -> Callable:
        def setup(_: Path) -> None:
            write(folder / name, text)
            old(folder / name)

        return setup

    def kept(path: Path, text: str = "my thesis") -> Callable[[Path], bool]:
        return lambda _: path.is_file() and path.read_text() == text

    # LOSS: deletes or overwrites the user's files
    for cmd, out, argv in (
        ("train", t / "L1", ["train", *TINY, "--out", str(t / "L1")]),
        ("audit", t / "L2", ["audit", str(t / "metarun/embeddings.npz"), "--out", str(t / "L2"),
                             "--no-plots", "--cv", "2"]),
        ("sweep", t / "L3", ["sweep", str(t / "sweep.yaml"), "--out", str(t / "L3")]),
    ):  # fmt: skip
        c.append(Case(f"loss-tmp-{cmd}", "data loss", f"`{cmd}` into a folder holding the user's "
                      f"`{user_tmp}` (an hour old)", argv, expect="ok",
                      setup=user_file(out), keep=kept(out / user_tmp)))  # fmt: skip
    c.append(Case("loss-tmp-debias-shaped", "data loss", "user's `.metrics.json.abcd1234.tmp` "
                  "(the old temp-name shape) in a run folder that resumes", ["train", *TINY,
                  "--out", str(t / "L4")], expect="ok",
                  setup=user_file(t / "L4", ".metrics.json.abcd1234.tmp"),
                  keep=kept(t / "L4" / ".metrics.json.abcd1234.tmp")))  # fmt: skip
    for name in ("report.md", "summary.csv", "convergence.png"):
        d = t / f"L5-{name}"
        c.append(Case(f"loss-report-{name}", "data loss", f"`report --out DIR` where DIR holds "
                      f"the user's own {name}", ["report", str(t / "sweep"), "--out", str(d)],
                      setup=user_file(d, name, "mine"), keep=kept(d / name, "mine")))  # fmt: skip

    def live_sweep(_: Path) -> None:
        copy_tree(t / "sweep", t / "L6")
        # A live process that is not this one (in-process cases run in this pid).
        holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        LIVE.append(holder)
        lock = {"pid": holder.pid, "host": os.uname().nodename, "started": time.time()}
        write(t / "L6" / ".debias-sweep.lock", json.dumps(lock))

    def ledger_intact(_: Path) -> bool:
        rows = pd.read_csv(t / "L6" / "sweep_status.csv")
        return set(rows["status"]) <= {"done", "skipped"} and not any(
            (p / "error.txt").exists() for p in (t / "L6").iterdir() if p.is_dir()
        )

    c.append(Case("loss-two-sweeps", "data loss", "a second `debias sweep` on a folder a live "
                  "sweep holds", ["sweep", str(t / "sweep.yaml"), "--out", str(t / "L6")],
                  setup=live_sweep, keep=ledger_intact))  # fmt: skip

    # SILENT: selection metrics without a direction
    for metric, expect in (
        ("val/worst_group_y", "refuse"), ("val/worst_group_b", "refuse"), ("val/n", "refuse"),
        ("val/n_groups", "refuse"), ("val/n_conflicting", "refuse"), ("val/bogus", "refuse"),
        ("val/equalized_odds_mean_gap", "ok"),
    ):  # fmt: skip
        c.append(Case(f"select-{metric.split('/')[1]}", "selection direction", f"--select {metric}",
                      ["train", *TINY, "--select", metric, "--out", str(t / f"S-{metric[4:]}")],
                      expect=expect))  # fmt: skip

    # SILENT: config values of the wrong type or written twice
    yaml_cases = {
        "epochs-float": "epochs: 1.5\n",
        "epochs-bool": "epochs: true\n",
        "epochs-str": 'epochs: "2"\n',
        "batch-float": "batch_size: 64.5\n",
        "lr-str": 'lr: "0.1"\n',
        "seed-float": "seed: 1.0\n",
        "augment-int": "augment: 1\n",
        "rho-bool": "rho: true\n",
        "dup-key": "epochs: 1\nlr: 0.1\nepochs: 2\n",
        "dup-in-group": "optim:\n  lr: 0.1\n  lr: 0.01\n",
        "dup-method-option": "method_options:\n  temperature: 0.1\n  temperature: 0.2\n",
        "select-list": "select: [val/accuracy]\n",
    }
    # Without the options the cases set: the command line would override the file.
    # Cheap even when a case is (wrongly) accepted and trains its default 80 epochs.
    base = ["--dataset", "digits", "--model", "smallconvnet", "--max-steps", "1", "--device",
            "cpu", "--quiet", "--no-represent", "--train-limit", "512", "--eval-limit", "32",
            "--eval-every", "0"]  # fmt: skip
    for key, text in yaml_cases.items():
        f = t / "cfg" / f"{key}.yaml"
        argv = base + ([] if key.startswith("rho") else ["--rho", "0.99"])
        c.append(Case(f"config-{key}", "config types/duplicates", f"--config with `{text.strip()}`",
                      ["train", *argv, "--config", str(f), "--out", str(t / f"C-{key}")],
                      setup=lambda _, f=f, text=text: write(f, text)))  # fmt: skip
    f = t / "cfg" / "dup.json"
    c.append(Case("config-json-dup", "config types/duplicates", "JSON --config with a key twice",
                  ["train", *TINY, "--config", str(f), "--out", str(t / "C-json")],
                  setup=lambda _: write(f, '{"epochs": 1, "epochs": 2}')))  # fmt: skip
    for key, text in {
        "grid-twice": "name: g\nbase: {dataset: digits, rho: 0.99}\ngrid:\n  seed: [0]\n  seed: [1]\n",
        "base-twice": "name: g\nbase:\n  dataset: digits\n  rho: 0.99\n  rho: 0.9\ngrid: {seed: [0]}\n",
        "grid-float-epochs": "name: g\nbase: {dataset: digits, rho: 0.99}\ngrid: {epochs: [1.5]}\n",
    }.items():  # fmt: skip
        f = t / "cfg" / f"sweep-{key}.yaml"
        c.append(Case(f"sweep-{key}", "config types/duplicates", f"sweep YAML: {key}",
                      ["sweep", str(f), "--dry-run", "--out", str(t / f"SW-{key}")],
                      setup=lambda _, f=f, text=text: write(f, text)))  # fmt: skip
    c.append(Case("sweep-set-float", "config types/duplicates", "sweep --set epochs=1.5",
                  ["sweep", str(t / "sweep.yaml"), "--dry-run", "--set", "epochs=1.5",
                   "--out", str(t / "SW-set")]))  # fmt: skip
    f = t / "cfg" / "latin1.yaml"
    c.append(Case("config-latin1", "text encodings", "a Latin-1 --config file",
                  ["train", *TINY, "--config", str(f), "--out", str(t / "C-l1")],
                  setup=lambda _: write(f, "# café\nepochs: 1\n".encode("latin-1"))))  # fmt: skip

    # SILENT: folders of the wrong kind
    for cmd, argv in (
        ("train", ["train", *TINY, "--out", ""]),
        ("train-blank", ["train", *TINY, "--out", "  "]),
        ("audit", ["audit", str(t / "metarun/embeddings.npz"), "--out", ""]),
        ("report", ["report", str(t / "sweep"), "--out", ""]),
        ("sweep", ["sweep", str(t / "sweep.yaml"), "--out", ""]),
    ):
        c.append(Case(f"out-empty-{cmd}", "folder kinds", f"`{cmd} --out ''`", argv))
    c += [
        Case("kind-audit-into-run", "folder kinds", "audit --out a training run folder",
             ["audit", str(t / "metarun/embeddings.npz"), "--out", str(t / "digitsrun"),
              "--no-plots", "--cv", "2"]),
        Case("kind-sweep-into-run", "folder kinds", "sweep --out a training run folder",
             ["sweep", str(t / "sweep.yaml"), "--out", str(t / "digitsrun")]),
        Case("kind-train-into-sweep", "folder kinds", "train --out a sweep's root",
             ["train", *TINY, "--out", str(t / "sweep")]),
        Case("kind-report-into-sweep", "folder kinds", "report --out a sweep's root",
             ["report", str(t / "sweep"), "--out", str(t / "sweep")]),
        Case("kind-report-into-run", "folder kinds", "report --out a run folder",
             ["report", str(t / "sweep"), "--out", str(t / "digitsrun")]),
        Case("kind-train-into-audit", "folder kinds", "train --out an audit folder",
             ["train", *TINY, "--out", str(t / "K-audit")],
             setup=lambda _: _audit_folder(t)),
        Case("kind-audit-into-report", "folder kinds", "audit --out a report folder",
             ["audit", str(t / "metarun/embeddings.npz"), "--out", str(t / "sweep/report"),
              "--no-plots", "--cv", "2"],
             setup=lambda _: _report_folder(t)),
        Case("kind-out-is-file", "folder kinds", "train --out an existing file",
             ["train", *TINY, "--out", str(meta)]),
    ]  # fmt: skip

    # SILENT: data that changed under a run
    def flipped(_: Path) -> None:
        copy_tree(t / "meta", t / "D1")
        copy_tree(t / "metarun", t / "D1run")
        tab = pd.read_csv(t / "D1" / "meta.csv")
        tab["y"] = 1 - tab["y"]
        tab.to_csv(t / "D1" / "meta.csv", index=False)
        _repoint(t / "D1run", t / "meta" / "meta.csv", t / "D1" / "meta.csv")

    def dropped(_: Path) -> None:
        copy_tree(t / "meta", t / "D2")
        copy_tree(t / "metarun", t / "D2run")
        tab = pd.read_csv(t / "D2" / "meta.csv")
        tab.drop(index=[5, 6, 7]).to_csv(t / "D2" / "meta.csv", index=False)
        _repoint(t / "D2run", t / "meta" / "meta.csv", t / "D2" / "meta.csv")

    before: dict[str, str] = {}

    def dropped_eval(_: Path) -> None:
        dropped(_)
        before["m"] = (t / "D2run" / "metrics.json").read_text()

    c += [
        Case("data-flipped-audit", "changed data", "audit --run after the table's labels flipped",
             ["audit", "--run", str(t / "D1run"), "--out", str(t / "D1audit"), "--no-plots",
              "--cv", "2", "--device", "cpu"], setup=flipped),
        Case("data-dropped-evaluate", "changed data", "evaluate --force after rows were dropped",
             ["evaluate", str(t / "D2run"), "--force", "--device", "cpu"], setup=dropped_eval,
             keep=lambda _: (t / "D2run" / "metrics.json").read_text() == before["m"]),
    ]  # fmt: skip

    # SILENT: reports that drop runs or notes without a word
    def foreign_run(_: Path) -> None:
        copy_tree(t / "sweep", t / "R1")
        copy_tree(t / "metarun", t / "R1" / "extra")

    c += [
        Case("report-unlisted-run", "reports", "a finished run of another dataset inside a "
             "sweep folder is named in the report", ["report", str(t / "R1"), "--out",
             str(t / "R1rep")], expect="ok", setup=foreign_run, keep_fails="SILENT",
             keep=lambda _: "extra" in (t / "R1rep" / "report.md").read_text()),
        Case("report-notes-missing", "reports", "--notes naming a missing file",
             ["report", str(t / "sweep"), "--out", str(t / "R2"), "--notes", str(t / "nope.md")]),
        Case("report-missing-dir", "reports", "report of a folder that does not exist",
             ["report", str(t / "nope"), "--out", str(t / "R3")]),
    ]  # fmt: skip

    # SILENT / UNCLEAR: degenerate inputs to metrics and audit
    def npz(name: str, **arrays) -> Callable[[Path], None]:
        def setup(_: Path) -> None:
            np.savez(t / name, **arrays)

        return setup

    y = np.arange(40) % 2
    b = (np.arange(40) // 2) % 2
    rng = np.random.default_rng(0)
    for key, arrays in {
        "constant": dict(Z=np.ones((40, 4)), targets=y, bias=b),
        "zeros": dict(Z=np.zeros((40, 4)), targets=y, bias=b),
        "nan": dict(Z=np.where(np.eye(40, 4) > 0, np.nan, 1.0), targets=y, bias=b),
        "aligned-1d": dict(Z=rng.normal(size=(40, 4)), targets=y, bias=b,
                           aligned_groups=np.array([0, 1])),
        "one-bias": dict(Z=rng.normal(size=(40, 4)), targets=y, bias=np.zeros(40, int)),
        "float-labels": dict(Z=rng.normal(size=(40, 4)), targets=y + 0.5, bias=b),
        "short-bias": dict(Z=rng.normal(size=(40, 4)), targets=y, bias=b[:30]),
        "no-Z": dict(targets=y, bias=b),
    }.items():  # fmt: skip
        c.append(Case(f"audit-{key}", "degenerate inputs", f"audit of embeddings: {key}",
                      ["audit", str(t / f"E-{key}.npz"), "--out", str(t / f"EA-{key}"),
                       "--no-plots", "--cv", "2"], setup=npz(f"E-{key}.npz", **arrays)))  # fmt: skip
    write(t / "not.npz", "hello")
    c.append(
        Case(
            "audit-not-npz",
            "degenerate inputs",
            "audit of a text file named .npz",
            ["audit", str(t / "not.npz"), "--out", str(t / "EA-not")],
        )
    )
    c.append(Case("audit-cv-1", "out-of-range values", "audit --cv 1",
                  ["audit", str(t / "metarun/embeddings.npz"), "--out", str(t / "EA-cv"),
                   "--cv", "1"]))  # fmt: skip
    c.append(Case("api-group-report-one-bias", "degenerate inputs", "group_report with a single "
                  "bias value: gaps NaN with a warning, not 0.0", code=textwrap.dedent("""
                  import warnings, math
                  from debias.metrics import group_report
                  with warnings.catch_warnings(record=True) as w:
                      warnings.simplefilter("always")
                      r = group_report([0, 1, 0, 1], [0, 1, 1, 1], [0, 0, 0, 0])
                  assert math.isnan(r.equalized_odds_mean_gap), r.equalized_odds_mean_gap
                  assert any("bias" in str(x.message) for x in w)
                  print("OK")"""), expect="ok"))  # fmt: skip
    c.append(Case("api-group-report-1d-aligned", "degenerate inputs", "group_report(aligned=[0, 1])",
                  code="from debias.metrics import group_report\n"
                  "group_report([0, 1], [0, 1], [0, 1], aligned=[0, 1])"))  # fmt: skip

    # UNCLEAR: resources, encodings, damaged records
    def huge_labels(_: Path) -> None:
        tab = pd.read_csv(meta)
        tab["y"] = np.where(tab["y"] == 1, 10**9, 0)
        tab.to_csv(t / "meta" / "huge.csv", index=False)

    def encoded(name: str, encoding: str) -> Callable[[Path], None]:
        def setup(_: Path) -> None:
            tab = pd.read_csv(meta)
            tab["note"] = "café"
            tab.to_csv(t / "meta" / name, index=False, encoding=encoding)

        return setup

    c += [
        Case("labels-huge", "resources", "metadata labels {0, 10^9} (an ID column as target)",
             ["train", *meta_args(t / "meta" / "huge.csv"), "--out", str(t / "U1")],
             setup=huge_labels),
        Case("csv-latin1", "text encodings", "a Latin-1 metadata CSV",
             ["train", *meta_args(t / "meta" / "latin1.csv"), "--out", str(t / "U2")],
             setup=encoded("latin1.csv", "latin-1")),
        Case("csv-utf16", "text encodings", "a UTF-16 metadata CSV",
             ["train", *meta_args(t / "meta" / "utf16.csv"), "--out", str(t / "U3")],
             setup=encoded("utf16.csv", "utf-16")),
    ]  # fmt: skip

    def damaged(name: str, how: Callable[[Path], None]) -> Callable[[Path], None]:
        def setup(_: Path) -> None:
            copy_tree(t / "sweep", t / name)
            how(t / name / "seed=0")

        return setup

    def truncate(d: Path) -> None:
        text = (d / "metrics.json").read_text()
        (d / "metrics.json").write_text(text[: len(text) // 2])

    def keyless(key: str) -> Callable[[Path], None]:
        def how(d: Path) -> None:
            m = json.loads((d / "metrics.json").read_text())
            del m[key]
            (d / "metrics.json").write_text(json.dumps(m))

        return how

    def corrupt_history(d: Path) -> None:
        (d / "history.csv").write_bytes(b'\x00\xff garbage\n1,2,3,4,5,6\n"unclosed\n')

    def listed(name: str, run: str = "seed=0") -> Callable[[Path], bool]:
        return lambda _: run in (t / f"{name}rep" / "report.md").read_text()

    for key, how in {
        "truncated": truncate,
        "no-splits": keyless("splits"),
        "no-config": keyless("config"),
    }.items():
        name = f"M-{key}"
        c.append(Case(f"record-{key}", "damaged records", f"report of a sweep with one run's "
                      f"metrics.json {key}: the rest reported, that one listed",
                      ["report", str(t / name), "--out", str(t / f"{name}rep")], expect="ok",
                      setup=damaged(name, how), keep=listed(name), keep_fails="SILENT"))  # fmt: skip
    c.append(Case("record-history", "damaged records", "report of a sweep with a corrupt "
                  "history.csv", ["report", str(t / "M-hist"), "--out", str(t / "M-histrep")],
                  expect="ok", setup=damaged("M-hist", corrupt_history)))  # fmt: skip

    def all_damaged(_: Path) -> None:
        copy_tree(t / "sweep", t / "M-all")
        for d in ("seed=0", "seed=1"):
            truncate(t / "M-all" / d)

    c.append(
        Case(
            "record-all-damaged",
            "damaged records",
            "report when every run is damaged",
            ["report", str(t / "M-all"), "--out", str(t / "M-allrep")],
            setup=all_damaged,
        )
    )

    def rerun_truncated(_: Path) -> None:
        copy_tree(t / "digitsrun", t / "M-rerun")
        truncate(t / "M-rerun")

    c.append(Case("record-rerun-truncated", "damaged records", "train again into a run whose "
                  "metrics.json is truncated", ["train", *TINY, "--out", str(t / "M-rerun")],
                  setup=rerun_truncated))  # fmt: skip

    def mismatch(_: Path) -> None:
        copy_tree(t / "metarun", t / "M-model")
        m = json.loads((t / "M-model" / "metrics.json").read_text())
        m["config"]["model"] = "simpleconvnet"
        (t / "M-model" / "metrics.json").write_text(json.dumps(m))

    c.append(Case("record-model-mismatch", "damaged records", "metrics.json names another model "
                  "than model.pt holds (audit --run)", ["audit", "--run", str(t / "M-model"),
                  "--out", str(t / "M-modelaudit"), "--no-plots", "--cv", "2", "--device", "cpu"],
                  setup=mismatch))  # fmt: skip

    # UNCLEAR: out-of-range values that reach torch
    for key, extra in {
        "train-limit-huge": ["--train-limit", "10000000"],
        "lr-1e10": ["--lr", "1e10"],
        "lr-zero": ["--lr", "0"],
        "lr-nan": ["--lr", "nan"],
        "epochs-zero": ["--epochs", "0"],
        "batch-one": ["--batch-size", "1"],
        "eval-limit-one": ["--eval-limit", "1"],
        "rho-two": ["--rho", "2"],
        "method-unknown": ["--method", "nope"],
        "select-test": ["--select", "test/accuracy"],
        "milestone-late": ["--lr-milestones", "5"],
    }.items():
        c.append(
            Case(
                f"range-{key}",
                "out-of-range values",
                " ".join(extra),
                ["train", *TINY, *extra, "--out", str(t / f"O-{key}")],
            )
        )
    c.append(
        Case(
            "range-jobs-zero",
            "out-of-range values",
            "sweep --jobs 0",
            ["sweep", str(t / "sweep.yaml"), "--jobs", "0", "--out", str(t / "O-jobs")],
        )
    )
    c.append(Case("range-evaluate-not-run", "out-of-range values", "evaluate a folder that is "
                  "not a run", ["evaluate", str(t / "meta")]))  # fmt: skip

    # UNCLEAR: Python API misuse
    api = {
        "config-out-none": ("from debias.train import TrainConfig\nTrainConfig(out=None, rho=0.99)", ("TypeError",)),
        "config-out-empty": ("from debias.train import TrainConfig\nTrainConfig(out='', rho=0.99)", ("TypeError", "ValueError")),
        "config-epochs-str": ("from debias.train import TrainConfig\nTrainConfig(out='x', rho=0.99, epochs='2')", ("TypeError",)),
        "config-epochs-float": ("from debias.train import TrainConfig\nTrainConfig(out='x', rho=0.99, epochs=1.5)", ("TypeError",)),
        "config-select-int": ("from debias.train import TrainConfig\nTrainConfig(out='x', rho=0.99, select=5)", ("TypeError",)),
        "config-method-options-list": ("from debias.train import TrainConfig\nTrainConfig(out='x', rho=0.99, method_options=[1])", ("TypeError", "ValueError")),
        "train-str": ("from debias.train import train\ntrain('some/path')", ("TypeError",)),
        "train-none": ("from debias.train import train\ntrain(None)", ("TypeError",)),
        "from-dict-unknown": ("from debias.train import TrainConfig\nTrainConfig.from_dict({'out': 'x', 'epoch': 2})", ("ValueError",)),
        "sweep-jobs-str": ("from debias.sweep import run_sweep\nrun_sweep({'name': 'x', 'base': {'dataset': 'digits', 'rho': 0.99}, 'grid': {'seed': [0]}}, jobs='2', dry_run=True)", ("TypeError", "ValueError")),
        "audit-z-str": ("from debias.audit import audit_embeddings\naudit_embeddings('Z', [0, 1], [0, 1])", ("TypeError", "ValueError")),
        "embeddings-1d-aligned": ("import numpy as np\nfrom debias.audit import Embeddings\nEmbeddings(np.ones((2, 2)), [0, 1], [0, 1], aligned_groups=[0, 1])", ("ValueError",)),
    }  # fmt: skip
    for key, (code, raises) in api.items():
        c.append(Case(f"api-{key}", "Python API", code.splitlines()[-1], code=code, raises=raises))
    c.append(Case("api-config-path-out", "Python API", "TrainConfig(out=Path(...)) is taken",
                  code="from pathlib import Path\nfrom debias.train import TrainConfig\n"
                  "c = TrainConfig(out=Path('x'), rho=0.99)\nassert c.out == 'x'\nprint('OK')",
                  expect="ok"))  # fmt: skip

    # Resources: a write that fails (RLIMIT_FSIZE gives EFBIG, as a full disk gives ENOSPC)
    efbig = textwrap.dedent(f"""
        import resource, signal, sys
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, resource.RLIM_INFINITY))
        from debias.cli import main
        sys.exit(main({["train", *TINY, "--out", str(t / "X1")]!r}))""")
    c.append(Case("resource-file-too-large", "resources", "train where every file over 20 kB "
                  "fails to write (EFBIG, like ENOSPC)", code=efbig, own_process=True,
                  raises=("debias train: error:",)))  # fmt: skip
    c += [
        Case("misc-config-is-dir", "out-of-range values", "--config naming a folder",
             ["train", *TINY, "--config", str(t / "meta"), "--out", str(t / "X2")]),
        Case("misc-sweep-empty", "config types/duplicates", "an empty sweep YAML",
             ["sweep", str(t / "cfg" / "empty.yaml"), "--dry-run"],
             setup=lambda _: write(t / "cfg" / "empty.yaml", "")),
        Case("misc-sweep-list", "config types/duplicates", "a sweep YAML that is a list",
             ["sweep", str(t / "cfg" / "list.yaml"), "--dry-run"],
             setup=lambda _: write(t / "cfg" / "list.yaml", "- 1\n- 2\n")),
        Case("misc-device-cuda", "out-of-range values", "--device cuda:7 on this machine",
             ["train", *TINY, "--device", "cuda:7", "--out", str(t / "X3")]),
        Case("misc-evaluate-refits-0", "out-of-range values", "evaluate --refits 0",
             ["evaluate", str(t / "metarun"), "--refits", "0", "--force", "--device", "cpu"]),
        Case("misc-report-again", "reports", "report twice into its own folder",
             ["report", str(t / "sweep"), "--out", str(t / "sweep" / "report2")], expect="ok",
             setup=lambda _: in_process(["report", str(t / "sweep"), "--out",
                                         str(t / "sweep" / "report2")])),
    ]  # fmt: skip

    # Regression: derived aligned groups checked as if given
    def fifty(_: Path) -> None:
        from PIL import Image

        d = t / "fifty"
        (d / "img").mkdir(parents=True, exist_ok=True)
        rows = []
        rng = np.random.default_rng(1)
        for i in range(300):
            Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8), mode="L").save(
                d / "img" / f"{i}.png"
            )
            y = i % 50
            split = 0 if i < 200 else (1 if i < 250 else 2)
            if split == 1 and y < 10:
                y = 10 + i % 40  # the validation split lacks labels 0-9
            rows.append({"filename": f"img/{i}.png", "y": y, "a": (i // 3) % 2, "split": split})
        pd.DataFrame(rows).to_csv(d / "meta.csv", index=False)

    c.append(Case("regress-50-classes", "regression", "50-class table whose validation split "
                  "lacks labels 0-9 trains", ["train", *meta_args(t / "fifty" / "meta.csv"),
                  "--out", str(t / "G1")], expect="ok", setup=fifty))  # fmt: skip
    return c


def _audit_folder(t: Path) -> None:
    (t / "K-audit").mkdir(exist_ok=True)
    write(t / "K-audit" / "audit.json", json.dumps({"overall": {}, "bias_leakage": {}}))
    write(t / "K-audit" / ".debias-run", json.dumps({"kind": "audit", "version": 1}))


def _report_folder(t: Path) -> None:
    d = t / "sweep" / "report"
    if not d.exists():
        write(d / "report.md", "# Sweep report: s\n")
        write(d / ".debias-run", json.dumps({"kind": "report", "version": 1}))


def _repoint(run: Path, old_table: Path, new_table: Path) -> None:
    """Point a copied run's recorded dataset at a copied table (the run as if trained on it)."""
    for name in ("metrics.json",):
        m = json.loads((run / name).read_text())
        m["config"]["dataset"] = m["config"]["dataset"].replace(str(old_table), str(new_table))
        (run / name).write_text(json.dumps(m))
    import torch

    state = torch.load(run / "model.pt", weights_only=False)
    state["config"]["dataset"] = state["config"]["dataset"].replace(str(old_table), str(new_table))
    torch.save(state, run / "model.pt")


# -- running and judging --------------------------------------------------------------------------
def judge(case: Case, rc: int, out: str, err: str, kept: bool | None) -> tuple[str, str]:
    """(outcome, note)."""
    if kept is False:
        if case.keep_fails == "SILENT":
            return "SILENT", "not mentioned in the output"
        return "LOSS", "the user's file or the run's record was changed"
    lines = [ln for ln in err.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ": error:" in ln]
    trace = "Traceback" in err
    if case.code is not None and not case.own_process:  # an own-process case is a CLI run
        last = out.strip().splitlines()[-1] if out.strip() else ""
        if case.expect == "ok":
            if rc == 0 and last == "OK":
                return "PASS", ""
            # The case's own assertion failed: a wrong value given without a word.
            silent = "AssertionError" in err
            return ("SILENT" if silent else "UNCLEAR"), (err or out).strip()[-200:]
        if rc == 0:
            return "SILENT", "no exception"
        raised = err.strip().splitlines()[-1] if err.strip() else ""
        kind = raised.split(":")[0].rsplit(".", 1)[-1]
        if kind in case.raises or any(k in raised for k in case.raises):
            return "PASS", raised[:200]
        return "UNCLEAR", raised[:200]
    if case.expect == "ok":
        if rc == 0 and not trace:
            return "PASS", (errors or [""])[0][:200]
        return "UNCLEAR", (lines[-1] if lines else f"rc {rc}")[:200]
    if rc == 0:
        return "SILENT", "accepted (exit 0)"
    extra = [ln for ln in lines if not ln.startswith("debias ")]
    if trace or rc != 2 or len(errors) != 1 or extra:
        return "UNCLEAR", f"rc {rc}; " + (lines[-1] if lines else "")[:200]
    return "PASS", errors[0][:200]


class Result:
    def __init__(self, returncode: int, stdout: str, stderr: str) -> None:
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def in_process(argv: list[str]) -> Result:
    """``debias ARGV`` through ``debias.cli.main`` with stdout/stderr captured."""
    import traceback

    from debias.cli import main as cli_main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = cli_main(argv)
        except SystemExit as exc:  # argparse's usage errors
            rc = exc.code if isinstance(exc.code, int) else 1
        except BaseException:  # what a user would see as a traceback
            traceback.print_exc()
            rc = 1
    return Result(rc, out.getvalue(), err.getvalue())


def api_in_process(code: str) -> Result:
    """Python source run here; an exception is reported as its last traceback line."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            exec(compile(code, "<case>", "exec"), {"__name__": "__case__"})
            rc = 0
        except Exception as exc:
            print(f"{type(exc).__module__}.{type(exc).__name__}: {exc}", file=sys.stderr)
            rc = 1
    return Result(rc, out.getvalue(), err.getvalue())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tree", default=str(HERE), help="the checkout to test (PYTHONPATH)")
    ap.add_argument("--only", help="comma-separated case ids")
    ap.add_argument("--md", help="write the results table (Markdown) here")
    ap.add_argument("--json", help="write the results (JSON) here")
    ap.add_argument("--before", help="a --json of an earlier run: its outcomes as a column")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    ap.add_argument("--subprocess", action="store_true", help="a python -m debias per case")
    args = ap.parse_args()
    tree = str(Path(args.tree).resolve())
    env = dict(os.environ, PYTHONPATH=tree)
    own_cache = "DEBIAS_CACHE" not in env
    env.setdefault("DEBIAS_CACHE", tempfile.mkdtemp(prefix="hostile-cache-"))
    os.environ.update(PYTHONPATH=tree, DEBIAS_CACHE=env["DEBIAS_CACHE"])
    sys.path.insert(0, tree)
    tmp = Path(tempfile.mkdtemp(prefix="hostile-"))
    os.chdir(tmp)

    def run(argv: list[str], timeout: float = 300) -> Result:
        if not args.subprocess:
            return in_process(argv)
        p = subprocess.run(
            [sys.executable, "-m", "debias", *argv], env=env, cwd=tmp, capture_output=True,
            text=True, timeout=timeout,
        )  # fmt: skip
        return Result(p.returncode, p.stdout, p.stderr)

    def api(code: str, own_process: bool = False) -> Result:
        if not args.subprocess and not own_process:
            return api_in_process(code)
        p = subprocess.run(
            [sys.executable, "-c", code], env=env, cwd=tmp, capture_output=True, text=True,
            timeout=300,
        )  # fmt: skip
        return Result(p.returncode, p.stdout, p.stderr)

    t0 = time.perf_counter()
    fixtures(tmp, run)
    print(f"fixtures in {time.perf_counter() - t0:.0f}s ({tmp})", flush=True)
    chosen = cases(tmp)
    if args.only:
        ids = set(args.only.split(","))
        chosen = [c for c in chosen if c.id in ids]
    results = []
    for case in chosen:
        t1 = time.perf_counter()
        try:
            if case.setup is not None:
                case.setup(tmp)
            if case.code is not None:
                p = api(case.code, case.own_process)
            else:
                p = run(case.argv)
            rc, out, err = p.returncode, p.stdout, p.stderr
        except subprocess.TimeoutExpired:
            rc, out, err = 124, "", "timed out after 300 s"
        try:
            kept = case.keep(tmp) if case.keep is not None else None
        except Exception as exc:  # the command did not write what the check reads
            kept = None if case.keep_fails == "SILENT" else False
            err += f"\n(check failed: {exc!r})"
        outcome, note = judge(case, rc, out, err, kept)
        results.append({"id": case.id, "class": case.cls, "what": case.what,
                        "expect": case.expect, "rc": rc, "outcome": outcome, "note": note})  # fmt: skip
        print(f"{outcome:<8} {case.id:<32} rc {rc:<3} {time.perf_counter() - t1:5.1f}s  {note[:110]}",
              flush=True)  # fmt: skip
    for p in LIVE:
        p.kill()
    totals = pd.Series([r["outcome"] for r in results]).value_counts().to_dict()
    print(f"{len(results)} cases: {totals} in {time.perf_counter() - t0:.0f}s")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    if args.md:
        before = json.loads(Path(args.before).read_text()) if args.before else None
        write_markdown(results, Path(args.md), before)
    if not args.keep:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
        if own_cache:
            shutil.rmtree(env["DEBIAS_CACHE"], ignore_errors=True)
    return 0 if set(totals) <= {"PASS"} else 1


def write_markdown(results: list[dict], path: Path, before: list[dict] | None = None) -> None:
    """The table: each case, its class, what was expected, the outcome (and the outcome of the
    ``before`` run of the same cases, e.g. on the merge base), the exit code and stderr."""
    was = {r["id"]: r for r in before or []}
    head = ["id", "class", "input", "expected", *(["before"] if before else []), "outcome",
            "exit", "stderr / note"]  # fmt: skip
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        cells = [r["id"], r["class"], r["what"], r["expect"]]
        if before:
            b = was.get(r["id"])
            cells.append(f"{b['outcome']} (exit {b['rc']})" if b else "–")
        cells += [r["outcome"], str(r["rc"]), r["note"]]
        rows.append(
            "| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |"
        )
    path.write_text("\n".join(rows) + "\n")


def totals_line(results: list[dict]) -> str:
    counts = pd.Series([r["outcome"] for r in results]).value_counts()
    return ", ".join(f"{k} {v}" for k, v in counts.items())


if __name__ == "__main__":
    raise SystemExit(main())
