"""The loader's code stays easy to carry on: small classes and functions, no import cycles,
imports that go one way (datasets -> reader -> index -> transport -> storage backends), and
only public names taken from ``clipshards.convert``.

These read the source of ``loader/`` (nothing is imported or run); a new module must be
given its layer in ``LAYERS`` below.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

from structure_checks import against_layers, cycles, modules, too_long

LOADER = Path(__file__).resolve().parents[1] / "loader"

# top to bottom: a module imports (at run time or for types) only modules of a lower layer
LAYERS = [
    ["__init__"],
    ["fold_datasets"],  # UCF101 / HMDB51: the Kinetics datasets over one fold's clips
    ["datasets", "webdataset_pipeline"],  # the public datasets and pipeline
    ["dataloader", "indexed", "views"],  # views: multi-view evaluation (per-video accuracy)
    ["collate", "progress", "folds", "video_epochs"],  # batches; where an epoch stands; which clips a fold / an epoch keeps
    ["arguments"],
    ["video_reader"],  # the videos layout: clips cut out of whole videos
    ["video_locate"],  # where a videos layout clip's frames and audio lie (the table of videos, frame tables)
    ["video_ranges"],  # which bytes a videos layout clip reads (its runs of frames, its audio window), read
    ["reader"],  # clips out of shards
    ["index", "pixels"],  # pixels: raw clips read straight into their batch
    ["offsets"],
    ["transport"],  # the one door for every byte read
    ["remote", "local"],
    ["readahead", "retry", "cache"],
    ["ranges", "options"],
    ["plan", "buffers", "parallel", "video_clips", "samplers", "transforms"],  # pure arithmetic; memory; threads; torchvision's clip samplers
]
RANK = {m: i for i, layer in enumerate(LAYERS) for m in layer}
# what the loader may take from the converter's package: the format, storage, units and fold rules, by public name
CONVERT_MODULES = {"clipshards.convert.schema", "clipshards.convert.storage", "clipshards.convert.units",
                   "clipshards.convert.storage_errors",  # what a storage failure means, the connect timeout
                   "clipshards.convert.folds",
                   "clipshards.convert.clips", "clipshards.convert.video_sample",  # the videos layout: clip rules, its format  # folds: the annotation files' rules, read by both halves
                   "clipshards.convert.extents",  # an appended output's extents: where its clips are
                   "clipshards.convert.prefetch"}  # the cores this process may use (both halves work ahead on them)


def _modules() -> dict[str, ast.Module]:
    return modules(LOADER)


def _convert_imports(tree: ast.Module) -> list[tuple[str, str, int]]:
    """``(module, name, line)`` of each name imported from ``clipshards.convert``."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("clipshards.convert"):
            out += [(node.module, a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.Import):
            out += [(a.name, "*", node.lineno) for a in node.names if a.name.startswith("clipshards.convert")]
    return out


def test_the_checks_see_the_package():
    assert {"datasets", "reader", "transport", "plan"} <= set(_modules())


def test_no_class_or_function_is_too_long():
    found = too_long(_modules())
    assert not found, "split these by responsibility:\n" + "\n".join(found)


def test_every_module_has_a_layer():
    missing = sorted(set(_modules()) - set(RANK))
    assert not missing, f"give {missing} a layer in LAYERS (tests/test_loader_structure.py)"


def test_imports_go_one_way():
    found = against_layers(_modules(), RANK)
    assert not found, "\n".join(found)


def test_no_import_cycles():
    found = cycles(_modules())
    assert not found, found


def test_only_public_converter_names():
    """The two halves share the schema, storage and units modules, by the names they export."""
    found = []
    for name, tree in _modules().items():
        for module, imported, line in _convert_imports(tree):
            if module not in CONVERT_MODULES:
                found.append(f"loader/{name}.py:{line}: imports from {module} (allowed: {sorted(CONVERT_MODULES)})")
            elif imported not in importlib.import_module(module).__all__:
                found.append(f"loader/{name}.py:{line}: {module}.{imported} is not in that module's __all__")
    assert not found, "\n".join(found)


def test_the_converter_check_finds_what_it_looks_for():
    tree = ast.parse("from clipshards.convert.cli import _size\nfrom clipshards.convert.schema import clip_key\n")
    assert _convert_imports(tree) == [("clipshards.convert.cli", "_size", 1), ("clipshards.convert.schema", "clip_key", 2)]
