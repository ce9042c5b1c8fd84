"""notebooks/quickstart.ipynb runs top to bottom, shows what it promises, and is committed with clean outputs.

The notebook is executed (nbclient, a real ipykernel) from a copy in a temporary folder, so it cannot rot.
``python tests/test_notebook.py --refresh`` re-executes it and stores the outputs in the committed file.
"""

from __future__ import annotations

import base64
import importlib.util
import io
import os
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "quickstart.ipynb"
CELL_TIMEOUT_S = 180
MAX_BYTES = 1_000_000
TAGS = ("setup", "dataset", "convert", "inspect", "index", "stream", "frames", "waveform", "transforms", "speed", "cleanup")
FIGURE_TAGS = ("frames", "waveform", "speed")


def _require_jupyter() -> None:
    for module in ("nbformat", "nbclient", "ipykernel", "matplotlib"):
        pytest.importorskip(module, reason=f"{module} is needed to run the notebook (pip install -e '.[test]')")


def execute(path: Path, cwd: Path):
    """Run the notebook at ``path`` in a fresh python3 kernel started in ``cwd``; returns the executed notebook.
    Raises nbclient's ``CellExecutionError`` at the first cell that fails."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    NotebookClient(
        nb, timeout=CELL_TIMEOUT_S, kernel_name="python3", record_timing=False,
        resources={"metadata": {"path": str(cwd)}},
    ).execute()
    return nb


def _by_tag(nb) -> dict:
    cells = {}
    for cell in nb.cells:
        for tag in cell.get("metadata", {}).get("tags", []):
            cells[tag] = cell
    return cells


def _text(cell, stream: str | None = None) -> str:
    parts = []
    for out in cell.get("outputs", []):
        if out["output_type"] == "stream" and stream in (None, out["name"]):
            parts.append(out["text"])
        elif out["output_type"] in ("execute_result", "display_data") and stream is None:
            parts.append(out.get("data", {}).get("text/plain", ""))
    return "".join(parts)


def _images(cell) -> list[str]:
    return [o["data"]["image/png"] for o in cell.get("outputs", []) if "image/png" in o.get("data", {})]


def _check_one_figure(cell, tag: str) -> None:
    from PIL import Image

    images = _images(cell)
    assert len(images) == 1, f"{tag}: expected one figure, got {len(images)}"
    with Image.open(io.BytesIO(base64.b64decode(images[0]))) as img:
        assert img.format == "PNG" and img.width >= 300 and img.height >= 100, f"{tag}: {img.format} {img.size}"


def _all_output_text(nb) -> str:
    chunks = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            chunks.append(out.get("text", ""))
            for mime, value in out.get("data", {}).items():
                if mime.startswith("text/"):
                    chunks.append(value if isinstance(value, str) else "".join(value))
            chunks.extend(out.get("traceback", []))
    return "\n".join(chunks)


def _clean_streams(nb) -> None:
    """Store streams as a terminal shows them: consecutive outputs of one stream merged, and each line
    drawn over itself at every ``\\r`` (tqdm redraws its bar), so only the last state of a bar is kept."""
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        merged = []
        for out in cell.get("outputs", []):
            if merged and out["output_type"] == "stream" and merged[-1]["output_type"] == "stream" \
                    and merged[-1]["name"] == out["name"]:
                merged[-1]["text"] += out["text"]
            else:
                merged.append(out)
        for out in merged:
            if out["output_type"] == "stream":
                out["text"] = "\n".join(_overdraw(line) for line in out["text"].split("\n"))
        cell["outputs"] = merged


def _overdraw(line: str) -> str:
    shown = ""
    for part in line.split("\r"):
        shown = part + shown[len(part):]
    return shown.rstrip()


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    _require_jupyter()
    work = tmp_path_factory.mktemp("notebook")
    copy_path = work / NOTEBOOK.name
    copy_path.write_bytes(NOTEBOOK.read_bytes())
    return execute(copy_path, work), work


def test_every_cell_runs_in_order(executed):
    nb, _ = executed
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1))
    assert not [o for c in code for o in c.outputs if o["output_type"] == "error"]
    assert set(_by_tag(nb)) == set(TAGS)


def test_key_outputs(executed):
    nb, _ = executed
    cells = _by_tag(nb)
    assert "convert train: 100%" in _text(cells["convert"], "stderr"), "no finished progress bar"
    assert "9/9 videos converted, 48 clips" in _text(cells["convert"], "stdout")
    assert "classes: 3" in _text(cells["inspect"]) and "train-000000.tar" in _text(cells["inspect"])
    assert "classes: ['archery', 'bowling', 'juggling balls']" in _text(cells["index"])
    assert "first tar members: ['00000000_000000.cls'" in _text(cells["index"])
    stream = _text(cells["stream"], "stdout")
    assert "epoch 0: 48 clips in 6 batches" in stream and "epoch 1: 48 clips in 6 batches" in stream
    assert "(8, 16, 3, 72, 96) torch.uint8" in stream
    for tag in FIGURE_TAGS:
        _check_one_figure(cells[tag], tag)
    transforms = _text(cells["transforms"], "stdout")
    if importlib.util.find_spec("torchvision") is None:
        assert "torchvision is not installed" in transforms
    else:
        assert "after:  (8, 16, 3, 64, 64) torch.float32" in transforms
    speed = _text(cells["speed"], "stdout")
    if (REPO / "benchmarks" / "baseline.py").is_file():
        assert "frames identical to the per-clip decode for all 48 clips: True" in speed
        assert speed.count("clips/s") == 3
    else:
        assert "benchmarks/baseline.py not found" in speed and speed.count("clips/s") == 2
    assert "temporary folder removed" in _text(cells["cleanup"])


def test_outputs_hold_no_local_paths(executed):
    nb, work = executed
    text = _all_output_text(nb)
    for path in (str(work), str(REPO), tempfile.gettempdir() + os.sep, os.path.expanduser("~") + os.sep):
        assert path not in text, f"output shows the local path {path}"


def test_committed_notebook_is_executed_small_and_clean():
    _require_jupyter()
    import nbformat

    assert NOTEBOOK.stat().st_size < MAX_BYTES
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1)), "not executed top to bottom once"
    assert all(c.outputs for c in code), "a code cell has no stored output"
    assert not [o for c in code for o in c.outputs if o["output_type"] == "error"]
    cells = _by_tag(nb)
    for tag in FIGURE_TAGS:
        _check_one_figure(cells[tag], tag)
    text = _all_output_text(nb)
    assert "\r" not in text, "progress-bar redraws stored (refresh with --refresh)"
    for path in (str(REPO), tempfile.gettempdir() + os.sep, "/home/", "/Users/", "/root/"):
        assert path not in text, f"committed output shows the local path {path}"


def refresh() -> None:
    """Execute the notebook in a temporary folder and store its outputs in the committed file."""
    import nbformat

    with tempfile.TemporaryDirectory() as work:
        nb = execute(NOTEBOOK, Path(work))
    _clean_streams(nb)
    for cell in nb.cells:
        cell.get("metadata", {}).pop("execution", None)
    nbformat.validate(nb)
    nbformat.write(nb, NOTEBOOK)
    print(f"{NOTEBOOK.relative_to(REPO)}: {NOTEBOOK.stat().st_size:,} bytes")


if __name__ == "__main__":
    if sys.argv[1:] != ["--refresh"]:
        sys.exit("usage: python tests/test_notebook.py --refresh")
    refresh()
