"""The run folder: names, marker and ownership, the lock, the same-run rule, unreadable files,
crash-safe writes (umask, orphans). The CLI cases go through ``debias.cli.main``."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import quiet

from debias import _atomic
from debias.cli import main
from debias.train import RunConflictError, TrainConfig, runfolder, train
from debias.train.runfolder import (
    CHECKPOINT,
    LOCK,
    MARKER,
    METRICS,
    MODEL,
    RunFolderError,
    RunLockedError,
)

TINY = [
    "--dataset", "digits", "--rho", "0.95", "--model", "smallconvnet", "--epochs", "1",
    "--batch-size", "64", "--max-steps", "2", "--device", "cpu", "--quiet",
]  # fmt: skip


def tiny_cfg(out: Path, **kw) -> TrainConfig:
    base = dict(
        out=str(out), dataset="digits", rho=0.95, model="smallconvnet", epochs=1,
        batch_size=64, max_steps=2, lr_milestones=[], progress=False, device="cpu",
    )  # fmt: skip
    return TrainConfig(**(base | kw))


# -- names are declared once ------------------------------------------------------------------
def test_file_names_come_from_runfolder():
    from debias import results
    from debias.sweep import status
    from debias.train import loop

    assert loop.METRICS is runfolder.METRICS and loop.CHECKPOINT is runfolder.CHECKPOINT
    assert status.METRICS is runfolder.METRICS and status.CHECKPOINT is runfolder.CHECKPOINT
    assert results._METRICS is runfolder.METRICS and results._HISTORY is runfolder.HISTORY
    assert loop.MODEL == "model.pt" and set(runfolder.OUTPUTS) == {
        "metrics.json", "checkpoint.pt", "history.csv", "embeddings.npz", "model.pt",
    }  # fmt: skip


# -- ownership ----------------------------------------------------------------------------------
def test_claim_new_folder_writes_marker(tmp_path):
    out = tmp_path / "a" / "b"
    assert runfolder.claim_folder(out) is True
    marker = json.loads((out / MARKER).read_text())
    assert marker["kind"] == "run" and marker["version"] == 1
    assert runfolder.is_debias_folder(out)
    assert runfolder.claim_folder(out) is False  # second time: exists, still fine


def test_users_files_are_refused_and_untouched(tmp_path):
    (tmp_path / MODEL).write_text("my model")
    (tmp_path / "history.csv").write_text("a,b\n1,2\n")
    for force in (False, True):
        with pytest.raises(RunFolderError, match=r"history\.csv, model\.pt that debias did not"):
            runfolder.claim_folder(tmp_path, force=force)
    assert (tmp_path / MODEL).read_text() == "my model"
    assert not (tmp_path / MARKER).exists()


def test_other_names_are_left_alone_and_force_deletes_only_debias_files(tmp_path):
    (tmp_path / "notes.txt").write_text("keep")
    runfolder.claim_folder(tmp_path)
    (tmp_path / METRICS).write_text("{}")
    (tmp_path / CHECKPOINT).write_bytes(b"x")
    runfolder.claim_folder(tmp_path, force=True)
    assert not (tmp_path / METRICS).exists() and not (tmp_path / CHECKPOINT).exists()
    assert (tmp_path / "notes.txt").read_text() == "keep" and (tmp_path / MARKER).exists()


def test_run_written_before_the_marker_is_recognised(tmp_path):
    (tmp_path / METRICS).write_text(json.dumps({"config": {"dataset": "digits"}}))
    assert runfolder.foreign_files(tmp_path) == []
    other = tmp_path / "h"
    other.mkdir()
    (other / "history.csv").write_text("epoch,stage,lr\n1,train,0.001\n")
    assert runfolder.is_debias_folder(other)


def test_out_that_is_a_file(tmp_path):
    f = tmp_path / "f"
    f.write_text("x")
    with pytest.raises(RunFolderError, match=r"--out .*f is an existing file; expected a folder"):
        runfolder.claim_folder(f)


# -- the lock -------------------------------------------------------------------------------------
def _write_lock(folder: Path, pid, host=None):
    host = host or socket.gethostname()
    (folder / LOCK).write_text(json.dumps({"pid": pid, "host": host, "started": 0}))


def test_lock_is_exclusive_and_released(tmp_path):
    with runfolder.lock(tmp_path):
        holder = json.loads((tmp_path / LOCK).read_text())
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
    assert not (tmp_path / LOCK).exists()


def test_live_lock_refused_stale_lock_taken_over(tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _write_lock(tmp_path, sleeper.pid)
        with pytest.raises(RunLockedError, match=rf"process {sleeper.pid} on this machine"):
            runfolder.acquire_lock(tmp_path)
    finally:
        sleeper.kill()
        sleeper.wait()
    # The same pid is now dead: the lock is stale and taken over.
    assert runfolder.lock_holder(tmp_path) is None
    runfolder.acquire_lock(tmp_path)
    assert json.loads((tmp_path / LOCK).read_text())["pid"] == os.getpid()
    runfolder.release_lock(tmp_path)


def test_lock_of_another_host_is_refused(tmp_path):
    _write_lock(tmp_path, 1234, host="elsewhere.example")
    with pytest.raises(RunLockedError, match=r"process 1234 on elsewhere\.example.*delete"):
        runfolder.acquire_lock(tmp_path)


def test_empty_lock_is_stale_only_after_grace(tmp_path):
    (tmp_path / LOCK).write_text("")
    assert runfolder.lock_holder(tmp_path) is not None  # maybe being written right now
    old = time.time() - 120
    os.utime(tmp_path / LOCK, (old, old))
    assert runfolder.lock_holder(tmp_path) is None


def test_train_refuses_a_folder_another_process_trains_into(tmp_path):
    out = tmp_path / "r"
    out.mkdir()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _write_lock(out, sleeper.pid)
        assert main(["train", *TINY, "--out", str(out)]) == 2
    finally:
        sleeper.kill()
        sleeper.wait()
    assert not (out / METRICS).exists()


def _hold_lock(out: Path) -> subprocess.Popen:
    """A live process that holds ``out``'s lock (taken with acquire_lock) until killed."""
    code = (
        "import sys, time; from debias.train import runfolder; "
        "runfolder.acquire_lock(sys.argv[1]); print('locked', flush=True); time.sleep(120)"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(out)], stdout=subprocess.PIPE, text=True, env=env
    )
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_force_never_touches_a_folder_another_process_trains_into(tmp_path, capsys):
    out = tmp_path / "r"
    train(tiny_cfg(out), log=quiet)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    holder = _hold_lock(out)
    try:
        assert main(["train", *TINY, "--out", str(out), "--force"]) == 2
    finally:
        holder.kill()
        holder.wait()
    err = capsys.readouterr().err
    assert err == (
        f"debias train: error: {out} is in use: process {holder.pid} on this machine is "
        f"training into it ({out / LOCK}). Wait for it to finish, or if that process is gone, "
        f"delete {out / LOCK}.\n"
    )
    # --force deletes a run's files only once it holds the lock: the rival's run is intact
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.name != LOCK} == before


