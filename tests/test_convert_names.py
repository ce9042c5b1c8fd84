"""Any class or file name works: spaces, quotes, unicode, several dots, the same file name in
two classes, upper-case extensions, control characters; other files are ignored."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clipshards.convert.synth import VideoSpec, write_video
from reference import assert_same_clips, read_shards, reference_dataset, reference_videos, run_command

CLASSES = ["with space", "it's \"quoted\"", "ünï cødé 日本語", "dots.in.the.name", "-starts-with-dash", "#50% [x] {y}"]
FILES = ["CLIP.mp4", "my video.mp4", "a.b.c.d.mp4", "it's \"q\".avi", "ファイル.MP4", "tab\tand\nnewline.mp4"]


@pytest.fixture(scope="module")
def odd_names(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("names") / "data set ü"
    seed = 0
    for c, cls in enumerate(CLASSES):
        for name in (FILES[c], "clip.mp4"):  # "clip.mp4" in every class
            seed += 1
            spec = VideoSpec(frames=10 + seed % 4, seed=seed, codec="mpeg4" if name.endswith(".avi") else "libx264")
            write_video(root / "train" / cls / name, spec)
        (root / "train" / cls / "notes.txt").write_text("not a video")
        (root / "train" / cls / "clip.mp4.bak").write_bytes(b"")
    return root


def test_odd_names_convert_like_the_reference(odd_names, tmp_path):
    out = tmp_path / "out ü"
    proc = run_command([odd_names, out, "-T", "4", "-S", "4", "--workers", "2", "--no-progress"])
    assert proc.returncode == 0, proc.stderr
    want = reference_dataset(odd_names, frames_per_clip=4, step_between_clips=4)
    got = read_shards(out / "train")
    assert_same_clips(got, want)
    index = json.loads((out / "train" / "index.json").read_bytes())
    assert index["classes"] == sorted(CLASSES)
    expected = reference_videos(odd_names)
    assert [(v["path"], v["label"]) for v in index["videos"]] == expected
    assert len(expected) == 2 * len(CLASSES)
    assert sum(p.endswith("/clip.mp4") for p, _ in expected) == len(CLASSES)
    assert {c.meta["class"] for c in got} == set(CLASSES)
    assert len({c.key for c in got}) == len(got)
    report = json.loads((out / "train" / "report.json").read_bytes())
    assert report["skipped"] == []
