"""Shard writing: bytes, checksums and offsets through the chunked background writer, and the
reused spool slots of the local engine."""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path
from typing import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
import xxhash

from clipshards.convert import convert, verify_output
from clipshards.convert.spool import SPOOL_PREFIX
from clipshards.convert.storage import Location
from clipshards.convert.writer import CHUNK, TAR_END, ChunkPool, ShardWriter

from reference import tree_bytes

SIZES = [1, 511, CHUNK - 3, 4096, CHUNK + 5, 2 * CHUNK, 777]


@pytest.fixture(params=["disk", "tmpfs"])
def folder(request, tmp_path) -> Iterator[Path]:
    """A folder on the test disk (ext4 and the like: O_DIRECT needs aligned writes) or on tmpfs."""
    if request.param == "disk":
        yield tmp_path
        return
    if not os.path.isdir("/dev/shm"):
        pytest.skip("no /dev/shm tmpfs on this system")
    with tempfile.TemporaryDirectory(dir="/dev/shm") as d:
        yield Path(d)


def test_shard_bytes_sha_and_offsets_across_chunk_boundaries(folder):
    samples = [os.urandom(n) for n in SIZES]
    writer = ShardWriter(Location(folder), "train", 3, pool=ChunkPool(2))
    for i, s in enumerate(samples):
        if i % 2:
            writer.add(s)
        else:
            assert writer.add_from(io.BytesIO(s).readinto, len(s)) == len(s)
    info = writer.close()
    data = (folder / "train-000003.tar").read_bytes()
    assert data == b"".join(samples) + TAR_END
    assert info.algo == "xxh3_128" and info.checksum == xxhash.xxh3_128(data).hexdigest() and info.bytes == len(data)
    starts = [sum(SIZES[:i]) for i in range(len(SIZES))]
    assert info.offsets == list(zip(starts, SIZES)) and info.clips == len(SIZES)
    assert sorted(os.listdir(folder)) == ["train-000003.tar"]  # no partial file left


def test_shards_of_one_run_share_the_pool(tmp_path):
    pool = ChunkPool(2)
    for i in range(3):
        w = ShardWriter(Location(tmp_path), "train", i, pool=pool)
        w.add(bytes([i]) * (CHUNK + 100))
        w.close()
    assert pool.made == 2 and pool.free.qsize() == 2  # made on demand, never more than count
    assert (tmp_path / "train-000002.tar").read_bytes() == b"\2" * (CHUNK + 100) + TAR_END


def test_aborted_shard_leaves_nothing(tmp_path):
    w = ShardWriter(Location(tmp_path), "train", 0)
    w.add(b"x" * (3 * CHUNK + 1))
    w.abort()
    assert os.listdir(tmp_path) == []
    with pytest.raises(RuntimeError, match="train-000000.tar"):
        w.add(b"y")


def test_short_source_reports_the_bytes_read(tmp_path):
    w = ShardWriter(Location(tmp_path), "train", 0)
    assert w.add_from(io.BytesIO(b"abc").readinto, 10) == 3
    w.abort()


def test_chunk_pool_needs_two_buffers():
    with pytest.raises(ValueError, match="count must be >= 2"):
        ChunkPool(1)


def test_reused_spool_slots_give_the_same_bytes_and_are_removed(tiny_dataset, tiny_converted, tmp_path):
    """Two workers: 6 videos through 5 slot files (one rewritten); same bytes as one worker."""
    out = tmp_path / "w2"
    convert(tiny_dataset, out, frames_per_clip=8, step_between_clips=4, layout="clips", workers=2, progress=False,
            shard_size=200_000)
    a, b = tree_bytes(tiny_converted), tree_bytes(out)
    assert sorted(a) == sorted(b) and all(a[k] == b[k] for k in a), [k for k in a if a[k] != b.get(k)]
    mine = f"{SPOOL_PREFIX}{os.getpid()}-"
    assert not [n for n in os.listdir(tempfile.gettempdir()) if n.startswith(mine)]


def test_write_error_in_the_writer_thread_reaches_the_caller(tmp_path):
    """A failing write (here: over the file size limit, EFBIG) is raised by add or close, and
    the aborted shard leaves no file."""
    resource = pytest.importorskip("resource")
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    w = ShardWriter(Location(tmp_path), "train", 0)
    resource.setrlimit(resource.RLIMIT_FSIZE, (2 * CHUNK, hard))
    try:
        with pytest.raises(OSError):
            for _ in range(8):
                w.add(b"z" * CHUNK)
            w.close()
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    w.abort()
    assert os.listdir(tmp_path) == []


@pytest.fixture(scope="module")
def big_clips(tmp_path_factory) -> Path:
    """5 videos whose raw clips (32 frames of 128x96) exceed MIN_DIRECT_VIEW."""
    from clipshards.convert.synth import VideoSpec, write_video

    root = tmp_path_factory.mktemp("big_clips")
    for i in range(5):
        write_video(root / "train" / f"c{i % 2}" / f"v{i}.mp4", VideoSpec(frames=70, width=128, height=96, seed=i))
    return root


