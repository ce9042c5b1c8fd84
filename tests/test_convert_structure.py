"""The converter's code stays easy to carry on: small classes and functions, no import cycles,
and imports that go one way (cli -> api -> worker/plan -> writer/decode -> schema/storage).

These read the source of ``convert/`` (nothing is imported or run); a new module must be
given its layer in ``LAYERS`` below.
"""

from __future__ import annotations

import ast
from pathlib import Path

from structure_checks import against_layers, cycles, modules, too_long

CONVERT = Path(__file__).resolve().parents[1] / "convert"

# top to bottom: a module imports (at run time or for types) only modules of a lower layer
LAYERS = [
    ["__main__"],
    ["cli", "__init__"],
    ["example", "tools"],
    ["api", "inspection", "verify", "preview"],  # the pipeline; the three commands
    ["engine", "packer", "resume", "plan", "output", "lock", "append"],  # append: convert --append's merge
    ["spool", "index"],
    ["worker"],
    ["video_encoder"],  # the videos layout: one whole video as one sample
    ["writer", "decode", "errors", "options", "video_sample", "extents"],  # extents: an appended output's map
    ["schema", "storage", "clips", "layout", "report", "synth", "folds"],
    ["units", "walk", "storage_errors", "jpeg", "prefetch"],
]
RANK = {m: i for i, layer in enumerate(LAYERS) for m in layer}


def _modules() -> dict[str, ast.Module]:
    return modules(CONVERT)


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
