"""Shared fixtures: small datasets written with PyAV, and paths to ../shared when present."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from clipshards.convert.synth import VideoSpec, make_dataset

# The tests convert tiny synthetic videos that compress far better than real ones, so most of
# their conversions plan more than 20x the input: answer the converter's size question for all
# of them (subprocesses inherit it); tests/test_newcomer.py takes it away to test the question.
os.environ.setdefault("CLIPSHARDS_YES", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
SHARED_VIDEOS = SHARED / "data" / "videos"


def shared_video(name: str) -> Path:
    """Path of a ../shared sample video; skips the test (with the reason) when it is absent."""
    path = SHARED_VIDEOS / name
    if not path.exists():
        pytest.skip(f"../shared sample {name} not available (clone without ../shared)")
    return path


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """3 classes x 2 videos of 30/37 frames, 64x48 H.264 + AAC stereo, 30 fps."""
    root = tmp_path_factory.mktemp("tiny_dataset")
    make_dataset(root, videos_per_class=2, spec=VideoSpec(frames=30))
    return root


@pytest.fixture(scope="session")
def tiny_converted(tiny_dataset, tmp_path_factory) -> Path:
    """``tiny_dataset`` converted with T=8, S=4 (raw, the clips layout), one worker; returns OUT."""
    from clipshards.convert import convert

    out = tmp_path_factory.mktemp("tiny_converted")
    convert(tiny_dataset, out, frames_per_clip=8, step_between_clips=4, layout="clips", workers=1, progress=False,
            shard_size=200_000)
    return out
