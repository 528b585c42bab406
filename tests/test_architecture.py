"""The architecture holds: no import cycles anywhere in the package (the floors themselves are
import-linter contracts in pyproject.toml, checked by `lint-imports` in .ci/run)."""
from __future__ import annotations

import pytest


def import_cycles(package: str) -> list[list[str]]:
    """Strongly connected groups (> 1 module) of the package's direct-import graph (Tarjan)."""
    import grimp

    graph = grimp.build_graph(package)
    edges = {m: set(graph.find_modules_directly_imported_by(m)) for m in graph.modules}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for other in edges[module]:
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in on_stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == module:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    for module in sorted(edges):
        if module not in index:
            visit(module)
    return cycles


def test_no_import_cycles():
    pytest.importorskip("grimp")
    assert import_cycles("mlic_edge") == []
