"""Reading clips out of a ``videos`` layout output: each video stored once, clips cut when loading.

The table of videos (``videos.npy``, read once, checked against the index's size and checksum)
says where each video's sample lies and where its frames and audio start inside it
(:mod:`clipshards.convert.video_sample`). A clip (:class:`~clipshards.loader.video_clips.ClipSpan`)
is then read with one ranged read of just its frames (raw: ``first..last`` of the frame array;
JPEG: the clip's frames, located with the video's frame table, a small read cached per video)
and one of its audio window (the track is stored sample-interleaved, so any window is one byte
range). Local shards are mapped, so only the pages of the frames used are touched. A batch
(:meth:`VideoClipReader.fetch_many`) issues its reads together: on remote storage, about one
round trip.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import numpy as np

from clipshards.convert.schema import JpegFrames, ShardFormatError, checksum_of, entry_checksum
from clipshards.convert.video_sample import (
    FRAMES_MEMBER,
    TABLE_DTYPE,
    VIDEOS_TABLE_NAME,
    frame_table,
    read_table,
    video_frame_member,
    video_key,
)

from .index import DatasetIndex
from .buffers import MIN_POOLED, pool
from .reader import RawSample, ShardReadError, to_output
from .video_clips import ClipSpan, ClipTable

logger = logging.getLogger(__name__)

__all__ = ["VideoClip", "VideoClipReader", "open_table", "clip_output"]

FRAME_TABLE_CACHE = 512
Request = tuple[str, int, int]


@dataclass
class VideoClip:
    """One clip as read: video uint8 ``[T, H, W, 3]``, audio float32 ``[K, L]``, its label, the
    index of its video (discovery order, as the index's records count) and its place in it."""

    video: np.ndarray
    audio: np.ndarray
    label: int
    video_idx: int
    clip_idx: int


def open_table(index: DatasetIndex) -> np.ndarray:
    """The split's table of videos, checked against the size and checksum the index records and
    against the shards it points into."""
    entry = dict(index.video_table or {})
    name = str(entry.get("name", VIDEOS_TABLE_NAME))
    if "/" in name or name in ("", ".", ".."):
        raise ShardFormatError(f"{index.transport.url_of('index.json')}: bad table name {name!r}")
    url = index.transport.url_of(name)
    data = index.transport.read(name)
    if "bytes" in entry and len(data) != int(entry["bytes"]):
        raise ShardFormatError(f"{url}: {len(data)} bytes, the index says {entry['bytes']}")
    algo, digest = entry_checksum(entry)
    if algo and checksum_of(algo, data) != digest:
        raise ShardFormatError(f"{url}: {algo} checksum differs from the index's")
    table = read_table(data, where=url)
    if table.size:
        _check_rows(index, table, url)
    return table


def _check_rows(index: DatasetIndex, t: np.ndarray, url: str) -> None:
    """Every row's sample inside its shard, its frames and audio inside its sample, its label a
    class and its frame size no larger than the index's largest: refused at start-up, before a
    read could go astray or a clip be allocated from a hostile size."""
    sizes = np.array([s.bytes for s in index.files], dtype=np.int64)
    if int(t["shard"].max()) >= len(sizes) or bool(np.any(t["sample_offset"] + t["sample_bytes"] > sizes[t["shard"]])):
        raise ShardFormatError(f"{url}: a video's byte range lies outside its shard")
    if int(t["label"].min()) < 0 or int(t["label"].max()) >= len(index.classes):
        raise ShardFormatError(f"{url}: a video's label names no class of the index")
    frame = index.limits.max_frame
    if frame is not None and (int(t["height"].max()) > frame[0] or int(t["width"].max()) > frame[1]):
        raise ShardFormatError(f"{url}: a video's frames are larger than the index's largest ({frame[1]}x{frame[0]})")
    per_frame = 16 if index.codec == "jpeg" else t["width"].astype(np.int64) * t["height"] * 3
    if bool(np.any(t["video_at"] + per_frame * t["num_frames"].astype(np.int64) > t["sample_bytes"])
            or np.any(t["audio_at"] + 4 * t["audio_channels"].astype(np.int64) * t["audio_samples"] > t["sample_bytes"])):
        raise ShardFormatError(f"{url}: a video's frames or audio lie outside its sample")


class VideoClipReader:
    """Reads the clips of ``clips`` (a :class:`ClipTable` over ``index``'s table of videos)."""

    def __init__(self, index: DatasetIndex, clips: ClipTable) -> None:
        self.index, self.clips, self.table = index, clips, clips.table
        self.jpeg = index.codec == "jpeg"
        self._frame_tables: OrderedDict[int, np.ndarray] = OrderedDict()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_frame_tables"] = OrderedDict()
        return state

    def fetch(self, g: int, *, defer_jpeg: bool = False) -> VideoClip:
        """Clip ``g`` of the global order."""
        return self.fetch_many([g], defer_jpeg=defer_jpeg)[0]

    def fetch_many(self, gs: Sequence[int], *, defer_jpeg: bool = False) -> list[VideoClip]:
        """Clips ``gs``, their reads issued together (concurrent on remote storage). ``defer_jpeg``:
        a JPEG clip's video is its :class:`JpegFrames`, for the collate to decode into the batch."""
        spans = [self.clips.span(int(g)) for g in gs]
        if self.jpeg:
            self._load_frame_tables([s for s in spans], list(gs))
        plans = [self._requests(s, int(g)) for s, g in zip(spans, gs)]
        flat = [r for p in plans for r in p]
        bufs = self._read(flat, list(gs), [len(p) for p in plans])
        out, i = [], 0
        for s, g, p in zip(spans, gs, plans):
            out.append(self._assemble(s, int(g), bufs[i: i + len(p)], defer_jpeg))
            i += len(p)
        return out

    # -- where the bytes are ----------------------------------------------------------------
    def _shard(self, row: int) -> str:
        return self.index.files[int(self.table["shard"][row])].name

    def _requests(self, s: ClipSpan, g: int) -> list[Request]:
        """``[video range, audio range (if any)]`` of clip ``s``: shard name, start, end."""
        r = dict(zip(TABLE_DTYPE.names, s.fields))
        base, size = r["sample_offset"], r["sample_bytes"]
        lo, hi = int(s.frames[0]), int(s.frames[-1])
        if hi >= r["num_frames"]:
            raise self._error(g, s, None, f"frame {hi} is past the video's {r['num_frames']} frames")
        if self.jpeg:
            ft = self._frame_tables[s.row]
            start, end = int(ft[lo, 0]), int(ft[hi, 0] + ft[hi, 1])
        else:
            frame_bytes = r["width"] * r["height"] * 3
            start, end = r["video_at"] + lo * frame_bytes, r["video_at"] + (hi + 1) * frame_bytes
        reqs = [(start, end)]
        if s.audio and s.b > s.a:
            k = r["audio_channels"]
            reqs.append((r["audio_at"] + 4 * k * s.a, r["audio_at"] + 4 * k * s.b))
        for a, b in reqs:
            if not 0 <= a <= b <= size:
                raise self._error(g, s, None, f"bytes [{a}, {b}) of the sample are outside its {size} bytes")
        name = self.index.files[r["shard"]].name
        return [(name, base + a, base + b) for a, b in reqs]

    def _load_frame_tables(self, spans: list[ClipSpan], gs: list[int]) -> None:
        """Read (together) the JPEG frame tables of the videos not in the cache."""
        rows = sorted({s.row for s in spans if s.row not in self._frame_tables})
        reqs = []
        for row in rows:
            r = self.table[row]
            start = int(r["sample_offset"]) + int(r["video_at"])
            reqs.append((self._shard(row), start, start + 16 * int(r["num_frames"])))
        bufs = self._read(reqs, [gs[0]] * len(reqs), [1] * len(reqs)) if reqs else []
        for row, buf in zip(rows, bufs):
            key = video_key(int(self.table["video_index"][row]))
            try:
                ft = frame_table(buf, int(self.table["num_frames"][row]), where=f"{key}.{FRAMES_MEMBER}")
            except ShardFormatError as exc:
                raise ShardReadError(self.index.transport.url_of(self._shard(row)), gs[0], f"{key}.{FRAMES_MEMBER}", str(exc)) from exc
            self._frame_tables[row] = ft
            while len(self._frame_tables) > FRAME_TABLE_CACHE:
                self._frame_tables.popitem(last=False)
        for s in spans:
            self._frame_tables.move_to_end(s.row)

    def _read(self, reqs: list[Request], gs: list[int], per_clip: list[int]) -> list[Any]:
        """Buffers of ``reqs`` (mapped where local); a failed read names the shard and the clip."""
        transport = self.index.transport
        owners = [g for g, n in zip(gs, per_clip) for _ in range(n)]
        if transport.maps:
            out = []
            for (name, a, b), g in zip(reqs, owners):
                try:
                    out.append(transport.map_buffer(name, a, b))
                except OSError as exc:
                    raise ShardReadError(transport.url_of(name), g, None, f"read of bytes [{a}, {b}) failed: {exc}") from exc
            return out
        bufs = transport.read_many(reqs, return_exceptions=True, buffers=True)
        for (name, a, b), g, buf in zip(reqs, owners, bufs):
            if isinstance(buf, OSError):
                raise ShardReadError(transport.url_of(name), g, None, f"read of bytes [{a}, {b}) failed: {buf}") from buf
            if isinstance(buf, BaseException):
                raise buf
            if len(buf) != b - a:
                raise ShardReadError(transport.url_of(name), g, None, f"truncated: {len(buf)} of {b - a} bytes at {a}")
        return bufs

    # -- the clip ---------------------------------------------------------------------------
    def _assemble(self, s: ClipSpan, g: int, bufs: list[Any], defer_jpeg: bool = False) -> VideoClip:
        r = dict(zip(TABLE_DTYPE.names, s.fields))
        h, w = r["height"], r["width"]
        if self.jpeg:
            video = self._jpeg_video(s, g, bufs[0], h, w, defer_jpeg)
        else:
            span = np.frombuffer(bufs[0], dtype=np.uint8).reshape(-1, h, w, 3)
            video = span if s.contiguous else span[s.frames - int(s.frames[0])]
        k = r["audio_channels"]
        if not s.audio:
            audio = np.empty((1, 0), dtype=np.float32)
        elif s.b == s.a:
            audio = np.zeros((k, 0), dtype=np.float32)
        else:
            audio = np.ascontiguousarray(np.frombuffer(bufs[1], dtype="<f4").reshape(s.b - s.a, k).T, dtype=np.float32)
        return VideoClip(video, audio, r["label"], r["video_index"], s.clip)

    def _jpeg_video(self, s: ClipSpan, g: int, buf: Any, h: int, w: int, defer: bool) -> Any:
        """The clip's frames decoded (into pooled memory when large), or with ``defer`` undecoded."""
        ft = self._frame_tables[s.row]
        start = int(ft[int(s.frames[0]), 0])
        view = memoryview(buf)
        frames = [view[int(ft[f, 0]) - start: int(ft[f, 0] + ft[f, 1]) - start] for f in s.frames]
        try:
            clip = JpegFrames(frames)
            if clip.shape != (len(frames), h, w, 3):
                raise ShardFormatError(f"frames are {clip.shape[2]}x{clip.shape[1]}, the table says {w}x{h}")
            if defer:
                return clip
            nbytes = len(frames) * h * w * 3
            out = (np.frombuffer(pool().buffer(nbytes), dtype=np.uint8) if nbytes >= MIN_POOLED
                   else np.empty(nbytes, dtype=np.uint8)).reshape(clip.shape)
            return clip.decode_into(out)
        except ShardFormatError as exc:
            raise self._error(g, s, video_frame_member(int(s.frames[0])), str(exc)) from exc

    def _error(self, g: int, s: ClipSpan, field: Optional[str], reason: str) -> ShardReadError:
        key = video_key(int(self.table["video_index"][s.row]))
        return ShardReadError(self.index.transport.url_of(self._shard(s.row)), g, f"{key}.{field}" if field else key, reason)



def clip_output(clip: VideoClip, output_format: str, transform: Optional[Callable[[Any], Any]], *, with_ids: bool,
                padded: bool = False, shard: str = "") -> tuple[Any, ...]:
    """torchvision's ``(video, audio, label)`` of a clip (see :func:`~clipshards.loader.reader.to_output`;
    an undecoded JPEG video becomes a :class:`~clipshards.loader.reader.DeferredVideo` naming
    ``shard``), with ``(video_idx, clip_idx)`` after it when ``with_ids`` (``video_idx`` -1 when
    ``padded``: a repeat that only evens out the ranks, for an evaluation to mask out)."""
    raw = RawSample(clip.clip_idx, shard, video_key(clip.video_idx), {}) if isinstance(clip.video, JpegFrames) else None
    out = to_output({"video": clip.video, "audio": clip.audio, "label": clip.label}, output_format, transform, raw)
    return (*out, -1 if padded else clip.video_idx, clip.clip_idx) if with_ids else out
