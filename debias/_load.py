"""Reading the user's text files strictly: one encoding, no key given twice.

A ``--config`` file, a sweep YAML or an options file that names a key twice (``epochs: 2`` and
later ``epochs: 80``) would silently take the last; PyYAML and ``json`` both do that. Here it is
an error naming the key and both lines. A file that is not UTF-8 (a Latin-1 or UTF-16 export) is
an error naming the file and the fix, not a bare ``'utf-8' codec can't decode``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["DuplicateKeyError", "load_mapping", "read_text"]


class DuplicateKeyError(ValueError):
    """A mapping in a YAML or JSON file gives one key twice."""


def read_text(path: str | Path, what: str) -> str:
    """``path``'s text as UTF-8 (a BOM is skipped); an error naming it and the fix otherwise."""
    path = Path(path)
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        guess = " (it looks like UTF-16)" if raw[:2] in (b"\xff\xfe", b"\xfe\xff") else ""
        raise ValueError(
            f"{what} {path} is not UTF-8 text{guess}: byte {exc.start} is {raw[exc.start]:#04x}; "
            "save it as UTF-8 (e.g. iconv -f latin1 -t utf-8, or 'Save as UTF-8' in a spreadsheet)"
        ) from None


def _strict_loader() -> type:
    import yaml

    class StrictLoader(yaml.SafeLoader):
        """SafeLoader that refuses a key given twice in one mapping."""

    def construct_mapping(loader: Any, node: Any, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = loader.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                first = seen.setdefault(key, line)
            except TypeError:  # an unhashable key: SafeLoader's own error follows
                continue
            if first != line:
                raise DuplicateKeyError(
                    f"key {key!r} is given twice (lines {first} and {line}); keep one"
                )
        return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)

    StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, construct_mapping)
    return StrictLoader


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise DuplicateKeyError(f"key {key!r} is given twice; keep one")
        out[key] = value
    return out


def load_mapping(text: str, *, json_text: bool = False) -> Any:
    """``text`` parsed as YAML (or JSON), refusing a key given twice in any mapping
    (:class:`DuplicateKeyError`); other syntax errors are PyYAML's / json's."""
    if json_text:
        return json.loads(text, object_pairs_hook=_no_duplicates)
    import yaml

    return yaml.load(text, Loader=_strict_loader())  # noqa: S506 (a SafeLoader subclass)
