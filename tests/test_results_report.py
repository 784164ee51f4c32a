"""Tidy results (``debias.results``) and the sweep report (``debias.report``).

No training here: the runs are ``metrics.json`` / ``history.csv`` files written by the test in
the exact layout ``debias train`` and ``debias sweep`` produce, with numbers chosen so that the
report's mean ± 95% t-interval can be checked by hand.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from debias import results
from debias.report import (
    REBIAS_VANILLA,
    format_ci,
    load_sweep_data,
    make_figures,
    make_report,
    mean_ci,
    summarize,
)
from debias.report.cli import register
from debias.train import TrainConfig

# Student t quantiles t(0.975, df) from a printed table (not computed with scipy).
T975 = {1: 12.706204736, 2: 4.302652730}
SCALARS = (
    "accuracy",
    "unbiased_accuracy",
    "worst_group_accuracy",
    "worst_group_y",
    "worst_group_b",
    "aligned_accuracy",
    "conflicting_accuracy",
    "balanced_accuracy",
    "equalized_odds_mean_gap",
    "equalized_odds_max_gap",
    "n",
    "n_aligned",
    "n_conflicting",
    "n_groups",
)


def split_dict(*, acc, unbiased=None, worst=0.0, aligned=1.0, conflicting=0.5, groups=None):
    d = dict.fromkeys(SCALARS, 0.0)
    d |= {
        "accuracy": acc,
        "unbiased_accuracy": acc if unbiased is None else unbiased,
        "worst_group_accuracy": worst,
        "aligned_accuracy": aligned,
        "conflicting_accuracy": conflicting,
        "n": 1000,
        "n_groups": 100,
    }
    d["groups"] = groups or []
    return d


def mnist_groups(off_diagonal: float) -> list[dict]:
    return [
        {
            "y": y,
            "b": b,
            "n": 10,
            "correct": round(10 * (1.0 if y == b else off_diagonal)),
            "accuracy": 1.0 if y == b else off_diagonal,
            "aligned": y == b,
        }
        for y in range(10)
        for b in range(10)
    ]


def write_run(
    d: Path,
    *,
    method: str,
    rho: float,
    seed: int,
    unbiased: float,
    worst: float,
    conflicting: float,
    biased: float,
    dataset: str = "biased-mnist",
) -> dict:
    d.mkdir(parents=True, exist_ok=True)
    extra = {"loss_options": {"base_temperature": 0.5}} if method == "contex" else {}
    if dataset == "biased-mnist":
        cfg = TrainConfig(
            out=str(d),
            dataset=dataset,
            rho=rho,
            method=method,
            seed=seed,
            model="smallconvnet",
            epochs=2,
            linear_epochs=1,
            **extra,
        )
        splits = {
            "val": split_dict(acc=0.5),
            "test": split_dict(
                acc=unbiased + 0.01,
                unbiased=unbiased,
                worst=worst,
                conflicting=conflicting - 0.01,
                groups=mnist_groups(conflicting),
            ),
            "test_biased": split_dict(acc=biased),
            "test_conflicting": split_dict(acc=conflicting),
        }
    else:
        cfg = TrainConfig(
            out=str(d),
            dataset=dataset,
            bias="race",
            bias_rate=rho,
            method=method,
            seed=seed,
            model="resnet18",
            epochs=2,
            **extra,
        )
        groups = [
            {"y": y, "b": b, "n": 50, "correct": 40, "accuracy": 0.8, "aligned": y == b}
            for y in (0, 1)
            for b in (0, 1)
        ]
        splits = {
            "val": split_dict(acc=0.5),
            "test": split_dict(
                acc=unbiased, worst=worst, aligned=biased, conflicting=conflicting, groups=groups
            ),
        }
    metrics = {
        "config": cfg.to_dict(),
        "selection": {"rule": "last", "description": "last epoch", "epoch": 2, "stage": "train"},
        "splits": splits,
        "data": {},
        "epochs_run": 2,
        "wall_time_seconds": 12.5 + seed,
        "device": "cpu",
        "versions": {},
        "history": "history.csv",
    }
    (d / "metrics.json").write_text(json.dumps(metrics))
    if method == "ce":
        hist = pd.DataFrame(
            {
                "epoch": [1, 2],
                "stage": ["train", "train"],
                "lr": [1e-3, 1e-4],
                "train_loss": [2.0, 1.0 + seed],
                "val/accuracy": [0.3, 0.5],
            }
        )
    else:
        hist = pd.DataFrame(
            {
                "epoch": [1, 2, 3],
                "stage": ["pretrain", "pretrain", "linear"],
                "lr": [1e-3] * 3,
                "train_loss": [6.0, 5.0, 2.0],
                "probe/val/accuracy": [0.2, 0.3, None],
                "val/accuracy": [None, None, 0.4],
            }
        )
    hist.to_csv(d / "history.csv", index=False)
    return metrics


RUNS = [  # method, rho, seed, unbiased, worst, conflicting, biased
    ("ce", 0.997, 0, 0.60, 0.10, 0.55, 0.99),
    ("ce", 0.997, 1, 0.70, 0.20, 0.65, 0.97),
    ("contex", 0.997, 0, 0.80, 0.30, 0.78, 0.95),
    ("contex", 0.997, 1, 0.84, 0.40, 0.80, 0.93),
    ("ce", 0.99, 0, 0.90, 0.50, 0.88, 0.99),
]


def run_name(method, rho, seed):
    return f"rho={rho}/method={method}/seed={seed}"


@pytest.fixture
def sweep(tmp_path):
    """A sweep folder as `debias sweep` leaves it: 5 finished runs and 1 failed run."""
    root = tmp_path / "sweep"
    manifest_runs, status = [], []
    for method, rho, seed, *vals in RUNS:
        name = run_name(method, rho, seed)
        m = write_run(
            root / name,
            method=method,
            rho=rho,
            seed=seed,
            unbiased=vals[0],
            worst=vals[1],
            conflicting=vals[2],
            biased=vals[3],
        )
        manifest_runs.append({"run": name, "params": {}, "config": m["config"]})
        status.append({"run": name, "status": "done"})
    failed = run_name("contex", 0.99, 0)
    (root / failed).mkdir(parents=True)
    (root / failed / "error.txt").write_text(
        "Traceback (most recent call last):\n  File x\nFloatingPointError: non-finite loss nan\n"
    )
    manifest_runs.append(
        {
            "run": failed,
            "params": {},
            "config": {"dataset": "biased-mnist", "rho": 0.99, "method": "contex"},
        }
    )
    status.append({"run": failed, "status": "failed"})
    (root / "sweep.json").write_text(json.dumps({"name": "fake", "runs": manifest_runs}))
    (root / "sweep_status.json").write_text(json.dumps({"runs": status}))
    return root


# -- results ----------------------------------------------------------------------------------
def test_load_is_tidy_and_matches_metrics_json(sweep):
    with pytest.warns(UserWarning, match=r"1 run\(s\) without metrics.json left out"):
        df = results.load(sweep)
    for col in (
        "sweep",
        "run",
        "status",
        "dataset",
        "rho",
        "method",
        "mode",
        "seed",
        "epochs",
        "loss_options.base_temperature",
        "split",
        "metric",
        "value",
        "selection_rule",
        "selected_epoch",
        "wall_time_seconds",
    ):
        assert col in df.columns, col
    assert list(df.columns[:3]) == ["sweep", "run", "status"]
    # 5 runs x 4 splits x 14 scalar metrics; the "groups" records are not metric rows.
    assert len(df) == 5 * 4 * len(SCALARS)
    assert set(df["metric"]) == set(SCALARS)
    assert set(df["sweep"]) == {"fake"} and set(df["status"]) == {"done"}
    assert not df.duplicated(["run", "split", "metric"]).any()
    for method, rho, seed, *_ in RUNS:
        r = df[df["run"] == run_name(method, rho, seed)]
        m = json.loads((sweep / run_name(method, rho, seed) / "metrics.json").read_text())
        for split, values in m["splits"].items():
            for metric in SCALARS:
                got = r[(r["split"] == split) & (r["metric"] == metric)]["value"]
                assert got.tolist() == [pytest.approx(values[metric])]
        assert set(r["method"]) == {method} and set(r["rho"]) == {rho} and set(r["seed"]) == {seed}
        assert set(r["selection_rule"]) == {"last"} and set(r["selected_epoch"]) == {2}
        assert set(r["wall_time_seconds"]) == {12.5 + seed}
    row = df[
        (df["run"] == run_name("ce", 0.997, 1))
        & (df["split"] == "test")
        & (df["metric"] == "unbiased_accuracy")
    ].iloc[0]
    assert (
        row["value"] == 0.70
        and row["mode"] == "ce"
        and math.isnan(row["loss_options.base_temperature"])
    )
    assert set(df[df["method"] == "contex"]["loss_options.base_temperature"]) == {0.5}
    assert isinstance(row["lr_milestones"], tuple)  # hashable: groupby works on every column


def test_load_incomplete_history_groups_and_paths(sweep):
    full = results.load(sweep, include_incomplete=True)
    failed = full[full["status"] == "failed"]
    assert failed["run"].tolist() == [run_name("contex", 0.99, 0)]
    assert failed["split"].isna().all() and failed["value"].isna().all()
    assert [r.error for r in results.find_runs(sweep) if r.status == "failed"] == [
        "FloatingPointError: non-finite loss nan"
    ]

    hist = results.load_history(sweep)
    assert len(hist) == 2 * 3 + 3 * 2  # two contex runs (3 epochs), three ce runs (2 epochs)
    ce1 = hist[hist["run"] == run_name("ce", 0.997, 1)]
    assert ce1["epoch"].tolist() == [1, 2] and ce1["train_loss"].tolist() == [2.0, 2.0]
    assert set(ce1["method"]) == {"ce"} and set(ce1["seed"]) == {1}

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        groups = results.load_groups(sweep)
    assert len(groups) == 5 * 100 and set(groups["split"]) == {"test"}
    cell = groups[
        (groups["run"] == run_name("ce", 0.997, 0)) & (groups["y"] == 3) & (groups["b"] == 7)
    ].iloc[0]
    assert cell["accuracy"] == 0.55 and not cell["aligned"] and cell["n"] == 10

    # A lone run folder, a folder of runs without a manifest, and a list of paths.
    one = results.load(sweep / run_name("ce", 0.99, 0))
    assert set(one["run"]) == {"seed=0"} and len(one) == 4 * len(SCALARS)
    bare = sweep.parent / "bare"
    write_run(
        bare / "a",
        method="ce",
        rho=0.99,
        seed=3,
        unbiased=0.5,
        worst=0.1,
        conflicting=0.4,
        biased=0.9,
    )
    both = results.load([bare, sweep / run_name("ce", 0.99, 0)])
    assert set(both["run"]) == {"a", "seed=0"} and set(both["sweep"]) == {"bare", "method=ce"}
    with pytest.raises(FileNotFoundError, match="does not exist"):
        results.load(sweep / "nope")


def test_mean_ci_by_hand():
    s = mean_ci([60.0, 70.0])
    assert s["n"] == 2 and s["mean"] == 65.0
    assert s["std"] == pytest.approx(math.sqrt(50))
    assert s["ci95_half_width"] == pytest.approx(T975[1] * math.sqrt(50) / math.sqrt(2))
    assert s["ci95_low"] == pytest.approx(65.0 - 63.531024, abs=1e-5)
    s3 = mean_ci([1.0, 2.0, 3.0])
    assert s3["ci95_half_width"] == pytest.approx(T975[2] / math.sqrt(3))
    one = mean_ci([72.0])
    assert one["mean"] == 72.0 and math.isnan(one["ci95_half_width"])
    # Clipped to [0, 100]; two seeds say so; one seed shows its bootstrap interval if it has one.
    assert format_ci(65.0, 63.531, 2) == "65.0 [1.5, 100.0] (n=2, wide)"
    assert format_ci(65.0, 3.46, 3) == "65.0 ± 3.5"
    assert format_ci(98.0, 3.46, 3) == "98.0 [94.5, 100.0]"
    assert format_ci(72.0, math.nan, 1) == "72.0 (n=1, no CI)"
    assert (
        format_ci(72.0, math.nan, 1, 69.14, 74.85)
        == "72.0 [69.1, 74.8] (n=1, bootstrap over test images)"
    )


def test_report_numbers_files_and_text(sweep, tmp_path):
    out = tmp_path / "report"
    paths = make_report(sweep, out)
    assert set(paths) == {
        "report", "summary", "paired", "accuracy_vs_bias", "group_heatmap", "convergence",
        "runs", "groups", "tables",
    }  # fmt: skip
    for key in ("accuracy_vs_bias", "group_heatmap", "convergence"):
        data = paths[key].read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000, key

    with open(paths["summary"]) as fh:
        rows = list(csv.DictReader(fh))
    # Every metric is summarised; the MNIST table shows four of them (below).
    assert {r["metric"] for r in rows} == {
        "accuracy", "unbiased", "worst-group", "bias-conflicting", "biased", "EO mean gap",
        "EO max gap", "accuracy − worst-group",
    }  # fmt: skip

    def row(method, rho, metric):
        (r,) = [
            r
            for r in rows
            if r["method"] == method and float(r["rho"]) == rho and r["metric"] == metric
        ]
        return r

    r = row("ce", 0.997, "unbiased")
    assert r["n"] == "2" and r["seeds"] == "0,1" and r["source"] == "test/unbiased_accuracy"
    assert float(r["mean_pct"]) == pytest.approx(65.0)
    assert float(r["ci95_half_width_pct"]) == pytest.approx(T975[1] * math.sqrt(50) / math.sqrt(2))
    assert float(r["ci95_low_pct"]) == pytest.approx(65.0 - 63.531024, abs=1e-5)
    assert float(r["ci95_high_pct"]) == 100.0  # 128.5 clipped
    assert r["interval"] == "95% t-interval over 2 seeds (t = 12.7: wide)"
    assert float(r["published_rebias_vanilla_pct"]) == 33.4
    r = row("contex", 0.997, "bias-conflicting")  # from the test_conflicting split
    assert float(r["mean_pct"]) == pytest.approx(79.0)
    assert r["source"] == "test_conflicting/accuracy"
    assert float(r["ci95_half_width_pct"]) == pytest.approx(T975[1] * math.sqrt(2) / math.sqrt(2))
    assert r["published_rebias_vanilla_pct"] == ""  # only CE has a published reference
    r = row("ce", 0.997, "biased")
    assert float(r["mean_pct"]) == pytest.approx(98.0) and r["source"] == "test_biased/accuracy"
    r = row("ce", 0.99, "unbiased")
    assert r["n"] == "1" and r["ci95_half_width_pct"] == "" and float(r["mean_pct"]) == 90.0
    assert float(r["published_rebias_vanilla_pct"]) == REBIAS_VANILLA[0.99] == 89.1
    # One seed: the interval is a bootstrap over the run's saved test groups (its unbiased
    # counts give (10 x 10/10 + 90 x 9/10) / 100 = 91%, the scalar 90% is made up), labelled.
    assert r["interval"] == "95% bootstrap over test images (1 seed)"
    assert 87 < float(r["ci95_low_pct"]) < 91 < float(r["ci95_high_pct"]) < 95
    r = row("ce", 0.99, "biased")  # test_biased has no saved groups: no interval
    assert r["interval"] == "none" and r["ci95_low_pct"] == ""
    assert [(x["method"], x["rho"]) for x in rows if x["metric"] == "unbiased"] == [
        ("ce", "0.997"),
        ("ce", "0.99"),
        ("contex", "0.997"),
    ]  # sweep order, strongest bias first

    md = paths["report"].read_text()
    assert (
        "| ce | 0.997 | — | 0,1 (2) | 65.0 [1.5, 100.0] (n=2, wide) | 15.0 [0.0, 78.5] (n=2, wide) "
        "| 60.0 [0.0, 100.0] (n=2, wide) | 98.0 [85.3, 100.0] (n=2, wide) | 33.4 |" in md
    )
    assert "| unbiased (%) | worst-group (%) |" in md
    assert "| contex | 0.997 | — | 0,1 (2) | 82.0 [56.6, 100.0] (n=2, wide) |" in md
    assert "| ce | 0.99 | — | 0 (1) | 90.0 [" in md and "(n=1, bootstrap over test images)" in md
    assert "| 89.1 |" in md
    # Worst groups with exact intervals, by name: digit / colour.
    assert "### Worst groups on the test split at rho = 0.997" in md
    assert "| ce | 0 / green | conflicting | 12/20 | 60.0 [36.1, 80.9] |" in md
    assert "ReBias Vanilla unbiased, published" in md and "not run here" in md
    assert "`last`: last epoch (5 runs)" in md
    assert "Test data is never used for selection" in md
    assert "95% Student t-interval" in md
    assert (
        f"| {run_name('contex', 0.99, 0)} | failed | FloatingPointError: non-finite loss nan |"
        in md
    )
    for key in ("accuracy_vs_bias", "group_heatmap", "convergence"):
        assert f"]({key}.png)" in md


def test_faces_report_uses_group_metrics_and_no_reference(tmp_path):
    root = tmp_path / "faces"
    for seed, (u, w, c, a) in enumerate([(0.7, 0.4, 0.6, 0.9), (0.8, 0.5, 0.7, 0.95)]):
        write_run(
            root / f"method=ce/seed={seed}",
            dataset="utkface",
            method="ce",
            rho=0.9,
            seed=seed,
            unbiased=u,
            worst=w,
            conflicting=c,
            biased=a,
        )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing incomplete: no warning either
        summary, info = summarize(results.load(root))
    assert info.level == "bias_rate" and "bias" in info.keys
    by = summary.set_index("metric")
    assert by.loc["bias-conflicting", "source"] == "test/conflicting_accuracy"
    assert by.loc["biased", "source"] == "test/aligned_accuracy"
    assert by.loc["bias-conflicting", "mean_pct"] == pytest.approx(65.0)
    assert summary["published_rebias_vanilla_pct"].isna().all()
    paths = make_report(root, tmp_path / "rep")
    md = paths["report"].read_text()
    assert "published" not in md
    assert "| ce | race | 0.9 | — | 0,1 (2) | 75.0 [11.5, 100.0] (n=2, wide) |" in md
    assert "| ce (bias=race) | male / White | aligned | 80/100 | 80.0 [70.8, 87.3] |" in md


def faces_sweep(root: Path) -> Path:
    """A UTKFace sweep at one bias level: CE and Group DRO x 3 seeds x two bias attributes, with
    equalized-odds gaps."""
    # bias, method, seed -> accuracy, worst-group, EO mean gap, EO max gap (fractions)
    vals = {
        ("race", "ce"): [(0.80, 0.50, 0.20, 0.30), (0.82, 0.52, 0.22, 0.32), (0.84, 0.54, 0.24, 0.34)],
        ("race", "groupdro"): [(0.79, 0.70, 0.05, 0.08), (0.80, 0.72, 0.06, 0.09), (0.81, 0.74, 0.07, 0.10)],
        ("age", "ce"): [(0.70, 0.30, 0.40, 0.50)] * 3,
        ("age", "groupdro"): [(0.68, 0.40, 0.30, 0.35), (0.69, 0.41, 0.31, 0.36), (0.70, 0.42, 0.32, 0.37)],
    }  # fmt: skip
    for (bias, method), seeds in vals.items():
        for seed, (acc, worst, eo_mean, eo_max) in enumerate(seeds):
            d = root / f"bias={bias}/method={method}/seed={seed}"
            m = write_run(d, dataset="utkface", method=method, rho=0.9, seed=seed,
                          unbiased=acc, worst=worst, conflicting=0.6, biased=0.9)  # fmt: skip
            m["config"]["bias"] = bias
            m["splits"]["test"] |= {
                "equalized_odds_mean_gap": eo_mean, "equalized_odds_max_gap": eo_max
            }  # fmt: skip
            (d / "metrics.json").write_text(json.dumps(m))
    return root


def test_faces_report_columns_gap_equalized_odds_and_paired_per_bias(tmp_path):
    """Faces: accuracy, the accuracy − worst-group gap and both equalized-odds gaps (pp) are
    columns; paired comparisons get one column per bias attribute (not only the first)."""
    root = faces_sweep(tmp_path / "faces")
    summary, info = summarize(results.load(root))
    assert info.table_metrics[0] == "accuracy" and "EO max gap" in info.table_metrics
    s = summary.set_index(["label", "metric"])
    gap = s.loc[("ce (bias=race)", "accuracy − worst-group")]
    assert gap["mean_pct"] == pytest.approx(30.0) and gap["ci95_half_width_pct"] == 0
    assert s.loc[("groupdro (bias=race)", "EO max gap"), "mean_pct"] == pytest.approx(9.0)
    paths = make_report(root, tmp_path / "rep")
    assert "worst_group_gap" in paths and "accuracy_vs_bias" not in paths  # one bias level
    md = paths["report"].read_text()
    assert "](worst_group_gap.png)" in md
    assert "| accuracy (%) | unbiased (%) | worst-group (%) | accuracy − worst-group (pp) |" in md
    assert "| bias-conflicting (%) | EO mean gap (pp) | EO max gap (pp) |" in md
    assert "(|ΔTPR| + |ΔTNR|)/2" in md
    # groupdro − ce on worst-group: +11.0 at age (differences 10, 11, 12), +20.0 at race.
    assert "| method | supervision | bias=age | bias=race |" in md
    # Gaps: ce 40 (age) and 30 (race); groupdro 28 and 9, 8, 7: narrower in every seed.
    assert "### the accuracy − worst-group gap: method − ce (percentage points)" in md
    assert (
        "| groupdro | B | -12.0 [-12.0, -12.0] p=–, 3/3 | -22.0 [-24.5, -19.5] p=0.001 "
        "(Holm 0.003), 3/3 |" in md
    )
    # Holm over the report's 4 tests (two have no test: equal differences): the smallest p
    # times 4, the next times 3 (never below the one before), then 2, then 1.
    assert "Multiplicity: the family is the 4 paired tests" in md
    paired = pd.read_csv(paths["paired"]).sort_values("p_value")
    p, holm = paired["p_value"].dropna().to_numpy(), paired["p_holm"].dropna().to_numpy()
    assert holm == pytest.approx([4 * p[0], 3 * p[1], 2 * p[2], max(2 * p[2], p[3])])
    assert (
        "| groupdro | B | +11.0 [+8.5, +13.5] p=0.003 (Holm 0.008), 3/3 "
        "| +20.0 [+20.0, +20.0] p=–, 3/3 |" in md
    )


def test_report_cli(sweep, capsys):
    parser = argparse.ArgumentParser(prog="debias")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["report", str(sweep)])
    assert args.func(args) == 0
    assert (sweep / "report" / "report.md").exists()  # default: <sweep>/report
    assert "report.md" in capsys.readouterr().out


def test_report_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        make_report(tmp_path / "missing", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no run folders"):
        make_report(tmp_path / "empty", tmp_path / "out")


def test_faces_convergence_one_column_per_task_and_one_colour_per_method(tmp_path):
    """Without bias levels the convergence figure gets a column per task (here the bias
    attribute), its lines are the methods, and 13 methods get 13 different colours (tab10 gave
    three pairs of methods one colour)."""
    methods = ["ce", "reweight", "resample", "groupdro", "biasbal", "lff", "jtt", "supcon",
               "contex", "simclr", "cacr", "biascon", "fairkl"]  # fmt: skip
    root = tmp_path / "faces"
    for bias in ("race", "age"):
        for i, method in enumerate(methods):
            d = root / f"bias={bias}/method={method}/seed=0"
            m = write_run(d, dataset="utkface", method=method, rho=0.9, seed=0,
                          unbiased=0.8, worst=0.8, conflicting=0.8, biased=0.8)  # fmt: skip
            m["config"]["bias"] = bias
            (d / "metrics.json").write_text(json.dumps(m))
            loss = [1.0 - 0.01 * i, 0.5 - 0.01 * i]
            pd.DataFrame(
                {"epoch": [1, 2], "stage": "train", "train_loss": loss, "val/accuracy": [0.6, 0.7]}
            ).to_csv(d / "history.csv", index=False)
    fig = make_figures(root)["convergence"]
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == ["bias = race", "bias = age"]
    loss_axes = [ax for ax in fig.axes if ax.get_ylabel() == "train loss (train / linear)"]
    assert len(loss_axes) == 2
    for ax in loss_axes:
        # one line per method, at the loss written for it, in a colour of its own
        lines = [ln for ln in ax.get_lines() if len(ln.get_xdata()) == 2]
        by_start = {round(float(ln.get_ydata()[0]), 2): ln.get_color() for ln in lines}
        assert sorted(by_start) == sorted(round(1.0 - 0.01 * i, 2) for i in range(13))
        assert len({tuple(np.round(c, 3)) if not isinstance(c, str) else c
                    for c in by_start.values()}) == 13  # fmt: skip
    legend = next(ax.get_legend() for ax in fig.axes if ax.get_legend() is not None)
    labels = [t.get_text() for t in legend.get_texts()]
    assert labels[0] == "condition" and sorted(labels[1:14]) == sorted(
        methods
    )  # not "ce (bias=race)"


def test_one_seed_interval_that_excludes_its_point_is_still_drawn(tmp_path):
    """A percentile bootstrap of a minimum (the worst group) can lie wholly on one side of the
    observed value; the figures draw it up to the point instead of failing (matplotlib refuses
    negative error-bar lengths). Here worst-group 60% sits below its groups' 80% bootstrap."""
    root = tmp_path / "faces"
    for method in ("ce", "groupdro"):
        d = root / f"method={method}/seed=0"
        write_run(d, dataset="utkface", method=method, rho=0.9, seed=0,
                  unbiased=0.8, worst=0.6, conflicting=0.8, biased=0.8)  # fmt: skip
    data = load_sweep_data(root)  # one seed: bootstrap intervals over the test groups
    worst = data.summary[data.summary["metric"] == "worst-group"].iloc[0]
    assert worst["mean_pct"] == pytest.approx(60.0) and worst["ci95_low_pct"] > 60.0
    figs = make_figures(data)
    ax = figs["worst_group_gap"].axes[0]
    # every error bar segment has a non-negative extent and ends at or beyond its marker
    segments = [seg for coll in ax.collections for seg in getattr(coll, "get_segments", list)()]
    assert segments and all(np.all(np.isfinite(seg)) for seg in segments)


