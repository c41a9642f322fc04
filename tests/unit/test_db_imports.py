"""The database package's modules import one another without a cycle."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

DB_PACKAGE = Path(__file__).resolve().parents[2] / "shared" / "db"


def _imports_within_the_package(path: Path) -> set[str]:
    """The shared.db modules that `path` imports anywhere (a function-level import included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "shared.db":
                found.update(f"shared.db.{alias.name}" for alias in node.names)
            elif node.module.startswith("shared.db."):
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("shared.db."))
    modules = {f"shared.db.{p.stem}" for p in DB_PACKAGE.glob("*.py") if p.stem != "__init__"}
    return found & modules


def test_the_gateway_and_its_transports_import_no_cycle() -> None:
    """No module of shared.db imports, at the top or inside a function, one that imports it back
    (gateway.py chooses a transport, so the transports must not import gateway.py)."""
    graph = {
        f"shared.db.{path.stem}": _imports_within_the_package(path)
        for path in DB_PACKAGE.glob("*.py")
        if path.stem != "__init__"
    }
    assert {"shared.db.gateway", "shared.db.direct", "shared.db.postgrest"} <= set(graph)

    visiting: list[str] = []
    done: set[str] = set()

    def visit(module: str) -> None:
        if module in done:
            return
        if module in visiting:
            cycle = [*visiting[visiting.index(module) :], module]
            pytest.fail("import cycle: " + " -> ".join(cycle))
        visiting.append(module)
        for imported in sorted(graph.get(module, ())):
            visit(imported)
        visiting.pop()
        done.add(module)

    for module in sorted(graph):
        visit(module)