def _race(out: Path, start, inside, release, results) -> None:
    """One of the processes of :func:`test_rivals_starting_at_once_exactly_one_trains`."""
    start.wait()
    try:
        with runfolder.run_folder(out):
            results.put(("won", os.getpid()))
            inside.wait()  # the losers have failed and cleaned up; the parent looks
            release.wait()
    except RunLockedError as exc:
        results.put(("lost", str(exc)))
        inside.wait()
        release.wait()


def test_rivals_starting_at_once_exactly_one_trains(tmp_path):
    """Processes that claim one new --out at the same moment: one gets the lock, every other
    fails naming it (the lock is complete when it appears), and no loser removes the winner's
    marker on its way out."""
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    n = 4
    for round_ in range(8):
        out = tmp_path / f"r{round_}"
        start, inside, release = (ctx.Barrier(k) for k in (n, n + 1, n + 1))
        results = ctx.Queue()
        procs = [
            ctx.Process(target=_race, args=(out, start, inside, release, results)) for _ in range(n)
        ]
        for proc in procs:
            proc.start()
        inside.wait(timeout=60)
        got = [results.get(timeout=60) for _ in range(n)]
        winners = [pid for what, pid in got if what == "won"]
        try:
            assert len(winners) == 1, got
            lost = [m for what, m in got if what == "lost"]
            assert all(f"in use: process {winners[0]} on this machine" in m for m in lost), lost
            assert (out / MARKER).is_file()
            assert json.loads((out / LOCK).read_text())["pid"] == winners[0]
        finally:
            release.wait(timeout=60)
            for proc in procs:
                proc.join(timeout=60)
        assert [proc.exitcode for proc in procs] == [0] * n
        # nothing left behind but, at most, the marker (no lock, no temporary file)
        assert not out.exists() or os.listdir(out) == [MARKER]


