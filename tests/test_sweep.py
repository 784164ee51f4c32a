"""Sweeps: grid expansion and naming, validation before anything runs, and real (tiny) sweeps
through the local (``--jobs 2``) and Ray backends with skip / resume / failure recording.

Real runs use the ``digits`` dataset (scikit-learn's handwritten digits coloured like
Biased-MNIST: no data download, a few seconds per run); the injected failure is a Biased-MNIST
run whose data root does not exist, which only shows when that run loads its data.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import pytest

from debias.sweep import SweepSpec, load_sweep, run_dir_name, run_sweep, threads_per_job
from debias.sweep.cli import register
from debias.sweep.config import format_value
from debias.train import train

REPO = Path(__file__).resolve().parents[1]
TINY = {
    "dataset": "digits",
    "model": "smallconvnet",
    "epochs": 1,
    "linear_epochs": 1,
    "max_steps": 2,
    "batch_size": 32,
    "device": "cpu",
}


def status_rows(out: Path) -> dict[str, dict[str, str]]:
    with open(out / "sweep_status.csv") as fh:
        return {r["run"]: r for r in csv.DictReader(fh)}


# -- expansion and naming ---------------------------------------------------------------------
def test_format_value_is_filesystem_safe():
    assert format_value(0.997) == "0.997"
    assert format_value(1e-5) == "1e-05"
    assert format_value(True) == "true" and format_value(None) == "none"
    assert format_value([20, 40]) == "20-40"
    assert format_value({"tau_neg": 2.0, "a": 1}) == "a-1_tau_neg-2.0"
    assert format_value("val/worst group") == "val_worst_group"
    assert format_value("..") == "__"
    assert run_dir_name({}) == "run"
    assert run_dir_name({"rho": 0.99, "method": "ce", "seed": 1}) == "rho=0.99/method=ce/seed=1"


def test_grid_expansion_order_names_and_overrides():
    spec = SweepSpec.from_dict(
        {
            "name": "g",
            "base": {"dataset": "digits", "epochs": 3, "loss_options": {"gather": True}},
            "grid": {"rho": [0.999, 0.99], "method": ["supcon", "contex"], "seed": [0, 1, 2]},
            "methods": {"contex": {"temperature": 0.1, "loss_options": {"base_temperature": 2}}},
        }
    )
    runs = spec.expand()
    assert len(runs) == 2 * 2 * 3
    # Grid order: the last key varies fastest; folder levels follow the grid's key order.
    assert [r.name for r in runs[:4]] == [
        "rho=0.999/method=supcon/seed=0",
        "rho=0.999/method=supcon/seed=1",
        "rho=0.999/method=supcon/seed=2",
        "rho=0.999/method=contex/seed=0",
    ]
    assert len({r.name for r in runs}) == len(runs)
    sc, cx = runs[0].config, runs[3].config
    assert sc["epochs"] == cx["epochs"] == 3 and sc["rho"] == 0.999
    assert "temperature" not in sc and cx["temperature"] == 0.1
    # dict-valued options merge key by key: base, then the method's override
    assert sc["loss_options"] == {"gather": True}
    assert cx["loss_options"] == {"gather": True, "base_temperature": 2}
    cfg = runs[3].train_config("/tmp/sweep")
    assert cfg.out == "/tmp/sweep/rho=0.999/method=contex/seed=0" and cfg.mode == "two-stage"


def test_method_override_wins_and_duplicates_collapse():
    # ce cannot run in two-stage/joint mode: the override makes both grid points the same run.
    spec = SweepSpec.from_dict(
        {
            "name": "m",
            "base": {"dataset": "digits", "rho": 0.99},
            "grid": {"method": ["ce", "supcon"], "mode": ["two-stage", "joint"]},
            "methods": {"ce": {"mode": "ce"}},
        }
    )
    assert [r.name for r in spec.expand()] == [
        "method=ce/mode=ce",
        "method=supcon/mode=two-stage",
        "method=supcon/mode=joint",
    ]


def test_recipe_overrides_apply_per_recipe_before_the_method_overrides():
    # Each recipe its own budget (issue 33: a CPU budget chosen per recipe); a method override
    # of the same option still wins, and a recipe's published values stay the defaults.
    spec = SweepSpec.from_dict(
        {
            "name": "r",
            "base": {"dataset": "biased-mnist", "rho": 0.997, "epochs": 16},
            "grid": {"method": ["contex", "supcon"], "recipe": ["supcontrast", "biascon"]},
            "recipes": {"supcontrast": {"epochs": 8, "lr": 0.1}, "biascon": {"epochs": 12}},
            "methods": {"supcon": {"lr": 0.2}},
        }
    )
    got = {r.name: (r.config["epochs"], r.config.get("lr")) for r in spec.expand()}
    assert got == {
        "method=contex/recipe=supcontrast": (8, 0.1),
        "method=contex/recipe=biascon": (12, None),
        "method=supcon/recipe=supcontrast": (8, 0.2),
        "method=supcon/recipe=biascon": (12, 0.2),
    }
    assert spec.to_dict()["recipes"]["biascon"] == {"epochs": 12}
    # --only on the recipe leaves the other recipe's overrides unused: allowed when narrowed
    assert len(spec.expand(only={"recipe": ["biascon"]})) == 2
    with pytest.raises(ValueError, match=r"recipes: overrides for \['fairkl'\], which no run"):
        SweepSpec.from_dict(
            {
                "name": "u",
                "base": {"rho": 0.9, "recipe": "biascon", "method": "supcon"},
                "recipes": {"fairkl": {"epochs": 2}},
            }
        ).expand()


@pytest.mark.parametrize(
    ("doc", "needle"),
    [
        ({"name": "x", "recipes": {"supcontrst": {}}}, "unknown recipe(s) ['supcontrst']"),
        (
            {"name": "x", "recipes": {"biascon": {"epoch": 3}}},
            "recipes.biascon: unknown training option(s) ['epoch']",
        ),
        (
            {"name": "x", "data_draw": "seed", "recipes": {"biascon": {"data_seed": 1}}},
            "recipes.biascon also set(s) data_seed",
        ),
    ],
)
def test_recipe_override_errors_name_the_recipe_and_option(doc, needle):
    with pytest.raises(ValueError) as exc:
        SweepSpec.from_dict(doc).expand()
    assert needle in str(exc.value)


@pytest.mark.parametrize(
    ("doc", "needle"),
    [
        ({"name": "x", "grid": {}, "bogus": 1}, "unknown top-level key(s) ['bogus']"),
        ({"name": "x", "base": {"rhoo": 0.9}}, "base: unknown training option(s) ['rhoo']"),
        ({"name": "x", "grid": {"sed": [0]}}, "grid: unknown training option(s) ['sed']"),
        ({"name": "x", "grid": {"seed": 0}}, "grid.seed must be a non-empty list"),
        ({"name": "x", "grid": {"seed": []}}, "grid.seed must be a non-empty list"),
        ({"name": "x", "methods": {"contx": {}}}, "unknown method(s) ['contx']"),
        (
            {"name": "x", "methods": {"ce": {"temp": 1}}},
            "methods.ce: unknown training option(s) ['temp']",
        ),
        ({"name": "x", "base": {"out": "a"}}, "['out'] cannot be set here"),
    ],
)
def test_schema_errors_name_the_problem(doc, needle):
    with pytest.raises(ValueError) as exc:
        SweepSpec.from_dict(doc).expand()
    assert needle in str(exc.value)


def test_every_run_is_validated_before_any_starts(tmp_path):
    doc = {
        "name": "bad",
        "base": {"dataset": "digits", "rho": 0.99},
        "grid": {"method": ["ce", "supcon"], "mode": ["two-stage"], "epochs": [1, 0]},
    }
    with pytest.raises(ValueError) as exc:
        run_sweep(doc, out=tmp_path / "sw")
    msg = str(exc.value)
    assert "3 invalid run(s); nothing was started" in msg
    assert "method=ce/mode=two-stage/epochs=1" in msg and "epochs must be >= 1" in msg
    assert not (tmp_path / "sw").exists()
    with pytest.raises(ValueError, match=r"overrides for \['cacr'\], which no run uses"):
        SweepSpec.from_dict(
            {
                "name": "u",
                "base": {"rho": 0.9},
                "grid": {"method": ["ce"]},
                "methods": {"cacr": {"temperature": 0.5}},
            }
        ).expand()
    with pytest.raises(ValueError, match="unknown backend"):
        run_sweep({"name": "b", "base": {"rho": 0.9}}, backend="k8s", out=tmp_path / "b")


def test_cpu_face_sweeps():
    """CPU face sweeps: NarrowResNet at 32x32, every run selected on validation worst-group."""
    tasks = {
        "utkface_cpu": ("bias", {"race", "age"}),
        "celeba_cpu": ("protocol", {"official", "biascon"}),
    }
    for name, (key, values) in tasks.items():
        cfgs = [r.train_config("x") for r in load_sweep(REPO / "sweeps" / f"{name}.yaml").expand()]
        methods = {c.method for c in cfgs}
        assert methods >= {"ce", "supcon", "contex", "cacr", "simclr", "biascon", "fairkl"}
        assert len(cfgs) == len(values) * len(methods) * 3, name
        assert {(getattr(c, key), c.method, c.seed) for c in cfgs} == {
            (v, m, s) for v in values for m in methods for s in (0, 1, 2)
        }
        assert {(c.model, c.image_size, c.epochs, c.select) for c in cfgs} == {
            ("narrowresnet", 32, 10, "val/worst_group_accuracy")
        }
        assert {c.target for c in cfgs} == ({"gender"} if name == "utkface_cpu" else {"Blond_Hair"})


def test_shipped_sweeps_expand():
    expected = {
        "biased_mnist_paper": 168,
        "biased_mnist_quick": 156,
        "biased_mnist_cpu": 168,
        "biased_mnist_cpu_contex_weight": 12,
        "utkface": 78,
        "celeba": 39,
    }
    for name, n in expected.items():
        spec = load_sweep(REPO / "sweeps" / f"{name}.yaml")
        runs = spec.expand()
        assert spec.name == name and len(runs) == n, name
        cfgs = [r.train_config("x") for r in runs]
        assert {c.seed for c in cfgs} == {0, 1, 2}
    paper = [
        r.train_config("x") for r in load_sweep(REPO / "sweeps/biased_mnist_paper.yaml").expand()
    ]
    assert {c.rho for c in paper} == {0.999, 0.997, 0.995, 0.99}
    from debias.methods import METHODS

    # every method of the toolkit is in the Biased-MNIST grids
    assert {c.method for c in paper} == set(METHODS)
    cpu = [r.train_config("x") for r in load_sweep(REPO / "sweeps/biased_mnist_cpu.yaml").expand()]
    assert {c.method for c in cpu} == set(METHODS)
    assert {(c.model, tuple(c.lr_milestones), c.select) for c in cpu} == {("lenet", (), "last")}
    assert {(c.model, c.epochs, c.batch_size, c.lr, c.weight_decay) for c in paper} == {
        ("simpleconvnet", 80, 256, 1e-3, 1e-4)
    }


def test_threads_per_job():
    assert threads_per_job(2, cores=2) == 1
    assert threads_per_job(3, cores=16) == 5
    assert threads_per_job(8, cores=2) == 1
    with pytest.raises(ValueError):
        threads_per_job(0)


def test_missing_yaml_and_bad_yaml(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_sweep(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("grid: [unclosed\n")
    with pytest.raises(ValueError, match="not valid YAML"):
        load_sweep(tmp_path / "bad.yaml")
    (tmp_path / "named.yaml").write_text("base: {rho: 0.9}\n")
    assert load_sweep(tmp_path / "named.yaml").name == "named"  # the file's stem


@pytest.mark.parametrize(
    ("grid", "message"),
    [
        ("seed: [0, 0]", "grid.seed lists the value 0 more than once ([0, 0])"),
        # 0.9970 is the float 0.997: the planner would make the two points one run
        ("rho: [0.997, 0.9970]", "grid.rho lists the value 0.997 more than once"),
        ("lr_milestones: [[1], [], [1]]", "grid.lr_milestones lists the value [1] more than once"),
    ],
)
def test_repeated_grid_value_is_an_error_naming_key_and_value(tmp_path, capsys, grid, message):
    from debias.cli import main

    path = tmp_path / "rep.yaml"
    path.write_text(f"base: {{dataset: digits, rho: 0.99, epochs: 3}}\ngrid:\n  {grid}\n")
    assert main(["sweep", str(path), "--dry-run", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("debias sweep: error: sweep ") and err.count("\n") == 1
    assert message in err, err
    assert not (tmp_path / "o").exists()
    # values that only look alike are distinct runs: a bool is not a number
    spec = SweepSpec.from_dict({"name": "x", "grid": {"augment": [True, 1, False, 0]}})
    assert spec.grid["augment"] == [True, 1, False, 0]


# -- real sweeps --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def failing_sweep(tmp_path_factory):
    """Two runs with --jobs 2: digits (succeeds) and Biased-MNIST on a missing root (fails)."""
    root = tmp_path_factory.mktemp("sweep")
    yaml_path = root / "two.yaml"
    yaml_path.write_text(
        json.dumps(
            {
                "name": "two",
                "out": str(root / "out"),
                "base": {**TINY, "rho": 0.99, "root": str(root / "no-data-here")},
                "grid": {"dataset": ["digits", "biased-mnist"], "seed": [0]},
            }
        )
    )
    result = run_sweep(yaml_path, jobs=2, log=lambda m: None)
    return yaml_path, root / "out", result


def test_local_jobs2_runs_and_records_failure(failing_sweep):
    _, out, result = failing_sweep
    good, bad = "dataset=digits/seed=0", "dataset=biased-mnist/seed=0"
    assert not result.ok and result.failed == [bad]
    rows = status_rows(out)
    assert rows[good]["status"] == "done" and rows[good]["returncode"] == "0"
    assert rows[bad]["status"] == "failed" and rows[bad]["returncode"] == "1"
    assert rows[bad]["error"].startswith("FileNotFoundError: MNIST 'train' files not found")
    # Both ran at once: the second started before the first ended.
    assert max(r["started"] for r in rows.values()) <= min(r["finished"] for r in rows.values())
    tb = (out / bad / "error.txt").read_text()
    assert "Traceback (most recent call last)" in tb and "FileNotFoundError" in tb
    assert "FileNotFoundError" in (out / bad / "log.txt").read_text()
    # The good run is complete and its log holds the child's output, with cores // 2 threads.
    metrics = json.loads((out / good / "metrics.json").read_text())
    assert metrics["config"]["dataset"] == "digits" and metrics["config"]["seed"] == 0
    assert not (out / good / "error.txt").exists()
    log = (out / good / "log.txt").read_text()
    assert f"threads {threads_per_job(2)}" in log and "epoch   1 [train]" in log
    manifest = json.loads((out / "sweep.json").read_text())
    assert [r["run"] for r in manifest["runs"]] == [good, bad]
    status = json.loads((out / "sweep_status.json").read_text())
    assert status["counts"] == {"done": 1, "failed": 1}


def test_cli_rerun_skips_finished_and_retries_failed(failing_sweep, capsys):
    yaml_path, out, _ = failing_sweep
    good, bad = "dataset=digits/seed=0", "dataset=biased-mnist/seed=0"
    mtime = (out / good / "metrics.json").stat().st_mtime_ns
    parser = argparse.ArgumentParser(prog="debias")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["sweep", str(yaml_path), "--jobs", "1"])
    assert args.func(args) == 1  # a run failed: non-zero exit
    assert "1 run(s) failed" in capsys.readouterr().out
    rows = status_rows(out)
    assert rows[good]["status"] == "skipped" and rows[bad]["status"] == "failed"
    assert (out / good / "metrics.json").stat().st_mtime_ns == mtime
    assert (out / good / "log.txt").read_text().count("===== attempt") == 1  # not started again
    assert (out / bad / "log.txt").read_text().count("===== attempt") == 2
    # --dry-run lists what would happen and starts nothing.
    args = parser.parse_args(["sweep", str(yaml_path), "--dry-run"])
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert f"{good}: finished: skip" in printed and f"{bad}: run" in printed
    assert (out / bad / "log.txt").read_text().count("===== attempt") == 2


def test_resume_and_conflict(tmp_path):
    spec = SweepSpec.from_dict(
        {"name": "r", "base": {**TINY, "rho": 0.99, "epochs": 2}, "grid": {"seed": [0, 1]}}
    )
    out = tmp_path / "out"
    first, second = spec.expand()

    # seed=0: a run interrupted (Ctrl-C) right after epoch 1 of 2 was checkpointed.
    def interrupt_after_epoch_1(msg: str) -> None:
        if msg.startswith("epoch   1"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(first.train_config(out.resolve()), log=interrupt_after_epoch_1)
    assert (out / first.name / "checkpoint.pt").exists()
    assert not (out / first.name / "metrics.json").exists()
    # seed=1: a finished run with different options (lr) in the folder the sweep wants.
    other = second.train_config(out.resolve())
    other.lr = 0.5
    (out / second.name).mkdir(parents=True)
    (out / second.name / "metrics.json").write_text(json.dumps({"config": other.to_dict()}))

    result = run_sweep(spec, out=out, log=lambda m: None)
    rows = status_rows(out)
    assert rows[first.name]["status"] == "done" and rows[first.name]["resumed"] == "True"
    log = (out / first.name / "log.txt").read_text()
    assert "resuming" in log and "after epoch 1/2" in log
    metrics = json.loads((out / first.name / "metrics.json").read_text())
    assert metrics["epochs_run"] == 2
    assert rows[second.name]["status"] == "failed"
    assert "lr: 0.5 there vs 0.001 now" in (out / second.name / "error.txt").read_text()
    assert not (out / second.name / "log.txt").exists()  # refused without starting a process
    assert result.failed == [second.name]


@pytest.mark.slow
def test_ray_backend(tmp_path):
    ray = pytest.importorskip("ray", reason="ray is an optional extra: debias-toolkit[ray]")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        result = run_sweep(
            {"name": "ray", "base": {**TINY, "rho": 0.99}, "grid": {"seed": [0, 1]}},
            backend="ray",
            jobs=2,
            out=tmp_path / "out",
            log=lambda m: None,
        )
        assert ray.is_initialized()  # a Ray instance the caller started is left running
    finally:
        ray.shutdown()
    assert result.ok and result.counts() == {"done": 2}
    rows = status_rows(tmp_path / "out")
    for seed in (0, 1):
        run = tmp_path / "out" / f"seed={seed}"
        assert rows[f"seed={seed}"]["status"] == "done"
        m = json.loads((run / "metrics.json").read_text())
        assert m["config"]["seed"] == seed and m["config"]["out"] == str(run.resolve())
        assert "threads 1" in (run / "log.txt").read_text()  # 2 Ray CPUs / 2 jobs


# -- persistent workers -------------------------------------------------------------------------
def run_pids(out: Path, runs: list[str]) -> list[int]:
    """The pid each run's last attempt ran in (the ``[sweep] ... | pid N`` line of its log)."""
    pids = []
    for run in runs:
        starts = [ln for ln in (out / run / "log.txt").read_text().splitlines() if "| pid " in ln]
        pids.append(int(starts[-1].rsplit("| pid ", 1)[1]))
    return pids


