"""The ``videos`` layout: each video stored once, clips cut when loading.

The converter stores every decoded frame and the whole audio track of each video (checked
against the reference decoder, read back with ``tarfile`` and ``np.load`` only);
``IndexedKinetics(out, frames_per_clip=T, step_between_clips=S, frame_rate=R)[i]`` equals the
reference's clip ``i`` of ``Kinetics(root, T, step_between_clips=S, frame_rate=R)`` for any T, S
and R, including a frame rate above the source's and clips longer than some videos. The
converter's guarantees hold for this layout too: same bytes whatever the workers, bad input
reported, short videos kept, inspect / verify / preview.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from clipshards.convert.options import ConvertOptions
from clipshards.convert.report import EXIT_SKIPPED
from clipshards.convert.video_sample import TABLE_DTYPE, VIDEOS_TABLE_NAME
from clipshards.loader import IndexedKinetics
from reference import (
    make_mixed_dataset,
    read_video_samples,
    reference_dataset,
    reference_videos,
    reference_whole_video,
    run_cli,
    tree_bytes,
)

ARGS = ["-T", "8", "-S", "4", "--no-progress", "-q", "--layout", "videos"]
EMPTY = "train/bowling/empty.mp4"


@pytest.fixture(scope="module")
def mixed(tmp_path_factory) -> Path:
    root = make_mixed_dataset(tmp_path_factory.mktemp("videos_layout") / "ds")
    (root / EMPTY).write_bytes(b"")
    return root


def _convert(root: Path, out: Path, *extra) -> Path:
    assert run_cli(root, out, *ARGS, *extra) == EXIT_SKIPPED  # the empty file is skipped
    return out


@pytest.fixture(scope="module")
def raw_out(mixed, tmp_path_factory) -> Path:
    return _convert(mixed, tmp_path_factory.mktemp("raw") / "out", "--workers", "2", "--shard-size", "1MB")


@pytest.fixture(scope="module")
def jpeg_out(mixed, tmp_path_factory) -> Path:
    return _convert(mixed, tmp_path_factory.mktemp("jpeg") / "out", "--workers", "1", "--codec", "jpeg")


def test_index_names_the_layout_and_records_the_table(raw_out):
    index = json.loads((raw_out / "train" / "index.json").read_bytes())
    assert index["layout"] == "videos" and index["version"] == 4
    assert index["options"]["layout"] == "videos" and index["options"]["frames_per_clip"] == 8
    table = np.load(raw_out / "train" / VIDEOS_TABLE_NAME, allow_pickle=False)
    assert table.dtype == TABLE_DTYPE and len(table) == index["counts"]["videos_ok"] == index["counts"]["clips"] == 7
    assert index["video_table"]["bytes"] == (raw_out / "train" / VIDEOS_TABLE_NAME).stat().st_size
    skipped = [v for v in index["videos"] if v["status"] != "ok"]
    assert [v["path"] for v in skipped] == [EMPTY] and "empty" in skipped[0]["reason"]
    # a shard holds whole videos: a video larger than --shard-size gets a shard of its own
    assert len(index["shards"]) > 1 and all(s["clips"] >= 1 for s in index["shards"])


def test_samples_hold_every_frame_and_the_whole_track(mixed, raw_out):
    """Read with tarfile and np.load: every decoded frame and the whole audio, as the reference decodes them."""
    samples = read_video_samples(raw_out / "train")
    videos = [(p, y) for p, y in reference_videos(mixed) if p != EMPTY]
    assert [s.meta["path"] for s in samples] == [p for p, _ in videos]
    for s, (path, label) in zip(samples, videos):
        fps, frames, audio, t_first, sr = reference_whole_video(mixed / path)
        assert s.label == label and s.meta["num_frames"] == len(frames) and s.meta["fps"] == fps
        assert np.array_equal(s.frames, frames), path
        if sr:
            assert s.audio.shape == audio.shape and np.array_equal(s.audio, audio), path
            assert s.meta["audio_sample_rate"] == sr and s.meta["audio_t_first"] == t_first
        else:
            assert s.audio.shape == (1, 0) and s.meta["audio_sample_rate"] is None
        assert s.members == ["cls", "json", "media.bin"]


CASES = [
    pytest.param(8, 4, None, id="as-converted"),
    pytest.param(4, 1, None, id="step-1"),
    pytest.param(5, 3, 15.0, id="15fps-down"),  # 30 fps: integral step; 29.97 and 25 fps: not
    pytest.param(6, 5, 50.0, id="50fps-above-source"),
    pytest.param(3, 7, 7.5, id="gaps-S>T"),
    pytest.param(24, 2, None, id="T-longer-than-some-videos"),
    pytest.param(16, 16, 60.0, id="60fps-T16"),
]


@pytest.mark.parametrize("T, S, R", CASES)
def test_indexed_clips_equal_torchvision_for_any_T_S_R(mixed, raw_out, T, S, R):
    ref = reference_dataset(mixed, frames_per_clip=T, step_between_clips=S, frame_rate=R, exclude={EMPTY})
    ds = IndexedKinetics(raw_out, frames_per_clip=T, step_between_clips=S, frame_rate="source" if R is None else R,
                         output_format="THWC", with_ids=True)
    assert len(ds) == len(ref) and len(ref) > 0
    paths = [p for p, _ in reference_videos(mixed)]
    for g, r in enumerate(ref):
        video, audio, label, video_idx, clip_idx = ds[g]
        where = f"clip {g} ({r.path} #{r.clip_index})"
        assert label == r.label and type(label) is int, where
        assert (paths[video_idx], clip_idx) == (r.path, r.clip_index), where
        assert ds.get_clip_location(g) == (video_idx, clip_idx)
        assert video.shape == r.video.shape and np.array_equal(video.numpy(), r.video), where
        assert audio.dtype.is_floating_point and audio.shape == r.audio.shape, (where, audio.shape, r.audio.shape)
        assert np.array_equal(audio.numpy(), r.audio), where
    assert sum(ds.clips_per_video) == len(ds) and len(ds.clips_per_video) == len(paths)


def test_default_clip_settings_are_the_converted_ones(mixed, raw_out):
    ds = IndexedKinetics(raw_out)
    assert (ds.frames_per_clip, ds.step_between_clips, ds.frame_rate) == (8, 4, None)
    ref = reference_dataset(mixed, frames_per_clip=8, step_between_clips=4, exclude={EMPTY})
    assert len(ds) == len(ref)
    video, audio, label = ds[len(ds) - 1]
    assert video.shape == (8, 3, *ref[-1].video.shape[1:3]) and np.array_equal(video.permute(0, 2, 3, 1).numpy(), ref[-1].video)
    with pytest.raises(IndexError):
        ds[len(ds)]


def test_jpeg_frames_equal_the_clips_layouts(mixed, jpeg_out, tmp_path):
    """The same JPEG encoder and quality: the videos layout's clips decode to the clips layout's pixels."""
    clips_out = tmp_path / "clips"
    assert run_cli(mixed, clips_out, "-T", "5", "-S", "3", "--frame-rate", "15", "--codec", "jpeg", "--workers", "1",
                   "--no-progress", "-q", "--layout", "clips") == EXIT_SKIPPED
    a = IndexedKinetics(jpeg_out, frames_per_clip=5, step_between_clips=3, frame_rate=15, output_format="THWC")
    b = IndexedKinetics(clips_out, output_format="THWC")
    assert len(a) == len(b) > 0
    for g in range(len(b)):
        (va, aa, ya), (vb, ab, yb) = a[g], b[g]
        assert ya == yb and np.array_equal(va.numpy(), vb.numpy()) and np.array_equal(aa.numpy(), ab.numpy()), g


def test_same_bytes_whatever_the_workers(mixed, raw_out, tmp_path):
    one = _convert(mixed, tmp_path / "w1", "--workers", "1", "--shard-size", "1MB")
    assert tree_bytes(one) == tree_bytes(raw_out)


def test_clips_layout_output_is_unchanged_by_the_option(mixed, tmp_path):
    """``layout="clips"`` given or not (the default for S >= T): the same bytes, and no trace of the option in the index."""
    assert (ConvertOptions(frames_per_clip=4, step_between_clips=4).output_options()
            == ConvertOptions(frames_per_clip=4, step_between_clips=4, layout="clips").output_options())
    assert "layout" not in ConvertOptions(frames_per_clip=4, step_between_clips=4).output_options()
    a = run_cli(mixed, tmp_path / "a", "-T", "4", "-S", "4", "--workers", "1", "--no-progress", "-q")
    b = run_cli(mixed, tmp_path / "b", "-T", "4", "-S", "4", "--workers", "1", "--no-progress", "-q", "--layout", "clips")
    assert a == b == EXIT_SKIPPED
    assert tree_bytes(tmp_path / "a") == tree_bytes(tmp_path / "b")
    assert not (tmp_path / "a" / "train" / VIDEOS_TABLE_NAME).exists()
    with pytest.raises(ValueError, match="layout='frames'"):
        ConvertOptions(frames_per_clip=4, layout="frames")


def test_short_videos_are_kept(raw_out):
    """A video too short for the default T is stored all the same: a shorter T cuts clips from it."""
    index = json.loads((raw_out / "train" / "index.json").read_bytes())
    portrait = next(v for v in index["videos"] if v["path"].endswith("portrait.mp4"))
    assert portrait["status"] == "ok" and portrait["frames"] == 16
    long_clips = IndexedKinetics(raw_out, frames_per_clip=20, step_between_clips=1, with_ids=True)
    assert long_clips.clips_per_video[portrait["index"]] == 0
    short_clips = IndexedKinetics(raw_out, frames_per_clip=16, step_between_clips=1)
    assert short_clips.clips_per_video[portrait["index"]] == 1


def test_plan_prints_both_layouts(mixed, tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="clipshards"):
        assert run_cli(mixed, tmp_path / "dry", "-T", "8", "-S", "1", "--dry-run", "--workers", "1", "--no-progress") == 0
    plan = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("plan:"))
    assert "clips layout" in plan and "videos layout" in plan and "recommended: --layout videos" in plan, plan


def test_inspect_verify_preview(raw_out, jpeg_out, tmp_path):
    from clipshards.convert import inspect_output, preview_clip, verify_output

    for out in (raw_out, jpeg_out):
        info = inspect_output(out)
        assert info["layout"] == "videos" and info["counts"]["videos_ok"] == 7
        result = verify_output(out, decode="all")
        assert result.ok, result
        png = tmp_path / f"{out.parent.name}.png"
        preview_clip(out, index=2, out=png)
        assert png.stat().st_size > 1000


def test_readers_of_the_clips_layout_refuse_it_by_name(raw_out):
    from clipshards.convert.schema import ShardFormatError
    from clipshards.loader import webdataset_pipeline

    with pytest.raises(ShardFormatError, match="'videos' layout output.*IndexedKinetics"):
        webdataset_pipeline(raw_out)


@pytest.mark.parametrize("field, value, message", [
    ("sample_bytes", 10**12, "outside its shard"),
    ("audio_samples", 10**9, "outside its sample"),
    ("label", 99, "names no class"),
    ("height", 4000, "larger than the index's largest"),
])
def test_a_table_that_disagrees_with_the_index_is_refused(raw_out, tmp_path, field, value, message):
    """A hostile or damaged videos.npy is refused when the dataset opens, before any clip is read."""
    import shutil

    from clipshards.convert.schema import ShardFormatError, checksum_of
    from clipshards.convert.video_sample import table_bytes

    bad = tmp_path / "bad"
    shutil.copytree(raw_out, bad)
    split = bad / "train"
    table = np.load(split / VIDEOS_TABLE_NAME, allow_pickle=False)
    table[field][1] = value
    blob = table_bytes(dict(zip(TABLE_DTYPE.names, r)) for r in table.tolist())
    (split / VIDEOS_TABLE_NAME).write_bytes(blob)
    index = json.loads((split / "index.json").read_bytes())
    index["video_table"].update(bytes=len(blob), xxh3_128=checksum_of("xxh3_128", blob))
    (split / "index.json").write_text(json.dumps(index, sort_keys=True, separators=(",", ":")))
    with pytest.raises(ShardFormatError, match=message):
        IndexedKinetics(bad)
    (split / VIDEOS_TABLE_NAME).write_bytes(blob[:-1] + b"x")  # the checksum no longer matches
    with pytest.raises(ShardFormatError, match="checksum"):
        IndexedKinetics(bad)
