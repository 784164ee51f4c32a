"""The benchmark scripts work: every bench function at a tiny size, and the references and the
model-only loop compute what they claim to (no timing assertions: speed is for ``bench/run``)."""

from __future__ import annotations

import copy
import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from debias.sweep.runner import available_cores

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

import bench_feed  # noqa: E402
import bench_train  # noqa: E402
import common  # noqa: E402
import driver  # noqa: E402
from conftest import needs_mnist  # noqa: E402


@pytest.fixture(scope="module")
def digits():
    """Real handwritten digits coloured like Biased-MNIST (no files needed), 1131 images."""
    from debias.data.registry import load_splits

    return load_splits("digits", rho=0.99)["train"]


# -- common -------------------------------------------------------------------------------------------
def test_summary_values_and_errors():
    s = common.summary([3.0, 1.0, 2.0, 10.0])
    assert s == {"median": 2.5, "min": 1.0, "max": 10.0, "n": 4}
    with pytest.raises(ValueError, match="at least one"):
        common.summary([])
    r = common.rate(common.summary([1.0, 2.0, 4.0]), 100.0)
    assert (r["median"], r["min"], r["max"]) == (50.0, 25.0, 100.0)


def test_interleave_runs_round_robin_after_warmup():
    calls: list[str] = []
    variants = {"a": lambda: calls.append("a") or 1, "b": lambda: calls.append("b") or 2}
    seconds, last = common.interleave(variants, 3, warmup={"w": lambda: calls.append("w")})
    assert calls == ["w", "a", "b", "a", "b", "a", "b"]
    assert last == {"a": 1, "b": 2}
    assert [len(v) for v in seconds.values()] == [3, 3]
    assert all(t >= 0 for v in seconds.values() for t in v)
    with pytest.raises(ValueError, match="repeats"):
        common.interleave(variants, 0)


def test_check_target():
    assert common.check_target(31.0, ">= 30") == "PASS"
    assert common.check_target(29.9, ">= 30") == "FAIL"
    assert common.check_target(1.05, "<= 1.1") == "PASS"
    assert common.check_target(1.2, "<= 1.1") == "FAIL"
    assert common.check_target(math.nan, ">= 7") == "FAIL"
    assert common.check_target(5.0, "") == ""
    with pytest.raises(ValueError, match="target"):
        common.check_target(1.0, "> 3")


def test_table_and_csv(tmp_path):
    rows = [
        common.Row(
            "2 plain feed",
            "epoch",
            "s",
            common.summary([0.1, 0.2, 0.3]),
            "ref",
            common.summary([6.0, 7.0]),
            6.5 / 0.2,
            "ref/ours",
            ">= 30",
        ),
        common.Row("7 audit", "audit", "s", common.point(12.0), notes="x"),
    ]
    assert rows[0].status == "PASS" and rows[1].status == ""
    table = common.format_table(rows)
    assert "0.2 (0.1-0.3)" in table and "32.50 ref/ours" in table and "PASS" in table
    path = common.write_csv(rows, tmp_path / "sub" / "bench.csv")
    got = list(csv.DictReader(path.open()))
    assert [g["stage"] for g in got] == ["2 plain feed", "7 audit"]
    assert float(got[0]["ours_median"]) == 0.2 and float(got[0]["ref_max"]) == 7.0
    assert float(got[0]["ratio"]) == pytest.approx(32.5) and got[0]["status"] == "PASS"
    assert got[1]["ratio"] == "" and got[1]["reference"] == ""


def test_environment_records_threads_and_allocator(monkeypatch):
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "65536")
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    env = common.environment()
    assert env["torch_threads"] == torch.get_num_threads()
    assert env["cpus_usable"] >= 1 and len(env["loadavg"]) == 3
    assert env["malloc_env"] == {
        "MALLOC_MMAP_THRESHOLD_": "65536",
        "MALLOC_TRIM_THRESHOLD_": "(unset)",
    }


def test_peak_rss_reset_and_measure():
    """VmHWM after a reset sees a fresh 160 MB allocation; ru_maxrss-style inheritance does not."""
    if not common.reset_peak_rss():
        pytest.skip("this kernel does not allow resetting the peak RSS (/proc/self/clear_refs)")
    before = common.rss_mb()
    assert common.peak_rss_mb() == pytest.approx(before, abs=8)
    block = np.ones(20_000_000)  # 160 MB, touched
    assert common.peak_rss_mb() - before > 140
    del block


