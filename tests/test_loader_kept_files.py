"""Local shards kept open, bytes hashed as they are read, large local clips read at their turn.

Each thread keeps its last files open (loader/local.py): a file replaced under the loader, a
FIFO put in its place, a fork, the end of an epoch must all behave as if every read opened the
file afresh. A clip is hashed piece by piece as it is read: the digest must be the clip's. A
StreamingKinetics over local clips of a megabyte or more reads each clip at its turn instead of
ahead into its shuffle buffer: the order and the clips must not change.
"""

from __future__ import annotations

import gc
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import xxhash

from clipshards.convert import convert
from clipshards.convert.storage import NotRegularFileError
from clipshards.convert.synth import VideoSpec, make_dataset
from clipshards.loader import IndexedKinetics, StreamingKinetics
from clipshards.loader.buffers import MIN_POOLED
from clipshards.loader.collate import collate_clips
from clipshards.loader.local import KEEP_OPEN, PIECE
from clipshards.loader.transport import Transport

from loader_helpers import clip_id


def _open_fds() -> int:
    gc.collect()  # transports of earlier tests close their kept files when collected
    return len(os.listdir("/proc/self/fd"))


linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="counts descriptors in /proc/self/fd")


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    for i in range(KEEP_OPEN + 8):
        (tmp_path / f"f{i:02d}.bin").write_bytes(bytes([i]) * 1000)
    return tmp_path


def test_a_file_replaced_under_the_reader_is_read_afresh(folder):
    t = Transport(folder)
    assert bytes(t.read("f00.bin", 0, 4)) == b"\x00" * 4
    (folder / "new").write_bytes(b"replaced")
    os.replace(folder / "new", folder / "f00.bin")  # another inode at the path: the kept descriptor is stale
    assert bytes(t.read("f00.bin")) == b"replaced"
    os.remove(folder / "f00.bin")
    with pytest.raises(FileNotFoundError, match="f00.bin does not exist"):
        t.read("f00.bin", 0, 4)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_put_in_place_of_a_kept_file_is_refused_without_hanging(folder):
    t = Transport(folder)
    t.read("f01.bin", 0, 4)
    os.mkfifo(folder / "fifo")
    os.replace(folder / "fifo", folder / "f01.bin")
    with pytest.raises(NotRegularFileError, match="FIFO"):
        t.read("f01.bin", 0, 4)


def test_a_file_cut_in_place_gives_a_short_read_not_stale_bytes(folder):
    t = Transport(folder)
    assert len(t.read_buffer("f02.bin", 0, 1000)) == 1000
    os.truncate(folder / "f02.bin", 10)  # the same inode, kept open
    assert len(t.read_buffer("f02.bin", 0, 1000)) == 10
    out = [bytearray(100), bytearray(100)]
    assert t.read_into("f02.bin", 0, out) == 10


@linux_only
def test_descriptors_are_bounded_and_closed_at_release(folder):
    t = Transport(folder)
    before = _open_fds()
    for i in range(KEEP_OPEN + 8):
        assert bytes(t.read(f"f{i:02d}.bin", 0, 1)) == bytes([i])
    assert _open_fds() == before + KEEP_OPEN
    t.release()
    assert _open_fds() == before
    assert bytes(t.read("f03.bin", 0, 1)) == b"\x03", "a read after release opens the file again"


@linux_only
def test_release_closes_the_files_other_threads_keep_open(folder):
    """The helpers that read a batch's clips (loader/parallel.py) keep files open too, and live
    on: the end of an epoch, in the calling thread, closes theirs as well."""
    import threading

    t = Transport(folder)
    before = _open_fds()
    read, done = threading.Event(), threading.Event()

    def helper() -> None:
        for i in range(3):
            t.read(f"f{i:02d}.bin", 0, 1)
        read.set()
        done.wait(10)  # alive, as a pool's thread is, while the epoch ends

    thread = threading.Thread(target=helper)
    thread.start()
    try:
        assert read.wait(10)
        t.read("f03.bin", 0, 1)
        assert _open_fds() == before + 4
        t.release()
        assert _open_fds() == before
    finally:
        done.set()
        thread.join()


@linux_only
def test_a_streaming_epoch_closes_the_shards_it_kept_open(big_clips):
    ds = StreamingKinetics(big_clips, shuffle=True)
    list(ds)  # the first epoch: what torch opens once for good
    before = _open_fds()
    ds.set_epoch(1)
    it = iter(ds)
    next(it)
    assert _open_fds() > before
    for _ in it:
        pass
    assert _open_fds() == before


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_reads_with_its_own_descriptors_and_leaves_the_parents(folder):
    t = Transport(folder)
    assert bytes(t.read("f04.bin", 0, 2)) == b"\x04\x04"
    pid = os.fork()
    if pid == 0:  # the child: its copies of the parent's descriptors are closed, its own opened
        code = 0
        try:
            kept = t._files._kept()
            code = 0 if (not kept.files and bytes(t.read("f04.bin", 0, 2)) == b"\x04\x04"
                         and set(kept.files) == {"f04.bin"}) else 3
            t.release()
        except BaseException:
            code = 4
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    fd = t._files._kept().files["f04.bin"][0]
    assert os.pread(fd, 2, 0) == b"\x04\x04", "the child closed only its own copy"
    assert bytes(t.read("f04.bin", 0, 2)) == b"\x04\x04"


