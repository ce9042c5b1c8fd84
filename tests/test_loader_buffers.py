"""Reused memory in the loader: pooled buffers, clips copied on read, shared-memory batch slots.

Clips here are larger than ``MIN_POOLED`` (1 MiB), so every fast path is taken. The
property that matters is that reuse is invisible: a batch or clip someone still holds is
never overwritten, and a clip written to in place never changes the shard or another clip.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from clipshards.convert import convert
from clipshards.convert.schema import ShardFormatError, decode_jpeg, decode_jpeg_frames
from clipshards.convert.synth import VideoSpec, make_dataset
from clipshards.loader import IndexedKinetics, StreamingKinetics, TransportOptions
from clipshards.loader.buffers import MIN_POOLED, BufferPool, SharedSlots, use_count
from clipshards.loader.reader import _scan_plain, parse_sample

from loader_helpers import clip_id, poison_batch_memory, refresh_checksums

BATCH = 4


@pytest.fixture(scope="module")
def big(tmp_path_factory) -> Path:
    """12 raw clips of 8 frames at 256x192 (1.2 MB each), 2 classes."""
    tmp = tmp_path_factory.mktemp("big")
    root = tmp / "dataset"
    make_dataset(root, classes=("a", "b"), videos_per_class=2, spec=VideoSpec(frames=24, width=256, height=192))
    out = tmp / "out"
    convert(root, out, frames_per_clip=8, step_between_clips=8, workers=1, progress=False, shard_size=4_000_000)
    return out


@pytest.fixture(scope="module")
def expected(big) -> dict[int, tuple[str, bytes, int]]:
    """Global clip -> (video identity, audio bytes, label), read without any pooling."""
    ds = IndexedKinetics(big, transport=TransportOptions(map_local=False))
    out = {}
    for g in range(len(ds)):
        video, audio, label = ds[g]
        out[g] = (clip_id(video), audio.numpy().tobytes(), label)
    assert ds[0][0].numel() >= MIN_POOLED, "clips must be large enough to be pooled and mapped"
    return out


def _by_id(expected):
    return {v[0]: g for g, v in expected.items()}


def _check_batch(batch, expected, ids) -> list[int]:
    got = []
    for i in range(batch.video.shape[0]):
        g = ids[clip_id(batch.video[i])]
        vid, audio, label = expected[g]
        n, k = int(batch.audio_lengths[i]), int(batch.audio_channels[i])
        assert batch.audio[i, :k, :n].contiguous().numpy().tobytes() == audio
        assert int(batch.label[i]) == label
        got.append(g)
    return got


# -- the pool --------------------------------------------------------------------------------


def test_pool_hands_out_a_buffer_again_only_when_nothing_refers_to_it():
    p = BufferPool()
    a = p.take(MIN_POOLED)
    b = p.take(MIN_POOLED)
    assert b.data_ptr() != a.data_ptr(), "a buffer still held was handed out again"
    view = a[10:20].view(torch.int16)  # a view keeps the memory in use after `a` is gone
    arr = np.frombuffer(p.buffer(MIN_POOLED), dtype=np.uint8)  # so does a NumPy array of a buffer
    a_ptr, b_ptr, arr_ptr = a.data_ptr(), b.data_ptr(), arr.__array_interface__["data"][0]
    assert len({a_ptr, b_ptr, arr_ptr}) == 3
    del a, b  # `view` still holds a's memory, `arr` its own; b's is free
    c = p.take(MIN_POOLED)
    assert c.data_ptr() == b_ptr and p.hits == 1
    del view, arr
    x, y = p.take(MIN_POOLED), p.take(MIN_POOLED)
    assert {x.data_ptr(), y.data_ptr()} == {a_ptr, arr_ptr}


def test_pool_reuses_a_released_buffer_and_ignores_small_ones():
    p = BufferPool()
    t = p.tensor((MIN_POOLED // 4,), torch.float32)
    ptr = t.data_ptr()
    del t
    assert p.tensor((MIN_POOLED,), torch.uint8).data_ptr() == ptr
    small = p.take(MIN_POOLED - 1)
    assert small.numel() == MIN_POOLED - 1 and len(p._storages) == 1


def test_pool_hands_out_distinct_memory_to_threads():
    import threading

    p = BufferPool(max_buffers=64, max_bytes=1 << 30)
    got: list[torch.Tensor] = []
    lock = threading.Lock()

    def grab():
        for _ in range(20):
            t = p.take(MIN_POOLED)
            with lock:
                got.append(t)

    threads = [threading.Thread(target=grab) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len({t.data_ptr() for t in got}) == len(got) == 80


def test_pool_is_bounded():
    p = BufferPool(max_buffers=3)
    held = [p.tensor((MIN_POOLED,), torch.uint8) for _ in range(6)]
    assert len(p._storages) == 3
    assert len({t.data_ptr() for t in held}) == 6


def test_shared_slots_reject_bad_sizes():
    with pytest.raises(ValueError, match="num_workers"):
        SharedSlots(0, 2)


def test_map_local_option_is_checked():
    with pytest.raises(ValueError, match="map_local"):
        TransportOptions(map_local="yes")
    assert TransportOptions.from_env({"CLIPSHARDS_MAP_LOCAL": "0"}).map_local is False
    with pytest.raises(ValueError, match="CLIPSHARDS_MAP_LOCAL"):
        TransportOptions.from_env({"CLIPSHARDS_MAP_LOCAL": "maybe"})


# -- held batches stay intact ------------------------------------------------------------------


@pytest.mark.parametrize("workers", [0, 2])
def test_held_batches_are_never_overwritten(big, expected, workers):
    """Keep every batch of two epochs alive, then check each against the clips read without
    pooling: reuse of a buffer still referenced would show up as a wrong or repeated clip."""
    ids = _by_id(expected)
    ds = StreamingKinetics(big, shuffle=True, seed=3)
    loader = ds.loader(batch_size=1, num_workers=workers)  # more batches per worker than it has slots
    held = []
    for epoch in range(2):
        ds.set_epoch(epoch)
        held.extend(loader)
    seen = [g for batch in held for g in _check_batch(batch, expected, ids)]
    assert sorted(seen) == sorted(list(expected) * 2)


@pytest.mark.parametrize("workers", [0, 2])
def test_batches_dropped_as_they_go_are_correct_and_reuse_memory(big, expected, workers):
    ids = _by_id(expected)
    ds = StreamingKinetics(big, shuffle=True, seed=5)
    loader = ds.loader(batch_size=BATCH, num_workers=workers, persistent_workers=workers > 0)
    seen, ptrs = [], []
    epochs = 8
    for epoch in range(epochs):
        ds.set_epoch(epoch)
        for batch in loader:
            seen.extend(_check_batch(batch, expected, ids))
            ptrs.append(batch.video.data_ptr())
    assert sorted(seen) == sorted(list(expected) * epochs)
    most = 3 if workers == 0 else workers * (loader.prefetch_factor + 2)
    assert len(set(ptrs)) <= most < len(ptrs), f"batch memory was not reused: {len(set(ptrs))} distinct of {len(ptrs)}"


def test_slots_release_only_unreferenced_batches(big, expected):
    """A batch kept while the epoch goes on keeps its slot: the worker uses another."""
    ids = _by_id(expected)
    ds = StreamingKinetics(big, shuffle=False)
    loader = ds.loader(batch_size=1, num_workers=2, persistent_workers=True)
    for _ in range(2):
        it = iter(loader)
        first = next(it)
        before = clip_id(first.video[0])
        rest = list(it)
        assert clip_id(first.video[0]) == before
        _check_batch(first, expected, ids)
        for b in rest:
            _check_batch(b, expected, ids)


# -- mapped shards -------------------------------------------------------------------------------


def test_writing_to_a_mapped_clip_changes_neither_the_shard_nor_a_new_read(big, expected):
    split = big / "train"
    shards = sorted(split.glob("*.tar"))
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in shards}
    ds = IndexedKinetics(big)
    video, audio, _ = ds[1]
    assert video.is_contiguous() or video.permute(0, 2, 3, 1).is_contiguous()
    video.fill_(7)
    audio.fill_(1.5)
    again = ds[1]
    assert clip_id(again[0]) == expected[1][0]
    assert again[1].numpy().tobytes() == expected[1][1]
    assert {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in shards} == before


def test_clips_read_with_either_map_local_are_equal(big, expected):
    for opts in (TransportOptions(), TransportOptions(map_local=False)):
        ds = IndexedKinetics(big, transport=opts)
        assert [clip_id(ds[g][0]) for g in range(len(ds))] == [expected[g][0] for g in range(len(ds))]


def test_a_truncated_shard_is_reported_not_mapped_past_its_end(big, tmp_path):
    import shutil

    out = tmp_path / "cut"
    shutil.copytree(big, out)
    shard = sorted((out / "train").glob("*.tar"))[0]
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2 + 1000])
    ds = IndexedKinetics(out)
    with pytest.raises(Exception, match="truncated|short|bytes"):
        for g in range(len(ds)):
            ds[g]


# -- tar fast path --------------------------------------------------------------------------------


def test_fast_member_scan_agrees_with_tarfile(big, monkeypatch):
    from clipshards.loader import reader

    from clipshards.convert.schema import OFFSETS_NAME, decode_npy

    split = big / "train"
    offsets = decode_npy((split / OFFSETS_NAME).read_bytes())
    shard = sorted(split.glob("*.tar"))[0]
    data = shard.read_bytes()
    off, size = (int(x) for x in offsets[0, :2])
    view = memoryview(data)[off: off + size]
    fast = _scan_plain(view)
    assert fast is not None
    key, fields = fast
    damaged = bytearray(view)
    damaged[148] ^= 1  # checksum field: the fast path declines, tarfile decides
    assert _scan_plain(memoryview(damaged)) is None
    monkeypatch.setattr(reader, "_scan_plain", lambda view: None)
    slow = parse_sample(view, shard="s", clip=0, expected=size)
    assert slow.key == key
    assert {k: bytes(v) for k, v in slow.fields.items()} == {k: bytes(v) for k, v in fields.items()}


# -- JPEG decoding -------------------------------------------------------------------------------


def _jpeg(frame: np.ndarray, **kw) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="JPEG", quality=90, **kw)
    return buf.getvalue()


def test_jpeg_frames_decode_to_pillows_pixels():
    from PIL import Image

    rng = np.random.default_rng(0)
    frames = [_jpeg(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)) for _ in range(3)]
    ref = np.stack([np.asarray(Image.open(io.BytesIO(f)).convert("RGB")) for f in frames])
    assert np.array_equal(decode_jpeg_frames(frames), ref)
    gray = _jpeg(rng.integers(0, 255, (48, 64), dtype=np.uint8))
    assert np.array_equal(decode_jpeg(gray), np.asarray(Image.open(io.BytesIO(gray)).convert("RGB")))


def test_jpeg_frames_of_different_sizes_or_not_jpeg_are_refused():
    a = _jpeg(np.zeros((48, 64, 3), np.uint8))
    b = _jpeg(np.zeros((40, 64, 3), np.uint8))
    with pytest.raises(ShardFormatError, match="64x40"):
        decode_jpeg_frames([a, b])
    png = io.BytesIO()
    from PIL import Image

    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(png, format="PNG")
    with pytest.raises(ShardFormatError):
        decode_jpeg(png.getvalue())
    with pytest.raises(ShardFormatError):
        decode_jpeg(a[: len(a) // 2])


# -- JPEG clips decoded straight into the batch ---------------------------------------------------


@pytest.fixture(scope="module")
def big_jpeg(big, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bigjpeg") / "out"
    convert(big.parent / "dataset", out, frames_per_clip=8, step_between_clips=8, workers=1, progress=False,
            codec="jpeg", shard_size=200_000)
    return out


@pytest.mark.parametrize("workers,threads", [(0, 1), (0, 4), (2, 1)])  # threads: a batch's clips over 1 or 4 (parallel.py)
@pytest.mark.parametrize("fmt", ["TCHW", "THWC"])
def test_clip_loader_jpeg_batches_equal_decoded_clips(big_jpeg, workers, threads, fmt, monkeypatch):
    monkeypatch.setattr("clipshards.loader.collate.batch_threads", lambda: threads)
    poison_batch_memory(monkeypatch)
    ref = IndexedKinetics(big_jpeg, output_format=fmt)
    ds = StreamingKinetics(big_jpeg, shuffle=False, output_format=fmt)
    batches = list(ds.loader(batch_size=BATCH, num_workers=workers))
    got = sorted(clip_id(v) for b in batches for v in b.video)  # workers interleave their parts
    want = sorted(clip_id(ref[g][0]) for g in range(len(ref)))
    assert got == want
    assert batches[0].video.shape[1:] == ref[0][0].shape
    assert not ds._defer_jpeg, "the dataset is back to decoding itself after the loader"
    assert isinstance(next(iter(ds))[0], torch.Tensor)


def test_a_corrupt_jpeg_frame_in_a_batch_names_its_clip(big_jpeg, tmp_path):
    import shutil

    from clipshards.loader import ShardReadError

    out = tmp_path / "bad"
    shutil.copytree(big_jpeg, out)
    shard = sorted((out / "train").glob("*.tar"))[0]
    data = bytearray(shard.read_bytes())
    with tarfile.open(shard) as tf:
        first = next(m for m in tf if m.name.endswith(".jpg"))
    jpg = data[first.offset_data: first.offset_data + first.size]
    at = first.offset_data + jpg.index(b"\xff\xda") + 40  # inside the frame's entropy-coded data
    data[at: at + 200] = b"\xff\xd9" * 100
    shard.write_bytes(bytes(data))
    ds = StreamingKinetics(out, shuffle=False)
    with pytest.raises(ShardReadError, match=r"clip 0: its bytes differ"):  # the checksum: nothing decoded
        list(ds.loader(batch_size=BATCH))
    refresh_checksums(out / "train")  # a consistent dataset with a bad frame: decoding in the batch finds it
    ds = StreamingKinetics(out, shuffle=False)
    with pytest.raises(ShardReadError, match=r"clip 0.*jpg"):
        list(ds.loader(batch_size=BATCH))


def test_a_slot_sends_its_memory_once_then_where_the_tensors_lie():
    """A batch from a worker names its slot; the slot's storage travels with its first batch
    only (a file descriptor through a socket per batch cost w2 raw ~20%), and the batches the
    main process rebuilds over the storage it kept equal what the worker made."""
    from clipshards.loader.collate import ClipBatch, Slotted, _assemble

    slots = SharedSlots(1, 2)  # one object plays both sides here: the worker's and the main process's
    rng = np.random.default_rng(0)
    for round_ in range(3):
        slot, memory = slots.acquire(0, 1 << 20)
        assert slot == 0, "a released slot is filled again"
        videos = [torch.from_numpy(rng.integers(0, 255, (4, 8, 8, 3), dtype=np.uint8)).permute(0, 3, 1, 2) for _ in range(2)]
        audios = [torch.randn(2, 7 + i) for i in range(2)]
        made = _assemble(videos, audios, [3, 1], lambda n: memory[:n])
        rebuild, args = Slotted(made, slot, slots=slots).__reduce__()
        assert (args[2] is None) == (round_ > 0), "the storage goes with the slot's first batch only"
        got = rebuild(*args)
        assert isinstance(got.batch, ClipBatch) and got.slot == slot
        for a, b in zip(got.batch, made):
            assert a.shape == b.shape and a.stride() == b.stride() and torch.equal(a, b)
        del got
        slots.release(slot)
    with pytest.raises(RuntimeError, match="before its memory"):
        SharedSlots(1, 1).mapped(0, None)