def test_bench_run_exports_the_documented_defaults():
    text = (BENCH / "run").read_text()
    for key, value in {**common.MALLOC_DEFAULTS, **common.OMP_DEFAULTS}.items():
        assert f'export {key}="${{{key}:-{value}}}"' in text


# -- feed: the references and ours compute the same batches ------------------------------------------------
def test_rebias_reference_items_equal_trainer_batches(digits):
    """ToTensor + Normalize on a PIL image == the trainer's index/float/normalise (to rounding:
    the trainer fuses the two steps into one multiply-add)."""
    trainer = bench_feed.feed_trainer(digits, batch_size=64)
    ref = bench_feed.PerSampleColourMNIST(digits, bench_feed.plain_transform())
    idx = torch.tensor([0, 5, 17, 1130, 42])
    ours = trainer.inputs(idx, None, two_view=False, augment=False)
    items = [ref[int(i)] for i in idx]
    theirs = torch.stack([x for x, _, _ in items])
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)
    assert [y for _, y, _ in items] == digits.targets[idx].tolist()
    assert [b for _, _, b in items] == digits.bias[idx].tolist()
    # background colour of image 0 survives the round trip: (c/255 - .5)/.5 at a corner pixel
    assert theirs[0, :, 0, 0].tolist() == pytest.approx(
        ((digits.images[0, :, 0, 0].float() / 255 - 0.5) / 0.5).tolist()
    )


def test_two_view_reference_transforms_draw_two_different_views(digits):
    torch.manual_seed(0)
    ref = bench_feed.PerSampleColourMNIST(digits, None)
    for kind in ("biascon", "geometric"):
        loader = bench_feed.reference_loader(ref, kind, 0, batch_size=8)
        (v1, v2), y, b = next(iter(loader))
        assert v1.shape == v2.shape == (8, 3, 28, 28) and v1.dtype == torch.float32
        assert not torch.equal(v1, v2)  # independent random draws per view
        assert v1.min() >= -1.0 and v1.max() <= 1.0
        assert y.shape == b.shape == (8,)
    with pytest.raises(ValueError, match="unknown reference"):
        bench_feed.reference_loader(ref, "simclr", 0)
    with pytest.raises(ValueError, match="num_workers"):
        bench_feed.reference_loader(ref, "plain", -1)


def test_ours_epoch_feeds_every_image_once(digits):
    n = len(digits)
    trainer = bench_feed.feed_trainer(digits, batch_size=256)
    assert bench_feed.ours_epoch(trainer, two_view=False) == n
    assert bench_feed.ours_epoch(trainer, two_view=True) == 2 * n
    trainer3 = bench_feed.feed_trainer(digits, batch_size=256, max_batches=3)
    assert bench_feed.ours_epoch(trainer3, two_view=True) == 2 * 3 * 256
    # the trainer's permutation covers each row exactly once
    perm = torch.cat(list(trainer.batches(n, trainer.generator(0))))
    assert torch.equal(perm.sort().values, torch.arange(n))


def test_run_plain_and_two_view_smoke(digits):
    plain = bench_feed.run_plain(digits, repeats=1, max_batches=2, workers=(0, 2))
    assert set(plain["seconds"]) == {"ours", "ref_plain_nw0", "ref_plain_nw2"}
    assert plain["rows_fed"] == 2 * 256
    two = bench_feed.run_two_view(
        digits, repeats=1, max_batches=1, workers=(0,), geometric_workers=(0,)
    )
    assert set(two["seconds"]) == {"ours", "ours_jitter", "ref_biascon_nw0", "ref_geometric_nw0"}
    assert two["rows_fed"] == 2 * 256
    rows = bench_feed.rows_time(plain, two)
    nw2 = next(r for r in rows if r.reference == "ReBias PIL DataLoader nw=2")
    assert nw2.target == ">= 30" and nw2.status in ("PASS", "FAIL")
    s = plain["seconds"]
    assert nw2.ratio == pytest.approx(s["ref_plain_nw2"]["median"] / s["ours"]["median"])
    # the two-view target applies to the BiasCon nw=2 row only, which this run did not time
    assert all(r.target == "" for r in rows if r.stage == "3 two-view feed")
    assert len(rows) == 2 + 2 + 1