def test_a_worker_runs_several_runs_with_the_numbers_of_fresh_processes(tmp_path):
    """One worker runs CE, SupCon (two-stage) and CE again in turn, on one cached dataset:
    bit for bit the metrics of one fresh process per run."""
    spec = {
        "name": "w",
        "base": {**TINY, "rho": 0.99, "epochs": 2, "max_steps": 3, "eval_every": 0},
        "grid": {"seed": [0, 1], "method": ["ce", "supcon"]},
    }
    fresh = run_sweep(spec, out=tmp_path / "fresh", process_per_run=True, log=lambda m: None)
    reused = run_sweep(spec, out=tmp_path / "reused", log=lambda m: None)
    assert fresh.ok and reused.ok and len(reused.runs) == 4
    names = [r["run"] for r in reused.runs]
    for name in names:
        a = json.loads((tmp_path / "fresh" / name / "metrics.json").read_text())
        b = json.loads((tmp_path / "reused" / name / "metrics.json").read_text())
        assert json.dumps(a["splits"], sort_keys=True) == json.dumps(b["splits"], sort_keys=True)
        assert a["selection"] == b["selection"]
    assert len(set(run_pids(tmp_path / "reused", names))) == 1  # one worker ran them all
    assert len(set(run_pids(tmp_path / "fresh", names))) == 4


