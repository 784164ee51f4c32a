"""How a sweep layers training options (``base``, a grid point, a method's own options, a
search draw): one small function both :mod:`debias.sweep.config` and
:mod:`debias.sweep.search` use, so neither imports the other to get it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["merge_options"]


def merge_options(cfg: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """``cfg`` updated with ``extra``; a mapping option (``method_options``) is merged key by
    key.

    >>> merge_options({"lr": 0.1, "method_options": {"a": 1}}, {"method_options": {"b": 2}})
    {'lr': 0.1, 'method_options': {'a': 1, 'b': 2}}
    """
    out = dict(cfg)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = {**out[key], **value}
        else:
            out[key] = value
    return out
