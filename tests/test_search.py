"""Random search (issue 24): search spaces, seeded draws, the search: block, selection rules,
the search report, and a tiny end-to-end search sweep (draws, selection, re-runs, report).

The selection and report tests build a search sweep folder by hand (sweep.json and metrics.json
files with chosen numbers, no training), so they check values and run in a second; the one
end-to-end test trains on scikit-learn's digits (marked slow).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from debias.cli import main
from debias.methods import HParam, Method, register_method
from debias.space import Choice, LogUniform, Uniform, round_sig
from debias.sweep import SweepSpec, load_sweep, run_sweep
from debias.sweep.search import SearchSpec, draw_rng
from debias.sweep.selection import ORACLE_LABEL, RULES, select, select_all

REPO = Path(__file__).resolve().parents[1]
SEARCH = {"draws": 3, "seed": 0, "methods": ["ce", "lff", "jtt"], "options": ["lr", "weight_decay"]}
BASE = {"dataset": "digits", "rho": 0.9, "epochs": 1}


def spec_of(search: dict, **extra) -> SweepSpec:
    return SweepSpec.from_dict({"name": "s", "base": dict(BASE), "search": search, **extra})


# -- spaces and draws ---------------------------------------------------------------------------
def test_distributions_sample_in_range_and_floor_integers():
    rng = random.Random(0)
    lu = [LogUniform(1e-4, 1e-2).sample(rng) for _ in range(500)]
    assert min(lu) >= 1e-4 and max(lu) < 1e-2
    # log-uniform: about half the draws below the geometric mean 1e-3
    assert 0.4 < np.mean(np.array(lu) < 1e-3) < 0.6
    ints = [LogUniform(64, 2**6.75, integer=True).sample(rng) for _ in range(500)]
    assert all(isinstance(v, int) for v in ints) and min(ints) == 64 and max(ints) == 107
    u = [Uniform(0.05, 0.95).sample(rng) for _ in range(500)]
    assert min(u) >= 0.05 and max(u) < 0.95
    assert {Choice((1, 2, 3)).sample(rng) for _ in range(100)} == {1, 2, 3}
    assert round_sig(0.000371249) == 0.0003712 and round_sig(123456.0) == 123500.0


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (lambda: LogUniform(0, 1), "expected a number > 0"),
        (lambda: LogUniform(1e-2, 1e-4), "must be below high"),
        (lambda: Uniform(1, float("nan")), "expected a finite number"),
        (lambda: Choice(()), "non-empty tuple"),
    ],
)
def test_bad_distributions_are_errors(make, needle):
    with pytest.raises(ValueError, match=needle):
        make()


def test_same_seed_and_draw_give_the_same_values_fixed_here():
    a, b = spec_of(SEARCH).search, spec_of(dict(SEARCH)).search
    assert a.values("lff", 1) == b.values("lff", 1)
    # Fixed expected values: a change of the hash, the generator or the rounding fails here.
    assert a.values("ce", 1) == {"lr": 0.004555, "weight_decay": 4.831e-05}
    assert a.values("lff", 1) == {
        "lr": 0.0004626,
        "weight_decay": 6.26e-06,
        "method_options.q": 0.1818,
    }
    assert a.values("jtt", 2)["method_options.upweight"] == 1
    assert draw_rng(0, "ce", 1, "lr").random() == draw_rng(0, "ce", 1, "lr").random()
    assert a.values("ce", 0) == {}  # draw 0: the defaults
    assert a.values("ce", 1) != a.values("ce", 2)
    other = spec_of(SEARCH | {"seed": 1}).search
    assert other.values("ce", 1) != a.values("ce", 1)


def test_adding_an_option_leaves_the_others_values():
    only_lr = spec_of(SEARCH | {"options": ["lr"]}).search
    both = spec_of(SEARCH).search
    for draw in (1, 2):
        assert only_lr.values("ce", draw)["lr"] == both.values("ce", draw)["lr"]


def test_draw_runs_are_named_and_configured_from_their_values():
    runs = spec_of(SEARCH, grid={"rho": [0.9]}).expand()
    assert len(runs) == 3 * 3
    lff1 = next(r for r in runs if r.name == "rho=0.9/method=lff/draw=1")
    assert lff1.search["values"]["method_options.q"] == lff1.config["method_options"]["q"]
    assert lff1.config["lr"] == lff1.search["values"]["lr"] and lff1.search["point"] == {"rho": 0.9}
    ce0 = next(r for r in runs if r.name == "rho=0.9/method=ce/draw=0")
    assert ce0.search["defaults"] and "lr" not in ce0.config
    # --only method=... keeps some of the searched methods
    assert {r.config["method"] for r in spec_of(SEARCH).expand(only={"method": ["jtt"]})} == {"jtt"}
    # a sweep without search: no search record, nothing new in its dict
    plain = SweepSpec.from_dict({"name": "p", "base": dict(BASE), "grid": {"seed": [0, 1]}})
    assert all(r.search is None for r in plain.expand()) and "search" not in plain.to_dict()


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"options": ["lrr"]}, "unknown option(s) ['lrr'] (did you mean 'lr'?)"),
        ({"options": ["epochs"]}, "['epochs'] declare no search space"),
        ({"draws": 1}, "draws=1: expected an integer >= 2 (draw 0 is the defaults"),
        ({"methods": ["cee"]}, "unknown or no method(s) ['cee']"),
        ({"methods": ["ce"], "options": []}, "['ce'] would have nothing to draw"),
        ({"rerun": {"rules": ["test_oracle"]}}, "an upper bound, never re-run"),
        ({"rerun": {"seeds": [0, 1]}}, "include the draws' seed 0"),
        ({"bogus": 1}, "unknown key(s) ['bogus']"),
        ({"method_options": "yes"}, "method_options='yes': expected true or false"),
    ],
)
def test_search_block_errors_name_the_problem(change, needle):
    with pytest.raises(ValueError) as exc:
        spec_of(SEARCH | change)
    assert needle in str(exc.value)


@pytest.mark.parametrize(("key", "values"), [("method", ["ce"]), ("seed", [0, 1])])
def test_a_search_grid_varies_neither_method_nor_seed(key, values):
    with pytest.raises(ValueError, match=f"grid.{key} cannot be used with search"):
        spec_of(SEARCH, grid={key: values})


def test_a_method_space_is_checked_when_registered():
    class Bad(Method):
        name = "bad_space"
        hparams = {"w": HParam(1.0, "a weight", low=0, search=Uniform(-1.0, 1.0))}

        def loss(self, out, batch, stage):
            return {}

    with pytest.raises(ValueError, match=r"Bad.hparams\['w'\].search: .*expected a number >= 0"):
        register_method(Bad)
    Bad.hparams = {"w": HParam(1.0, "a weight", search=(0.0, 1.0))}
    with pytest.raises(TypeError, match="expected LogUniform, Uniform or Choice"):
        register_method(Bad)


def test_methods_lists_the_search_spaces_with_their_source(capsys):
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    assert "search: log-uniform on [0.001, 0.1)" in out and "L65: groupdro_eta" in out
    assert "search: uniform on [0.05, 0.95)" in out  # lff q
    assert "lr = 0.001: log-uniform on [0.0001, 0.01)" in out
    assert "weight_decay = 0.0001: log-uniform on [1e-06, 0.001)" in out


def test_shipped_search_sweep():
    spec = load_sweep(REPO / "sweeps" / "biased_mnist_cpu_search.yaml")
    runs = spec.expand()
    methods = ["ce", "reweight", "resample", "groupdro", "biasbal", "lff", "jtt", "dfr"]
    methods += ["supcon", "contex"]
    assert list(spec.search.methods) == methods and spec.search.draws == 8
    assert len(runs) == 80 and spec.search.rerun_seeds == (1, 2, 3)
    cfgs = [r.train_config("x") for r in runs]
    assert {(c.rho, c.model, c.select, c.seed, c.batch_size) for c in cfgs} == {
        (0.997, "lenet", "last", 0, 256)
    }
    assert {c.epochs for c in cfgs if c.method in ("supcon", "contex")} == {2}
    assert sum(r.search["defaults"] for r in runs) == 10


# -- selection rules ----------------------------------------------------------------------------
def draws_frame() -> pd.DataFrame:
    """Two methods x 4 draws; each rule has its own winner, bias and test columns disagree."""
    rows = []
    val_acc = {"ce": [0.90, 0.95, 0.80, 0.95], "lff": [0.5, 0.6, 0.7, np.nan]}
    val_wg = {"ce": [0.10, 0.00, 0.30, 0.20], "lff": [0.40, 0.10, 0.00, 0.50]}
    test_wg = {"ce": [0.05, 0.02, 0.25, 0.60], "lff": [0.30, 0.70, 0.10, 0.20]}
    for m in ("ce", "lff"):
        for d in range(4):
            rows.append(
                {"rho": 0.997, "method": m, "draw": d, "run": f"method={m}/draw={d}",
                 "val/accuracy": val_acc[m][d], "val/worst_group_accuracy": val_wg[m][d],
                 "val/unbiased_accuracy": val_wg[m][d] + 0.1, "test/worst_group_accuracy":
                 test_wg[m][d], "test/unbiased_accuracy": test_wg[m][d] + 0.2,
                 "supervision": "none"}
            )  # fmt: skip
    return pd.DataFrame(rows)


KEYS = ["rho", "method"]


def picks(frame: pd.DataFrame, rule: str) -> dict[str, int]:
    return dict(zip(*select(frame, rule, KEYS)[["method", "draw"]].T.values))


def test_each_rule_picks_its_best_draw_ties_to_the_lowest_and_never_nan():
    f = draws_frame()
    # ce: 0.95 at draws 1 and 3, the tie goes to draw 1; lff: draw 3 is NaN, never picked
    assert picks(f, "val_accuracy") == {"ce": 1, "lff": 2}
    assert picks(f, "val_worst_group") == {"ce": 2, "lff": 3}
    assert picks(f, "test_oracle") == {"ce": 3, "lff": 1}
    out = select_all(f, KEYS)
    assert list(out["rule"].unique()) == list(RULES) and len(out) == 6
    assert out.loc[out["rule"] == "val_accuracy", "value"].tolist() == [0.95, 0.7]
    assert out["run"].tolist()[0] == "method=ce/draw=1"


def test_val_accuracy_reads_no_bias_label_and_no_test_split():
    f = draws_frame()
    expected = select(f, "val_accuracy", KEYS)
    forbidden = [c for c in f.columns if c.startswith("test/") or "worst_group" in c]
    forbidden += ["val/unbiased_accuracy", "supervision"]
    rng = np.random.default_rng(0)
    shuffled = f.copy()
    for c in forbidden:
        shuffled[c] = rng.permutation(shuffled[c].to_numpy())
    blanked = f.assign(**{c: np.nan for c in forbidden})
    deleted = f.drop(columns=forbidden)
    for other in (shuffled, blanked, deleted):
        pd.testing.assert_frame_equal(select(other, "val_accuracy", KEYS), expected)
    # ...whereas the other rules do read their column
    assert picks(shuffled, "test_oracle") != picks(f, "test_oracle") or picks(
        shuffled, "val_worst_group"
    ) != picks(f, "val_worst_group")
    with pytest.raises(ValueError, match="no column 'val/worst_group_accuracy'"):
        select(deleted, "val_worst_group", KEYS)


# -- the report of a search sweep ---------------------------------------------------------------
SPLITS = ("val", "test", "test_biased", "test_conflicting")


def metrics_of(config: dict, val_acc: float, val_wg: float, test_wg: float, unb: float) -> dict:
    split = {"accuracy": val_acc, "worst_group_accuracy": val_wg, "unbiased_accuracy": unb}
    splits = {s: dict(split) for s in SPLITS}
    splits["test"] = {"accuracy": unb, "worst_group_accuracy": test_wg, "unbiased_accuracy": unb}
    return {"config": config, "selection": {"rule": "last", "description": "last epoch",
            "epoch": 1, "stage": "train"}, "splits": splits, "supervision": "none"}  # fmt: skip


# Per draw of ce: (val accuracy, val worst-group, test worst-group, test unbiased).
DRAWS = [(0.90, 0.10, 0.20, 0.30), (0.95, 0.00, 0.10, 0.25), (0.80, 0.30, 0.777, 0.50)]


def fake_search_sweep(root: Path, oracle_rerun: bool = False, methods=("ce",)) -> Path:
    """A finished search sweep of ``methods``, 3 draws each, the re-runs of draws 1
    (val_accuracy) and 2 (val_worst_group) with seeds 1, 2, 3, written without training. A
    method after the first has the same draws and, in its re-runs, ``5 + seed`` points more
    test unbiased accuracy than ce."""
    search = {"draws": 3, "seed": 0, "methods": list(methods), "options": ["lr"]}
    spec = SweepSpec.from_dict({"name": "fake", "base": dict(BASE), "search": search})
    draws = spec.expand()
    chosen = [{"rule": rule, "run": r.name} for r in draws
              for rule, d in (("val_accuracy", 1), ("val_worst_group", 2))
              if r.search["draw"] == d]  # fmt: skip
    reruns = spec.rerun_runs(draws, chosen)
    entries = []
    for r in draws + reruns:
        cfg = r.train_config(root / r.name).to_dict()
        d = r.search["draw"]
        v = DRAWS[d]
        if r.search["phase"] == "rerun":  # re-runs: seed-dependent numbers around the draw's
            s = r.search["seed"]
            v = (v[0], v[1], 0.1 * s, {1: 0.40, 2: 0.44, 3: 0.48}[s] + 0.1 * (d - 1))
            if r.params["method"] != methods[0]:
                v = (*v[:3], v[3] + 0.05 + 0.01 * s)
        (root / r.name).mkdir(parents=True)
        (root / r.name / "metrics.json").write_text(json.dumps(metrics_of(cfg, *v)))
        entries.append({"run": r.name, "params": r.params, "config": r.config, "search": r.search})
    manifest = {"name": "fake", "spec": spec.to_dict(), "runs": entries}
    (root / "sweep.json").write_text(json.dumps(manifest, default=str))
    return root


def test_search_report_values_and_the_oracle_is_always_labelled(tmp_path):
    root = fake_search_sweep(tmp_path / "sweep")
    assert main(["report", str(root), "--out", str(tmp_path / "rep")]) == 0
    md = (tmp_path / "rep" / "report.md").read_text()
    rows = {ln.split(" | ")[1]: ln for ln in md.splitlines() if ln.startswith("| ce |")}
    acc, wg = rows["val_accuracy"], rows["val_worst_group"]
    lr1 = spec_of({"draws": 3, "seed": 0, "methods": ["ce"], "options": ["lr"]}).search
    assert f"draw 1: lr={lr1.values('ce', 1)['lr']:g}" in acc and "1,2,3 (3)" in acc
    # unbiased over seeds 1-3 of draw 1: 40, 44, 48 -> 44.0 ± t(0.975, 2)·4/√3 = 9.9
    assert "| 44.0 ± 9.9 |" in acc and "| 54.0 ± 9.9 |" in wg
    # defaults − selected (phase 1): val accuracy 90 − 95 = −5.0, test unbiased 30 − 25 = +5.0
    assert acc.endswith("| -5.0 | +5.0 |") and wg.endswith("| -20.0 | -20.0 |")
    assert " — " in acc and "| V |" in wg  # val_worst_group reads validation bias labels
    # The oracle (draw 2, test worst-group 77.7) appears only on lines that carry its label.
    for line in md.splitlines():
        if "test_oracle" in line or "77.7" in line:
            assert ORACLE_LABEL in line, line
    assert any("77.7" in ln for ln in md.splitlines())
    sel = pd.read_csv(tmp_path / "rep" / "search_selection.csv")
    oracle = sel[sel["rule"] == "test_oracle"].iloc[0]
    assert oracle["draw"] == 2 and oracle["label"] == f"test_oracle — {ORACLE_LABEL}"
    assert (tmp_path / "rep" / "search_ranking.png").stat().st_size > 0
    # runs.csv: one row per run, draws and re-runs, with the numbers the rules chose from
    runs = pd.read_csv(tmp_path / "rep" / "runs.csv")
    manifest = json.loads((root / "sweep.json").read_text())
    assert runs["run"].is_unique and len(runs) == len(manifest["runs"])
    wanted = {"lr", "seed", "data_seed", "selection_rule", "val/accuracy", "test/unbiased_accuracy"}
    assert wanted <= set(runs)


def test_search_report_pairs_each_rules_reruns_with_ce_seed_by_seed(tmp_path):
    root = fake_search_sweep(tmp_path / "sweep", methods=("ce", "reweight"))
    assert main(["report", str(root), "--out", str(tmp_path / "rep")]) == 0
    md = (tmp_path / "rep" / "report.md").read_text()
    for rule, mark in (("val_accuracy", "—"), ("val_worst_group", "V")):
        part = md.split(f"## Paired comparisons of the re-runs under `{rule}`")[1].split("\n## ")[0]
        unbiased = part.split("### unbiased accuracy: method − ce")[1].split("###")[0]
        # per seed 6, 7, 8 points: mean 7.0, t(0.975, 2)·1/√3 = 2.48, t = 12.1 -> p = 0.007
        # (the fake runs record supervision none; val_worst_group reads validation bias labels);
        # the rule's family is one test here, so Holm leaves its p as it is
        cell = f"| reweight | {mark} | +7.0 [+4.5, +9.5] p=0.007 (Holm 0.007), 3/3 |"
        assert cell in unbiased, unbiased
    paired = pd.read_csv(tmp_path / "rep" / "search_paired.csv")
    assert set(paired["rule"]) == {"val_accuracy", "val_worst_group"}
    assert set(paired["method"]) == {"reweight"} and set(paired["baseline"]) == {"ce"}


# -- a real search sweep --------------------------------------------------------------------------
TINY = {"dataset": "digits", "rho": 0.9, "model": "smallconvnet", "epochs": 1, "max_steps": 2,
        "batch_size": 32, "device": "cpu", "represent": False}  # fmt: skip


@pytest.mark.slow
def test_search_sweep_draws_selects_reruns_and_reports(tmp_path):
    spec = {"name": "tiny", "base": TINY, "search": {"draws": 2, "seed": 0, "methods": ["ce"],
            "options": ["lr"], "rerun": {"seeds": [1, 2]}}}  # fmt: skip
    out = tmp_path / "sweep"
    result = run_sweep(spec, out=out, log=lambda m: None)
    assert result.ok
    names = [r["run"] for r in result.runs]
    assert names[:2] == ["method=ce/draw=0", "method=ce/draw=1"] and len(names) in (4, 6)
    manifest = json.loads((out / "sweep.json").read_text())
    by_name = {e["run"]: e for e in manifest["runs"]}
    assert by_name["method=ce/draw=1"]["search"]["values"] == SearchSpec.from_dict(
        spec["search"], "x"
    ).values("ce", 1)
    for name in names[2:]:
        m = json.loads((out / name / "metrics.json").read_text())
        draw = by_name[name]["search"]["draw"]
        drawn = json.loads((out / f"method=ce/draw={draw}" / "metrics.json").read_text())
        assert name.startswith(f"rerun/method=ce/draw={draw}/seed=")
        assert m["config"]["lr"] == drawn["config"]["lr"] and m["config"]["seed"] in (1, 2)
    again = run_sweep(spec, out=out, log=lambda m: None)  # resumable: nothing runs twice
    assert {r["status"] for r in again.runs} == {"skipped"} and len(again.runs) == len(names)
    assert main(["report", str(out), "--out", str(tmp_path / "rep")]) == 0
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "| ce | val_accuracy |" in md and f"| ce | test_oracle — {ORACLE_LABEL} |" in md
