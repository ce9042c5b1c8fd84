"""A source rewritten in place, same size, is noticed (issue 13): by a rerun of a finished
conversion and by a resume.

The fingerprint takes each video's path, size and modification time, or a hash of its first
and last MiB where the filesystem reports no modification time (0). Only the hash of all
that is recorded: the same files (a copy that keeps the mtimes included) give byte-identical
output, and the shards never depend on mtimes. Videos here are uncompressed AVI, so two
seeds give two videos of exactly the same size.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from clipshards.convert.synth import VideoSpec, write_video
from reference import run_command, tree_bytes

ARGS = ["-T", "4", "-S", "2", "--layout", "clips", "--shard-size", "200KB", "--no-progress", "-q", "--workers", "1", "--yes"]
VIDEOS = ("a/v0.avi", "a/v1.avi", "b/v2.avi", "b/v3.avi")


def _spec(seed: int) -> VideoSpec:
    return VideoSpec(frames=24, codec="rawvideo", audio_codec="pcm_s16le", seed=seed)


@pytest.fixture
def dataset(tmp_path) -> Path:
    root = tmp_path / "ds"
    for i, rel in enumerate(VIDEOS):
        write_video(root / "train" / rel, _spec(i))
    return root


def _rewrite(path: Path, seed: int, mtime_ns: int | None = None) -> None:
    """Other content, the same size; then the given mtime (default: one second later than before)."""
    before = path.stat()
    other = path.with_name(f"new-{path.name}")
    write_video(other, _spec(seed))
    assert other.stat().st_size == before.st_size
    other.replace(path)
    ns = before.st_mtime_ns + 1_000_000_000 if mtime_ns is None else mtime_ns
    os.utime(path, ns=(ns, ns))


def _fresh(root: Path, out: Path) -> dict[str, bytes]:
    proc = run_command([root, out, *ARGS])
    assert proc.returncode == 0, proc.stderr
    return tree_bytes(out)


def test_rerun_notices_a_source_rewritten_with_the_same_size(dataset, tmp_path):
    out = tmp_path / "out"
    before = _fresh(dataset, out)
    _rewrite(dataset / "train" / "a" / "v1.avi", seed=9)
    proc = run_command([dataset, out, *ARGS])
    assert proc.returncode != 0 and "the same files, but some changed since" in proc.stderr, proc.stderr
    assert tree_bytes(out) == before  # refused: nothing touched
    proc = run_command([dataset, out, *ARGS, "--overwrite"])
    assert proc.returncode == 0, proc.stderr
    after = tree_bytes(out)
    assert after != before and after == _fresh(dataset, tmp_path / "reference")


def test_resume_notices_a_changed_source(dataset, tmp_path):
    """A run killed after some shards; the first video (in those shards) rewritten; the rerun
    keeps none of them and gives what a fresh conversion of the new input gives."""
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "clipshards.convert", str(dataset), str(out), *ARGS],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    progress = out / "train" / "_progress"
    deadline = time.monotonic() + 120
    while not (progress.is_dir() and len(os.listdir(progress)) >= 2):
        assert proc.poll() is None, "the run finished before it was killed"
        assert time.monotonic() < deadline, "no progress"
        time.sleep(0.002)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()
    _rewrite(dataset / "train" / "a" / "v0.avi", seed=9)
    rerun = run_command([dataset, out, *ARGS])
    assert rerun.returncode == 0, rerun.stderr
    assert json.loads((out / "train" / "report.json").read_bytes())["resumed_shards"] == 0
    assert tree_bytes(out) == _fresh(dataset, tmp_path / "reference")


def test_without_mtimes_a_hash_of_the_ends_tells_the_change(dataset, tmp_path):
    """A filesystem that reports mtime 0 (some network mounts): the first and last MiB are hashed."""
    for rel in VIDEOS:
        os.utime(dataset / "train" / rel, ns=(0, 0))
    out = tmp_path / "out"
    before = _fresh(dataset, out)
    again = run_command([dataset, out, *ARGS])  # unchanged: nothing to do
    assert again.returncode == 0 and tree_bytes(out) == before, again.stderr
    _rewrite(dataset / "train" / "b" / "v3.avi", seed=9, mtime_ns=0)
    proc = run_command([dataset, out, *ARGS])
    assert proc.returncode != 0 and "already holds a conversion of other input" in proc.stderr, proc.stderr


def test_mtimes_never_reach_the_shards(dataset, tmp_path):
    """A copy keeping the mtimes: byte-identical output. A copy with new mtimes: the same shards
    and offsets; only the index's fingerprint and its records' source stamps differ (what
    ``convert --append`` compares)."""
    kept, fresh = tmp_path / "kept", tmp_path / "fresh"
    shutil.copytree(dataset, kept, copy_function=shutil.copy2)
    shutil.copytree(dataset, fresh, copy_function=shutil.copyfile)
    for rel in VIDEOS:
        os.utime(fresh / "train" / rel, ns=(1, 1))
    original = _fresh(dataset, tmp_path / "o1")
    assert _fresh(kept, tmp_path / "o2") == original
    other = _fresh(fresh, tmp_path / "o3")
    assert sorted(other) == sorted(original)
    assert [n for n in original if other[n] != original[n]] == ["train/index.json"]
    a, b = (json.loads(t["train/index.json"]) for t in (original, other))
    assert a["fingerprint"] != b["fingerprint"] and [v["stamp"] for v in a["videos"]] != [v["stamp"] for v in b["videos"]]
    for index in (a, b):
        index["fingerprint"] = ""
        for v in index["videos"]:
            v.pop("stamp")
    assert a == b