def test_expected_rows_and_check():
    assert bench_feed._expected_rows(1000, None, 2) == 2000
    assert bench_feed._expected_rows(1000, 2, 1) == 512
    assert bench_feed._expected_rows(1000, 10, 1) == 1000  # fewer batches than asked
    with pytest.raises(RuntimeError, match="expected 512"):
        bench_feed._check_rows({"ours": 512, "ref": 256}, 512)


@pytest.mark.slow
@needs_mnist
def test_memory_worker_in_a_fresh_process_and_in_this_one():
    mem = bench_feed.run_memory(max_batches=2, limit=600, variants=("ref_plain_nw2",))
    # the same function in-process (its RSS numbers mean little here; the code path is the point)
    mem["ours_plain"] = bench_feed.memory_worker("ours_plain", root=None, max_batches=2, limit=600)
    assert mem["ours_plain"]["rows"] == mem["ref_plain_nw2"]["rows"] == 512
    assert mem["ours_plain"]["num_workers"] == 0
    assert mem["ours_plain"]["worker_peak_rss_mb"] == 0.0
    # two forked workers ran and were reaped (their RSS includes torch: tens of MB at least)
    assert mem["ref_plain_nw2"]["worker_peak_rss_mb"] > 10
    for v in mem.values():
        assert v["peak_increase_mb"] >= 0 and v["baseline_mb"] > 10
    rows = bench_feed.rows_memory(mem)
    assert [r.reference for r in rows] == ["ReBias DataLoader nw=2"]
    assert rows[0].ours["median"] == mem["ours_plain"]["peak_increase_mb"]
    assert rows[0].ref["median"] == mem["ref_plain_nw2"]["peak_increase_mb"]
    with pytest.raises(ValueError, match="unknown memory variant"):
        bench_feed.run_memory(max_batches=1, limit=10, variants=("nope",))


@needs_mnist
def test_load_train_limit():
    ds = bench_feed.load_train(limit=300)
    assert len(ds) == 300 and ds.images.shape == (300, 3, 28, 28)
    assert ds.aligned_groups == tuple((c, c) for c in range(10))
    with pytest.raises(ValueError, match="limit"):
        bench_feed.load_train(limit=1)


# -- training epoch vs model alone ------------------------------------------------------------------------
def _tiny_trainer(max_steps=3):
    return bench_train.make_trainer(
        "smallconvnet", dataset="digits", rho=0.99, batch_size=64, max_steps=max_steps
    )


def test_model_only_loop_is_the_trainers_computation():
    """Same start, same batches: the model-only loop ends in bit-identical weights."""
    with bench_train.deterministic_cpu():
        trainer = _tiny_trainer()
        start_model = copy.deepcopy(trainer.model.state_dict())
        start_opt = copy.deepcopy(trainer.optimizer.state_dict())
        batches = bench_train.premade_batches(trainer, 0)
        assert len(batches) == 3 and batches[0][0].shape == (64, 3, 28, 28)
        assert bench_train.trainer_epoch(trainer, 0) == 3 * 64
        after_trainer = copy.deepcopy(trainer.model.state_dict())
        trainer.model.load_state_dict(start_model)
        trainer.optimizer.load_state_dict(start_opt)
        assert bench_train.model_epoch(trainer, batches) == 3 * 64
    moved = False
    for k, v in trainer.model.state_dict().items():
        assert torch.equal(v, after_trainer[k]), k
        moved |= not torch.equal(v, start_model[k])
    assert moved  # the step really trained


def test_premade_batches_refuses_augmented_runs():
    trainer = _tiny_trainer()
    trainer.cfg.augment = True
    with pytest.raises(ValueError, match="augmentation"):
        bench_train.premade_batches(trainer)


def test_deterministic_cpu_restores_the_global_flag():
    before = torch.are_deterministic_algorithms_enabled()
    with bench_train.deterministic_cpu():
        assert torch.are_deterministic_algorithms_enabled()
    assert torch.are_deterministic_algorithms_enabled() == before