def test_gap_figure_draws_no_interval_for_two_seeds(tmp_path):
    """Two seeds give t(0.975, 1) = 12.7 times the spread: the table marks it `n=2, wide` and no
    figure draws it, the dumbbells included."""
    root = tmp_path / "faces"
    for method in ("ce", "groupdro"):
        for seed, worst in ((0, 0.5), (1, 0.7)):
            write_run(root / f"method={method}/seed={seed}", dataset="utkface", method=method,
                      rho=0.9, seed=seed, unbiased=0.8, worst=worst, conflicting=0.8,
                      biased=0.8)  # fmt: skip
    ax = make_figures(root)["worst_group_gap"].axes[0]
    segments = [seg for coll in ax.collections for seg in coll.get_segments()]
    assert segments  # one (zero-length) bar per marker
    lengths = [float(np.abs(np.diff(np.asarray(seg), axis=0)).max()) for seg in segments]
    assert max(lengths) == 0.0


# -- the representation section (issue 21) ---------------------------------------------------------
REPRESENTATION = {  # (method, rho, seed): (DFR unbiased, DFR worst-group, bias leakage)
    ("ce", 0.997, 0): (0.90, 0.70, 1.00),
    ("ce", 0.997, 1): (0.94, 0.74, 1.00),
    ("contex", 0.997, 0): (0.70, 0.40, 0.50),
    ("contex", 0.997, 1): (0.76, 0.50, 0.60),
}  # ("ce", 0.99, 0) has no section: a run finished before the section existed


