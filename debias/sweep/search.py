"""Random search in a sweep: the ``search:`` block, its seeded draws, the re-run of the
selected ones (SubpopBench's ``sweep.py`` and then ``sweep.py --best_hp --n_trials 3``).

Schema (a top-level key beside ``base``, ``grid`` and ``methods``; see
:mod:`debias.sweep.config`)::

    search:
      draws: 8                      # runs per method and grid point: draw 0 at the defaults
                                    # (SubpopBench's hparams_seed 0), draws 1..7 random
      seed: 0                       # the search's seed
      methods: [ce, groupdro, lff]  # the methods searched (then the grid has no `method`)
      options: [lr, weight_decay]   # training options drawn for every method (`debias methods`
                                    # lists those with a space: lr, weight_decay, batch_size)
      method_options: true          # also draw each method's own hyper-parameters that declare
                                    # a space (groupdro step_size, lff q, jtt upweight); default true
      rerun:                        # phase 2 (optional; these are the defaults)
        seeds: [1, 2, 3]            # fresh seeds for the selected values
        rules: [val_accuracy, val_worst_group]   # rules whose choice is re-run (never test_oracle)

Phases of ``debias sweep`` on such a YAML, each a set of normal run folders (skipped when
finished, resumed when interrupted, run by the local workers or Ray like any sweep run):

1. **Draws**: ``<out>/<grid point>/method=<m>/draw=<k>`` for every grid point, method and
   draw ``k = 0..draws-1``, with the run's own seed (``base``'s ``seed``; the grid may not vary
   ``seed`` or ``method``). Options: ``base``, the grid point, ``methods[<m>]``, then the drawn
   values (they win: they are what is searched).
2. **Re-run**: once every draw of a (grid point, method) has finished, each rule of
   ``rerun.rules`` (:mod:`debias.sweep.selection`) picks a draw, and that draw's options run
   again with each of ``rerun.seeds``: ``<out>/rerun/<grid point>/method=<m>/draw=<k>/seed=<s>``
   (two rules that pick one draw share its re-runs). The seeds differ from the draws' seed: the
   draw's own seed would repeat its numbers, and with them the optimism of having been picked.

Draw values. Draw ``k > 0`` of method ``m`` gives option ``o`` (``lr``, or ``method_options.q``
for a method's own) the value ``space.sample(Random(h))`` of its declared space
(:mod:`debias.space`), with ``h`` the first 8 bytes (big-endian) of
``sha256(json.dumps([seed, m, k, o]))``: the same draw index gives the same values on any
machine and in any Python, and adding an option to ``options`` leaves the others' values as
they were (SubpopBench seeds each hparam from its name too, ``misc.seed_hash``). ``sweep.json``
records each run's ``search`` entry: phase, method, draw, grid point and the drawn values.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from debias._hints import did_you_mean, unknown_names
from debias.space import Distribution

__all__ = ["RERUN_DIR", "SEARCH_KEYS", "SearchSpec", "draw_rng"]

SEARCH_KEYS = ("draws", "seed", "methods", "options", "method_options", "rerun")
RERUN_KEYS = ("seeds", "rules")
RERUN_DIR = "rerun"
DEFAULT_RERUN_SEEDS = (1, 2, 3)
METHOD_OPTION = "method_options."


def draw_rng(seed: int, method: str, draw: int, option: str) -> random.Random:
    """The generator of one option's value in one draw (see the module docstring)."""
    key = json.dumps([int(seed), str(method), int(draw), str(option)])
    return random.Random(int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big"))


def _int(value: Any, what: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        why = " (draw 0 is the defaults, the others are random)" if what.endswith("draws") else ""
        raise ValueError(f"{what}={value!r}: expected an integer >= {low}{why}")
    return value


def _names(value: Any, what: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{what} must be a list of names, got {value!r}")
    if len(set(value)) < len(value):
        raise ValueError(f"{what} lists a name more than once: {value}")
    return tuple(value)


@dataclass(frozen=True)
class SearchSpec:
    """A parsed ``search:`` block (see the module docstring)."""

    draws: int
    seed: int
    methods: tuple[str, ...]
    options: tuple[str, ...] = ()
    method_options: bool = True
    rerun_seeds: tuple[int, ...] = DEFAULT_RERUN_SEEDS
    rerun_rules: tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, d: Any, where: str) -> SearchSpec:
        """Validate the block: keys, counts, methods, options with a declared space, rules."""
        from debias.methods import METHODS
        from debias.sweep.selection import RERUN_RULES, RULES

        where = f"{where}: search"
        if not isinstance(d, Mapping):
            raise ValueError(f"{where} must be a mapping with keys {list(SEARCH_KEYS)}, got {d!r}")
        unknown = sorted(set(d) - set(SEARCH_KEYS))
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {unknown}; expected {list(SEARCH_KEYS)}")
        for key in ("draws", "methods"):
            if key not in d:
                raise ValueError(f"{where} needs '{key}' (keys: {list(SEARCH_KEYS)})")
        # draw 0 is the defaults: fewer than 2 draws would search nothing.
        draws = _int(d["draws"], f"{where}.draws", 2)
        methods = _names(d["methods"], f"{where}.methods")
        bad = [m for m in methods if m not in METHODS]
        if bad or not methods:
            raise ValueError(
                f"{where}.methods: unknown or no method(s) {bad}; expected names from "
                f"{list(METHODS)}"
            )
        rerun = d.get("rerun") or {}
        if not isinstance(rerun, Mapping) or set(rerun) - set(RERUN_KEYS):
            raise ValueError(f"{where}.rerun must be a mapping with keys {list(RERUN_KEYS)}")
        seeds = rerun.get("seeds", list(DEFAULT_RERUN_SEEDS))
        if not isinstance(seeds, list) or not seeds or len(set(map(str, seeds))) < len(seeds):
            raise ValueError(f"{where}.rerun.seeds must be a non-empty list of seeds, got {seeds}")
        rules = _names(rerun.get("rules", list(RERUN_RULES)), f"{where}.rerun.rules")
        wrong = [r for r in rules if r not in RERUN_RULES]
        if wrong:
            oracle = [r for r in wrong if r in RULES]
            why = f" ({oracle}: an upper bound, never re-run as a result)" if oracle else ""
            raise ValueError(
                f"{where}.rerun.rules: {wrong} cannot be re-run{why}; expected names from "
                f"{list(RERUN_RULES)}"
            )
        spec = cls(
            draws=draws,
            seed=_int(d.get("seed", 0), f"{where}.seed", 0),
            methods=methods,
            options=_names(d.get("options", []), f"{where}.options"),
            method_options=_bool(d.get("method_options", True), f"{where}.method_options"),
            rerun_seeds=tuple(_int(s, f"{where}.rerun.seeds", 0) for s in seeds),
            rerun_rules=rules,
        )
        spec._check_options(where)
        return spec

    def _check_options(self, where: str) -> None:
        from debias.train.config import TrainConfig, search_spaces

        spaces = search_spaces()
        names = set(TrainConfig.__dataclass_fields__)
        unknown = [o for o in self.options if o not in names]
        if unknown:
            raise ValueError(f"{where}.options: " + unknown_names("option", unknown, spaces))
        bare = [o for o in self.options if o not in spaces]
        if bare:
            raise ValueError(
                f"{where}.options: {bare} declare no search space; options with one: "
                f"{sorted(spaces)} (`debias methods` lists them with their ranges)"
            )
        empty = [m for m in self.methods if not self.spaces(m)]
        if empty:
            raise ValueError(
                f"{where}: method(s) {empty} would have nothing to draw (no options, and no "
                f"hyper-parameter of theirs declares a space): add options, e.g. [lr]"
            )

    def to_dict(self) -> dict[str, Any]:
        return {
            "draws": self.draws,
            "seed": self.seed,
            "methods": list(self.methods),
            "options": list(self.options),
            "method_options": self.method_options,
            "rerun": {"seeds": list(self.rerun_seeds), "rules": list(self.rerun_rules)},
        }

    def spaces(self, method: str) -> dict[str, Distribution]:
        """``{option: space}`` drawn for ``method``: ``options``, then its own hyper-parameters
        with a space as ``method_options.<name>`` (when ``method_options``)."""
        from debias.methods import get_method
        from debias.train.config import search_spaces

        shared = search_spaces()
        out: dict[str, Distribution] = {o: shared[o] for o in self.options}
        if self.method_options:
            for name, hp in get_method(method).hparams.items():
                if hp.search is not None:
                    out[METHOD_OPTION + name] = hp.search
        return out

    def values(self, method: str, draw: int) -> dict[str, Any]:
        """The drawn values of ``draw`` (``{}`` for draw 0: the defaults)."""
        if draw == 0:
            return {}
        return {
            o: space.sample(draw_rng(self.seed, method, draw, o))
            for o, space in self.spaces(method).items()
        }

    def narrowed_methods(self, only: Mapping[str, list[Any]] | None) -> tuple[dict, list[str]]:
        """``--only method=a,b`` keeps some of the searched methods; the rest of ``only`` is
        for the grid. Returns ``(rest of only, methods)``."""
        rest = dict(only or {})
        chosen = rest.pop("method", None)
        if chosen is None:
            return rest, list(self.methods)
        missing = [m for m in chosen if m not in self.methods]
        if missing:
            raise ValueError(
                f"--only method={chosen}: {missing} not among the searched methods "
                f"{list(self.methods)}{did_you_mean(missing[0], self.methods)}"
            )
        return rest, [m for m in self.methods if m in chosen]


def _bool(value: Any, what: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{what}={value!r}: expected true or false")
    return value


def apply_values(cfg: dict[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """``cfg`` with drawn ``values`` set (``method_options.<name>`` merged into that dict)."""
    out = dict(cfg)
    for key, value in values.items():
        if key.startswith(METHOD_OPTION):
            out["method_options"] = {
                **(out.get("method_options") or {}),
                key[len(METHOD_OPTION) :]: value,
            }
        else:
            out[key] = value
    return out


def check_grid(search: SearchSpec, grid: Mapping[str, Any], base: Mapping[str, Any], where: str):
    """A search sweep's grid varies neither the method nor the seed, nor a drawn option; the
    re-run seeds differ from the draws' seed."""
    fixed = [k for k in ("method", "seed") if k in grid]
    if fixed:
        raise ValueError(
            f"{where}: grid.{fixed[0]} cannot be used with search: the methods are "
            "search.methods, the draws run with base's seed and the re-runs with "
            "search.rerun.seeds"
        )
    drawn = sorted(set(search.options) & set(grid))
    if drawn:
        raise ValueError(f"{where}: {drawn} are both drawn (search.options) and set by the grid")
    seed = base.get("seed", 0)
    if seed in search.rerun_seeds:
        raise ValueError(
            f"{where}: search.rerun.seeds {list(search.rerun_seeds)} include the draws' seed "
            f"{seed}: that re-run would repeat its draw's numbers; use other seeds"
        )


def draw_points(
    search: SearchSpec,
    points: Sequence[dict[str, Any]],
    base: dict[str, Any],
    overrides: Mapping[str, dict[str, Any]],
    methods: Sequence[str],
) -> list[tuple[dict[str, Any], dict[str, Any], dict[str, Any]]]:
    """Phase 1: ``(params, options, search record)`` of every grid point x method x draw.

    ``points``: the grid's points (dicts of grid values); ``overrides``: the sweep's
    ``methods`` block."""
    from debias.sweep.merge import merge_options as _merge

    out = []
    for point in points:
        for method in methods:
            cfg = _merge(_merge(_merge(base, point), {"method": method}), overrides.get(method, {}))
            for draw in range(search.draws):
                values = search.values(method, draw)
                record = {"phase": "draw", "method": method, "draw": draw, "point": point}
                out.append(
                    (
                        {**point, "method": method, "draw": draw},
                        apply_values(cfg, values),
                        record | {"values": values, "defaults": draw == 0},
                    )
                )
    return out


def rerun_points(
    search: SearchSpec, draws: Mapping[str, Any], chosen: Sequence[Mapping[str, Any]]
) -> list[tuple[dict[str, Any], dict[str, Any], dict[str, Any]]]:
    """Phase 2: ``(params, options, search record)`` of each re-run seed of each chosen draw.

    ``draws``: phase 1's runs by folder name (:class:`~debias.sweep.config.RunSpec`);
    ``chosen``: :func:`debias.sweep.selection.select` rows (with ``run``) of the rules in
    ``search.rerun_rules``. A draw picked by several rules is re-run once."""
    out, seen = [], set()
    for row in chosen:
        if row["rule"] not in search.rerun_rules or row["run"] in seen:
            continue
        seen.add(row["run"])
        run = draws[row["run"]]
        for seed in search.rerun_seeds:
            record = {**run.search, "phase": RERUN_DIR, "seed": seed}
            out.append(({**run.params, "seed": seed}, {**run.config, "seed": seed}, record))
    return out
