"""The import graph of the package: the losses are a leaf below the methods (a method for a
registered loss is made by the methods registry when asked for), checked in a fresh
interpreter and on the source of every module (function-level imports included)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "debias"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """``{module: modules it imports}`` over every debias module, any import statement
    anywhere in it; importing ``a.b.c`` also runs the packages ``a`` and ``a.b``."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*up, base] if base else up)
                targets.add(base)
                targets.update(f"{base}.{a.name}" for a in node.names)
        edges = set()
        for t in targets:
            parts = t.split(".")
            edges.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
        graph[name] = {t for t in edges if t in modules and t != name}
    return graph


def reachable(graph: dict[str, set[str]], start: set[str]) -> set[str]:
    seen, todo = set(start), list(start)
    while todo:
        for nxt in graph[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_importing_the_losses_does_not_import_the_methods():
    code = (
        "import sys; import debias.losses; from debias.losses import register_loss; "
        "print(sorted(m for m in sys.modules if m.startswith('debias.methods')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_no_import_cycle_through_losses_and_methods():
    graph = import_graph()
    losses = {m for m in graph if m == "debias.losses" or m.startswith("debias.losses.")}
    assert "debias.losses.base" in losses and "debias.methods" in graph
    # the methods import the losses; a path back would close a circle
    assert reachable(graph, {"debias.methods"}) & losses
    back = sorted(m for m in reachable(graph, losses) if m.startswith("debias.methods"))
    assert back == [], f"debias.losses reaches {back}"


def test_the_graph_sees_function_level_imports():
    """The check has teeth: an import inside a function is an edge (the one register_loss used
    to make was ``from debias.methods import ...`` in its body), and so is its package."""
    graph = import_graph()
    assert "debias.data.registry" in graph["debias.train.runfolder"]  # in with_dataset_defaults
    assert "debias.data" in graph["debias.train.runfolder"]
    assert "debias.losses" in graph["debias.methods.contrastive"]


def test_methods_registry_clear_ends_and_keeps_the_loss_methods():
    """``METHODS.clear()`` (a test fixture's restore) once looped forever: every loss name came
    back as a method as soon as it was deleted."""
    from debias.losses import LOSSES
    from debias.methods import METHODS

    saved = dict(METHODS)
    try:
        METHODS.clear()
        assert set(METHODS) == set(LOSSES)  # the loss-made methods follow the loss registry
    finally:
        METHODS.update(saved)
    assert dict(METHODS) == saved


def module_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Import circles among modules (strongly connected components of more than one module),
    leaving out the packages' ``__init__`` (a package re-exports its modules by design)."""
    packages = {n for n in graph if (PACKAGE.parent / n.replace(".", "/") / "__init__.py").exists()}
    g = {
        n: sorted(t for t in e if t not in packages) for n, e in graph.items() if n not in packages
    }
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in g.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = stack[stack.index(v) :]
            del stack[stack.index(v) :]
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return cycles


def test_no_import_circle_between_modules():
    """Issue 33 removed the last two: sweep.config <-> sweep.search (the option merge is in
    sweep.merge) and train.loop -> record -> represent -> loop (evaluate_run is in
    train.finished, above the loop)."""
    assert module_cycles(import_graph()) == []
    # the check has teeth: a circle in a made-up graph is found
    fake = {"debias.a.x": {"debias.a.y"}, "debias.a.y": {"debias.a.x"}, "debias.a.z": set()}
    assert module_cycles(fake) == [["debias.a.x", "debias.a.y"]]
