"""Resume after SIGKILL, and byte-identical output whatever the number of workers.

The command runs in a subprocess with small shards; it is killed (SIGKILL, whole process
group) at random moments, started again with the same arguments, and the result must be
the same bytes, shard by shard, as an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from clipshards.convert.spool import SPOOL_PREFIX
from clipshards.convert.synth import VideoSpec, make_dataset, write_video
from clipshards.convert.report import EXIT_SKIPPED
from reference import assert_same_clips, read_shards, reference_dataset, run_command, tree_bytes

BAD = {"train/b b/video_000.5_empty.mp4", "train/b b/video_001.5_short.mp4"}
ARGS = ["-T", "4", "-S", "2", "--layout", "clips", "--shard-size", "200KB", "--no-progress", "-q"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("resume") / "ds"
    make_dataset(root, classes=("a", "b b", "c"), videos_per_class=3, spec=VideoSpec(frames=50))
    # skipped videos between shards: one found unreadable by the probe, one too short when decoded
    (root / "train" / "b b" / "video_000.5_empty.mp4").write_bytes(b"")
    write_video(root / "train" / "b b" / "video_001.5_short.mp4", VideoSpec(frames=3))
    return root


@pytest.fixture(scope="module")
def uninterrupted(dataset, tmp_path_factory) -> dict[str, bytes]:
    out = tmp_path_factory.mktemp("whole") / "out"
    proc = run_command([dataset, out, *ARGS, "--workers", "1"])
    assert proc.returncode == EXIT_SKIPPED, proc.stderr
    files = tree_bytes(out)
    assert sum(n.endswith(".tar") for n in files) > 20
    assert_same_clips(read_shards(out / "train"), reference_dataset(dataset, frames_per_clip=4, step_between_clips=2, exclude=BAD))
    return files


def _start(dataset: Path, out: Path, workers: int) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "clipshards.convert", str(dataset), str(out), *ARGS, "--workers", str(workers)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )


def _markers(out: Path) -> int:
    try:
        return len(os.listdir(out / "train" / "_progress"))
    except FileNotFoundError:
        return 0


def _spools_of(pids: list[int]) -> list[str]:
    return [n for n in os.listdir(tempfile.gettempdir()) if any(n.startswith(f"{SPOOL_PREFIX}{p}-") for p in pids)]


def _kill_when(proc: subprocess.Popen, ready, delay: float, timeout: float = 120) -> bool:
    """SIGKILL the process group ``delay`` s after ``ready()``; False if it finished first."""
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            return False
        if time.monotonic() > deadline:  # pragma: no cover - a hung run
            os.killpg(proc.pid, signal.SIGKILL)
            raise AssertionError("the conversion made no progress")
        time.sleep(0.005)
    time.sleep(delay)
    if proc.poll() is not None:
        return False
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return True


@pytest.mark.parametrize("workers", [1, 2])
def test_resume_after_sigkill_gives_identical_bytes(dataset, uninterrupted, tmp_path, workers):
    seed = random.SystemRandom().randrange(1 << 30)
    rng = random.Random(seed)
    out = tmp_path / "out"
    shards = sum(n.endswith(".tar") for n in uninterrupted)
    killed: list[int] = []
    # twice after a random number of finished shards, once at a random moment of a run
    for target in (rng.randrange(1, shards // 3), rng.randrange(shards // 3, 2 * shards // 3)):
        proc = _start(dataset, out, workers)
        if _kill_when(proc, lambda: _markers(out) >= target, rng.uniform(0, 0.05)):
            killed.append(proc.pid)
    started = time.monotonic()
    proc = _start(dataset, out, workers)
    if _kill_when(proc, lambda: time.monotonic() - started > 0.3, rng.uniform(0, 1.5)):
        killed.append(proc.pid)
    assert len(killed) >= 2, f"seed {seed}: the runs finished before being killed"
    # and once the moment its index appears, while it removes its resume markers
    proc = _start(dataset, out, workers)
    if _kill_when(proc, (out / "train" / "index.json").exists, 0.0):
        killed.append(proc.pid)

    proc = run_command([dataset, out, *ARGS, "--workers", str(workers)])
    assert proc.returncode == EXIT_SKIPPED, (seed, proc.stderr)
    report = json.loads((out / "train" / "report.json").read_bytes())
    assert report["resumed_shards"] > 0, seed
    files = tree_bytes(out)
    assert sorted(files) == sorted(uninterrupted), (seed, set(files) ^ set(uninterrupted))
    differing = [name for name in files if files[name] != uninterrupted[name]]
    assert not differing, (seed, differing)
    assert not _spools_of(killed), "the spool folders of killed runs are removed by the next run"


def test_run_killed_after_its_index_finishes_cleanup_on_rerun(dataset, uninterrupted, tmp_path):
    """A kill between writing index.json and removing the resume markers: the rerun sees a
    finished conversion and removes the markers."""
    out = tmp_path / "out"
    assert run_command([dataset, out, *ARGS, "--workers", "1"]).returncode == EXIT_SKIPPED
    progress = out / "train" / "_progress"
    progress.mkdir()
    for i in range(3):
        (progress / f"train-{i:06d}.tar.json").write_text("{}")
    assert run_command([dataset, out, *ARGS, "--workers", "1"]).returncode == EXIT_SKIPPED
    assert tree_bytes(out) == uninterrupted


def test_rerun_of_a_finished_conversion_changes_nothing(dataset, uninterrupted, tmp_path):
    out = tmp_path / "out"
    for _ in range(2):
        proc = run_command([dataset, out, *ARGS, "--workers", "2"])
        assert proc.returncode == EXIT_SKIPPED, proc.stderr
        assert tree_bytes(out) == uninterrupted


def test_other_options_on_existing_output_refused_without_overwrite(dataset, uninterrupted, tmp_path):
    out = tmp_path / "out"
    assert run_command([dataset, out, *ARGS, "--workers", "1"]).returncode == EXIT_SKIPPED
    proc = run_command([dataset, out, *ARGS, "--workers", "1", "-S", "3"])
    assert proc.returncode == 2 and "--overwrite" in proc.stderr and "step_between_clips: 2 -> 3" in proc.stderr, proc.stderr
    assert tree_bytes(out) == uninterrupted
    assert run_command([dataset, out, *ARGS, "--workers", "1", "-S", "3", "--overwrite"]).returncode == EXIT_SKIPPED
    assert_same_clips(read_shards(out / "train"), reference_dataset(dataset, frames_per_clip=4, step_between_clips=3, exclude=BAD))
