"""The real videos of ../shared (skipped, with the reason, when it is absent).

``nasa_13013.mp4``: the best streams are 3 (H.264 480x270, 29.97 fps) and 4 (AAC 16 kHz
stereo), not 0 and 1; with T=S=16 the clips' audio is 8542 or 8541 samples long.
``nasa_13013_rotated.mp4`` (rotation metadata) and ``non_zero_start.mp4`` (first timestamp
8.33 s) give what a plain sequential decode gives; testsrc2 in MP4 and MPEG-4/AVI, resized.
"""

from __future__ import annotations

import json
import math
from fractions import Fraction
from pathlib import Path

import pytest

from conftest import shared_video
from reference import assert_same_clips, read_shards, reference_dataset, run_cli

pytestmark = pytest.mark.shared


def _dataset(root: Path, names: dict[str, str]) -> Path:
    """``root/train/<class>/<name>`` symlinks to the shared videos (never copies)."""
    for cls, name in names.items():
        src = shared_video(name)
        dst = root / "train" / cls / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.symlink_to(src)
    return root


def _convert(root: Path, out: Path, *args) -> dict:
    assert run_cli(root, out, "--workers", "1", "--no-progress", "-q", "--layout", "clips", *args) == 0
    return json.loads((out / "train" / "index.json").read_bytes())


def test_nasa_best_streams_and_audio_lengths(tmp_path):
    root = _dataset(tmp_path / "ds", {"nasa": "nasa_13013.mp4"})
    index = _convert(root, tmp_path / "out", "-T", 16, "-S", 16)
    got = read_shards(tmp_path / "out" / "train")
    assert_same_clips(got, reference_dataset(root, frames_per_clip=16, step_between_clips=16))

    video = index["videos"][0]
    assert (video["width"], video["height"], video["frames"], video["sample_rate"]) == (480, 270, 390, 16000)
    assert video["fps"] == pytest.approx(30000 / 1001)
    assert len(got) == 390 // 16 == 24
    assert {c.video.shape for c in got} == {(16, 270, 480, 3)}
    assert {c.audio.shape[0] for c in got} == {2}
    lengths = [c.audio.shape[1] for c in got]
    assert set(lengths) == {8541, 8542}
    # rule 10 by hand: [floor(s / fps * sr + 1/2), floor((e + 1) / fps * sr + 1/2)) with fps = 30000/1001
    for c, n in enumerate(lengths):
        a, b = (math.floor(Fraction(f * 1001, 30000) * 16000 + Fraction(1, 2)) for f in (16 * c, 16 * c + 16))
        assert n == b - a, c


def test_rotated_and_non_zero_start(tmp_path):
    root = _dataset(tmp_path / "ds", {"a": "nasa_13013_rotated.mp4", "b": "non_zero_start.mp4"})
    index = _convert(root, tmp_path / "out", "-T", 4, "-S", 3)
    got = read_shards(tmp_path / "out" / "train")
    assert_same_clips(got, reference_dataset(root, frames_per_clip=4, step_between_clips=3))
    frames = {v["path"].split("/")[-1]: (v["frames"], v["width"], v["height"], v["clips"]) for v in index["videos"]}
    assert frames == {"nasa_13013_rotated.mp4": (17, 480, 270, 5), "non_zero_start.mp4": (12, 200, 112, 3)}
    # frame indices count from the first decoded frame, whatever its timestamp
    assert [c.meta["frame_indices"] for c in got if c.label == 1] == [[0, 1, 2, 3], [3, 4, 5, 6], [6, 7, 8, 9]]
    assert {c.audio.shape for c in got} == {(1, 0)}  # neither has audio


def test_testsrc2_mp4_and_mpeg4_avi_resized(tmp_path):
    root = _dataset(tmp_path / "ds", {"h264": "testsrc2_720p.mp4", "mpeg4": "testsrc2_mpeg4.avi"})
    _convert(root, tmp_path / "out", "-T", 8, "-S", 5, "--video-min-dimension", 72)
    got = read_shards(tmp_path / "out" / "train")
    assert_same_clips(got, reference_dataset(root, frames_per_clip=8, step_between_clips=5, video_min_dimension=72))
    assert {c.video.shape[1:] for c in got} == {(72, 128, 3)}