def test_a_failed_run_does_not_stop_its_worker(tmp_path):
    """A Python error ends that run only: the same worker runs the next one."""
    spec = {
        "name": "f",
        "base": {**TINY, "rho": 0.99, "root": str(tmp_path / "no-data-here")},
        "grid": {"dataset": ["biased-mnist", "digits"]},
    }
    result = run_sweep(spec, out=tmp_path / "out", log=lambda m: None)
    rows = status_rows(tmp_path / "out")
    bad, good = "dataset=biased-mnist", "dataset=digits"
    assert result.failed == [bad] and rows[bad]["returncode"] == "1"
    assert rows[good]["status"] == "done"
    assert "FileNotFoundError" in (tmp_path / "out" / bad / "error.txt").read_text()
    assert len(set(run_pids(tmp_path / "out", [bad, good]))) == 1


def test_a_killed_worker_fails_its_run_only_and_the_run_resumes(tmp_path):
    """SIGKILL of the worker mid-run: that run is failed with -9, a new worker runs the others,
    and the next pass resumes the killed run (its lock is stale)."""
    import os
    import signal
    import threading

    from debias.train import runfolder

    spec = SweepSpec.from_dict(
        {"name": "k", "base": {**TINY, "rho": 0.99, "epochs": 3}, "grid": {"seed": [0, 1, 2]}}
    )
    out = tmp_path / "out"
    victim = out / "seed=0"
    killed = []

    def kill_when_training() -> None:
        # The lock appears when train() starts and names the process (the worker) holding it.
        for _ in range(6000):
            holder = runfolder.lock_holder(victim)
            if holder is not None and (victim / "checkpoint.pt").exists():
                os.kill(int(holder["pid"]), signal.SIGKILL)
                killed.append(int(holder["pid"]))
                return
            threading.Event().wait(0.005)

    watcher = threading.Thread(target=kill_when_training)
    watcher.start()
    result = run_sweep(spec, out=out, log=lambda m: None)
    watcher.join()
    assert killed, "the test never saw the run training"
    rows = status_rows(out)
    assert result.failed == ["seed=0"] and rows["seed=0"]["returncode"] == str(-signal.SIGKILL)
    assert "without a traceback" in (victim / "error.txt").read_text()
    assert rows["seed=1"]["status"] == rows["seed=2"]["status"] == "done"
    assert killed[0] not in run_pids(out, ["seed=1", "seed=2"])
    again = run_sweep(spec, out=out, log=lambda m: None)
    assert again.ok and status_rows(out)["seed=0"]["resumed"] == "True"
    assert "resuming" in (victim / "log.txt").read_text()