@pytest.mark.parametrize("workers", [1, 2])
def test_samples_written_straight_from_the_spool_equal_copied_ones(big_clips, tmp_path, monkeypatch, workers):
    """Big samples go from the mapped spool slot to the shard with O_DIRECT (no chunk copy);
    the bytes equal those of the copying path, across shard boundaries and slot reuse."""
    import clipshards.convert.packer as packer
    from clipshards.convert.writer import MIN_DIRECT_VIEW

    opts = dict(frames_per_clip=32, step_between_clips=16, layout="clips", shard_size=6 << 20, progress=False)
    calls = []
    real = packer.ShardWriter.add_view

    def counting(self, view, sizes, done, idents=None):
        calls.append(len(view))
        return real(self, view, sizes, done, idents)

    monkeypatch.setattr(packer.ShardWriter, "add_view", counting)
    direct = tmp_path / "direct"
    convert(big_clips, direct, workers=workers, **opts)
    assert calls and min(calls) >= MIN_DIRECT_VIEW, "the direct path was not taken"
    monkeypatch.setattr(packer, "MIN_DIRECT_VIEW", 1 << 60)  # every sample through a chunk
    calls.clear()
    copied = tmp_path / "copied"
    convert(big_clips, copied, workers=workers, **opts)
    assert not calls, "the copying path was not taken"
    a, b = tree_bytes(direct), tree_bytes(copied)
    assert len([k for k in a if k.endswith(".tar")]) > 2
    assert sorted(a) == sorted(b) and all(a[k] == b[k] for k in a), [k for k in a if a[k] != b.get(k)]
    assert verify_output(direct, decode="all").ok


def test_a_direct_view_is_released_when_the_shard_is_aborted(tmp_path):
    """``done`` is called for a view still queued when the shard is aborted (its slot is freed)."""
    import mmap as _mmap

    w = ShardWriter(Location(tmp_path), "train", 0)
    buf = _mmap.mmap(-1, 2 << 20)
    released = []
    w.add(b"x" * 512)
    if not w.takes_views:
        pytest.skip("this filesystem takes no sector-aligned O_DIRECT writes")
    for _ in range(3):
        w.add_view(memoryview(buf)[: 1 << 20], [1 << 19, 1 << 19], lambda: released.append(1))
    w.abort()
    assert released == [1, 1, 1]
    assert os.listdir(tmp_path) == []


@settings(max_examples=300, deadline=None)
@given(
    name=st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-/ä", min_size=1, max_size=120),
    size=st.one_of(st.integers(0, 8**11 + 10), st.sampled_from([0, 511, 512, 8**11 - 1, 8**11])),
)
def test_member_header_is_the_header_tarfile_writes(name, size):
    """The fast header equals tarfile's (PAX format, fixed metadata) byte for byte, including
    the names and sizes it hands to tarfile (long, non-ASCII, with a slash, too big)."""
    import tarfile

    from clipshards.convert.writer import member_header

    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode, info.uid, info.gid = size, 0, 0o644, 0, 0
    info.uname = info.gname = ""
    info.type = tarfile.REGTYPE
    assert member_header(name, size) == info.tobuf(format=tarfile.PAX_FORMAT, encoding="utf-8", errors="strict")


def test_a_disk_that_refuses_sector_aligned_direct_writes_gets_whole_chunks(big_clips, tmp_path, monkeypatch):
    """On a disk with 4 KiB sectors, a sector-aligned O_DIRECT write fails with EINVAL: the
    writer then writes whole chunks for the rest of the run, and the bytes are unchanged."""
    import errno
    import fcntl

    import clipshards.convert.writer as writer

    opts = dict(frames_per_clip=32, step_between_clips=16, layout="clips", shard_size=6 << 20, progress=False, workers=1)
    expected = tmp_path / "expected"
    convert(big_clips, expected, **opts)

    real_write = os.write
    refused = []

    def four_k_disk(fd, data):
        direct = fcntl.fcntl(fd, fcntl.F_GETFL) & getattr(os, "O_DIRECT", 0)
        if direct and (len(data) % 4096 or os.lseek(fd, 0, os.SEEK_CUR) % 4096):
            refused.append(len(data))
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_write(fd, data)

    monkeypatch.setattr(writer.os, "write", four_k_disk)
    monkeypatch.setattr(writer, "_sector_direct_ok", True)
    out = tmp_path / "four_k"
    convert(big_clips, out, **opts)
    assert refused, "no sector-aligned direct write was tried"
    assert writer._sector_direct_ok is False
    a, b = tree_bytes(expected), tree_bytes(out)
    assert sorted(a) == sorted(b) and all(a[k] == b[k] for k in a), [k for k in a if a[k] != b.get(k)]


def test_a_spool_slot_is_not_rewritten_while_the_writer_still_reads_it(big_clips, tmp_path, monkeypatch):
    """The writer thread writes a run of samples straight from the spool slot's pages, late
    (here: slowed down); the next video that reuses that slot must wait for it, else the
    shard would get the next video's bytes. 5 videos through 3 slots, one worker."""
    import time

    import clipshards.convert.writer as writer

    # one shard: no shard close (which waits for the writer) between the videos
    opts = dict(frames_per_clip=32, step_between_clips=16, layout="clips", shard_size=64 << 20, progress=False, workers=1)
    expected = tmp_path / "expected"
    convert(big_clips, expected, **opts)
    real_write = writer._ShardFile.write

    def slow_write(self, view):
        time.sleep(0.15)
        return real_write(self, view)

    monkeypatch.setattr(writer._ShardFile, "write", slow_write)
    slow = tmp_path / "slow"
    convert(big_clips, slow, **opts)
    a, b = tree_bytes(expected), tree_bytes(slow)
    assert sorted(a) == sorted(b) and all(a[k] == b[k] for k in a), [k for k in a if a[k] != b.get(k)]