def add_representation(sweep_dir: Path) -> None:
    for (method, rho, seed), (unb, worst, leak) in REPRESENTATION.items():
        path = sweep_dir / run_name(method, rho, seed) / "metrics.json"
        m = json.loads(path.read_text())
        test = split_dict(acc=unb + 0.01, unbiased=unb, worst=worst)
        m["representation"] = {
            "dfr": {"C": 0.7, "splits": {"test": test, "test_biased": split_dict(acc=0.99)}},
            "audit": {
                "split": "test",
                "n": 5000,
                "bias_leakage": leak,
                "bias_leakage_chance": 0.1,
                "target_probe": {"accuracy": 0.5},
            },
        }
        path.write_text(json.dumps(m))


def test_representation_tables_paired_comparisons_and_figure(sweep, tmp_path):
    """The DFR head's numbers and the leakage get their own table, pivot, paired comparisons,
    CSVs and figure; the run's own numbers are untouched; a run without the section is named."""
    add_representation(sweep)
    paths = make_report(sweep, tmp_path / "rep")
    assert {"representation", "representation_paired", "head_vs_dfr"} <= set(paths)
    rep = pd.read_csv(paths["representation"])
    ce = rep[(rep["method"] == "ce") & (rep["rho"] == 0.997)].set_index("metric")
    assert ce.loc["unbiased", "mean_pct"] == pytest.approx(92.0)
    assert ce.loc["unbiased", "ci95_half_width_pct"] == pytest.approx(
        T975[1] * np.std([90, 94], ddof=1) / math.sqrt(2)
    )
    cx = rep[rep["method"] == "contex"].set_index("metric")
    assert cx.loc["worst-group", "mean_pct"] == pytest.approx(45.0)
    assert cx.loc["bias leakage", "mean_pct"] == pytest.approx(55.0)
    assert not (rep["rho"] == 0.99).any()  # the run without a section is left out
    paired = pd.read_csv(paths["representation_paired"])
    row = paired[(paired["metric"] == "unbiased") & (paired["method"] == "contex")].iloc[0]
    assert (row["baseline"], row["n"], row["wins"]) == ("ce", 2, 0)
    assert row["mean_diff_pp"] == pytest.approx(-19.0)

    text = paths["report"].read_text()
    section = text.split("## Representation")[1].split("## Figures")[0]
    assert "| DFR unbiased (%) | DFR worst-group (%) |" in section
    assert "bias leakage (%)" in section and "DFR bias leakage" not in section
    assert "92.0 [66.6, 100.0] (n=2, wide)" in section  # ce's DFR unbiased
    assert "55.0" in section and "biased-mnist: 10%" in section
    assert "1 finished run(s) have no representation section" in section
    assert f"`{run_name('ce', 0.99, 0)}`" in section
    assert "-19.0" in section  # contex − ce on the DFR head
    # The results table above still shows each run's own head (ce at .997: 60 and 70 → 65.0).
    head = text.split("## Results")[1].split("## Representation")[0]
    assert "65.0" in head and "92.0" not in head
    assert "![The run's own head" in text


