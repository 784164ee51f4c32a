"""Sweep specification: a YAML grid over training options, expanded into named runs.

Schema (every key but ``grid``/``base`` is optional)::

    name: biased_mnist_quick            # default: the YAML file's stem
    description: free text shown in the report
    out: runs/sweeps/biased_mnist_quick # default runs/sweeps/<name>; relative to the current
                                        # directory (like `debias train --out`); --out overrides
    base:                               # TrainConfig options shared by every run
      dataset: biased-mnist
      model: smallconvnet
      epochs: 4
    grid:                               # cartesian product, in this key order
      rho: [0.999, 0.997, 0.995, 0.99]
      method: [ce, supcon, contex]
      seed: [0, 1, 2]
    recipes:                            # per-recipe overrides (a run's recipe: grid or base),
      supcontrast: {epochs: 8}          # applied after the grid point, before methods
    methods:                            # per-method overrides, applied last (they win over grid)
      ce: {mode: ce}
      contex: {temperature: 0.1}
    search:                             # optional: a random search instead of a method grid
      draws: 8                          # (schema and folders: debias.sweep.search)
      methods: [ce, lff]
      options: [lr, weight_decay]
    slurm:                              # optional: --backend slurm options (partition, time,
      partition: gpu                    # mem, gpus, max_parallel, runs_per_task, ...; see
      time: "04:00:00"                  # debias.sweep.slurm_options)
    data_draw: seed                     # optional: seed | fixed (the default; see below)

Rules:

* Every key of ``base``, ``grid``, ``recipes.<r>`` and ``methods.<m>`` must be a :class:`TrainConfig` field
  (``debias train --help`` lists them with ``-`` for ``_``); ``out`` is set by the sweep. Unknown
  keys are an error that names them, raised before any run starts; every expanded run is also
  validated by ``TrainConfig`` first, and all problems are reported together.
* ``grid`` values are non-empty lists without repeats (a list-valued option such as
  ``lr_milestones`` is a list of lists); a value listed twice (``seed: [0, 0]``, or
  ``rho: [0.997, 0.9970]``, one float) is an error. ``base``, ``recipes`` and ``methods`` values
  are literal; ``recipes`` names published recipes (``debias recipes``).
* ``debias sweep --set KEY=VALUE`` overrides ``base``; on a grid key it narrows the grid to that
  one value, which must be one of the grid's values (else an error: a typo would start runs the
  YAML never declared). ``--only KEY=V1,V2`` (repeatable) keeps some values of a grid key. Run
  folders keep their names, so a narrowed pass and a full one share finished runs.
* A run's options are ``base``, then its grid point, then ``recipes[<its recipe>]`` (what a
  recipe needs in this sweep beyond its published values, e.g. the CPU budget chosen for it),
  then ``methods[<its method>]``; dict-valued options (``loss_options``) are merged key by key
  instead of replaced.
* Each run lives in ``<out>/<k1>=<v1>/<k2>=<v2>/...`` with one level per grid key, in grid
  order, using the run's *final* value (so with ``methods: {ce: {mode: ce}}`` and a ``mode`` grid,
  CE runs are named ``mode=ce``; grid points that end up as the same run are run once). Values
  are written filesystem-safe: floats in shortest round-trip form (``0.997``, ``1e-05``),
  ``true``/``false``/``none``, lists joined by ``-``, any other character than
  ``[A-Za-z0-9._+-]`` replaced by ``_``. A grid with no keys gives one run named ``run``.
* ``data_draw`` says whether a run's seed also draws its data (PROTOCOLS §1, "Seeds and the
  data draw"). ``seed``: each run's ``data_seed`` is set to its ``seed`` (the colouring of
  Biased-MNIST, which images are held out for validation, the faces' subsamples), so the
  seeds of a condition differ in the data too and its interval covers which images are the
  minority; runs of one seed still share their data, so paired comparisons stay paired.
  ``base``, ``grid``, ``recipes`` and ``methods`` may then not set ``data_seed`` (an error). ``fixed``
  (the default, the sweeps of 2026-12-04 and before): every run uses ``base``'s
  ``data_seed`` (default 0), whatever its seed. Either way each run records its
  ``data_seed`` in its config, and the sweep's ``sweep.json`` the rule.
* With ``search`` (:mod:`debias.sweep.search`) the runs are each grid point x searched method
  x draw, ``<grid point>/method=<m>/draw=<k>``, then the re-runs of the selected draws under
  ``rerun/``; the grid may then vary neither ``method`` nor ``seed``. A sweep without
  ``search`` expands exactly as described above.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from debias._hints import did_you_mean, unknown_names
from debias.sweep.merge import merge_options as _merge
from debias.sweep.slurm_options import SlurmOptions
from debias.train.config import METHODS, TrainConfig, option_names, ungrouped

if TYPE_CHECKING:
    from debias.sweep.search import SearchSpec

__all__ = [
    "DATA_DRAWS",
    "SWEEP_KEYS",
    "RunSpec",
    "SweepSpec",
    "load_sweep",
    "run_dir_name",
    "format_value",
]

SWEEP_KEYS = (
    "name",
    "description",
    "out",
    "base",
    "grid",
    "recipes",
    "methods",
    "search",
    "slurm",
    "data_draw",
)
# How a run's data_seed follows from the sweep (the module docstring's data_draw).
DATA_DRAWS = ("fixed", "seed")
# Set per run by the sweep itself; a value in the YAML would be silently wrong.
_RESERVED = ("out",)
_SAFE = re.compile(r"[^A-Za-z0-9._+\-]")


def format_value(value: Any) -> str:
    """A grid value as a filesystem-safe path component (see the module docstring)."""
    if value is None:
        text = "none"
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, float):
        text = repr(value)
    elif isinstance(value, Mapping):
        text = "_".join(f"{k}-{format_value(v)}" for k, v in sorted(value.items())) or "empty"
    elif isinstance(value, (list, tuple)):
        text = "-".join(format_value(v) for v in value) or "empty"
    else:
        text = str(value)
    text = _SAFE.sub("_", text)
    # "." and ".." would walk the tree instead of naming a folder.
    return text if text.strip(".") else text.replace(".", "_")


def run_dir_name(params: Mapping[str, Any]) -> str:
    """``{"rho": 0.997, "method": "ce"}`` -> ``"rho=0.997/method=ce"`` (``"run"`` if empty)."""
    if not params:
        return "run"
    return "/".join(f"{_SAFE.sub('_', k)}={format_value(v)}" for k, v in params.items())


@dataclass(frozen=True)
class RunSpec:
    """One expanded run: its folder name (relative to the sweep's out), grid values, options."""

    name: str
    params: dict[str, Any]
    config: dict[str, Any]
    search: dict[str, Any] | None = None  # a search sweep's record (debias.sweep.search)

    def train_config(self, out: str | Path) -> TrainConfig:
        """The run's :class:`TrainConfig` with ``out`` set to ``<sweep out>/<name>``."""
        return TrainConfig.from_dict({**self.config, "out": str(Path(out) / self.name)})


@dataclass
class SweepSpec:
    """A parsed sweep YAML (see the module docstring for the schema)."""

    name: str
    grid: dict[str, list[Any]] = field(default_factory=dict)
    base: dict[str, Any] = field(default_factory=dict)
    methods: dict[str, dict[str, Any]] = field(default_factory=dict)
    recipes: dict[str, dict[str, Any]] = field(default_factory=dict)
    out: str | None = None
    description: str = ""
    source: str | None = None
    search: SearchSpec | None = None
    slurm: dict[str, Any] = field(default_factory=dict)  # checked by SlurmOptions
    data_draw: str = "fixed"

    # -- construction ----------------------------------------------------------------------------
    @classmethod
    def from_dict(
        cls, d: Mapping[str, Any], *, name: str | None = None, source: str | None = None
    ) -> SweepSpec:
        """Validate the schema (not yet the expanded runs: see :meth:`expand`)."""
        if not isinstance(d, Mapping):
            raise ValueError(
                f"a sweep config must be a mapping with keys {list(SWEEP_KEYS)}; "
                f"got {type(d).__name__}"
            )
        where = f"sweep {source}" if source else "sweep config"
        unknown = sorted(set(d) - set(SWEEP_KEYS))
        if unknown:
            raise ValueError(
                f"{where}: unknown top-level key(s) {unknown}; expected {list(SWEEP_KEYS)}"
            )
        base = _mapping(d.get("base"), f"{where}: 'base'")
        try:  # a base may be written in option groups (data:, method:, optim:, ...)
            base = ungrouped(base)
        except ValueError as exc:
            raise ValueError(f"{where}: base: {exc}") from None
        grid = _mapping(d.get("grid"), f"{where}: 'grid'")
        methods = _mapping(d.get("methods"), f"{where}: 'methods'")
        _check_keys(base, f"{where}: base")
        _check_keys(grid, f"{where}: grid")
        for key, values in grid.items():
            if not isinstance(values, list) or not values:
                raise ValueError(
                    f"{where}: grid.{key} must be a non-empty list of values, got {values!r} "
                    f"(write [{values!r}] for a single value)"
                )
            _check_no_repeats(values, f"{where}: grid.{key}")
        bad = sorted(m for m in methods if m not in METHODS)
        if bad:
            raise ValueError(
                f"{where}: methods has unknown method(s) {bad}; expected names from {list(METHODS)}"
            )
        for m, over in methods.items():
            _check_keys(_mapping(over, f"{where}: methods.{m}"), f"{where}: methods.{m}")
        recipes = _recipe_overrides(d.get("recipes"), where)
        sweep_name = d.get("name") or name
        if not sweep_name:
            raise ValueError(f"{where}: needs a 'name'")
        search = None
        if d.get("search") is not None:
            from debias.sweep.search import SearchSpec, check_grid

            search = SearchSpec.from_dict(d["search"], where)
            check_grid(search, grid, base, where)
            if recipes:
                raise ValueError(
                    f"{where}: recipes (per-recipe overrides) apply to grid sweeps; a search "
                    "sweep draws its options: set the recipe's in base"
                )
        SlurmOptions.from_dict(d.get("slurm"), f"{where}: slurm")  # checked now, used on submit
        blocks = {"recipes": recipes, "methods": methods}
        data_draw = _data_draw(d.get("data_draw", "fixed"), base, grid, blocks, where)
        return cls(
            name=str(sweep_name),
            grid={k: list(v) for k, v in grid.items()},
            base=dict(base),
            methods={m: dict(o or {}) for m, o in methods.items()},
            recipes=recipes,
            out=None if d.get("out") is None else str(d["out"]),
            description=str(d.get("description") or ""),
            source=source,
            search=search,
            slurm=dict(d.get("slurm") or {}),
            data_draw=data_draw,
        )

    @classmethod
    def load(cls, path: str | Path) -> SweepSpec:
        """Read a sweep YAML file (or a ``.json`` with the same schema)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"sweep config {path} does not exist (expected a YAML file)")
        import yaml

        from debias._load import load_mapping, read_text

        text = read_text(path, "sweep config")
        kind = "JSON" if path.suffix == ".json" else "YAML"
        try:
            data = load_mapping(text, json_text=path.suffix == ".json")
        except (ValueError, yaml.YAMLError) as exc:
            first = " ".join(str(exc).split())
            raise ValueError(f"sweep config {path} is not valid {kind}: {first}") from None
        if data is None:
            raise ValueError(
                f"sweep config {path} is empty; expected a mapping with 'base' and 'grid' "
                f"(keys {list(SWEEP_KEYS)})"
            )
        return cls.from_dict(data, name=path.stem, source=str(path))

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name}
        if self.description:
            d["description"] = self.description
        if self.out is not None:
            d["out"] = self.out
        d |= {"base": self.base, "grid": self.grid}
        if self.recipes:
            d["recipes"] = self.recipes
        if self.methods:
            d["methods"] = self.methods
        if self.search is not None:
            d["search"] = self.search.to_dict()
        if self.slurm:
            d["slurm"] = self.slurm
        if self.data_draw != "fixed":
            d["data_draw"] = self.data_draw
        return d

    @property
    def default_out(self) -> Path:
        return Path(self.out) if self.out is not None else Path("runs") / "sweeps" / self.name

    # -- expansion ---------------------------------------------------------------------------------
    def narrowed(
        self,
        overrides: Mapping[str, Any] | None = None,
        only: Mapping[str, list[Any]] | None = None,
    ) -> tuple[dict[str, list[Any]], dict[str, Any]]:
        """``(grid, base overrides)`` after ``--set``/``--only``: a grid key given with ``--set``
        keeps only that value and ``--only`` keeps the listed values (in grid order); a value
        that is not in the grid is an error (a typo would otherwise start runs nobody
        declared; add the value to the YAML to run it). Other ``--set`` keys override ``base``."""
        grid = {k: list(v) for k, v in self.grid.items()}
        rest: dict[str, Any] = {}
        for key, value in (overrides or {}).items():
            if key in grid:
                grid[key] = _pick(grid[key], [value], f"--set {key}={value!r}")
            else:
                rest[key] = value
        for key, values in (only or {}).items():
            if key not in grid:
                raise ValueError(
                    f"--only {key}: not a grid key of this sweep{did_you_mean(key, grid)}; "
                    f"grid keys: {list(grid)}"
                )
            grid[key] = _pick(grid[key], list(values), f"--only {key}={values!r}")
        return grid, rest

    def expand(
        self,
        *,
        overrides: Mapping[str, Any] | None = None,
        only: Mapping[str, list[Any]] | None = None,
    ) -> list[RunSpec]:
        """All runs in grid order, each validated by :class:`TrainConfig`; for a search sweep,
        the runs of its draws (phase 1, :mod:`debias.sweep.search`).

        ``overrides`` replace ``base`` options (``debias sweep --set key=value``), or narrow the
        grid to one value for a grid key; ``only`` narrows grid keys to some of their values
        (``--only key=v1,v2``; on a search sweep ``--only method=...`` keeps some of the
        searched methods); see :meth:`narrowed`. Raises ValueError listing every invalid run,
        or two different runs that map to one folder.
        """
        if overrides:
            _check_keys(dict(overrides), "--set")
            if self.data_draw == "seed" and "data_seed" in overrides:
                raise ValueError(
                    "--set data_seed: this sweep's data_draw is seed (each run's data_seed is "
                    "its seed); vary the seeds instead, or use a sweep with data_draw: fixed"
                )
        methods = None
        if self.search is not None:
            only, methods = self.search.narrowed_methods(only)
        grid, overrides = self.narrowed(overrides, only)
        base = _merge(dict(self.base), overrides)
        points = [dict(zip(grid, p)) for p in itertools.product(*grid.values())]
        if self.search is None:
            triples = [self._grid_run(base, point) for point in points]
            return self._validated(triples, narrowed=grid != self.grid)
        from debias.sweep.search import draw_points

        triples = draw_points(self.search, points, base, self.methods, methods)
        return self._validated(
            triples, narrowed=grid != self.grid or tuple(methods) != self.search.methods
        )

    def rerun_runs(self, draws: list[RunSpec], chosen: list[dict[str, Any]]) -> list[RunSpec]:
        """A search sweep's phase 2: the re-run seeds of the draws ``chosen`` by its rerun
        rules (:func:`debias.sweep.search.rerun_points`), named ``rerun/<draw>/seed=<s>``."""
        from debias.sweep.search import RERUN_DIR, rerun_points

        triples = rerun_points(self.search, {r.name: r for r in draws}, chosen)
        return self._validated(triples, narrowed=True, prefix=f"{RERUN_DIR}/")

    def _grid_run(
        self, base: dict[str, Any], point: dict[str, Any]
    ) -> tuple[dict[str, Any], dict[str, Any], None]:
        """``(params, options, None)`` of one grid point: base, the point, its recipe's and
        then its method's overrides; ``params`` are the grid keys' final values."""
        cfg = _merge(base, point)
        cfg = _merge(cfg, self.recipes.get(cfg.get("recipe"), {}))
        cfg = _merge(cfg, self.methods.get(cfg.get("method", TrainConfig.method), {}))
        return {k: cfg[k] for k in point}, cfg, None

    def _validated(
        self, triples: list[tuple[dict, dict, dict | None]], *, narrowed: bool, prefix: str = ""
    ) -> list[RunSpec]:
        """:class:`RunSpec` of every ``(params, options, search record)``, each validated by
        :class:`TrainConfig`; every problem raised together."""
        used_methods: set[str] = set()
        used_recipes: set[str] = set()
        runs: dict[str, RunSpec] = {}
        errors: list[str] = []
        for params, cfg, record in triples:
            if self.data_draw == "seed":
                cfg = {**cfg, "data_seed": cfg.get("seed", TrainConfig.seed)}
            used_methods.add(cfg.get("method", TrainConfig.method))
            used_recipes.add(cfg.get("recipe"))
            name = prefix + run_dir_name(params)
            try:
                TrainConfig.from_dict({**cfg, "out": name})
            except (ValueError, TypeError) as exc:
                errors.append(f"  {name}: {exc}")
                continue
            if name in runs:
                if runs[name].config != cfg:
                    errors.append(
                        f"  {name}: two different runs map to this folder name "
                        f"({runs[name].config} vs {cfg})"
                    )
                continue
            runs[name] = RunSpec(name=name, params=params, config=cfg, search=record)
        unused = sorted(set(self.methods) - used_methods)
        if unused and not narrowed:  # a narrowed grid may leave some overrides unused
            errors.append(
                f"  methods: overrides for {unused}, which no run uses (methods in "
                f"this sweep: {sorted(used_methods)})"
            )
        unused = sorted(set(self.recipes) - used_recipes)
        if unused and not narrowed:
            errors.append(
                f"  recipes: overrides for {unused}, which no run uses (recipes in this "
                f"sweep: {sorted(r for r in used_recipes if r is not None)})"
            )
        if errors:
            where = f"sweep {self.source or self.name}"
            raise ValueError(
                f"{where}: {len(errors)} invalid run(s); nothing was started:\n" + "\n".join(errors)
            )
        return list(runs.values())


def _data_draw(value: Any, base: dict, grid: dict, blocks: dict, where: str) -> str:
    """The sweep's ``data_draw`` (module docstring), checked: one of :data:`DATA_DRAWS`, and
    with ``seed`` no ``data_seed`` of its own anywhere (it would be silently replaced)."""
    if value not in DATA_DRAWS:
        raise ValueError(f"{where}: data_draw must be one of {list(DATA_DRAWS)}; got {value!r}")
    if value == "seed":
        setting = [w for w, d in (("base", base), ("grid", grid)) if "data_seed" in d]
        setting += [
            f"{block}.{k}"
            for block, overrides in blocks.items()
            for k, o in overrides.items()
            if "data_seed" in (o or {})
        ]
        if setting:
            raise ValueError(
                f"{where}: data_draw: seed sets each run's data_seed to its seed, but "
                f"{', '.join(setting)} also set(s) data_seed: remove one of the two"
            )
    return str(value)


def _recipe_overrides(value: Any, where: str) -> dict[str, dict[str, Any]]:
    """The YAML's ``recipes`` block, checked: published recipe names, training options."""
    from debias.recipes import RECIPES

    recipes = _mapping(value, f"{where}: 'recipes'")
    bad = sorted(r for r in recipes if r not in RECIPES)
    if bad:
        raise ValueError(
            f"{where}: recipes has unknown recipe(s) {bad}; expected names from "
            f"{sorted(RECIPES)} (`debias recipes`)"
        )
    for r, over in recipes.items():
        _check_keys(_mapping(over, f"{where}: recipes.{r}"), f"{where}: recipes.{r}")
    return {r: dict(o or {}) for r, o in recipes.items()}


def _mapping(value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError(f"{what} must be a mapping of option: value, got {value!r}")
    return dict(value)


def _check_no_repeats(values: list[Any], what: str) -> None:
    """A grid value listed twice would plan one run, silently: almost always a typo. Values
    compare as the planner compares runs (``0.997`` and ``0.9970`` are one float), except that
    a bool never equals a number (``true`` is not ``1`` here)."""
    for i, v in enumerate(values):
        for earlier in values[:i]:
            if earlier == v and isinstance(earlier, bool) == isinstance(v, bool):
                raise ValueError(
                    f"{what} lists the value {v!r} more than once ({values}); each value is one "
                    "run: remove the repeat or correct the typo"
                )


def _pick(values: list[Any], chosen: list[Any], what: str) -> list[Any]:
    """The grid ``values`` that are in ``chosen`` (grid order); an error for one that is not."""
    missing = [v for v in chosen if v not in values]
    if missing:
        raise ValueError(
            f"{what}: {', '.join(repr(v) for v in missing)} not in the grid's values {values} "
            "(--set and --only on a grid key choose among its values; add a value to the YAML "
            "to run it)"
        )
    return [v for v in values if v in chosen]


def _check_keys(d: Mapping[str, Any], where: str) -> None:
    names = option_names()  # read now: a method registered after import has its options too
    unknown = set(d) - names
    if unknown:
        known = names - set(_RESERVED)
        raise ValueError(f"{where}: " + unknown_names("training option", unknown, known))
    reserved = sorted(k for k in d if k in _RESERVED)
    if reserved:
        raise ValueError(
            f"{where}: {reserved} cannot be set here: each run's out is "
            "<sweep out>/<run name> (set the sweep's top-level 'out' or --out)"
        )


def load_sweep(path: str | Path) -> SweepSpec:
    """Read and validate a sweep YAML file; see :class:`SweepSpec`."""
    return SweepSpec.load(path)
