"""House rule: a function does one job and fits on a screen, at most 80 lines of body (its
docstring excluded). ``python tests/test_code_shape.py`` lists every function over the limit."""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "debias"
MAX_LINES = 80
# Over the limit today, in modules that other work owns; each is to be split there, and
# removed from this list when it is (the test then keeps it under the limit).
KNOWN_LONG: set[str] = set()


def body_lines(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Lines from the first statement after the docstring to the end of the function."""
    body = node.body
    if len(body) > 1 and ast.get_docstring(node) is not None:
        body = body[1:]
    first = body[0]
    start = min([first.lineno, *(d.lineno for d in getattr(first, "decorator_list", []))])
    return node.end_lineno - start + 1


def _functions(node: ast.AST, prefix: str = "") -> Iterator[tuple[str, ast.FunctionDef]]:
    """Every function under ``node`` with its qualified name (``Class.method``, ``f.inner``)."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            name = f"{prefix}{child.name}"
            if not isinstance(child, ast.ClassDef):
                yield name, child
            yield from _functions(child, name + ".")
        else:
            yield from _functions(child, prefix)


def long_functions(root: Path = PACKAGE, limit: int = MAX_LINES) -> dict[str, int]:
    """``{"path/in/package.py:qualified.name": body lines}`` of every function over ``limit``."""
    found: dict[str, int] = {}
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        for name, node in _functions(ast.parse(path.read_text(), filename=str(path))):
            if body_lines(node) > limit:
                found[f"{rel}:{name}"] = body_lines(node)
    return found


def test_body_lines_counts_without_docstring() -> None:
    source = 'def f():\n    """Doc\n    string."""\n    a = 1\n    return a\n\ndef g(): return 1\n'
    f, g = ast.parse(source).body
    assert body_lines(f) == 2 and body_lines(g) == 1


def test_long_functions_finds_a_long_one(tmp_path: Path) -> None:
    lines = ["class C:", "    def m(self):", *(f"        x{i} = {i}" for i in range(81))]
    (tmp_path / "m.py").write_text("\n".join(lines) + "\n")
    (tmp_path / "ok.py").write_text("def short():\n    return 1\n")
    assert long_functions(tmp_path) == {"m.py:C.m": 81}


def test_no_function_in_debias_is_longer_than_80_lines() -> None:
    found = long_functions()
    new = {name: n for name, n in found.items() if name not in KNOWN_LONG}
    assert not new, f"functions over {MAX_LINES} lines (split them along their steps): {new}"


if __name__ == "__main__":
    limit = int(sys.argv[1]) if len(sys.argv) > 1 else MAX_LINES
    for name, n in sorted(long_functions(limit=limit).items(), key=lambda kv: -kv[1]):
        print(f"{n:4d}  {name}")