def test_report_gives_the_leakage_permutation_baseline_and_verdicts(sweep, tmp_path):
    """Sections written with a permutation baseline: the report gives it (mean over runs) and
    how many runs exceed it; sections without one (older runs) leave the line out."""
    add_representation(sweep)
    for i, path in enumerate(sorted(sweep.rglob("metrics.json"))):
        m = json.loads(path.read_text())
        if "representation" in m:
            m["representation"]["audit"] |= {
                "bias_leakage_null_mean": 0.11 if i % 2 else 0.13,
                "bias_leakage_leaking": i % 2 == 0,
            }
            path.write_text(json.dumps(m))
    from debias import results

    rep = results.load_representation(sweep)
    verdicts = rep[rep["metric"] == "bias_leakage_leaking"]["value"]
    assert len(verdicts) and set(verdicts) <= {0.0, 1.0}
    text = make_report(sweep, tmp_path / "rep")["report"].read_text()
    line = next(ln for ln in text.splitlines() if ln.startswith("Bias leakage permutation"))
    k, n = int(verdicts.sum()), len(verdicts)
    mean = 100 * rep[rep["metric"] == "bias_leakage_null_mean"]["value"].mean()
    assert f"biased-mnist: {mean:.1f}%" in line and f"biased-mnist: {k} of {n}." in line