def test_split_cache_loads_once_and_hands_out_copies(monkeypatch):
    from debias.data import registry
    from debias.sweep.worker import SplitCache

    calls = []
    real = registry.load_splits

    def counting(name, **options):
        calls.append((name, options))
        return real(name, **options)

    monkeypatch.setattr(registry, "load_splits", counting)
    cache = SplitCache(size=1)
    a = cache("digits", rho=0.9)
    b = cache("digits", rho=0.9)
    assert len(calls) == 1 and a["train"] is not b["train"]
    assert a["train"].images is b["train"].images  # shared, read-only by convention
    a["train"].images = None  # a run rebinding an attribute does not reach the cache
    assert cache("digits", rho=0.9)["train"].images is b["train"].images
    cache("digits", rho=0.8)  # evicts rho 0.9 (size 1)
    cache("digits", rho=0.9)
    assert [o["rho"] for _, o in calls] == [0.9, 0.8, 0.9]


def test_split_cache_data_is_unchanged_by_runs(tmp_path):
    """The cached tensors after runs of several methods equal a fresh load: runs never write
    into the data a worker shares between them."""
    import torch

    from debias.data.registry import load_splits
    from debias.sweep.worker import SplitCache

    cache = SplitCache()
    for method in ("ce", "jtt", "lff", "groupdro", "supcon"):
        cfg = {**TINY, "rho": 0.9, "method": method, "progress": False}
        train({**cfg, "out": str(tmp_path / method)}, log=lambda *a: None, load=cache)
    (key,) = cache._items
    fresh = load_splits("digits", **json.loads(key)[1])
    for split, ds in cache._items[key].items():
        for attr, value in vars(ds).items():
            if isinstance(value, torch.Tensor):
                assert torch.equal(value, getattr(fresh[split], attr)), (split, attr)


