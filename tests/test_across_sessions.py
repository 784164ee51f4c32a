"""A sweep finished over several sessions, each on a machine without the others' run folders
(docs/SWEEPS.md, "Across sessions"): the report joins this session's runs with an earlier
session's committed tables (``make_report(..., prior=)``), and ``debias sweep --done-in TABLE``
leaves out the runs the table lists as done (:mod:`debias.done_table`).

No training: the runs are ``metrics.json`` files in the layout ``debias train`` writes (the
fake sweep of ``test_results_report``), their options those of the sweep's own runs.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from test_results_report import (  # noqa: F401 (the fake sweep fixture)
    add_representation,
    mnist_groups,
    run_name,
    split_dict,
    sweep,
)

from debias.report import make_report, report_from_tables
from debias.sweep import SweepSpec, run_sweep

CSVS = ("summary.csv", "paired.csv", "representation.csv", "representation_paired.csv")


@pytest.fixture
def no_figures(monkeypatch):
    """Reports without their figures (what these tests check is in the tables), for speed."""
    monkeypatch.setattr("debias.report.report.make_figures", lambda data, out: {})


def session(sweep_dir: Path, dst: Path, keep) -> Path:
    """A sweep folder holding the runs of ``sweep_dir`` whose name ``keep`` accepts, as a
    session that ran only those leaves it (its manifest lists only them)."""
    manifest = json.loads((sweep_dir / "sweep.json").read_text())
    status = json.loads((sweep_dir / "sweep_status.json").read_text())["runs"]
    runs = [r for r in manifest["runs"] if keep(r["run"])]
    for r in runs:
        shutil.copytree(sweep_dir / r["run"], dst / r["run"])
    (dst / "sweep.json").write_text(json.dumps(manifest | {"runs": runs}))
    kept = [s for s in status if keep(s["run"])]
    (dst / "sweep_status.json").write_text(json.dumps({"runs": kept}))
    return dst


def test_two_sessions_give_the_report_of_one(sweep, tmp_path, monkeypatch):  # noqa: F811
    """Session 1 runs rho .997 and publishes its tables; session 2, on a fresh machine (session
    1's run folders gone), runs rho .99 and reports with the published tables as prior: the
    summary, paired tests and representation section are those of the sweep run in one go,
    nothing lost, nothing counted twice; the merged report rebuilds from its tables alone."""
    add_representation(sweep)
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "0")
    first = session(sweep, tmp_path / "s1", lambda run: run.startswith("rho=0.997"))
    second = session(sweep, tmp_path / "s2", lambda run: run.startswith("rho=0.99/"))
    pub = tmp_path / "docs" / "results" / "fake"
    with monkeypatch.context() as m:  # the figures of these two are not looked at
        m.setattr("debias.report.report.make_figures", lambda data, out: {})
        one = make_report(sweep, tmp_path / "one")
        make_report(first, pub)
    shutil.rmtree(first)
    said: list[str] = []
    paths = make_report(second, pub, prior=pub, log=said.append)  # the committed folder itself
    for name in CSVS:
        assert (pub / name).read_bytes() == (tmp_path / "one" / name).read_bytes(), name
    assert said == [f"report: 4 finished run(s) taken from {pub.as_posix()}/runs.csv; "
                    "0 finished both there and here (this session's kept)"]  # fmt: skip
    merged, whole = pd.read_csv(paths["runs"]), pd.read_csv(one["runs"])
    assert merged["run"].tolist() == whole["run"].tolist()  # each run once, the grid's order
    where = ["source", "out"]  # the folders the runs were read from differ, nothing else
    pd.testing.assert_frame_equal(
        merged.drop(columns=where), whole.drop(columns=where)[merged.columns.drop(where)]
    )
    assert set(merged["source"]) == {first.as_posix(), second.as_posix()}
    meta = json.loads(paths["tables"].read_text())
    assert meta["source"] == [second.as_posix()] and meta["prior"]["meta"]["source"] == [
        first.as_posix()
    ]
    text = paths["report"].read_text()
    assert "and the per-run table of an earlier session" in text and "6 finished" not in text
    assert "the 4 run(s) taken from" in text  # the convergence figure draws session 2's only
    before = text
    assert report_from_tables(pub)["report"].read_text() == before


def test_a_run_finished_in_both_sessions_is_this_sessions(sweep, tmp_path, no_figures):  # noqa: F811
    """A run done there and here is counted once, with this session's numbers; a run not
    finished here but done there is the table's."""
    pub = tmp_path / "pub"
    make_report(sweep, pub)
    again = session(sweep, tmp_path / "s2", lambda run: run.endswith("seed=0"))
    path = again / run_name("ce", 0.997, 0) / "metrics.json"
    m = json.loads(path.read_text())
    m["splits"]["test"]["unbiased_accuracy"] = 0.65  # rerun here: another number, same options
    path.write_text(json.dumps(m))
    said: list[str] = []
    runs = pd.read_csv(make_report(again, tmp_path / "rep", prior=pub, log=said.append)["runs"])
    assert (
        said[0].startswith("report: 2 finished run(s) taken from") and "3 finished both" in said[0]
    )
    assert len(runs) == 6 and runs["run"].is_unique
    by = runs.set_index("run")
    assert by.loc[run_name("ce", 0.997, 0), "test/unbiased_accuracy"] == 0.65
    assert by.loc[run_name("ce", 0.997, 1), "test/unbiased_accuracy"] == 0.70  # the table's
    assert by.loc[run_name("contex", 0.99, 0), "status"] == "failed"  # failed in both


def test_a_run_with_other_options_there_is_refused_in_one_line(
    sweep,  # noqa: F811
    tmp_path,
    no_figures,
):
    pub = tmp_path / "pub"
    make_report(sweep, pub)
    before = (pub / "runs.csv").read_bytes()
    path = sweep / run_name("contex", 0.997, 1) / "metrics.json"
    m = json.loads(path.read_text())
    m["config"]["lr"] = 0.5
    path.write_text(json.dumps(m))
    with pytest.raises(ValueError) as err:
        make_report(sweep, pub, prior=pub)
    message = str(err.value)
    assert "\n" not in message and run_name("contex", 0.997, 1) in message
    assert "lr: 0.001 there vs 0.5 here" in message
    assert (pub / "runs.csv").read_bytes() == before  # refused before anything was written
    # A grid changed since: the table's seed-1 runs are not in this sweep's grid any more.
    path.write_text(json.dumps(m | {"config": m["config"] | {"lr": 0.001}}))
    manifest = json.loads((sweep / "sweep.json").read_text())
    grid = {"rho": [0.997, 0.99], "method": ["ce", "contex"], "seed": [0]}
    spec = {"name": "fake", "base": {"dataset": "biased-mnist"}, "grid": grid}
    (sweep / "sweep.json").write_text(json.dumps(manifest | {"spec": spec}))
    with pytest.raises(ValueError, match=r"lists run rho=0.997/method=ce/seed=1 and 1 more of "
                       "sweep fake as done, which the sweep's grid does not have"):  # fmt: skip
        make_report(sweep, pub, prior=pub)
    assert (pub / "runs.csv").read_bytes() == before


# -- debias sweep --done-in ---------------------------------------------------------------------
GRID = {
    "name": "grid",
    "base": {"dataset": "biased-mnist", "model": "smallconvnet", "epochs": 2, "device": "cpu"},
    "grid": {"rho": [0.997, 0.99], "method": ["ce", "contex"], "seed": [0, 1]},
}


def published(tmp_path: Path) -> Path:
    """The report folder of a session that ran the grid's rho .997 runs: three finished, one
    (contex seed 1) failed. Their metrics.json hold the options the sweep gives them."""
    spec, s1 = SweepSpec.from_dict(GRID), tmp_path / "s1"
    runs = [r for r in spec.expand() if r.params["rho"] == 0.997]
    for r in runs:
        (s1 / r.name).mkdir(parents=True)
        if r.name == "rho=0.997/method=contex/seed=1":
            (s1 / r.name / "error.txt").write_text("FloatingPointError: non-finite loss nan\n")
            continue
        metrics = {
            "config": r.train_config(s1.resolve()).to_dict(),
            "selection": {"rule": "last", "epoch": 2, "stage": "train"},
            "splits": {"test": split_dict(acc=0.5, groups=mnist_groups(0.5))},
        }
        (s1 / r.name / "metrics.json").write_text(json.dumps(metrics))
    entries = [{"run": r.name, "params": r.params, "config": r.config} for r in runs]
    (s1 / "sweep.json").write_text(json.dumps({"name": "grid", "runs": entries}))
    make_report(s1, tmp_path / "pub")
    return tmp_path / "pub"


def test_done_in_leaves_out_exactly_the_finished_runs(tmp_path, capsys, no_figures):
    pub = published(tmp_path)
    said: list[str] = []
    run_sweep(GRID, out=tmp_path / "s2", done_in=pub, dry_run=True, log=said.append)
    done = sorted(line.split(":")[0] for line in said if ": done in " in line)
    assert done == [
        f"rho=0.997/method={m}/seed={s}" for m, s in (("ce", 0), ("ce", 1), ("contex", 0))
    ]
    to_run = [
        line.split(":")[0] for line in said if line.endswith("epochs 2") and ": run |" in line
    ]
    assert len(to_run) == 5 and "rho=0.997/method=contex/seed=1" in to_run  # failed there
    assert (
        said[-1]
        == f"dry run: 5 run(s) in {tmp_path / 's2'} and 3 done in {pub / 'runs.csv'}; nothing was started"
    )
    # The command line: --done-in with --only; every run left is done there, nothing starts.
    from debias.sweep.cli import register

    (tmp_path / "grid.yaml").write_text(json.dumps(GRID))
    parser = argparse.ArgumentParser(prog="debias")
    register(parser.add_subparsers(dest="command"))
    argv = ["sweep", str(tmp_path / "grid.yaml"), "--out", str(tmp_path / "s2"),
            "--done-in", str(pub / "runs.csv"), "--only", "rho=0.997", "--only", "seed=0"]  # fmt: skip
    args = parser.parse_args(argv)
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert (
        f"0 run(s) in {tmp_path / 's2'} and 2 done in {pub / 'runs.csv'} | 0 already finished | 0 to run"
        in out
    )
    assert json.loads((tmp_path / "s2" / "sweep.json").read_text())["runs"] == []


def test_done_in_refuses_a_run_done_there_with_other_options(tmp_path, no_figures):
    pub = published(tmp_path)
    with pytest.raises(ValueError) as err:
        run_sweep(GRID, out=tmp_path / "s2", done_in=pub, overrides={"lr": 0.01}, dry_run=True)
    message = str(err.value)
    assert "\n" not in message and "rho=0.997/method=ce/seed=0" in message
    assert "lr: 0.001 there vs 0.01 now" in message and "(and 2 more run(s))" in message
    assert not (tmp_path / "s2").exists()
    with pytest.raises(ValueError, match="represent_refits: 20 there vs 3 now"):
        # a runtime option, but the DFR numbers depend on it
        run_sweep(
            GRID, out=tmp_path / "s2", done_in=pub, overrides={"represent_refits": 3}, dry_run=True
        )
    with pytest.raises(ValueError, match="seed=1 of sweep grid as done, which the sweep's grid"):
        only_seed_0 = GRID | {"grid": GRID["grid"] | {"seed": [0]}}
        run_sweep(only_seed_0, out=tmp_path / "s2", done_in=pub, dry_run=True)
    with pytest.raises(FileNotFoundError, match="expected a report's runs.csv"):
        run_sweep(GRID, out=tmp_path / "s2", done_in=tmp_path / "nowhere", dry_run=True)