def test_report_without_representation_sections_has_no_such_section(sweep, tmp_path):
    paths = make_report(sweep, tmp_path / "rep")
    assert "representation" not in paths and "head_vs_dfr" not in paths
    assert "## Representation" not in paths["report"].read_text()


def test_paired_differences_compares_each_loss_option_variant_on_its_own():
    """ConTeX at self_weight 0.5 (the default, no option recorded) and 0.7 in one report: each
    variant is paired with SupCon on the same seeds, never pooled, never silently dropped."""
    from debias.report.compare import paired_differences

    rows = []
    for seed in (0, 1, 2):
        rows.append(
            {"method": "supcon", "seed": seed, "rho": 0.99, "w": math.nan, "v": 50.0 + seed}
        )
        rows.append(
            {"method": "contex", "seed": seed, "rho": 0.99, "w": math.nan, "v": 52.0 + seed}
        )
        rows.append({"method": "contex", "seed": seed, "rho": 0.99, "w": 0.7, "v": 40.0 + 2 * seed})
    per_run = pd.DataFrame(rows).rename(columns={"w": "loss_options.self_weight"})
    keys = ["method", "loss_options.self_weight", "rho"]
    out = paired_differences(per_run, metric="v", keys=keys, baseline="supcon", methods=["contex"])
    by = out.set_index("variant")
    assert sorted(by.index) == ["default", "self_weight=0.7"]
    assert by.loc["default", "mean_diff_pp"] == pytest.approx(2.0)
    assert by.loc["self_weight=0.7", "mean_diff_pp"] == pytest.approx(-9.0)  # -10, -9, -8
    assert (by["n"] == 3).all() and by.loc["default", "wins"] == 3
    # One variant only: no variant text (the tables stay as they were).
    one = per_run[per_run["loss_options.self_weight"].isna()]
    assert paired_differences(one, metric="v", keys=keys, baseline="supcon")[
        "variant"
    ].tolist() == [""]


def test_paired_differences_refuses_pairs_across_recipes_modes_and_views():
    """Issue 33: a joint ConTeX run was paired with a two-stage SupCon run. Two losses are
    compared under one protocol only; a method's runs under two protocols are kept apart."""
    from debias.report.compare import paired_differences

    rows = []
    for seed in (0, 1, 2):
        for method, mode, recipe, v in (
            ("supcon", "two-stage", "supcontrast", 50.0 + seed),
            ("contex", "two-stage", "supcontrast", 53.0 + seed),
            ("contex", "joint", "biascon", 70.0 + seed),
            ("supcon", "joint", "biascon", 60.0 + seed),
            ("ce", "ce", math.nan, 40.0),
        ):
            rows.append({"method": method, "seed": seed, "rho": 0.99, "mode": mode,
                         "recipe": recipe, "views": "geometry", "v": v})  # fmt: skip
    per_run = pd.DataFrame(rows)
    keys = ["method", "mode", "recipe", "rho"]
    out = paired_differences(per_run, metric="v", keys=keys, baseline="supcon",
                             methods=["contex"], same_protocol=True)  # fmt: skip
    by = out.set_index("recipe")
    assert by.loc["supcontrast", "mean_diff_pp"] == pytest.approx(3.0)
    assert by.loc["biascon", "mean_diff_pp"] == pytest.approx(10.0)  # never 53 - 60 or 70 - 50
    assert (out["n"] == 3).all() and len(out) == 2
    # ConTeX only under one recipe, SupCon only under another: refused with a warning.
    lone = per_run[~((per_run["method"] == "contex") & (per_run["recipe"] == "supcontrast"))]
    lone = lone[~((lone["method"] == "supcon") & (lone["recipe"] == "biascon"))]
    with pytest.warns(UserWarning, match="contex - supcon refused"):
        none = paired_differences(lone, metric="v", keys=["method", "rho"], baseline="supcon",
                                  methods=["contex"], same_protocol=True)  # fmt: skip
    assert none.empty
    # Against the CE baseline each protocol of a method is a variant of its own.
    base = paired_differences(per_run, metric="v", keys=keys, baseline="ce", methods=["contex"])
    assert sorted(base["mean_diff_pp"]) == pytest.approx([14.0, 31.0])


