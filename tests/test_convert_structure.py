"""The converter's code stays easy to carry on: small classes and functions, no import cycles,
and imports that go one way (cli -> api -> worker/plan -> writer/decode -> schema/storage).

These read the source of ``convert/`` (nothing is imported or run); a new module must be
given its layer in ``LAYERS`` below.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Mapping

CONVERT = Path(__file__).resolve().parents[1] / "convert"
MAX_CLASS_LINES = 150
MAX_FUNCTION_LINES = 80

# top to bottom: a module imports (at run time or for types) only modules of a lower layer
LAYERS = [
    ["__main__"],
    ["cli", "__init__"],
    ["example", "tools"],
    ["api", "inspection", "verify", "preview"],  # the pipeline; the three commands
    ["engine", "packer", "resume", "plan", "output", "lock"],
    ["spool", "index"],
    ["worker"],
    ["writer", "decode", "errors", "options"],
    ["schema", "storage", "clips", "layout", "report", "synth"],
    ["units", "walk"],
]
RANK = {m: i for i, layer in enumerate(LAYERS) for m in layer}


def _modules() -> dict[str, ast.Module]:
    return {f.stem: ast.parse(f.read_text(encoding="utf-8"), filename=str(f)) for f in sorted(CONVERT.glob("*.py"))}


def _imports(tree: ast.Module) -> list[tuple[str, int]]:
    """``(module, line)`` of each relative import of a sibling module."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            names = [node.module.split(".")[0]] if node.module else [a.name for a in node.names]
            out += [(n, node.lineno) for n in names]
    return out


def too_long(modules: Mapping[str, ast.Module]) -> list[str]:
    found = []
    for name, tree in modules.items():
        for node in ast.walk(tree):
            if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                limit = MAX_CLASS_LINES if isinstance(node, ast.ClassDef) else MAX_FUNCTION_LINES
                lines = node.end_lineno - node.lineno + 1
                if lines > limit:
                    found.append(f"{name}.{node.name}: {lines} lines (at most {limit})")
    return found


def against_layers(modules: Mapping[str, ast.Module], rank: Mapping[str, int]) -> list[str]:
    found = []
    for name, tree in modules.items():
        for target, line in _imports(tree):
            if target != name and target in rank and name in rank and rank[target] <= rank[name]:
                found.append(f"{name}.py:{line}: imports {target} (layer {rank[target]}) from layer {rank[name]}")
    return found


def cycles(modules: Mapping[str, ast.Module]) -> list[list[str]]:
    graph = {name: {t for t, _ in _imports(tree)} & set(modules) for name, tree in modules.items()}
    state: dict[str, int] = {}
    found: list[list[str]] = []

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                found.append(path[path.index(d):] + [d])
            elif d not in state:
                visit(d, path + [d])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    return found


def test_the_checks_see_the_package():
    assert {"api", "writer", "decode", "cli"} <= set(_modules())


def test_no_class_or_function_is_too_long():
    found = too_long(_modules())
    assert not found, "split these by responsibility:\n" + "\n".join(found)


def test_every_module_has_a_layer():
    missing = sorted(set(_modules()) - set(RANK))
    assert not missing, f"give {missing} a layer in LAYERS (tests/test_convert_structure.py)"


def test_imports_go_one_way():
    found = against_layers(_modules(), RANK)
    assert not found, "\n".join(found)


def test_no_import_cycles():
    found = cycles(_modules())
    assert not found, found


def test_the_checks_find_what_they_look_for():
    """On made-up modules: a long class and function, an upward import, a cycle."""
    modules = {
        "low": ast.parse("from .high import x\n" + "class A:\n" + "    x = 1\n" * 150),
        "high": ast.parse("from .low import A\n" + "def f():\n" + "    x = 1\n" * 80),
    }
    assert too_long(modules) == ["low.A: 151 lines (at most 150)", "high.f: 81 lines (at most 80)"]
    assert against_layers(modules, {"high": 0, "low": 1}) == ["low.py:1: imports high (layer 0) from layer 1"]
    assert cycles(modules) == [["high", "low", "high"]]
