"""Selection rules across the runs of a random search: which draw a method is reported at.

The epoch inside each run is chosen by the run's own rule (its ``select``; ``metrics.json``
holds that epoch's numbers). Across the draws of one method under one condition (the sweep's
grid point), a *rule* picks one draw, as SubpopBench does
(``subpopbench/learning/model_selection.py``: ``ValMeanAcc``, ``ValWorstAccAttributeYes``,
``OracleWorstAcc``); every output row names its rule:

=================  ==================================  ===========================================
rule               picks the draw with the best        reads
=================  ==================================  ===========================================
``val_accuracy``   validation accuracy                 no bias labels (SubpopBench ValMeanAcc)
``val_worst_group``  validation worst-group accuracy   validation bias labels (ValWorstAccAttributeYes)
``test_oracle``    test worst-group accuracy           the test split: an **oracle (upper bound)**,
                                                       never a method's result (OracleWorstAcc)
=================  ==================================  ===========================================

``best = argmax_k v_k`` over the draws ``k`` with a number (NaN is never picked); a tie goes to
the lowest draw index, so draw 0 (the defaults) wins a tie with a random draw.

Each rule reads one column of the frame, and :func:`select` hands the choice nothing else:
the rule's column, the grouping keys and the draw index (a rule cannot read what it is not
given; tests/test_search.py checks it on frames whose other columns are scrambled).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = [
    "ORACLE_LABEL",
    "RERUN_RULES",
    "RULES",
    "Rule",
    "complete",
    "group_keys",
    "search_frame",
    "select",
    "select_all",
]

ORACLE_LABEL = "oracle (upper bound)"
DRAW = "draw"
RUN = "run"


@dataclass(frozen=True)
class Rule:
    """A selection rule: the ``split/metric`` column it maximises and what that reads."""

    name: str
    column: str
    description: str
    reads: str
    oracle: bool = False

    @property
    def label(self) -> str:
        """How tables name the rule: ``test_oracle — oracle (upper bound)`` for the oracle."""
        return f"{self.name} — {ORACLE_LABEL}" if self.oracle else self.name

    @property
    def select(self) -> str:
        """The run-level ``select`` string with the same reads (for supervision marks)."""
        return self.column if self.column.startswith("val/") else "last"


RULES: dict[str, Rule] = {
    r.name: r
    for r in (
        Rule(
            "val_accuracy",
            "val/accuracy",
            "best validation accuracy",
            "no bias labels (SubpopBench ValMeanAcc)",
        ),
        Rule(
            "val_worst_group",
            "val/worst_group_accuracy",
            "best validation worst-group accuracy",
            "validation bias labels (SubpopBench ValWorstAccAttributeYes)",
        ),
        Rule(
            "test_oracle",
            "test/worst_group_accuracy",
            "best test worst-group accuracy",
            "test labels and test bias labels (SubpopBench OracleWorstAcc)",
            oracle=True,
        ),
    )
}
# The rules whose choice is re-run with fresh seeds and reported as a method's result.
RERUN_RULES = tuple(name for name, r in RULES.items() if not r.oracle)


def select(frame: pd.DataFrame, rule: str | Rule, keys: Sequence[str]) -> pd.DataFrame:
    """The best draw of every group of ``keys`` (e.g. the grid keys and ``method``) under
    ``rule``: one row per group with ``keys``, ``rule``, ``draw``, ``value`` (the rule's
    column at that draw) and ``run`` (where the frame names runs). Only ``keys``, ``draw`` and
    the rule's column are read; a group with no number in that column is left out."""
    rule = RULES[rule] if isinstance(rule, str) else rule
    if rule.column not in frame:
        raise ValueError(
            f"selection rule {rule.name}: the frame has no column {rule.column!r} "
            f"(columns: {sorted(frame.columns)})"
        )
    keys = list(keys)
    # The choice sees these columns and nothing else (the run's folder name, where the frame
    # has one, only passes through to say which run was chosen).
    ident = [RUN] if RUN in frame else []
    seen = frame[[*keys, DRAW, rule.column, *ident]].dropna(subset=[rule.column])
    ranked = seen.sort_values([rule.column, DRAW], ascending=[False, True], kind="stable")
    # The first row of each group in that order is its best; groups keep the frame's order.
    best = ranked.groupby(keys, sort=False, dropna=False).head(1).sort_index()
    out = best.rename(columns={rule.column: "value"}).assign(rule=rule.name)
    return out[[*keys, "rule", DRAW, "value", *ident]].reset_index(drop=True)


