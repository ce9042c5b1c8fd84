"""Checks that keep a package easy to carry on, read from its source (nothing is imported or run):
classes and functions short enough to read, no import cycles, and imports that go one way
through named layers. ``tests/test_convert_structure.py`` and ``tests/test_loader_structure.py``
apply them to ``convert/`` and ``loader/``.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Mapping

MAX_CLASS_LINES = 150
MAX_FUNCTION_LINES = 80


def modules(folder: Path) -> dict[str, ast.Module]:
    """``module name -> parsed source`` of every module in ``folder``."""
    return {f.stem: ast.parse(f.read_text(encoding="utf-8"), filename=str(f)) for f in sorted(folder.glob("*.py"))}


def sibling_imports(tree: ast.Module) -> list[tuple[str, int]]:
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
        for target, line in sibling_imports(tree):
            if target != name and target in rank and name in rank and rank[target] <= rank[name]:
                found.append(f"{name}.py:{line}: imports {target} (layer {rank[target]}) from layer {rank[name]}")
    return found


def cycles(modules: Mapping[str, ast.Module]) -> list[list[str]]:
    graph = {name: {t for t, _ in sibling_imports(tree)} & set(modules) for name, tree in modules.items()}
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