def test_pieces_are_hashed_as_they_are_read(tmp_path):
    data = np.random.default_rng(0).integers(0, 256, 3 * PIECE + 12345, dtype=np.uint8).tobytes()
    (tmp_path / "a.bin").write_bytes(data)
    t = Transport(tmp_path)
    h = xxhash.xxh3_64()
    seen = []
    buf = t.read_buffer("a.bin", 7, 7 + 2 * PIECE + 999, each=lambda p: (h.update(p), seen.append(len(p))))
    assert bytes(buf) == data[7: 7 + 2 * PIECE + 999]
    assert seen == [PIECE, PIECE, 999] and h.intdigest() == xxhash.xxh3_64_intdigest(data[7: 7 + 2 * PIECE + 999])
    seen.clear()
    buf = t.read_buffer("a.bin", len(data) - 100, len(data) + 500, each=lambda p: seen.append(bytes(p)))
    assert bytes(buf) == data[-100:] and seen == [data[-100:]], "the bytes returned, where the file ends first"


@pytest.fixture(scope="module")
def big_clips(tmp_path_factory) -> Path:
    """Raw clips of 1.2 MB (8 frames of 256x192) in several shards."""
    tmp = tmp_path_factory.mktemp("kept")
    make_dataset(tmp / "dataset", classes=("a", "b"), videos_per_class=2, spec=VideoSpec(frames=24, width=256, height=192))
    convert(tmp / "dataset", tmp / "out", frames_per_clip=8, step_between_clips=8, workers=1, progress=False,
            shard_size=3_000_000, yes=True)
    return tmp / "out"


def test_large_local_clips_come_in_the_planned_order_each_read_once(big_clips):
    ref = IndexedKinetics(big_clips, output_format="THWC")
    assert ref.index.clip_bytes >= MIN_POOLED and len(ref.index.shards) >= 3
    by_id = {clip_id(ref[g][0]): g for g in range(len(ref))}
    for block, buffer in ((1, 0), (3, 5), (None, 8)):
        ds = StreamingKinetics(big_clips, shuffle=True, seed=3, block_size=block, shuffle_buffer=buffer, output_format="THWC")
        got = [by_id[clip_id(v)] for v, _, _ in ds]
        assert got == [int(g) for g in ds.epoch_order()[0]], (block, buffer)
        stats = ds.index.transport.stats
        assert sum(n for name, n in stats.requests.items() if name.endswith(".tar")) == len(ref), "one read a clip"


def test_audio_of_any_dtype_or_device_is_copied_into_the_batch():
    video = torch.zeros(2, 3, 4, 4, dtype=torch.uint8)
    audios = [torch.rand(1, 5), torch.rand(2, 3, dtype=torch.bfloat16), torch.rand(2, 7, dtype=torch.float64, requires_grad=True)]
    batch = collate_clips([(video, a, i) for i, a in enumerate(audios)])
    assert batch.audio.shape == (3, 2, 7) and batch.audio.dtype == torch.float32
    for i, a in enumerate(audios):
        k, n = a.shape
        assert torch.equal(batch.audio[i, :k, :n], a.detach().float())
        assert not batch.audio[i, k:].any() and not batch.audio[i, :k, n:].any()
    assert batch.label.tolist() == [0, 1, 2] and batch.audio_lengths.tolist() == [5, 3, 7]
    assert batch.audio_channels.tolist() == [1, 2, 2]


def _tuples(loader) -> list[tuple]:
    return [(v.clone(), a.clone(), y, v.stride(), a.stride(), type(y)) for v, a, y in loader]


@pytest.fixture(scope="module")
def jpeg_clips(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("kept-jpeg")
    make_dataset(tmp / "dataset", classes=("a", "b"), videos_per_class=2, spec=VideoSpec(frames=24, width=96, height=64))
    convert(tmp / "dataset", tmp / "out", frames_per_clip=8, step_between_clips=8, workers=1, progress=False,
            codec="jpeg", yes=True)
    return tmp / "out"


@pytest.mark.parametrize("codec", ["raw", "jpeg"])
@pytest.mark.parametrize("workers", [0, 2])
def test_unbatched_clips_made_in_slots_are_the_datasets_tuples(big_clips, jpeg_clips, codec, workers):
    """ClipLoader(batch_size=None) reads (decodes) each clip into a reused slot in its worker:
    the tuples are those of a plain DataLoader over the dataset, in the same order, and clips
    held past the slots' reuse never change."""
    from torch.utils.data import default_convert

    out = big_clips if codec == "raw" else jpeg_clips
    plain = _tuples(StreamingKinetics(out, seed=1).loader(batch_size=None, num_workers=workers, collate_fn=default_convert))
    held = list(StreamingKinetics(out, seed=1).loader(batch_size=None, num_workers=workers))
    assert len(held) == len(plain) > 8
    for (v, a, y), (pv, pa, py, vs, as_, yt) in zip(held, plain):
        assert torch.equal(v, pv) and torch.equal(a, pa) and y == py
        assert v.stride() == vs and a.stride() == as_ and type(y) is yt and v.dtype == torch.uint8
