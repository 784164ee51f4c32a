"""The text of ``debias methods`` (every method, the shared hyper-parameters once) and of
``debias methods NAME`` (one method: what it does, its hyper-parameters, its source).

A hyper-parameter is *shared* when two or more methods declare it the same way (the
contrastive methods' ``temperature``, ``linear_epochs``...): the overview lists it once, with
the methods that take it; one method's page lists all of its own and the shared ones.
"""

from __future__ import annotations

import inspect

from debias.methods import METHODS, SUPERVISION, get_method
from debias.methods.base import HParam, Method

__all__ = ["describe_method", "describe_methods", "shared_hparams"]

INDENT = " " * 11


def shared_hparams() -> dict[str, tuple[HParam, list[str]]]:
    """``{name: (HParam, methods declaring it)}`` for the hyper-parameters that two or more
    registered methods declare identically, in registry order."""
    seen: dict[str, tuple[HParam, list[str]]] = {}
    clash: set[str] = set()
    for method, cls in METHODS.items():
        for name, hp in cls.hparams.items():
            if name not in seen:
                seen[name] = (hp, [method])
            elif seen[name][0] == hp:
                seen[name][1].append(method)
            else:
                clash.add(name)  # declared differently: each method lists its own
    return {k: v for k, v in seen.items() if len(v[1]) > 1 and k not in clash}


def _hparam_lines(name: str, hp: HParam, indent: str) -> list[str]:
    lines = [f"{indent}{name} = {hp.default!r}: {hp.help} [{hp.source}]"]
    if hp.search is not None:
        lines.append(f"{indent}  search: {hp.search.describe()} [{hp.search.source}]")
    return lines


def _header(name: str, cls: type[Method]) -> list[str]:
    return [
        f"{name:<10} supervision {cls.supervision} ({SUPERVISION[cls.supervision]}); "
        f"modes: {', '.join(cls.modes)}",
        f"{INDENT}{cls.paper}",
    ]


def describe_methods() -> str:
    """Every registered method with its own hyper-parameters, then the shared ones once."""
    shared = shared_hparams()
    lines: list[str] = []
    for name, cls in METHODS.items():
        lines += _header(name, cls)
        own = {k: hp for k, hp in cls.hparams.items() if k not in shared}
        for key, hp in own.items():
            lines += _hparam_lines(key, hp, INDENT + "  ")
        common = [k for k in cls.hparams if k in shared]
        if common:
            lines.append(f"{INDENT}  shared: {', '.join(common)} (below)")
    if shared:
        lines.append("shared hyper-parameters (each declared the same way by several methods):")
        for key, (hp, takers) in shared.items():
            lines += _hparam_lines(key, hp, INDENT + "  ")
            lines.append(f"{INDENT}    methods: {', '.join(takers)}")
    lines.append("`debias methods NAME` shows one method: what it does, all its options, source.")
    return "\n".join(lines)


def describe_method(name: str) -> str:
    """One method: supervision, modes, paper and official code, what it does (its docstring),
    every hyper-parameter with its default and source, and where its code is.

    >>> print(describe_method("groupdro").splitlines()[0])  # doctest: +ELLIPSIS
    groupdro   supervision train_bias (...); modes: ce
    """
    cls = get_method(name)
    lines = _header(name, cls)
    doc = inspect.cleandoc(cls.__doc__ or "").strip()
    if doc:
        lines += ["", *(f"{INDENT}{line}".rstrip() for line in doc.splitlines()), ""]
    if cls.hparams:
        lines.append(f"{INDENT}hyper-parameters (--method-option NAME=VALUE):")
        for key, hp in cls.hparams.items():
            lines += _hparam_lines(key, hp, INDENT + "  ")
    else:
        lines.append(f"{INDENT}no hyper-parameters of its own")
    where = getattr(cls, "loss_cls", cls)  # a contrastive method: the code is its loss's
    path = where.__module__.replace(".", "/") + ".py"
    lines.append(f"{INDENT}code: {path} ({where.__qualname__})")
    return "\n".join(lines)
