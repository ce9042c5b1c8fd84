"""Upper bounds the loader and converter are compared with.

* raw storage limit: shard samples read sequentially and turned into arrays, nothing decoded;
* raw batch floor: the same clips read straight into batch memory and hashed, nothing parsed:
  what a loader that hands out checked batches does at least (the storage limit's buffer stays
  in the CPU's cache; a batch of raw clips does not);
* JPEG limit: the shards' JPEG frames, already in memory, decoded in a tight loop with the
  decoder the loader uses (:func:`clipshards.convert.schema.decode_jpeg`);
* decode-only: PyAV decoding every video frame to RGB24 (and the audio) of the videos the
  converter converts, with the converter's thread settings, RGB conversion (one reused
  scaler a video) and number of processes; with ``jpeg_quality``, each frame also encoded
  as the JPEG converter encodes it, in the same loop: the JPEG converter's bound when each
  worker has one core.
"""

from __future__ import annotations

import json
import logging
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Iterator

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from clipshards.convert.engine import keep_freed_memory
from clipshards.convert.options import ConvertOptions
from clipshards.convert.schema import (
    INDEX_NAME, OFFSETS_NAME, decode_jpeg, decode_npy, decode_sample, encode_jpeg, member_field,
)

logger = logging.getLogger(__name__)

__all__ = ["ShardSet", "iter_tar_members", "raw_storage_limit", "raw_batch_floor", "jpeg_frames", "jpeg_decode_limit",
           "decode_only"]

BLOCK = 512


@dataclass(frozen=True)
class ShardSet:
    """A converted split: its folder, index and per-clip byte ranges."""

    folder: str
    index: dict
    offsets: np.ndarray  # int64 [N, 2] (index version 1) or [N, len(OFFSETS_COLUMNS)]

    @classmethod
    def open(cls, out: str, split: str = "train") -> "ShardSet":
        folder = os.path.join(out, split)
        with open(os.path.join(folder, INDEX_NAME), "rb") as fh:
            index = json.loads(fh.read())
        with open(os.path.join(folder, OFFSETS_NAME), "rb") as fh:
            offsets = decode_npy(fh.read(), expect=np.dtype(np.int64)).copy()
        return cls(folder, index, offsets)

    @property
    def clips(self) -> int:
        return int(self.index["counts"]["clips"])

    def shard_paths(self) -> list[str]:
        return [os.path.join(self.folder, s["name"]) for s in self.index["shards"]]

    def iter_samples(self, limit: int = 0) -> Iterator[bytes]:
        """Each clip's tar bytes, read sequentially shard after shard (``limit`` 0: all)."""
        g = 0
        for shard in self.index["shards"]:
            with open(os.path.join(self.folder, shard["name"]), "rb", buffering=0) as fh:
                for _ in range(shard["clips"]):
                    if limit and g >= limit:
                        return
                    off, size = self.offsets[g, :2]  # (offset, length, then what index version 2 adds)
                    fh.seek(int(off))
                    yield fh.read(int(size))
                    g += 1

    def warm(self) -> int:
        """Read every shard once so that timings start from the page cache; returns the bytes read."""
        total = 0
        for path in self.shard_paths():
            with open(path, "rb", buffering=0) as fh:
                while chunk := fh.read(16 << 20):
                    total += len(chunk)
        return total


def iter_tar_members(data: bytes | memoryview) -> Iterator[tuple[str, memoryview]]:
    """``(name, payload)`` of each regular member of an uncompressed tar buffer, without copying."""
    mv = memoryview(data)
    pos = 0
    pax_name = None
    while pos + BLOCK <= len(mv):
        header = bytes(mv[pos : pos + BLOCK])
        if header == b"\0" * BLOCK:
            return
        size = int(header[124:136].rstrip(b"\0 ") or b"0", 8)
        kind = header[156:157]
        body = mv[pos + BLOCK : pos + BLOCK + size]
        pos += BLOCK + size + (-size) % BLOCK
        if kind == b"x":
            for rec in bytes(body).decode("utf-8").splitlines():
                _, _, kv = rec.partition(" ")
                if kv.startswith("path="):
                    pax_name = kv[5:]
            continue
        if kind not in (b"0", b"\0"):
            continue
        name = pax_name or header[:100].rstrip(b"\0").decode("utf-8")
        prefix = header[345:500].rstrip(b"\0").decode("utf-8") if header[257:262] == b"ustar" else ""
        if prefix and not pax_name:
            name = f"{prefix}/{name}"
        pax_name = None
        yield name, body