def test_contex_is_paired_with_each_recipes_own_loss_under_that_recipe_only():
    """Issue 33: ConTeX − SupCon, and ConTeX − the recipe's own loss (BiasCon under biascon,
    FairKL under fairkl), each inside one recipe; a two-view loss under FairKL's one-view
    recipe (n_views 2 against 1) is still the same protocol; no pair crosses recipes."""
    from debias.report.compare import paired_tables
    from debias.report.summary import SummaryInfo

    rows = []
    for seed in (0, 1, 2):
        for method, recipe, mode, views, v in (
            ("contex", "fairkl", "online", 2, 60.0 + seed),
            ("supcon", "fairkl", "online", 2, 58.0),
            ("fairkl", "fairkl", "online", 1, 50.0 + 2 * seed),  # diffs 10, 9, 8
            ("contex", "biascon", "joint", 2, 70.0 + seed),
            ("supcon", "biascon", "joint", 2, 75.0 + seed),
            ("biascon", "biascon", "joint", 2, 80.0 + seed),
            ("fairkl", "biascon", "joint", 1, 20.0),
        ):
            rows.append({"method": method, "seed": seed, "rho": 0.997, "recipe": recipe,
                         "mode": mode, "method_options.n_views": views, "supervision": "B",
                         "unbiased": v})  # fmt: skip
    per_run = pd.DataFrame(rows)
    info = SummaryInfo(keys=["method", "recipe", "mode", "rho"], level="rho", sources={},
                       per_run=per_run, table_metrics=("unbiased",))  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no pair refused for n_views
        out = paired_tables(info, metrics=["unbiased"])
    claims = out[out["method"] == "contex"].set_index(["baseline", "recipe"])["mean_diff_pp"]
    assert claims.to_dict() == pytest.approx({
        ("supcon", "fairkl"): 61.0 - 58.0, ("supcon", "biascon"): -5.0,
        ("fairkl", "fairkl"): 9.0, ("biascon", "biascon"): -10.0,
    })  # fmt: skip
    assert out["p_holm"].notna().any()


# -- the committed reference reports ------------------------------------------------------------
# A report of the fixture sweeps above, byte for byte: a refactor of the report that changes
# its text fails here. When the text changes on purpose, regenerate the references with
#   DEBIAS_UPDATE_REFERENCE=1 pytest tests/test_results_report.py -k reference_report
# and review their diff.
REFERENCE = Path(__file__).resolve().parent / "reference"


@pytest.mark.parametrize("name", ["biased_mnist", "faces"])
def test_report_text_is_the_committed_reference_report(name, sweep, tmp_path, monkeypatch):
    import os

    import debias

    if name == "biased_mnist":
        add_representation(sweep)
        root = sweep
    else:
        root = faces_sweep(tmp_path / "faces")
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "0")  # the "Generated ..." time
    monkeypatch.chdir(root.parent)  # the "Source: ..." path, relative
    paths = make_report(root.name, tmp_path / "rep", notes="Notes a person wrote.")
    text = paths["report"].read_text().replace(f"debias {debias.__version__}.", "debias X.")
    assert "Generated 1970-01-01T00:00:00 by debias X." in text
    expected = REFERENCE / f"report_{name}.md"
    if os.environ.get("DEBIAS_UPDATE_REFERENCE"):
        expected.write_text(text)
    assert text == expected.read_text()


# -- the metric vocabulary ----------------------------------------------------------------------
def test_vocabulary_reads_group_report_keys_and_covers_every_dataset_table():
    """Each report metric reads keys a GroupReport writes (or the audit's leakage), a derived
    one differences two declared metrics, and every dataset's table shows declared metrics."""
    from debias.data.registry import DATASETS
    from debias.metrics import group_report
    from debias.report.vocabulary import LEAKAGE, METRICS, REPRESENTATION_METRICS, metric

    # with group_weights, as on a dataset whose spec asks for the adjusted average
    keys = set(
        group_report([0, 1, 1, 0], [0, 1, 0, 0], [0, 1, 1, 0], group_weights={(0, 0): 1}).to_dict()
    )
    labels = [m.label for m in REPRESENTATION_METRICS]
    assert len(set(labels)) == len(labels)
    for m in METRICS:
        assert bool(m.sources) != bool(m.derived), m.label
        assert {k for _, k in m.sources} <= keys, m.label
        assert all(labels.index(x) < labels.index(m.label) for x in m.derived or ()), m.label
        assert m.unit in ("%", "pp")
    assert metric(LEAKAGE).sources == (("audit", "bias_leakage"),)
    for name, spec in DATASETS.items():
        assert set(spec.table_metrics or ()) <= set(labels), name
    with pytest.raises(ValueError, match=r"unknown report metric 'nope'; expected one of"):
        metric("nope")


def test_a_new_vocabulary_entry_is_a_summary_row_with_its_unit_and_direction(sweep, monkeypatch):
    """Adding a column is one entry: summarize reads it from metrics.json and the paired
    comparison counts wins in its declared direction."""
    from debias.report import vocabulary
    from debias.report.compare import paired_tables
    from debias.report.vocabulary import METRICS, ReportMetric

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        df = results.load(sweep)
    extra = ReportMetric("balanced", (("test", "balanced_accuracy"),), lower_is_better=True)
    monkeypatch.setitem(vocabulary._BY_LABEL, "balanced", extra)  # as if declared in METRICS
    # contex 5 and 6 points above ce in seeds 0 and 1: with lower-is-better, no seed is a win.
    value = df["seed"].astype(float) * 0.1 + (0.05 + 0.01 * df["seed"]) * (df["method"] == "contex")
    df.loc[df["metric"] == "balanced_accuracy", "value"] = value
    summary, info = summarize(df, metrics=(*METRICS, extra))
    ce = summary[(summary["method"] == "ce") & (summary["rho"] == 0.997)].set_index("metric")
    assert ce.loc["balanced", "mean_pct"] == pytest.approx(5.0)  # seeds 0 and 1: 0 %, 10 %
    assert ce.loc["balanced", "source"] == "test/balanced_accuracy"
    paired = paired_tables(info, ["balanced"])
    row = paired[(paired["method"] == "contex") & (paired["baseline"] == "ce")].iloc[0]
    assert row["mean_diff_pp"] == pytest.approx(5.5) and (row["n"], row["wins"]) == (2, 0)


def test_supervision_is_read_from_the_run_record_not_the_registry(sweep):
    """A run of a method this process has not registered (one registered in a notebook) is
    marked by what its metrics.json says it read."""
    path = sweep / run_name("ce", 0.99, 0) / "metrics.json"
    m = json.loads(path.read_text())
    m["config"]["method"] = "notebook_method"
    m["supervision"] = "train_bias"
    path.write_text(json.dumps(m))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        summary, info = summarize(results.load(sweep))
    marks = dict(zip(info.per_run["method"], info.per_run["supervision"]))
    assert marks == {"ce": "—", "contex": "—", "notebook_method": "B"}
    assert set(summary.loc[summary["method"] == "notebook_method", "supervision"]) == {"B"}