def test_bench_train_run_smoke():
    res = bench_train.run("smallconvnet", dataset="digits", repeats=1, max_steps=2, batch_size=64)
    assert res["images"] == 128 and res["steps"] == 2
    s = res["seconds"]
    assert set(s) == {"trainer", "model", "feed"}
    assert res["epoch_over_model"] == pytest.approx(s["trainer"]["median"] / s["model"]["median"])
    assert res["overhead_fraction"] == pytest.approx(1 - 1 / res["epoch_over_model"])
    assert res["images_per_s"]["model"]["median"] == pytest.approx(128 / s["model"]["median"])
    rows = bench_train.rows(res)
    assert [r.unit for r in rows] == ["s", "img/s"]
    assert rows[0].target == "<= 1.1" and rows[0].status in ("PASS", "FAIL")
    assert "first 2 batches" in rows[0].measure


# -- the other engineers' benches, at tiny sizes -----------------------------------------------------------
@needs_mnist
def test_bench_generation_smoke(monkeypatch):
    import bench_generation

    from debias.data.mnist import load_mnist

    images, labels = load_mnist("train")
    monkeypatch.setattr(
        bench_generation, "load_mnist", lambda split, root=None: (images[:800], labels[:800])
    )
    res = bench_generation.run(repeats=1)
    assert res["n_images"] == 800
    assert res["identical_colours"] and res["identical_images_subset"]
    rows, _ = driver.stage_generation(None, 1, None)
    assert (
        rows[0].ratio == pytest.approx(rows[0].ref["median"] / rows[0].ours["median"])
        and rows[0].status == ""
    )


def test_bench_losses_smoke():
    """bench_losses.run through the driver's small intermediate process."""
    import bench_losses

    rows, res = driver.stage_losses(1, None, batch_sizes=(16,), memory=False)
    assert {r["variant"] for r in res} == set(bench_losses.VARIANTS)
    assert all(r["repeats"] == 3 for r in res)
    contex = next(r for r in res if r["variant"] == "contex")
    assert contex["time_ms_median"] > 0 and "time_ratio_vs_ref_contex" in contex
    assert [r.measure.split()[0] for r in rows] == list(bench_losses.OURS)
    # its workers ran under the driver's allocator settings, not bench_losses' own constant
    want = {k: os.environ.get(k, v) for k, v in common.MALLOC_DEFAULTS.items()}
    assert all(r["malloc_env"]["time"] == want for r in res)
    assert all(r["malloc_env"]["memory"] == bench_losses.MALLOC_ENV for r in res)
    ref = next(r for r in res if r["variant"] == "ref_supcon")["time_ms_median"]
    assert rows[1].ratio == pytest.approx(ref / contex["time_ms_median"])


def test_bench_audit_smoke():
    import bench_audit

    res = bench_audit.run(n=1500, d=16)
    assert res["n"] == 1500 and res["audit_seconds"] > 0
    assert 0 <= res["probe_accuracy"] <= 1


# -- the command -------------------------------------------------------------------------------------------
def test_bench_run_command_help():
    proc = subprocess.run(
        ["bash", str(BENCH / "run"), "--help"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert "--quick" in proc.stdout and "--stages" in proc.stdout


def test_driver_writes_table_csv_and_environment(tmp_path, monkeypatch, capsys):
    fake = [
        common.Row(
            "1 generation",
            "gen",
            "s",
            common.summary([0.5, 0.6]),
            "pil",
            common.summary([5.0, 6.0]),
            10.0,
            "ref/ours",
        )
    ]
    monkeypatch.setattr(
        driver, "stage_generation", lambda root, repeats, log: (fake, {"r": repeats})
    )
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "65536")
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "131072")
    threads = torch.get_num_threads()
    try:
        rc = driver.main(["--stages", "generation", "--quick", "--out", str(tmp_path)])
    finally:
        torch.set_num_threads(threads)
    assert rc == 0
    out = capsys.readouterr().out
    assert "MALLOC_MMAP_THRESHOLD_=65536" in out and "10.00 ref/ours" in out
    env = json.loads((tmp_path / "env.json").read_text())
    assert env["repeats"] == 2 and env["quick"] is True
    assert env["malloc_env"]["MALLOC_TRIM_THRESHOLD_"] == "131072"
    assert env["torch_threads"] == available_cores()
    got = list(csv.DictReader((tmp_path / "bench.csv").open()))
    assert len(got) == 1 and float(got[0]["ratio"]) == 10.0
    raw = json.loads((tmp_path / "bench.json").read_text())
    assert raw["raw"]["generation"] == {"r": 2}
    assert np.isclose(raw["rows"][0]["ours"]["median"], 0.55)