def test_read_only_parent_of_out_is_a_one_line_error(tmp_path, capsys, monkeypatch):
    parent = tmp_path / "ro"
    parent.mkdir()
    parent.chmod(0o555)
    try:
        probe = parent / "probe"
        try:
            probe.mkdir()  # root (as in CI containers) writes anyway: simulate the refusal
            probe.rmdir()
            real_mkdir = Path.mkdir

            def refuse(self, *args, **kwargs):
                if parent in self.parents:
                    raise PermissionError(13, "Permission denied", str(self))
                return real_mkdir(self, *args, **kwargs)

            monkeypatch.setattr(Path, "mkdir", refuse)
        except PermissionError:
            pass
        out = parent / "run"
        assert main(["train", *TINY, "--out", str(out)]) == 2
    finally:
        parent.chmod(0o755)
    err = capsys.readouterr().err
    assert err.startswith(f"debias train: error: --out {out}: cannot create or write this ")
    assert "Permission denied" in err and "expected a folder you can write to" in err
    assert err.count("\n") == 1 and not out.exists()


def test_report_into_a_run_folder_is_refused(tmp_path, capsys):
    """A report beside a checkpoint would outlive a --force retrain of that folder."""
    out = tmp_path / "r"
    train(tiny_cfg(out), log=quiet)
    before = sorted(p.name for p in out.iterdir())
    assert main(["report", str(out), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"debias report: error: report folder {out} is a training run's ")
    assert f"e.g. {out / 'report'} (the default" in err and err.count("\n") == 1
    assert sorted(p.name for p in out.iterdir()) == before
    # the default, a folder of its own inside the run, leaves the run as it is
    assert main(["report", str(out)]) == 0
    assert (out / "report" / "report.md").is_file()
    assert sorted(p.name for p in out.iterdir()) == sorted([*before, "report"])
    capsys.readouterr()
    assert main(["train", *TINY, "--out", str(out)]) == 0  # still the same finished run
    assert "already finished" in capsys.readouterr().out


# -- same run ---------------------------------------------------------------------------------------
def test_config_diff_fills_options_added_later_including_default_factories(tmp_path):
    cfg = tiny_cfg(tmp_path)
    saved = cfg.to_dict()
    del saved["loss_options"], saved["channels_last"]  # written before those options existed
    assert runfolder.config_diff(saved, cfg) == {}
    saved["lr"] = 0.5
    assert runfolder.config_diff(saved, cfg) == {"lr": (0.5, 0.001)}


def test_config_diff_old_runs_recorded_inapplicable_data_options(tmp_path):
    cfg = TrainConfig(out=str(tmp_path), rho=0.99)
    saved = cfg.to_dict() | {"protocol": "groupdro", "bias_rate": 0.9, "image_size": 64}
    assert runfolder.config_diff(saved, cfg) == {}
    faces = TrainConfig(out=str(tmp_path), dataset="utkface")
    old = faces.to_dict() | {"target": None, "bias": None, "val_size": 5000, "palette": "rebias"}
    assert runfolder.config_diff(old, faces) == {}


def test_sweep_and_trainer_decide_with_the_same_rule():
    from debias.sweep import status  # the sweep's ledger decides what each run does

    src = Path(status.__file__).read_text()
    assert "runfolder.config_diff" in src and "_FIELD_DEFAULTS" not in src
    from debias.train import loop

    assert "_check_identity" not in Path(loop.__file__).read_text()


def test_finished_run_with_other_options_is_a_conflict(tmp_path):
    train(tiny_cfg(tmp_path / "r"), log=quiet)
    with pytest.raises(RunConflictError, match=r"lr: 0\.001 there vs 0\.01 now"):
        train(tiny_cfg(tmp_path / "r", lr=0.01), log=quiet)


# -- unreadable files ---------------------------------------------------------------------------------
def test_truncated_metrics_names_file(tmp_path):
    (tmp_path / METRICS).write_text('{"config": {"a": "unterminated')
    with pytest.raises(RunFolderError, match=r"metrics\.json is not valid JSON.*Delete it"):
        runfolder.read_metrics(tmp_path / METRICS)


def test_foreign_metrics_and_checkpoint(tmp_path):
    (tmp_path / METRICS).write_text('{"accuracy": 0.9}')
    with pytest.raises(RunFolderError, match=r"not a debias metrics\.json"):
        runfolder.read_metrics(tmp_path / METRICS)
    torch.save({"weights": 1}, tmp_path / CHECKPOINT)
    with pytest.raises(RunFolderError, match=r"not a debias checkpoint"):
        runfolder.load_checkpoint(tmp_path / CHECKPOINT)


def test_truncated_checkpoint_through_cli(tmp_path, capsys):
    out = tmp_path / "r"
    train(tiny_cfg(out, epochs=2), log=quiet)
    (out / METRICS).unlink()
    data = (out / CHECKPOINT).read_bytes()
    (out / CHECKPOINT).write_bytes(data[: len(data) // 2])
    args = ["train", *TINY, "--epochs", "2", "--out", str(out)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"{out / CHECKPOINT} cannot be read" in err and "truncated or corrupt" in err
    assert err.count("\n") == 1


def test_foreign_metrics_through_cli(tmp_path, capsys):
    out = tmp_path / "r"
    out.mkdir()
    (out / METRICS).write_text('{"accuracy": 0.9}')
    assert main(["train", *TINY, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "metrics.json that debias did not write" in err
    assert (out / METRICS).read_text() == '{"accuracy": 0.9}'


def test_users_model_through_cli_even_with_force(tmp_path, capsys):
    out = tmp_path / "r"
    out.mkdir()
    (out / MODEL).write_text("mine")
    assert main(["train", *TINY, "--out", str(out), "--force"]) == 2
    assert "model.pt that debias did not write" in capsys.readouterr().err
    assert (out / MODEL).read_text() == "mine"


def test_out_is_a_file_through_cli(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    assert main(["train", *TINY, "--out", str(f)]) == 2
    assert "is an existing file; expected a folder" in capsys.readouterr().err


def test_failed_run_leaves_no_empty_out_folder(tmp_path):
    out = tmp_path / "new"
    assert main(["train", *TINY, "--model", "nosuchmodel", "--out", str(out)]) == 2
    assert not out.exists()


def test_interrupt_before_first_epoch_says_nothing_was_saved(tmp_path, monkeypatch):
    from debias.train import loop

    def boom(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(loop.Trainer, "train_epoch", boom)
    lines = []
    with pytest.raises(KeyboardInterrupt):
        train(tiny_cfg(tmp_path / "r"), log=lines.append)
    assert "before the first epoch ended, so nothing was saved" in lines[-1]
    assert not (tmp_path / "r" / CHECKPOINT).exists()
    assert not (tmp_path / "r" / LOCK).exists()  # released on the way out


# -- crash-safe writes ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("mask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_write_follows_umask(tmp_path, mask, mode):
    old = os.umask(mask)
    try:
        _atomic.atomic_write(tmp_path / "f", lambda fh: fh.write(b"x"))
    finally:
        os.umask(old)
    assert (tmp_path / "f").stat().st_mode & 0o777 == mode


def test_orphan_tmp_files_are_removed_when_old(tmp_path):
    old_tmp = tmp_path / ".debias-tmp.metrics.json.abcd1234.tmp"
    young_tmp = tmp_path / ".debias-tmp.checkpoint.pt.efgh5678.tmp"
    other = tmp_path / "notes.tmp"
    for f in (old_tmp, young_tmp, other):
        f.write_text("x")
    t = time.time() - 3600
    os.utime(old_tmp, (t, t))
    os.utime(other, (t, t))
    assert _atomic.remove_orphans(tmp_path) == [old_tmp]
    assert young_tmp.exists() and other.exists()
    # claim_folder cleans up the same way.
    os.utime(young_tmp, (t, t))
    runfolder.claim_folder(tmp_path)
    assert not young_tmp.exists() and other.exists()


@pytest.mark.parametrize(
    "name", [".thesis.20241207.tmp", ".metrics.json.abcd1234.tmp", ".debias-tmp.x.tmp"]
)
def test_a_users_tmp_like_file_is_never_deleted(tmp_path, name):
    """Only names with debias's marker go: a user's ``.thesis.20241207.tmp`` has the old
    ``.<name>.<8 chars>.tmp`` shape and is still theirs."""
    user = tmp_path / name
    user.write_text("my thesis")
    t = time.time() - 3600
    os.utime(user, (t, t))
    assert _atomic.remove_orphans(tmp_path) == []
    runfolder.claim_folder(tmp_path / "run")
    (tmp_path / "run" / name).write_text("mine")
    os.utime(tmp_path / "run" / name, (t, t))
    runfolder.claim_folder(tmp_path / "run")
    assert user.read_text() == "my thesis" and (tmp_path / "run" / name).read_text() == "mine"


def test_atomic_write_leaves_only_marked_temp_names(tmp_path):
    def boom(fh):
        fh.write(b"half")
        names = [p.name for p in tmp_path.iterdir()]
        assert len(names) == 1 and names[0].startswith(_atomic.TMP_PREFIX + "f.")
        raise OSError("disk full")

    with pytest.raises(OSError):
        _atomic.atomic_write(tmp_path / "f", boom)
    assert list(tmp_path.iterdir()) == []


# -- folder kinds, the sweep lock, the ledger (issue 34) -------------------------------------------
KIND_FILES = {
    "run": ("metrics.json", json.dumps({"config": {"dataset": "digits"}})),
    "sweep": ("sweep.json", json.dumps({"name": "s", "spec": {}, "runs": []})),
    "audit": ("audit.json", json.dumps({"overall": {}, "bias_leakage": {}})),
    "report": ("report.md", "# Sweep report: s\n"),
}


@pytest.mark.parametrize("marked", [True, False], ids=["marker", "legacy"])
@pytest.mark.parametrize("there", list(KIND_FILES))
def test_folder_kinds_are_recognised_and_never_written_into_each_other(tmp_path, there, marked):
    d = tmp_path / there
    name, text = KIND_FILES[there]
    (d).mkdir()
    (d / name).write_text(text)
    if marked:
        (d / MARKER).write_text(json.dumps({"kind": there, "version": 1}))
    assert runfolder.folder_kind(d) == there
    for kind in runfolder.KINDS:
        if kind == there:
            runfolder.claim_folder(d, kind=kind, names=())
            continue
        with pytest.raises(RunFolderError, match=f"is a debias {there} folder; a {kind} is never"):
            runfolder.claim_folder(d, kind=kind, names=())
    assert (d / name).read_text() == text


def test_train_refuses_a_sweep_root_and_an_empty_out(tmp_path, capsys):
    root = tmp_path / "sweep"
    runfolder.claim_folder(root, kind="sweep", names=())
    assert main(["train", *TINY, "--out", str(root)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is a debias sweep folder; a run is never" in err
    for out in ("", "  "):
        assert main(["train", *TINY, "--out", out]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "out must be a folder path" in err
    with pytest.raises(ValueError, match="empty"):
        runfolder.check_out_path("")
    with pytest.raises(TypeError, match="folder path"):
        runfolder.check_out_path(None)


def _spec():
    from debias.sweep import SweepSpec

    base = {"dataset": "digits", "rho": 0.95, "model": "smallconvnet", "epochs": 1}
    return SweepSpec.from_dict({"name": "s", "base": base, "grid": {"seed": [0, 1]}})


def test_a_second_sweep_on_a_live_sweep_folder_is_refused(tmp_path):
    from debias.sweep import run_sweep

    out = tmp_path / "sweep"
    runfolder.claim_folder(out, kind="sweep", names=())
    live = {"pid": os.getppid(), "host": socket.gethostname(), "started": time.time()}
    (out / runfolder.SWEEP_LOCK).write_text(json.dumps(live))
    with pytest.raises(RunLockedError, match="is running a sweep in it"):
        run_sweep(_spec(), out=out, log=lambda m: None)
    assert sorted(p.name for p in out.iterdir()) == [MARKER, runfolder.SWEEP_LOCK]


def test_the_ledger_never_calls_a_finished_run_failed(tmp_path):
    from debias.sweep.status import _Sweep

    spec = _spec()
    runs = spec.expand()
    sweep = _Sweep(spec, runs, tmp_path, lambda m: None)
    done, broken = (tmp_path / r.name for r in runs)
    for d in (done, broken):
        d.mkdir()
        (d / "error.txt").write_text("RunLockedError: in use\n")
    (done / METRICS).write_text(json.dumps({"config": {"dataset": "digits"}, "splits": {}}))
    (broken / METRICS).write_text('{"config": {"datas')  # truncated: not a finished run
    for r in runs:
        sweep.finished(r, 1, 1.0)
    assert sweep.status[runs[0].name]["status"] == "done"
    assert not (done / "error.txt").exists()
    assert sweep.status[runs[1].name]["status"] == "failed"


def test_a_failed_write_names_its_file_and_leaves_the_old_one(tmp_path, capsys):
    import errno

    from debias.cli import os_error_line

    target = tmp_path / "metrics.json"
    target.write_text("old")

    def full(fh):
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError) as info:
        _atomic.atomic_write(target, full)
    assert info.value.filename == str(target) and info.value.errno == errno.ENOSPC
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["metrics.json"]
    line = os_error_line(info.value)
    assert line.startswith(f"{target}: No space left on device; the disk is full")
    assert "\n" not in line