def test_two_sweeps_that_differ_in_a_loss_option_keep_it_as_a_condition(sweep, tmp_path):
    """The Biased-MNIST grid (ConTeX at the default weight, no self_weight recorded) and its
    ConTeX-weight companion (self_weight 0.7) in one report: two ConTeX rows and two paired
    variants, never one pooled "contex" of 4 runs. (An unset option counted as no value made the
    key invisible: pandas 3's astype(str) keeps NaN, and nunique drops it.)"""
    from debias.report.markdown import _header_markdown
    from debias.report.sweep_data import load_sweep_data

    other = tmp_path / "weight"
    runs = []
    for seed, unbiased in ((0, 0.50), (1, 0.54)):
        name = f"rho=0.997/seed={seed}"
        m = write_run(other / name, method="contex", rho=0.997, seed=seed, unbiased=unbiased,
                      worst=0.1, conflicting=0.45, biased=0.99)  # fmt: skip
        m["config"]["loss_options"]["self_weight"] = 0.7
        (other / name / "metrics.json").write_text(json.dumps(m))
        runs.append({"run": name, "params": {}, "config": m["config"]})
    (other / "sweep.json").write_text(json.dumps({"name": "weight", "runs": runs}))
    (other / "sweep_status.json").write_text(
        json.dumps({"runs": [{"run": r["run"], "status": "done"} for r in runs]})
    )
    data = load_sweep_data([sweep, other])
    assert "loss_options.self_weight" in data.info.keys
    unb = data.summary[(data.summary["metric"] == "unbiased") & (data.summary["rho"] == 0.997)]
    by = unb.set_index("label")
    assert by.loc["contex", "n"] == 2 and by.loc["contex", "mean_pct"] == pytest.approx(82.0)
    assert by.loc["contex (loss_options.self_weight=0.7)", "mean_pct"] == pytest.approx(52.0)
    vs_ce = data.paired[(data.paired["baseline"] == "ce") & (data.paired["metric"] == "unbiased")]
    variants = vs_ce[vs_ce["method"] == "contex"].set_index("variant")["mean_diff_pp"]
    assert variants.to_dict() == pytest.approx({"default": 17.0, "self_weight=0.7": -13.0})
    head = _header_markdown(data)[2]
    assert head.startswith(f"Source: `{sweep.as_posix()}`, `{other.as_posix()}`. 7 finished")


def test_seeds_that_draw_their_own_data_are_replicates_of_one_condition(sweep):
    """data_draw: seed (every shipped sweep): a run's data_seed is its seed; the seeds of a
    condition still pool into one mean and interval, and pair on the seed."""
    for method, rho, seed, *_ in RUNS:
        path = sweep / run_name(method, rho, seed) / "metrics.json"
        m = json.loads(path.read_text())
        m["config"]["data_seed"] = seed
        path.write_text(json.dumps(m))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        summary, info = summarize(results.load(sweep))
    assert "data_seed" not in info.keys and "data_seed" not in summary
    unb = summary[(summary["metric"] == "unbiased") & (summary["rho"] == 0.997)]
    assert unb.set_index("label")["n"].to_dict() == {"ce": 2, "contex": 2}
    assert unb.set_index("label").loc["ce", "mean_pct"] == pytest.approx(65.0)


# -- the per-run tables (issue 35) --------------------------------------------------------------
def test_report_rebuilt_from_its_tables_alone_is_the_same_report(sweep, tmp_path, monkeypatch):
    """runs.csv / groups.csv / tables.json hold everything report.md and the CSVs are computed
    from: with the run folders gone, report_from_tables writes them byte for byte again
    (failed run listed, one-seed bootstrap, representation section, Holm column included)."""
    import shutil

    from debias.report.report import report_from_tables

    add_representation(sweep)
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "0")
    paths = make_report(sweep, tmp_path / "rep", notes="Notes.")
    before = {k: Path(p).read_bytes() for k, p in paths.items() if Path(p).suffix != ".png"}
    runs = pd.read_csv(paths["runs"])
    assert len(runs) == len(RUNS) + 1 and runs["run"].is_unique  # one row per run, failed too
    row = runs.set_index("run").loc[run_name("contex", 0.997, 1)]
    assert row["test/unbiased_accuracy"] == pytest.approx(0.84)  # fractions, as metrics.json
    assert row["representation:test/unbiased_accuracy"] == pytest.approx(0.76)
    assert row["representation:audit/bias_leakage"] == pytest.approx(0.6)
    assert (row["seed"], row["wall_time_seconds"], row["dfr.C"]) == (1, 13.5, 0.7)
    assert row["selection_rule"] == "last" and row["data_seed"] == 0
    failed = runs.set_index("run").loc[run_name("contex", 0.99, 0)]
    assert failed["status"] == "failed" and "non-finite loss" in failed["error"]

    shutil.rmtree(sweep)
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "86400")  # the rebuild keeps the tables' time
    again = report_from_tables(tmp_path / "rep", notes="Notes.")
    assert set(before) - {"runs", "groups", "tables"} == set(again) - {
        k for k in again if Path(again[k]).suffix == ".png"
    }
    for key, data in before.items():
        assert Path(paths[key]).read_bytes() == data, key
    assert "![Accuracy per condition" in again["report"].read_text()  # figures linked


def test_dfr_tuning_ties_are_recorded_per_run(sweep, tmp_path):
    """runs.csv says which C the DFR tuning chose and which Cs tied with it."""
    add_representation(sweep)
    path = sweep / run_name("ce", 0.997, 0) / "metrics.json"
    m = json.loads(path.read_text())
    m["representation"]["dfr"] |= {
        "C": 1.0, "refits": 20,
        "tuning_worst_group_accuracy": {"1": 0.0, "0.7": 0.0, "0.3": 0.0, "0.1": -1.0},
    }  # fmt: skip
    path.write_text(json.dumps(m))
    runs = pd.read_csv(make_report(sweep, tmp_path / "rep")["runs"]).set_index("run")
    tied = runs.loc[run_name("ce", 0.997, 0)]
    assert (tied["dfr.C"], tied["dfr.C_tied"], tied["dfr.refits"]) == (1.0, "1 0.7 0.3", 20)
    assert pd.isna(runs.loc[run_name("ce", 0.997, 1), "dfr.C_tied"])  # no tuning record: none


# -- figures a reader can read ------------------------------------------------------------------
def _dot_summary(levels):
    rows = []
    for lab, sup in (("ce", "—"), ("dfr [V]", "V"), ("resample [B]", "B")):
        for lv in levels:
            for metric in ("unbiased", "worst-group"):
                rows.append(
                    {"label": lab, "supervision": sup, "rho": lv, "metric": metric, "n": 3,
                     "mean_pct": 50.0, "ci95_low_pct": 40.0, "ci95_high_pct": 60.0,
                     "published_rebias_vanilla_pct": 33.4 if lab == "ce" else math.nan}
                )  # fmt: skip
    return pd.DataFrame(rows)


@pytest.mark.parametrize("levels", [[0.99, 0.997], [0.997]])
def test_results_figure_rows_per_method_grouped_with_a_chance_line(levels):
    """Every method on its own labelled row under what it read; one dot per level; the chance
    line drawn even with a single rho; the published number on CE's row."""
    from debias.report import plots

    groups = {"ce": "no bias labels", "dfr [V]": "validation [V]", "resample [B]": "training [B]"}
    fig = plots.plot_accuracy_vs_bias(
        _dot_summary(levels), level="rho", metrics=["unbiased", "worst-group"], chance=10.0,
        groups=groups, published={0.997: 33.4},
    )  # fmt: skip
    ax = fig.axes[0]
    names = [t.get_text() for t in ax.get_yticklabels()]
    assert names[:3] == ["ce", "dfr [V]", "resample [B]"]
    assert set(names[3:]) == {"no bias labels:", "validation [V]:", "training [B]:"}
    for a in fig.axes[:2]:
        lines = [ln for ln in a.get_lines() if ln.get_label().startswith("chance")]
        assert len(lines) == 1 and lines[0].get_xdata()[0] == 10.0
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert [t for t in legend if t.startswith("rho")] == [f"rho = {lv:g}" for lv in levels]
    crosses = [ln for ln in ax.get_lines() if "published" in ln.get_label()]
    assert len(crosses) == 1 and list(crosses[0].get_xdata()) == [33.4]
    # The cross sits on CE's row (y between the row's edges).
    assert abs(crosses[0].get_ydata()[0] - dict(zip(names, ax.get_yticks()))["ce"]) < 0.31