# -- bench_sweep --------------------------------------------------------------------------------------
def test_bench_sweep_runs_the_grid_options_and_splits_the_wall_time(tmp_path):
    """Both paths train the grid's own runs (only the speed settings differ), and a run's wall
    time is split into training / evaluation / representation / rest from its own records."""
    import bench_sweep

    cfgs = bench_sweep.run_configs(["ce", "supcon"], [1], 0.997, quick=False)
    assert [(c["method"], c["seed"], c["rho"]) for c in cfgs] == [
        ("ce", 1, 0.997),
        ("supcon", 1, 0.997),
    ]
    grid = yaml.safe_load((BENCH.parent / "sweeps" / "biased_mnist_cpu.yaml").read_text())
    # the YAML's per-method epochs (8 and 6 since the budget was chosen on validation)
    assert cfgs[0]["epochs"] == grid["base"]["epochs"] == 8
    assert cfgs[1]["epochs"] == grid["methods"]["supcon"]["epochs"] == 6
    assert cfgs[0]["channels_last"] is True and cfgs[0]["eval_every"] == 0  # the grid's own
    old = json.loads(
        (bench_sweep.write_run(cfgs[0], "old", tmp_path) / "run_config.json").read_text()
    )
    new = json.loads(
        (bench_sweep.write_run(cfgs[0], "new", tmp_path) / "run_config.json").read_text()
    )
    differ = {k for k in old if old[k] != new[k]}
    assert differ == {"channels_last", "eval_every", "out"}
    assert (old["channels_last"], old["eval_every"]) == (False, 1)
    with pytest.raises(SystemExit, match="not a run"):
        bench_sweep.run_configs(["ce"], [7], 0.997, quick=False)

    run = tmp_path / "run"
    run.mkdir()
    metrics = {"wall_time_seconds": 30.0, "eval_seconds": 8.0, "representation": {"seconds": 4.0}}
    (run / "metrics.json").write_text(json.dumps(metrics))
    (run / "history.csv").write_text("epoch,eval_seconds\n1,2.0\n2,\n3,3.0\n")
    split = bench_sweep.profile(run, wall=50.0)
    # training = epochs (30) - evaluation inside them (5); rest = 50 - 25 - 8 - 4
    assert split == {"training": 25.0, "evaluation": 8.0, "representation": 4.0, "rest": 13.0}
    recs = [
        {"path": p, "method": "ce", "wall": w, **dict.fromkeys(bench_sweep.PARTS, w / 4)}
        for p, w in [("old", 90.0), ("new", 60.0), ("old", 100.0), ("new", 40.0)]
    ]
    row = bench_sweep.table(recs).splitlines()[1].split()
    assert row[:4] == ["ce", "95.0", "50.0", "1.90"]


def test_bench_two_view_smoke():
    import bench_two_view

    res = bench_two_view.run_recipe(
        "supcontrast", repeats=1, max_steps=1, dataset="digits", rho=0.95
    )
    # the path before issue 33 and today's feed the model the same images
    assert res["same_inputs"] is True and res["steps"] == 1
    s = res["seconds"]
    assert set(s) == {"epoch/ref", "epoch/fast", "epoch/ref+nhwc", "epoch/fast+nhwc",
                      "feed/ref", "feed/fast"}  # fmt: skip
    # seconds are scaled from the measured steps to a whole epoch's
    scale = res["epoch_steps"] / res["steps"]
    assert s["feed/fast"]["median"] == pytest.approx(res["raw_seconds"]["feed/fast"][0] * scale)
    rows = bench_two_view.rows([res])
    assert [r.measure.split(" (")[0] for r in rows] == [
        "epoch", "epoch, channels-last", "feed alone"
    ]  # fmt: skip
    assert rows[0].ratio == pytest.approx(s["epoch/ref"]["median"] / s["epoch/fast"]["median"])
