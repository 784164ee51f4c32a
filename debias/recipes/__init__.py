"""Published training recipes as data: one YAML file per recipe in this folder.

A recipe is everything a paper fixes besides the loss (PROTOCOLS §4b): stage protocol
(``mode``), views, samplers, projection head, optimiser and schedule, temperature, epochs,
batch sizes, head training. Each file names the official code it was read from (``sources``),
its own loss (``loss``: the default ``method``), the training options it sets (``options``,
TrainConfig option names, flat; ``method_options`` and ``loss_options`` as mappings) and what
it does not reproduce (``notes``). It holds no code: every piece it names is a component any
config can use (:mod:`debias.optim`, :data:`debias.data.augment.VIEW_SETS`,
:mod:`debias.methods.sampling`, the contrastive methods' ``joint``/``online`` options).

A run names a recipe with ``recipe`` (``--recipe biascon``, ``recipe: biascon`` in a
``--config`` file or a sweep's ``base``/grid, ``TrainConfig(recipe="biascon", ...)``): the
recipe's options become the defaults, every option given explicitly overrides them (mappings
key by key), and the run's config records the merged values with the recipe's name. Any
contrastive loss can replace the recipe's own (``--method contex``): the comparison then runs
under identical recipes. A recipe option the chosen method does not take (a temperature for
CACR) is left out for that method.

>>> sorted(RECIPES)[-3:]
['cpu-geometry', 'fairkl', 'supcontrast']
>>> sorted(r for r in RECIPES if r.startswith(("biascon", "bc+bb")))
['bc+bb', 'bc+bb-celeba', 'bc+bb-utkface', 'biascon', 'biascon-celeba', 'biascon-utkface']
>>> recipe_options("biascon", {"method": "contex"})["method_options"]["stream_sampler"]
'bias-balanced'
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from debias._hints import did_you_mean

HERE = Path(__file__).resolve().parent
MAPPING_OPTIONS = ("method_options", "loss_options", "data_options")


@dataclass(frozen=True)
class Recipe:
    """One recipe file: ``name``, ``title``, ``sources`` (official files it was read from),
    ``loss`` (its own), ``options`` (training options), ``notes`` (what differs)."""

    name: str
    title: str
    sources: tuple[str, ...]
    loss: str
    options: dict[str, Any]
    notes: tuple[str, ...] = field(default_factory=tuple)
    path: str = ""
    # ``[[n, d], ...]``: the lr milestones as fractions of the epochs (BiasCon's decay_epochs =
    # [epochs // 3, epochs * 2 // 3]): a run that sets its own epochs gets epochs * n // d.
    milestone_fractions: tuple[tuple[int, int], ...] = ()


def load_recipe(path: str | Path) -> Recipe:
    """A :class:`Recipe` from its YAML file (checked for the keys a recipe has)."""
    import yaml

    path = Path(path)
    data = yaml.safe_load(path.read_text())
    keys = {"name", "title", "sources", "loss", "options", "notes", "milestone_fractions"}
    if not isinstance(data, dict) or not {"name", "title", "sources", "loss", "options"} <= set(
        data
    ):
        raise ValueError(
            f"recipe {path}: expected a mapping with name, title, sources, loss, options"
        )
    texts = [*data["sources"], *(data.get("notes") or ()), data["title"]]
    if not all(isinstance(t, str) for t in texts):
        raise ValueError(f"recipe {path}: title, sources and notes must be text (quote a ': ')")
    unknown = sorted(set(data) - keys)
    if unknown:
        raise ValueError(f"recipe {path}: unknown key(s) {unknown}; a recipe has {sorted(keys)}")
    return Recipe(
        name=data["name"], title=data["title"], sources=tuple(data["sources"]),
        loss=data["loss"], options=dict(data["options"]), notes=tuple(data.get("notes") or ()),
        path=str(path),
        milestone_fractions=tuple(tuple(f) for f in data.get("milestone_fractions") or ()),
    )  # fmt: skip


RECIPES: dict[str, Recipe] = {
    r.name: r for r in (load_recipe(p) for p in sorted(HERE.glob("*.yaml")))
}


def get_recipe(name: str) -> Recipe:
    """The recipe ``name``; an unknown name is an error listing them."""
    if name not in RECIPES:
        raise ValueError(
            f"recipe {name!r}{did_you_mean(name, RECIPES)}: expected one of "
            f"{', '.join(sorted(RECIPES))} (`debias recipes` lists them)"
        )
    return RECIPES[name]


def recipe_options(name: str, given: Mapping[str, Any]) -> dict[str, Any]:
    """Training options: recipe ``name``'s, overridden by ``given`` (the explicit ones; the
    mapping options key by key). The recipe's loss is the ``method`` unless one is given;
    a recipe method option or shortcut (``temperature``) the chosen method does not take is
    dropped for it."""
    from debias.methods import get_method

    recipe = get_recipe(name)
    out = {k: v for k, v in recipe.options.items() if k not in MAPPING_OPTIONS}
    out["method"] = recipe.loss
    out.update({k: v for k, v in given.items() if k not in MAPPING_OPTIONS})
    takes = set(get_method(out["method"]).hparams) if isinstance(out["method"], str) else set()
    for key in MAPPING_OPTIONS:
        mine = dict(recipe.options.get(key) or {})
        if key == "method_options":
            mine = {k: v for k, v in mine.items() if k in takes}
        theirs = given.get(key)
        if mine or theirs is not None:
            out[key] = {**mine, **dict(theirs or {})}
    for short in ("temperature", "base_temperature"):
        given_too = short in (given.get("method_options") or {})
        if short in out and short not in given and (short not in takes or given_too):
            del out[short]
    return out | scaled_milestones(recipe, given, out)


def scaled_milestones(
    recipe: Recipe, given: Mapping[str, Any], merged: Mapping[str, Any]
) -> dict[str, Any]:
    """``{"lr_milestones": [...]}`` at the recipe's ``milestone_fractions`` of the run's own
    ``epochs`` (``epochs * n // d``, those >= 1; none: a constant lr), when the run sets
    ``epochs`` but neither ``lr_milestones`` nor another schedule; else ``{}``.

    >>> recipe_options("biascon", {"epochs": 16})["lr_milestones"]
    [5, 10]
    """
    if not recipe.milestone_fractions or "lr_milestones" in given or "epochs" not in given:
        return {}
    if merged.get("lr_schedule") != "multistep" or not isinstance(given["epochs"], int):
        return {}
    at = sorted({given["epochs"] * n // d for n, d in recipe.milestone_fractions} - {0})
    # A run too short for any step (1 epoch: epochs // 3 = 0) has a constant lr.
    return {"lr_milestones": at} if at else {"lr_milestones": [], "lr_schedule": "constant"}
