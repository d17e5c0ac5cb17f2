"""The structure ARCHITECTURE.md describes: no import circle between modules (every import counted, inside
functions and under ``if TYPE_CHECKING:`` too: grimp reads them all), no source file over 350 lines and no function
over 60. The layering contracts themselves are import-linter's (pyproject.toml), run by CI as ``lint-imports``."""

import graphlib
from pathlib import Path

import pytest

grimp = pytest.importorskip("grimp")
SRC = Path(__file__).resolve().parents[1] / "src" / "metricad"


def test_no_module_imports_itself_through_others():
    graph = grimp.build_graph("metricad")
    imports = {module: graph.find_modules_directly_imported_by(module) for module in graph.modules}
    try:
        list(graphlib.TopologicalSorter(imports).static_order())
    except graphlib.CycleError as error:
        pytest.fail(f"import circle: {' -> '.join(error.args[1])}")


def test_no_source_file_is_over_350_lines():
    long = {str(p.relative_to(SRC)): n for p in SRC.rglob("*.py") if (n := len(p.read_text().splitlines())) > 350}
    assert not long, long


def test_every_function_reads_on_one_screen():
    """No function or method in ``src/`` is over 60 lines (docstring included)."""
    import ast

    long = {}
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 60:
                long[f"{path.relative_to(SRC)}:{node.name}"] = node.end_lineno - node.lineno + 1
    assert not long, long
