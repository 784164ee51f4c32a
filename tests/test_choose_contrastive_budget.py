"""docs/experiments/choose_contrastive_budget.py: the budget rule on fixed synthetic histories."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

SCRIPT = (
    Path(__file__).resolve().parents[1] / "docs" / "experiments" / "choose_contrastive_budget.py"
)


@pytest.fixture(scope="module")
def cb():
    spec = importlib.util.spec_from_file_location("choose_contrastive_budget", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _curve(values):
    return pd.Series(values, index=range(1, len(values) + 1), dtype=float)


def test_a_loss_converges_where_its_last_quarter_gains_under_a_point_near_the_best(cb):
    # epochs 1..8: rising until 6, then flat within 0.5 point
    c = _curve([40, 60, 70, 78, 82, 85.0, 85.3, 85.5])
    # B=4: 78-70=8; B=5: 82-78 (start 5-2=3: 82-70=12); B=6: 85-78=7 (start 4); B=7: 85.3-82
    # (start 5) = 3.3; B=8: 85.5-85 (start 6) = 0.5 < 1 and within a point of the best
    assert cb.loss_budget(c) == (8, True)
    flat_early = _curve([50, 70, 80, 80.2, 80.4, 80.5, 80.6, 90, 90.2, 90.3, 90.4, 90.5])
    # 4-7 look flat but sit 10 points under the best: not converged there; B=10's quarter
    # starts at 7 (gain 9.7), B=11's at 8 (90.4 - 90 = 0.4)
    assert cb.loss_budget(flat_early) == (11, True)
    rising = _curve([10, 20, 30, 40, 50, 60])
    assert cb.loss_budget(rising) == (6, False)


def _history(tmp_recipe_curves):
    rows = []
    for (recipe, method, seed), values in tmp_recipe_curves.items():
        for e, v in enumerate(values, 1):
            rows.append({"run": f"recipe={recipe}/method={method}/seed={seed}", "recipe": recipe,
                         "method": method, "seed": seed, "epoch": e, "stage": "pretrain",
                         "readout/val/unbiased_accuracy": v / 100,
                         "readout/val/accuracy": v / 100,
                         "readout/val/worst_group_accuracy": v / 200})  # fmt: skip
        # a linear epoch after pretraining: no read-out, never read
        rows.append({"run": f"recipe={recipe}/method={method}/seed={seed}", "recipe": recipe,
                     "method": method, "seed": seed, "epoch": len(values) + 1,
                     "stage": "linear", "readout/val/unbiased_accuracy": np.nan,
                     "test/unbiased_accuracy": 0.99})  # fmt: skip
    return pd.DataFrame(rows)


def test_a_recipe_takes_the_largest_budget_of_its_losses_from_seed_means(cb, tmp_path):
    fast = [60, 80, 85, 85.2, 85.4, 85.5, 85.6, 85.6]  # converged at 4
    slow = [30, 50, 60, 70, 78, 83, 84.5, 85.0]  # 8: 85 - 83 = 2 ... not converged
    h = _history({
        ("supcontrast", "supcon", 0): fast, ("supcontrast", "supcon", 1): fast,
        ("supcontrast", "contex", 0): slow, ("supcontrast", "contex", 1): [v + 2 for v in slow],
        ("biascon", "supcon", 0): fast, ("biascon", "contex", 0): fast,
    })  # fmt: skip
    c = cb.curves(h)
    assert len(c) == 6 * 8 and "test/unbiased_accuracy" not in c  # no test column carried
    means = cb.mean_curves(c)
    con = means[(means["recipe"] == "supcontrast") & (means["method"] == "contex")]
    assert con["readout/val/unbiased_accuracy"].tolist() == pytest.approx([v + 1 for v in slow])
    b = cb.choose(means).set_index(["recipe", "method"])
    assert (b.loc[("supcontrast", "supcon"), "budget"], b.loc[("supcontrast", "supcon"),
            "converged"]) == (4, True)  # fmt: skip
    assert (b.loc[("supcontrast", "contex"), "budget"], b.loc[("supcontrast", "contex"),
            "converged"]) == (8, False)  # fmt: skip
    # the same budget for every loss of a recipe: the largest; not converged if one is not
    assert b.loc[("supcontrast", "recipe"), "budget"] == 8
    assert not b.loc[("supcontrast", "recipe"), "converged"]
    assert b.loc[("biascon", "recipe"), "budget"] == 4 and b.loc[("biascon", "recipe"), "converged"]
    assert b.loc[("biascon", "recipe"), "seeds"] == 1


def test_histories_without_the_readout_are_refused_with_the_fix(cb):
    h = pd.DataFrame({"run": ["a"], "recipe": ["biascon"], "method": ["contex"], "seed": [0],
                      "epoch": [1], "val/accuracy": [0.5]})  # fmt: skip
    with pytest.raises(ValueError, match="represent_every"):
        cb.curves(h)


def test_main_writes_the_choice_files(cb, tmp_path, monkeypatch):
    from debias import results

    h = _history({("fairkl", "supcon", 0): [50, 60, 70, 71, 71.2, 71.3, 71.4, 71.5]})
    monkeypatch.setattr(results, "load_history", lambda path: h)
    cb.main(["sweep-folder", "--out", str(tmp_path / "out")])
    choice = json.loads((tmp_path / "out" / "choice.json").read_text())
    # B=4: 71 - 70 = 1.0 is not < 1; B=5: 71.2 - 70; B=6: 71.3 - 71 = 0.3
    assert choice["budgets"] == {"fairkl": {"epochs": 6, "converged": True}}
    assert "no test split" in choice["rule"]
    for name in ("curves.csv", "curve_means.csv", "budgets.csv", "curves.png"):
        assert (tmp_path / "out" / name).stat().st_size > 0


def test_a_run_whose_read_out_was_skipped_is_refused_not_averaged_away(cb):
    h = _history({("biascon", "contex", 0): [50, 60, 70, 70.2, 70.3],
                  ("biascon", "contex", 1): [50, 60, 70, 70.2, 70.3]})  # fmt: skip
    one = h["run"].eq("recipe=biascon/method=contex/seed=1") & h["stage"].eq("pretrain")
    h.loc[one, "readout/val/unbiased_accuracy"] = np.nan
    h["readout/val/skipped"] = np.where(one, "a (target, bias) group ... has no image", None)
    with pytest.raises(ValueError, match="seed=1 has epochs without a read-out"):
        cb.curves(h)
    assert len(cb.curves(h[~one].drop(columns="readout/val/skipped"))) == 5


def test_an_unfinished_run_is_refused_not_read_as_a_short_curve(cb):
    h = _history({("fairkl", "contex", 0): [50, 60, 70, 70.2, 70.3, 70.4],
                  ("fairkl", "contex", 1): [50, 60, 70]})  # fmt: skip
    with pytest.raises(ValueError, match="seed=1 has read-outs up to epoch 3 of the longest"):
        cb.curves(h)
