"""Every ``clipshards convert`` option: the clips written equal the reference decode.

The dataset mixes H.264+AAC, MPEG-4+MP3 in AVI, no audio, 29.97 fps at an odd size, PCM
in AVI, B-frames and a nested folder (see ``reference.MIXED``). Each test converts it with
the command line (in this process) and compares every clip, read back with ``tarfile``, to
``reference.reference_dataset``: same count, order, labels, frames bit-exact, audio equal.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from clipshards.convert.schema import decode_jpeg, encode_jpeg
from clipshards.convert.synth import VideoSpec, write_video
from reference import (
    MIXED,
    assert_same_clips,
    make_mixed_dataset,
    read_shards,
    reference_dataset,
    reference_videos,
    run_cli,
    tree_bytes,
)


@pytest.fixture(scope="module")
def mixed(tmp_path_factory) -> Path:
    return make_mixed_dataset(tmp_path_factory.mktemp("mixed"))


def convert_and_compare(root: Path, out: Path, cli: list, *, split: str = "train", **ref_options) -> list:
    rc = run_cli(root, out, "--workers", "1", "--no-progress", "-q", "--layout", "clips", *cli)
    assert rc == 0, rc
    got = read_shards(out / split)
    want = reference_dataset(root, split=split, **ref_options)
    assert want, "the case must produce clips"
    assert_same_clips(got, want)
    index = json.loads((out / split / "index.json").read_bytes())
    per_video = {}
    for c in want:
        per_video[c.path] = per_video.get(c.path, 0) + 1
    first = 0
    for v in index["videos"]:
        assert v["status"] == "ok" and v["clips"] == per_video.get(v["path"], 0), v
        assert v["first_clip"] == first, v
        first += v["clips"]
    return got


@pytest.mark.parametrize(
    "cli, ref",
    [
        pytest.param(["-T", "8"], dict(frames_per_clip=8), id="T8-default-step"),
        pytest.param(["--frames-per-clip", "5", "--step-between-clips", "5"], dict(frames_per_clip=5, step_between_clips=5), id="T5-S5"),
        pytest.param(["-T", "3", "-S", "7"], dict(frames_per_clip=3, step_between_clips=7), id="gaps-S>T"),
        pytest.param(["-T", "4", "-S", "3", "--frame-rate", "12"], dict(frames_per_clip=4, step_between_clips=3, frame_rate=12.0), id="frame-rate-down"),
        pytest.param(["-T", "4", "-S", "4", "--frame-rate", "15"], dict(frames_per_clip=4, step_between_clips=4, frame_rate=15.0), id="frame-rate-integral-step"),
        pytest.param(["-T", "8", "-S", "8", "--frame-rate", "50"], dict(frames_per_clip=8, step_between_clips=8, frame_rate=50.0), id="frame-rate-up"),
        pytest.param(["-T", "4", "-S", "6", "--video-width", "40", "--video-height", "30"],
                     dict(frames_per_clip=4, step_between_clips=6, video_width=40, video_height=30), id="width-height"),
        pytest.param(["-T", "4", "-S", "6", "--video-width", "41"], dict(frames_per_clip=4, step_between_clips=6, video_width=41), id="width"),
        pytest.param(["-T", "4", "-S", "6", "--video-height", "31"], dict(frames_per_clip=4, step_between_clips=6, video_height=31), id="height"),
        pytest.param(["-T", "4", "-S", "6", "--video-min-dimension", "33"],
                     dict(frames_per_clip=4, step_between_clips=6, video_min_dimension=33), id="min-dimension"),
        pytest.param(["-T", "4", "-S", "5", "--audio-samples", "16000"], dict(frames_per_clip=4, step_between_clips=5, audio_samples=16000), id="audio-samples"),
        pytest.param(["-T", "4", "-S", "5", "--audio-channels", "1"], dict(frames_per_clip=4, step_between_clips=5, audio_channels=1), id="audio-mono"),
        pytest.param(["-T", "4", "-S", "5", "--audio-channels", "3", "--audio-samples", "11025"],
                     dict(frames_per_clip=4, step_between_clips=5, audio_channels=3, audio_samples=11025), id="audio-3ch-11k"),
    ],
)
def test_clips_equal_reference(mixed, tmp_path, cli, ref):
    got = convert_and_compare(mixed, tmp_path / "out", cli, **ref)
    index = json.loads((tmp_path / "out" / "train" / "index.json").read_bytes())
    opts = index["options"]
    for k, v in ref.items():
        assert opts[k] == v, (k, opts[k])
    if ref.get("audio_channels"):
        assert {c.audio.shape[0] for c in got if c.audio.shape[1]} == {ref["audio_channels"]}
    if ref.get("video_width") and ref.get("video_height"):
        assert {c.video.shape[1:3] for c in got} == {(ref["video_height"], ref["video_width"])}


def test_audio_is_resampled_and_remixed(mixed, tmp_path):
    """The options change the audio (not only agree with the reference): rate and channels."""
    got = convert_and_compare(mixed, tmp_path / "out", ["-T", "6", "-S", "6", "--audio-samples", "8000", "--audio-channels", "2"],
                              frames_per_clip=6, step_between_clips=6, audio_samples=8000, audio_channels=2)
    with_audio = [c for c in got if c.audio.shape[1]]
    assert with_audio and all(c.audio.shape[0] == 2 for c in with_audio)
    # 6 frames at 30 fps of 8 kHz: 1600 samples (29.97 fps: 1601.6 -> 1601 or 1602; 25 fps: 1920)
    assert {c.audio.shape[1] for c in with_audio if c.meta["fps"] == 30.0} == {1600}
    assert all(c.meta["audio_sample_rate"] == 8000 for c in with_audio)
    mono = [c for c in with_audio if "ntsc_odd_size" in c.meta["path"]]
    assert mono and all(np.array_equal(c.audio[0], c.audio[1]) for c in mono)  # mono source upmixed


def test_split_val(mixed, tmp_path):
    convert_and_compare(mixed, tmp_path / "out", ["-T", "4", "-S", "4", "--split", "val"], split="val",
                        frames_per_clip=4, step_between_clips=4)
    assert not (tmp_path / "out" / "train").exists()


@pytest.mark.parametrize("ext, suffix", [("avi", ".avi"), (".MP4", ".mp4"), ("mp4,avi", None)])
def test_extensions(mixed, tmp_path, ext, suffix):
    got = convert_and_compare(mixed, tmp_path / "out", ["-T", "5", "-S", "5", "--extensions", ext],
                              frames_per_clip=5, step_between_clips=5, extensions=tuple(e.strip(".").lower() for e in ext.split(",")))
    paths = {c.meta["path"] for c in got}
    expected = {p for p in MIXED if p.startswith("train/") and (suffix is None or p.endswith(suffix))}
    assert paths == expected


def test_num_classes_recorded(mixed, tmp_path):
    convert_and_compare(mixed, tmp_path / "out", ["-T", "5", "-S", "5", "--num-classes", "600"], frames_per_clip=5, step_between_clips=5)
    index = json.loads((tmp_path / "out" / "train" / "index.json").read_bytes())
    assert index["options"]["num_classes"] == "600"
    assert index["classes"] == ["archery", "bowling", "juggling balls"]


@pytest.mark.parametrize("quality", [40, 90])
def test_codec_jpeg(mixed, tmp_path, quality):
    """JPEG frames are the reference frames encoded at ``--jpeg-quality`` (decoded: identical)."""
    out = tmp_path / "out"
    assert run_cli(mixed, out, "--workers", "1", "--no-progress", "-q", "-T", "4", "-S", "7",
                   "--codec", "jpeg", "--jpeg-quality", quality) == 0
    got = read_shards(out / "train")
    want = reference_dataset(mixed, frames_per_clip=4, step_between_clips=7)
    for c in want:
        c.video = np.stack([decode_jpeg(encode_jpeg(f, quality)) for f in c.video])
    assert_same_clips(got, want)
    for c in got:
        assert c.members[:3] == ["cls", "json", "audio.npy"]
        assert c.members[3:] == [f"f{t:04d}.jpg" for t in range(4)]
    index = json.loads((out / "train" / "index.json").read_bytes())
    assert (index["options"]["codec"], index["options"]["jpeg_quality"]) == ("jpeg", quality)


def test_shard_size(mixed, tmp_path):
    """Small shards: same clips as one big shard, split at sample boundaries within the limit."""
    limit = 150 * 1024
    got = convert_and_compare(mixed, tmp_path / "small", ["-T", "5", "-S", "3", "--shard-size", "150KB"],
                              frames_per_clip=5, step_between_clips=3)
    index = json.loads((tmp_path / "small" / "train" / "index.json").read_bytes())
    assert index["options"]["shard_size"] == limit
    assert len(index["shards"]) > 3
    for s in index["shards"]:
        assert s["bytes"] <= limit or s["clips"] == 1, s
    assert [c.shard for c in got] == sorted(c.shard for c in got)
    big = read_shards(_convert(mixed, tmp_path / "big", "-T", "5", "-S", "3") / "train")
    assert len(big) == len(got)
    assert all(np.array_equal(a.video, b.video) and np.array_equal(a.audio, b.audio) and a.key == b.key for a, b in zip(big, got))


def _convert(root: Path, out: Path, *args) -> Path:
    assert run_cli(root, out, "--no-progress", "-q", "--layout", "clips", *args) == 0
    return out


def test_workers_give_identical_bytes(mixed, tmp_path):
    """1 worker (in this process), 2 forked workers and 2 spawned workers write the same bytes."""
    import threading

    from clipshards.convert.engine import start_method

    args = ("-T", "4", "-S", "3", "--shard-size", "100KB")
    one = _convert(mixed, tmp_path / "w1", *args, "--workers", "1")
    if sys.platform.startswith("linux") and threading.active_count() == 1:
        assert start_method() == "fork"
    two = _convert(mixed, tmp_path / "w2", *args, "--workers", "2")
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)  # a threaded program: forking would be unsafe
    other.start()
    try:
        assert start_method() == "spawn"
        spawned = _convert(mixed, tmp_path / "w2spawn", *args, "--workers", "2")
    finally:
        stop.set()
        other.join()
    a = tree_bytes(one)
    assert len(a) > 5
    for out in (two, spawned):
        b = tree_bytes(out)
        assert sorted(a) == sorted(b)
        assert all(a[k] == b[k] for k in a), [k for k in a if a[k] != b[k]]
    assert_same_clips(read_shards(two / "train"), reference_dataset(mixed, frames_per_clip=4, step_between_clips=3))


def test_config_file_and_flag_override(mixed, tmp_path):
    cfg = tmp_path / "preset.toml"
    cfg.write_text(
        'frames_per_clip = 6\nstep_between_clips = 2\nframe_rate = 15.0\nvideo_min_dimension = 32\n'
        'audio_samples = 16000\ncodec = "raw"\nextensions = ["mp4", "avi"]\n'
    )
    got = convert_and_compare(mixed, tmp_path / "out", ["--config", cfg, "-S", "5"],
                              frames_per_clip=6, step_between_clips=5, frame_rate=15.0, video_min_dimension=32, audio_samples=16000)
    assert {min(c.video.shape[1:3]) for c in got} == {32}
    index = json.loads((tmp_path / "out" / "train" / "index.json").read_bytes())
    assert index["options"]["step_between_clips"] == 5 and index["options"]["frames_per_clip"] == 6


def test_config_unknown_key_is_an_error(mixed, tmp_path, capsys):
    cfg = tmp_path / "bad.toml"
    cfg.write_text("frames_per_clip = 6\nframes_per_clips = 8\n")
    assert run_cli(mixed, tmp_path / "out", "--config", cfg, "--no-progress") == 2
    assert "frames_per_clips" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_dry_run_writes_nothing(mixed, tmp_path, capsys):
    out = tmp_path / "out"
    assert run_cli(mixed, out, "-T", "5", "-S", "5", "--dry-run", "--workers", "1", "--no-progress") == 0
    assert not out.exists() or not any(out.rglob("*"))
    printed = capsys.readouterr().out
    assert "dry run" in printed and f"{len(reference_videos(mixed))} videos" in printed


@pytest.mark.parametrize(
    "args, words",
    [
        (["-T", "0"], "frames_per_clip=0"),
        (["-T", "4", "-S", "0"], "step_between_clips=0"),
        (["-T", "4", "--frame-rate", "-1"], "frame_rate=-1"),
        (["-T", "4", "--video-width", "-5"], "video_width=-5"),
        (["-T", "4", "--jpeg-quality", "101"], "jpeg_quality=101"),
        (["-T", "4", "--extensions", ","], "extension"),
        ([], "frames-per-clip"),
    ],
)
def test_bad_options_exit_2_naming_the_value(mixed, tmp_path, capsys, args, words):
    assert run_cli(mixed, tmp_path / "out", "--no-progress", *args) == 2
    assert words in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_torchvision_docs_example(tmp_path):
    """Videos of 10 and 15 frames, T=5, S=5: 2 + 3 = 5 clips, in that order."""
    write_video(tmp_path / "ds" / "train" / "a" / "ten.mp4", VideoSpec(frames=10, seed=1))
    write_video(tmp_path / "ds" / "train" / "b" / "fifteen.mp4", VideoSpec(frames=15, seed=2))
    got = convert_and_compare(tmp_path / "ds", tmp_path / "out", ["-T", "5", "-S", "5"], frames_per_clip=5, step_between_clips=5)
    assert [(c.label, c.meta["frame_indices"]) for c in got] == [
        (0, [0, 1, 2, 3, 4]), (0, [5, 6, 7, 8, 9]), (1, [0, 1, 2, 3, 4]), (1, [5, 6, 7, 8, 9]), (1, [10, 11, 12, 13, 14]),
    ]
    assert [c.key for c in got] == ["00000000_000000", "00000000_000001", "00000001_000000", "00000001_000001", "00000001_000002"]