def select_all(
    frame: pd.DataFrame, keys: Sequence[str], rules: Sequence[str] = tuple(RULES)
) -> pd.DataFrame:
    """:func:`select` under each of ``rules``, one block of rows per rule (in that order)."""
    unknown = [r for r in rules if r not in RULES]
    if unknown:
        raise ValueError(f"unknown selection rule(s) {unknown}; expected names from {list(RULES)}")
    return pd.concat([select(frame, r, keys) for r in rules], ignore_index=True)


def _scalars(metrics: dict[str, Any]) -> dict[str, float]:
    """``{"split/metric": value}`` of a ``metrics.json``'s splits (group lists left out)."""
    out = {}
    for split, values in metrics.get("splits", {}).items():
        for metric, v in values.items():
            if not isinstance(v, (list, dict)):
                out[f"{split}/{metric}"] = float("nan") if v is None else float(v)
    return out


def search_frame(sweep_dir: str | Path, runs: Iterable[str] | None = None) -> pd.DataFrame:
    """One row per run of a search sweep (``sweep.json`` entries with a ``search`` record):
    ``run, phase, method, draw, seed`` (re-runs), the grid point's keys, ``defaults``,
    ``values`` (the drawn values, a JSON string), ``done``, ``supervision`` and a
    ``split/metric`` column per number of the run's ``metrics.json`` (NaN until it is done).

    ``runs``: only these folder names; default: the runs the manifest's own ``search`` block
    still asks for (a draw index or method dropped from the YAML since is left out)."""
    from debias.results import run_supervision_of

    root = Path(sweep_dir)
    manifest = json.loads((root / "sweep.json").read_text())
    search = manifest.get("spec", {}).get("search") or {}
    keep = None if runs is None else set(runs)
    rows = []
    for entry in manifest.get("runs", []):
        rec = entry.get("search")
        if not rec or (keep is not None and entry["run"] not in keep):
            continue
        if keep is None and not _asked_for(rec, search):
            continue
        f = root / entry["run"] / "metrics.json"
        m = json.loads(f.read_text()) if f.exists() else None
        rows.append(
            {"run": entry["run"], "phase": rec["phase"], "method": rec["method"],
             "draw": rec["draw"], "seed": rec.get("seed")}
            | dict(rec.get("point") or {})
            | {"defaults": rec.get("defaults", False),
               "values": json.dumps(rec.get("values", {}), sort_keys=True),
               "done": m is not None,
               "supervision": run_supervision_of(m, entry.get("config", {})) if m else None}
            | (_scalars(m) if m else {})
        )  # fmt: skip
    return pd.DataFrame(rows)


def _asked_for(record: dict[str, Any], search: dict[str, Any]) -> bool:
    return record["method"] in search.get("methods", [record["method"]]) and record[
        "draw"
    ] < search.get("draws", record["draw"] + 1)


def group_keys(frame: pd.DataFrame, manifest_grid: Iterable[str]) -> list[str]:
    """The columns a selection groups by: the grid's keys, then ``method``."""
    return [k for k in manifest_grid if k in frame and k != "method"] + ["method"]


def complete(frame: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """The draw rows of the groups whose every draw has finished (a rule picks among all of
    them, not among the ones that happened to end first)."""
    draws = frame[frame["phase"] == "draw"]
    if draws.empty:
        return draws
    ok = draws.groupby(list(keys), dropna=False)["done"].transform("all")
    return draws[ok.astype(bool)]
