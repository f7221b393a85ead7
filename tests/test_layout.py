"""The package's imports point one way: no module of hfpipe imports, directly or through others, a
module that imports it back. Function-local imports count (they are how a circle hides), read from
the source with `ast` as tests/test_stage_deps.py does.
"""

from __future__ import annotations

from pathlib import Path

from tests.test_stage_deps import ROOT, imported_modules, module_file


def package_modules() -> dict[str, Path]:
    """hfpipe's modules by dotted name (a package by its own name, for its __init__.py)."""
    out = {}
    for path in sorted((ROOT / "hfpipe").rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def import_graph() -> dict[str, set[str]]:
    """module -> the hfpipe modules it imports (not its own parent packages: importing a.b runs
    a/__init__.py first, which is no dependency of a.b's code on a's)."""
    modules = package_modules()
    by_file = {path: name for name, path in modules.items()}
    graph = {}
    for name, path in modules.items():
        targets = set()
        for imported in imported_modules(path):
            target = module_file(imported)
            if target is not None and target in by_file:
                targets.add(by_file[target])
        graph[name] = {t for t in targets if t != name and not name.startswith(t + ".")}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_find_cycle_finds_one_and_only_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_the_package_has_no_import_cycle():
    graph = import_graph()
    assert "hfpipe.train" in graph and graph["hfpipe.evaluate"]  # the graph was read
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)