def test_data_draw_seed_sets_each_runs_data_seed_to_its_seed(tmp_path):
    """data_draw: seed (issue 35): the seeds of a condition differ in their data too, the runs
    of one seed share it (paired comparisons stay paired); fixed (the default) keeps base's."""
    from debias.sweep import cli as sweep_cli
    from debias.sweep.config import DATA_DRAWS

    doc = {
        "name": "d",
        "base": {"dataset": "biased-mnist", "rho": 0.99, "epochs": 1},
        "grid": {"method": ["ce", "supcon"], "seed": [0, 3]},
    }
    seeded = SweepSpec.from_dict({**doc, "data_draw": "seed"})
    cfgs = [r.train_config("x") for r in seeded.expand()]
    assert [(c.method, c.seed, c.data_seed) for c in cfgs] == [
        ("ce", 0, 0), ("ce", 3, 3), ("supcon", 0, 0), ("supcon", 3, 3)
    ]  # fmt: skip
    assert seeded.to_dict()["data_draw"] == "seed"  # sweep.json records the rule
    fixed = SweepSpec.from_dict({**doc, "base": {**doc["base"], "data_seed": 7}})
    assert {r.train_config("x").data_seed for r in fixed.expand()} == {7}
    assert "data_draw" not in fixed.to_dict()
    with pytest.raises(ValueError, match="base also set"):
        SweepSpec.from_dict({**doc, "data_draw": "seed", "base": {"data_seed": 1}})
    with pytest.raises(ValueError, match=r"data_draw must be one of \['fixed', 'seed'\]"):
        SweepSpec.from_dict({**doc, "data_draw": "per-seed"})
    with pytest.raises(ValueError, match="--set data_seed"):
        seeded.expand(overrides={"data_seed": 2})
    # debias sweep --data-draw fixed: an old sweep's behaviour from today's YAML
    path = tmp_path / "d.yaml"
    import yaml

    path.write_text(yaml.safe_dump({**doc, "data_draw": "seed"}))
    back = sweep_cli._with_data_draw(str(path), "fixed")
    assert {r.train_config("x").data_seed for r in back.expand()} == {0}
    assert sweep_cli.DATA_DRAWS == DATA_DRAWS


def test_every_sweep_yaml_draws_its_data_with_its_seed():
    """Every shipped sweep varies the data draw with the seed (PROTOCOLS §1)."""
    for path in sorted((REPO / "sweeps").glob("*.yaml")):
        assert load_sweep(path).data_draw == "seed", path.name
