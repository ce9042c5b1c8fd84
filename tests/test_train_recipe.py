"""examples/train_recipe.py, torchvision's video classification recipe on a ``videos`` layout
conversion: it trains (CPU, a few iterations) and reports video-level accuracy; under torchrun
with 2 gloo processes every evaluation view is counted exactly once, as in one process."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from clipshards.convert import convert
from clipshards.convert.synth import VideoSpec, make_dataset

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "train_recipe.py"
SMALL = ["--clip-len", "4", "--frame-rate", "15", "--resize", "24", "30", "--crop", "20", "--batch-size", "2",
         "--workers", "0", "--epochs", "1", "--warmup-epochs", "1", "--clips-per-video", "3"]


@pytest.fixture(scope="module")
def out(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("recipe") / "ds"
    make_dataset(root, classes=("a", "b", "c"), videos_per_class=2, spec=VideoSpec(frames=20, width=40, height=32))
    make_dataset(root, classes=("a", "b", "c"), videos_per_class=1, split="val",
                 spec=VideoSpec(frames=20, width=40, height=32, seed=5))
    dest = root.parent / "out"
    for split in ("train", "val"):
        convert(root, dest, split=split, frames_per_clip=16, step_between_clips=1, frame_rate=15, layout="videos",
                workers=1, progress=False)
    return dest


def _run(cmd: list, timeout: float = 300) -> dict:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_recipe_trains_and_reports_video_accuracy(out):
    result = _run([sys.executable, str(EXAMPLE), str(out), *SMALL, "--max-iters", "2"])
    assert result["model"] in ("VideoResNet", "Tiny3DCNN")  # r2plus1d_18 where torchvision is installed
    epoch = result["epochs"][0]
    assert epoch["clips"] == 4 and epoch["loss"] > 0
    assert 0 < epoch["views"] <= 4 and 0 <= epoch["top1"] <= 1 and epoch["videos"] >= 1


def test_recipe_under_torchrun_counts_every_view_once(out):
    single = _run([sys.executable, str(EXAMPLE), str(out), *SMALL])["epochs"][0]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ddp = _run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
                "--master_port", str(port), str(EXAMPLE), str(out), *SMALL], timeout=600)["epochs"][0]
    assert single["views"] == ddp["views"] == 3 * single["videos"] == 9  # 3 val videos, 3 views each, once
    assert ddp["videos"] == single["videos"]