def raw_storage_limit(shards: ShardSet, limit: int = 0) -> tuple[int, int, float]:
    """Read ``limit`` raw samples sequentially into arrays (no decode); ``(clips, tensor bytes, seconds)``."""
    clips = nbytes = 0
    start = time.perf_counter()
    for data in shards.iter_samples(limit):
        fields = {member_field(n)[1]: b for n, b in iter_tar_members(data)}
        sample = decode_sample(fields)
        nbytes += sample["video"].nbytes + sample["audio"].nbytes
        clips += 1
    return clips, nbytes, time.perf_counter() - start


def raw_batch_floor(shards: ShardSet, limit: int = 0, batch_size: int = 8) -> tuple[int, int, float]:
    """``limit`` clips read in the storage limit's order straight into the memory of batches of
    ``batch_size`` (pooled and reused, as the loader's), in pieces each hashed (XXH3-64) while in
    cache; ``(clips, bytes, seconds)``. Nothing is parsed or checked: a floor for a loader that
    returns checked batches of raw clips, not a loader."""
    import xxhash

    from clipshards.loader.buffers import pool
    from clipshards.loader.local import PIECE

    stride = int(shards.offsets[:, 1].max()) if len(shards.offsets) else 0
    clips = nbytes = 0
    start = time.perf_counter()
    for shard in shards.index["shards"]:
        fd = os.open(os.path.join(shards.folder, shard["name"]), os.O_RDONLY)
        try:
            for _ in range(shard["clips"]):
                if (limit and clips >= limit) or clips >= len(shards.offsets):
                    break
                if clips % batch_size == 0:
                    batch = memoryview(pool().take(batch_size * stride).numpy())  # the last one is let go
                off, size = (int(x) for x in shards.offsets[clips, :2])
                dst = batch[(clips % batch_size) * stride:][:size]
                hasher = xxhash.xxh3_64()
                for a in range(0, size, PIECE):
                    piece = dst[a: a + PIECE]
                    os.preadv(fd, [piece], off + a)
                    hasher.update(piece)
                hasher.intdigest()
                clips += 1
                nbytes += size
        finally:
            os.close(fd)
    return clips, nbytes, time.perf_counter() - start


def jpeg_frames(shards: ShardSet, limit: int = 0) -> tuple[list[list[bytes]], int]:
    """The JPEG frame bytes of each clip (in memory) and the total audio tensor bytes."""
    clips: list[list[bytes]] = []
    audio_bytes = 0
    for data in shards.iter_samples(limit):
        members = sorted((n, b) for n, b in iter_tar_members(data))
        clips.append([bytes(b) for n, b in members if n.endswith(".jpg")])
        audio = next(b for n, b in members if n.endswith(".audio.npy"))
        audio_bytes += decode_npy(audio).nbytes
    return clips, audio_bytes


def jpeg_decode_limit(clips: list[list[bytes]]) -> tuple[int, int, float]:
    """Decode every frame in a tight loop; ``(clips, video bytes, seconds)``."""
    nbytes = 0
    start = time.perf_counter()
    for frames in clips:
        for f in frames:
            nbytes += decode_jpeg(f).nbytes
    return len(clips), nbytes, time.perf_counter() - start


def _decode_file(args: tuple[str, int, int]) -> int:
    path, threads, jpeg_quality = args
    with av.open(path, metadata_errors="ignore") as container:
        vstream = container.streams.best("video")
        vstream.thread_type = "AUTO"
        if threads:
            vstream.codec_context.thread_count = threads
        frames = 0
        reformatter = VideoReformatter()  # as the converter: one scaler a video, in this thread
        for frame in container.decode(vstream):
            rgb = reformatter.reformat(frame, format="rgb24", threads=1).to_ndarray()
            if jpeg_quality:
                encode_jpeg(rgb, jpeg_quality)
            frames += 1
    with av.open(path, metadata_errors="ignore") as container:
        if container.streams.audio:
            for frame in container.decode(container.streams.best("audio")):
                frame.to_ndarray()
    return frames


def decode_only(paths: list[str], *, workers: int, threads: int | None = None, jpeg_quality: int = 0) -> tuple[int, float]:
    """Decode every frame of ``paths`` (RGB24) and their audio in ``workers`` processes; ``(frames, seconds)``.

    The converter's settings: its default decoder threads (unless ``threads`` is given) and
    its malloc setting (freed memory kept), in this process for one worker, else in a pool.
    ``jpeg_quality``: each frame is also JPEG-encoded (the converter's encoder), one frame
    after another in the decoding loop.
    """
    if threads is None:
        threads = ConvertOptions(frames_per_clip=1).decoder_threads
    jobs = [(p, threads, jpeg_quality) for p in paths]
    start = time.perf_counter()
    if workers == 1:
        restore = keep_freed_memory()
        try:
            frames = sum(_decode_file(j) for j in jobs)
        finally:
            restore()
    else:
        with ProcessPoolExecutor(workers, initializer=keep_freed_memory) as pool:
            frames = sum(pool.map(_decode_file, jobs))
    return frames, time.perf_counter() - start
