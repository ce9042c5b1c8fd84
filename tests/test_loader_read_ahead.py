"""Reading ahead when a dataset is iterated clip by clip in the main process (loader/parallel.py
``in_groups``, ``StreamingKinetics(read_ahead=)``): the same clips in the same order as without
it, errors and skips where they were, exact resume, ``transform`` in the caller's thread, and the
decoding really spread over more than one thread."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from clipshards.convert import convert
from clipshards.convert.schema import JpegFrames, ShardFormatError
from clipshards.convert.synth import VideoSpec, make_dataset
from clipshards.loader import ClipLoader, ShardReadError, StreamingKinetics
from clipshards.loader.parallel import READ_AHEAD, in_groups, read_ahead_depth, read_threads
from loader_helpers import NUM_CLIPS, clip_id, copy_out, id_table, make_converted
from state_helpers import run_test_save_load_state


# -- in_groups, without media ------------------------------------------------------------------
@pytest.mark.parametrize("count,size,threads", [(0, 4, 2), (1, 4, 2), (7, 3, 2), (8, 4, 2), (9, 8, 3), (5, 1, 2)])
def test_in_groups_keeps_order_and_every_item(count, size, threads):
    assert list(in_groups(range(count), lambda x: x * x, size=size, threads=threads)) == [x * x for x in range(count)]


def test_in_groups_raises_a_failing_item_after_the_items_before_it():
    def work(x: int) -> int:
        if x in (5, 6):
            raise ValueError(f"item {x}")
        return x

    got: list[int] = []
    with pytest.raises(ValueError, match="item 5"):
        for x in in_groups(range(10), work, size=4, threads=2):
            got.append(x)
    assert got == [0, 1, 2, 3, 4]


def test_in_groups_raises_a_failing_source_after_the_items_before_it():
    def source():
        yield from range(6)
        raise RuntimeError("source broke")

    got: list[int] = []
    with pytest.raises(RuntimeError, match="source broke"):
        for x in in_groups(source(), lambda x: x, size=4, threads=2):
            got.append(x)
    assert got == list(range(6))


def test_in_groups_closes_its_source_when_closed():
    closed = threading.Event()

    def source():
        try:
            yield from range(100)
        finally:
            closed.set()

    groups = in_groups(source(), lambda x: x, size=4, threads=2)
    assert [next(groups) for _ in range(3)] == [0, 1, 2]
    groups.close()
    assert closed.is_set()


def test_read_ahead_depth_and_threads(monkeypatch):
    import clipshards.loader.parallel as parallel

    assert read_ahead_depth(0) == 0 and read_ahead_depth(1) == 0 and read_ahead_depth(5) == 5
    monkeypatch.setattr(parallel, "usable_cores", lambda: 1)
    assert read_ahead_depth("auto") == 0 and read_threads() == 1
    monkeypatch.setattr(parallel, "usable_cores", lambda: 4)
    assert read_ahead_depth("auto") == READ_AHEAD
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)  # a pipeline stage: one helper even then
        assert read_threads() == 2
        torch.set_num_threads(8)
        assert read_threads() == 4  # never more than the cores
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("bad", [-1, 2.5, "many", True])
def test_read_ahead_argument_is_checked(tmp_path_factory, bad):
    _, out = make_converted(tmp_path_factory.mktemp("ra_arg"))
    with pytest.raises(ValueError, match="read_ahead="):
        StreamingKinetics(out, read_ahead=bad)


# -- datasets -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def jpeg_out(tmp_path_factory) -> Path:
    return make_converted(tmp_path_factory.mktemp("ra_jpeg"), codec="jpeg")[1]


@pytest.fixture(scope="module")
def videos_jpeg_out(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ra_videos") / "ds"
    make_dataset(root, classes=("a", "b"), videos_per_class=2, spec=VideoSpec(frames=30))
    dest = root.parent / "out"
    convert(root, dest, frames_per_clip=6, step_between_clips=4, layout="videos", codec="jpeg", workers=1, progress=False)
    return dest


def _same(a, b) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert len(x) == len(y)
        assert x[0].shape == y[0].shape and torch.equal(x[0], y[0]) and torch.equal(x[1], y[1])
        assert x[2:] == y[2:]


def _decoding_threads(monkeypatch) -> set[str]:
    names: set[str] = set()
    decode_into = JpegFrames.decode_into

    def recorded(self, out):
        names.add(threading.current_thread().name)
        time.sleep(0.002)  # a clip as slow as a large one: a helper that wakes late still gets some
        return decode_into(self, out)

    monkeypatch.setattr(JpegFrames, "decode_into", recorded)
    return names


@pytest.mark.parametrize("layout", ["clips", "videos"])
def test_read_ahead_gives_the_clips_of_one_thread(jpeg_out, videos_jpeg_out, layout, monkeypatch):
    out, extra = (jpeg_out, {}) if layout == "clips" else (videos_jpeg_out, {"clips_per_video": 2, "with_ids": True})
    import clipshards.loader.datasets as datasets

    monkeypatch.setattr(datasets, "read_threads", lambda: 2)  # a helper even on a one-core machine
    plain = StreamingKinetics(out, seed=3, read_ahead=0, **extra)
    ahead = StreamingKinetics(out, seed=3, read_ahead=5, **extra)
    threads = _decoding_threads(monkeypatch)
    for epoch in (0, 1):
        plain.set_epoch(epoch)
        ahead.set_epoch(epoch)
        threads.clear()
        want = list(plain)
        assert threads == {threading.current_thread().name}
        threads.clear()
        got = list(ahead)
        _same(got, want)
        assert len(threads) >= 2 and threading.current_thread().name in threads  # the caller and a helper (or more)
    assert len(want) == len(ahead)
    for video, *_ in got:  # each clip in memory of its own, writable, as without reading ahead
        assert video.untyped_storage().data_ptr() not in {v.untyped_storage().data_ptr() for v, *_ in got if v is not video}


def test_read_ahead_resumes_exactly(jpeg_out):
    table = id_table(jpeg_out)

    def make():
        ds = StreamingKinetics(jpeg_out, seed=5, shuffle_buffer=6, block_size=2, read_ahead=4)
        ds.set_epoch(1)
        return ClipLoader(ds, batch_size=None, num_workers=0)

    reference = run_test_save_load_state(make, [0, 1, 3, 4, 9, 30, NUM_CLIPS - 1], lambda s: table[clip_id(s[0])])
    assert sorted(reference) == list(range(NUM_CLIPS))


def test_transform_runs_in_the_callers_thread_in_order(jpeg_out):
    seen: list[str] = []
    order: list[int] = []

    def transform(video: torch.Tensor) -> torch.Tensor:
        seen.append(threading.current_thread().name)
        order.append(int(video.float().sum()))
        return video[:, :, :8, :8]

    ds = StreamingKinetics(jpeg_out, seed=1, transform=transform, read_ahead=4)
    got = list(ds)
    assert set(seen) == {threading.current_thread().name} and len(seen) == NUM_CLIPS
    plain = [v for v, *_ in StreamingKinetics(jpeg_out, seed=1, read_ahead=0)]
    assert order == [int(v.float().sum()) for v in plain]  # the transform saw the clips in their order
    assert all(torch.equal(v, p[:, :, :8, :8]) for (v, *_), p in zip(got, plain))


@pytest.fixture()
def damaged(jpeg_out, tmp_path) -> tuple[Path, int]:
    """A copy of the JPEG conversion whose clip 20 has a flipped byte (its checksum fails)."""
    bad = copy_out(jpeg_out, tmp_path / "bad")
    split = bad / "train"
    offsets = np.load(split / "offsets.npy", allow_pickle=False)
    import json

    index = json.loads((split / "index.json").read_text())
    shard = next(s for s in index["shards"] if s["first_clip"] <= 20 < s["first_clip"] + s["clips"])
    path = split / shard["name"]
    data = bytearray(path.read_bytes())
    off, length = int(offsets[20][0]), int(offsets[20][1])
    data[off + length - 700] ^= 0xFF
    path.write_bytes(bytes(data))
    return bad, 20


def test_errors_are_raised_and_skipped_where_they_were(damaged):
    bad, clip = damaged
    runs = {}
    for ra in (0, 6):
        got: list[torch.Tensor] = []
        with pytest.raises(ShardReadError) as info:
            for video, *_ in StreamingKinetics(bad, shuffle=False, read_ahead=ra):
                got.append(video)
        assert info.value.clip == clip
        assert len(got) == clip
        skipping = StreamingKinetics(bad, shuffle=False, read_ahead=ra, errors="skip")
        runs[ra] = (got, list(skipping), skipping.skipped)
    assert all(torch.equal(a, b) for a, b in zip(runs[0][0], runs[6][0]))
    _same(runs[6][1], runs[0][1])
    assert runs[0][2] == runs[6][2] == 1


def test_a_decoding_error_on_a_helper_is_raised_at_its_clip(jpeg_out, monkeypatch):
    """A clip that fails while being decoded on a read-ahead thread: the clips before it are
    yielded, then its error, naming it; under ``errors="skip"`` it is counted and replaced."""
    target = {}
    decode_into = JpegFrames.decode_into

    def failing(self, out):
        if target.get("key") == id(self):
            raise ShardFormatError("corrupt JPEG data")
        return decode_into(self, out)

    from clipshards.loader import reader

    make = reader.DeferredVideo.__init__

    def remember(self, frames, output_format, raw):
        make(self, frames, output_format, raw)
        if raw.clip == 13:
            target["key"] = id(frames)

    monkeypatch.setattr(JpegFrames, "decode_into", failing)
    monkeypatch.setattr(reader.DeferredVideo, "__init__", remember)
    got = []
    with pytest.raises(ShardReadError, match="corrupt JPEG data") as info:
        for item in StreamingKinetics(jpeg_out, shuffle=False, read_ahead=4):
            got.append(item)
    assert info.value.clip == 13 and len(got) == 13
    skipping = StreamingKinetics(jpeg_out, shuffle=False, read_ahead=4, errors="skip")
    items = list(skipping)
    assert len(items) == NUM_CLIPS and skipping.skipped == 1
    assert torch.equal(items[13][0], items[12][0])  # replaced by the last good clip, as without reading ahead