def test_convergence_plots_the_contrastive_term_and_whole_epochs():
    """The pretrain panel shows train_contrastive, not train_loss (which adds the probe's
    cross-entropy), and one epoch gets one tick, not 0.96, 0.98, ... over each other."""
    from debias.report import plots

    h = pd.DataFrame(
        {"epoch": [1, 1], "stage": ["pretrain"] * 2, "train_loss": [7.0, 7.2],
         "train_contrastive": [5.0, 5.2], "probe/val/accuracy": [0.3, 0.4],
         "label": ["supcon"] * 2, "run": ["a", "b"]}
    )  # fmt: skip
    fig = plots.plot_convergence(h)
    ax = fig.axes[0]
    assert ax.get_ylabel() == "contrastive loss (pretrain)"
    ys = np.concatenate([ln.get_ydata() for ln in ax.get_lines() if len(ln.get_ydata())])
    assert np.allclose(ys[np.isfinite(ys)], 5.1)  # mean of the contrastive terms
    assert list(ax.get_xticks()) == [1.0]
    # Without the contrastive column the label says what it is.
    fig = plots.plot_convergence(h.drop(columns="train_contrastive"))
    assert fig.axes[0].get_ylabel() == "loss (pretrain)"


# -- damaged records, unlisted runs, a user's files, notes (issue 34) ---------------------------------
FIRST = run_name(*RUNS[0][:3])


def _first_done(sweep: Path) -> Path:
    return sweep / FIRST


@pytest.mark.parametrize(
    ("damage", "says"),
    [
        (lambda t: t[: len(t) // 2], "is not valid JSON"),
        (
            lambda t: json.dumps({k: v for k, v in json.loads(t).items() if k != "splits"}),
            "no 'splits'",
        ),
        (
            lambda t: json.dumps({k: v for k, v in json.loads(t).items() if k != "config"}),
            "no 'config'",
        ),
        (lambda t: "[1, 2]", "holds a list"),
    ],
)
def test_a_damaged_run_is_skipped_named_and_the_rest_reported(sweep, tmp_path, damage, says):
    bad = _first_done(sweep)
    (bad / "metrics.json").write_text(damage((bad / "metrics.json").read_text()))
    records = {r.run: r for r in results.find_runs(sweep)}
    assert records[FIRST].status == "damaged" and says in records[FIRST].error
    paths = make_report(sweep, tmp_path / "rep")
    text = paths["report"].read_text()
    assert "## Runs not included" in text
    row = next(ln for ln in text.splitlines() if ln.startswith(f"| {FIRST} |"))
    assert "damaged" in row and says in row
    assert f"{len(RUNS) - 1} finished run(s)" in text


def test_a_report_of_only_damaged_runs_says_so(sweep, tmp_path):
    for f in sweep.rglob("metrics.json"):
        f.write_text("{")
    with pytest.raises(ValueError, match="no finished run to report in .*damaged.*not valid JSON"):
        make_report(sweep, tmp_path / "rep")


def test_a_run_the_manifest_does_not_list_is_named_not_dropped(sweep, tmp_path):
    extra = sweep / "extra-utkface-run"
    write_run(extra, method="ce", rho=0.9, seed=0, unbiased=0.5, worst=0.1, conflicting=0.4,
              biased=0.9, dataset="utkface")  # fmt: skip
    text = make_report(sweep, tmp_path / "rep")["report"].read_text()
    row = next(ln for ln in text.splitlines() if ln.startswith("| extra-utkface-run |"))
    assert "not in sweep" in row and "sweep.json does not list it" in row


def test_a_corrupt_history_is_left_out_with_its_name(sweep):
    bad = _first_done(sweep) / "history.csv"
    bad.write_bytes(b'\x00\xff\n1,2\n"unclosed\n')
    with pytest.warns(UserWarning, match="history.csv"):
        results.load_history(sweep)


@pytest.mark.parametrize("name", ["report.md", "summary.csv", "accuracy_vs_bias.png"])
def test_report_never_overwrites_a_users_file(sweep, tmp_path, name):
    out = tmp_path / "mine"
    out.mkdir()
    (out / name).write_text("my own")
    with pytest.raises(RuntimeError, match=f"holds {name} that debias did not write"):
        make_report(sweep, out)
    assert (out / name).read_text() == "my own" and sorted(os.listdir(out)) == [name]
    make_report(sweep, tmp_path / "fresh")  # a report folder of its own is reused freely
    make_report(sweep, tmp_path / "fresh")


def test_notes_naming_a_missing_file_is_an_error(sweep, tmp_path):
    with pytest.raises(FileNotFoundError, match="--notes .*nope.md: no such file"):
        make_report(sweep, tmp_path / "rep", notes=Path(tmp_path / "nope.md"))
    with pytest.raises(FileNotFoundError, match="no such file"):
        make_report(sweep, tmp_path / "rep", notes="notes/missing.md")
    assert not (tmp_path / "rep").exists()
    text = make_report(sweep, tmp_path / "rep", notes="We learned *this*.")["report"].read_text()
    assert "We learned *this*." in text


def test_paired_tables_have_one_column_per_condition_when_claim_rows_carry_a_protocol():
    """The page of 2026-12-07 had one column per paired row: the ConTeX - SupCon rows carry
    their matched protocol (mode, views, method options), the rows against CE leave it unset,
    and NaN never equalled NaN, so every CE cell read '–'."""
    from debias.report.markdown import paired_markdown

    rows = []
    for rho in (0.997, 0.99):
        for method, baseline, mode in (("reweight", "ce", math.nan), ("lff", "ce", math.nan),
                                       ("contex", "supcon", "two-stage")):  # fmt: skip
            rows.append({"rho": rho, "method": method, "variant": "", "baseline": baseline,
                         "metric": "unbiased", "n": 3, "mean_diff_pp": rho * 10,
                         "ci95_low_pp": 1.0, "ci95_high_pp": 2.0, "p_value": 0.01, "wins": 3,
                         "method_mean_pct": 50.0, "baseline_mean_pct": 40.0, "recipe": math.nan,
                         "mode": mode, "method_options.linear_epochs": 2 if mode == mode else
                         math.nan, "supervision": "B", "p_holm": 0.02})  # fmt: skip
    md = "\n".join(paired_markdown(pd.DataFrame(rows), "rho"))
    headers = [line for line in md.splitlines() if line.startswith("| method |")]
    assert headers == ["| method | supervision | rho=0.997 | rho=0.99 |"] * 2
    assert "| reweight | B | +10.0 [+1.0, +2.0] p=0.010 (Holm 0.020), 3/3 | +9.9" in md
    # a recipe, where the sweep varies it, stays a column: it is the condition
    rows2 = [dict(r, recipe=rec) for r in rows if r["method"] == "contex"
             for rec in ("biascon", "fairkl")]  # fmt: skip
    md2 = "\n".join(paired_markdown(pd.DataFrame(rows2), "rho"))
    assert "| method | supervision | rho=0.997, recipe=biascon | rho=0.997, recipe=fairkl |" in md2
