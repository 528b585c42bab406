"""The architecture holds: no import cycles anywhere in the package (the floors themselves are
import-linter contracts in pyproject.toml, checked by `lint-imports` in .ci/run)."""
from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "mlic_edge"


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


# Generated-code templates: a function whose body is one code template (e.g. a kernel or a
# Triton model.py) reads better whole. Each is named here with the reason.
LONG_FUNCTION_TEMPLATES: dict[str, str] = {}
MAX_FUNCTION_LINES = 60


def long_functions(root: Path) -> list[str]:
    """'path:function (N lines)' for every function of the package longer than the limit."""
    found = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                name = f"{path.relative_to(root.parent).as_posix()}:{node.name}"
                if lines > MAX_FUNCTION_LINES and name not in LONG_FUNCTION_TEMPLATES:
                    found.append(f"{name} ({lines} lines)")
    return found


def test_functions_stay_under_60_lines():
    assert long_functions(PACKAGE) == []


def test_the_limit_check_sees_a_long_function(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    (package / "m.py").write_text(f"def short():\n    return 1\n\n\ndef long():\n{body}\n")
    assert long_functions(package) == [f"pkg/m.py:long ({MAX_FUNCTION_LINES + 1} lines)"]


def test_rich_consoles_come_from_one_factory():
    """Only core/console.py constructs a rich Console: every other one would wrap at 80 columns
    when the output is not a terminal."""
    makers = [path.relative_to(PACKAGE).as_posix() for path in sorted(PACKAGE.rglob("*.py"))
              if "Console(" in path.read_text().replace("make_console(", "")]
    assert makers == ["core/console.py"]


def test_a_long_line_is_not_wrapped_when_not_on_a_terminal():
    """Piped output (a log, CI, grep) gets each message on one line, whatever its length."""
    script = ("from mlic_edge.core.console import make_console; "
              "make_console().print('word ' * 100 + 'end'); make_console(stderr=True).print('x ' * 200)")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "COLUMNS": "80"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [("word " * 100 + "end")]
    assert [line.rstrip() for line in done.stderr.splitlines()] == [("x " * 200).rstrip()]
