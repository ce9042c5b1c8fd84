"""Reading clips out of a ``videos`` layout output: each video stored once, clips cut when loading.

The table of videos (``videos.npy``, read once, checked against the index's size and checksum)
says where each video's sample lies and where its frames and audio start inside it
(:mod:`clipshards.convert.video_sample`). A clip (:class:`~clipshards.loader.video_clips.ClipSpan`)
reads just its distinct frames (raw: at ``i * H * W * 3`` from the frame data; JPEG: located
with the video's frame table, a small read cached per video) and its audio window (the track
is stored sample-interleaved, so any window is one byte range), grouped into runs by
:mod:`.video_ranges`: skipped frames (a frame rate below the source's) are read only where they
are small. A local clip's runs are ``preadv``'d straight into the clip's own memory (its frames
packed, the gaps into a scratch buffer); a batch's remote runs
(:meth:`VideoClipReader.fetch_many`) are requested together: about one round trip.
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
from .video_ranges import ClipBytesReader, ClipRead, RunPixels, clip_bytes

logger = logging.getLogger(__name__)

__all__ = ["VideoClip", "VideoClipReader", "open_table", "clip_output"]

FRAME_TABLE_CACHE = 512


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
        self.reader = ClipBytesReader(index.transport)
        self._frame_tables: OrderedDict[int, np.ndarray] = OrderedDict()

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_frame_tables": OrderedDict()}

    def fetch(self, g: int, *, defer_jpeg: bool = False) -> VideoClip:
        """Clip ``g`` of the global order."""
        return self.fetch_many([g], defer_jpeg=defer_jpeg)[0]

    def fetch_many(self, gs: Sequence[int], *, defer_jpeg: bool = False) -> list[VideoClip]:
        """Clips ``gs``, their reads issued together (concurrent on remote storage). ``defer_jpeg``:
        a JPEG clip's video is its :class:`JpegFrames`, for the collate to decode into the batch."""
        spans = [self.clips.span(int(g)) for g in gs]
        if self.jpeg:
            self._load_frame_tables(spans, [int(g) for g in gs])
        reads = [self.plan(s, int(g)) for s, g in zip(spans, gs)]
        later = [defer_jpeg and not self.jpeg and self.reader.local and r.bytes.order is None for r in reads]
        got = self.reader.read_clips(reads, later)
        return [self._assemble(s, c, frames, audio, defer_jpeg) for s, c, (frames, audio) in zip(spans, reads, got)]

    # -- where the bytes are ----------------------------------------------------------------
    def _shard(self, row: int) -> str:
        return self.index.files[int(self.table["shard"][row])].name

    def plan(self, s: ClipSpan, g: int) -> ClipRead:
        """Where clip ``s`` (global ``g``) lies: its distinct frames and audio window, in runs."""
        r = dict(zip(TABLE_DTYPE.names, s.fields))
        if int(s.frames[-1]) >= r["num_frames"]:
            raise self._error(g, s, None, f"frame {int(s.frames[-1])} is past the video's {r['num_frames']} frames")
        if self.jpeg:
            ft = self._frame_tables[s.row]

            def locate(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
                return ft[frames, 0], ft[frames, 0] + ft[frames, 1]
        else:
            frame_bytes = r["width"] * r["height"] * 3

            def locate(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
                starts = r["video_at"] + frames.astype(np.int64) * frame_bytes
                return starts, starts + frame_bytes
        k = r["audio_channels"]
        audio = (r["audio_at"] + 4 * k * s.a, r["audio_at"] + 4 * k * s.b) if s.audio and s.b > s.a else None
        cb = clip_bytes(s.frames, locate, audio, self.reader.max_gap)
        lo, hi = min([int(cb.starts[0]), *(audio or ())]), max([int(cb.ends.max()), *(audio or ())])
        if lo < 0 or hi > r["sample_bytes"]:
            raise self._error(g, s, None, f"bytes [{lo}, {hi}) of the sample are outside its {r['sample_bytes']} bytes")
        return ClipRead(self._shard(s.row), r["sample_offset"], cb, g)

    def _load_frame_tables(self, spans: list[ClipSpan], gs: list[int]) -> None:
        """Read (together) the JPEG frame tables of the videos not in the cache."""
        rows = sorted({s.row for s in spans if s.row not in self._frame_tables})
        reqs = []
        for row in rows:
            r = self.table[row]
            start = int(r["sample_offset"]) + int(r["video_at"])
            reqs.append((self._shard(row), start, start + 16 * int(r["num_frames"])))
        bufs = self.reader.read(reqs, [gs[0]] * len(reqs)) if reqs else []
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

    # -- the clip ---------------------------------------------------------------------------
    def _assemble(self, s: ClipSpan, c: ClipRead, frames: memoryview, audio_bytes: Optional[memoryview],
                  defer_jpeg: bool) -> VideoClip:
        """The clip from its distinct frames and its audio window, as read."""
        cb = c.bytes
        r = dict(zip(TABLE_DTYPE.names, s.fields))
        h, w = r["height"], r["width"]
        if self.jpeg:
            video = self._jpeg_video(s, c, frames, h, w, defer_jpeg)
        elif cb.frame_bytes != len(cb.frames) * h * w * 3:
            raise self._error(c.g, s, None, f"{len(cb.frames)} frames of {w}x{h} take {len(cb.frames) * h * w * 3} "
                                            f"bytes, the sample holds {cb.frame_bytes}")
        elif frames is None:  # read by the collate, into the batch
            video = RunPixels(self.reader, c, (len(cb.frames), h, w, 3))
        else:
            distinct = np.frombuffer(frames, dtype=np.uint8).reshape(-1, h, w, 3)
            video = distinct if cb.order is None else distinct[cb.order]
        k = r["audio_channels"]
        if not s.audio:
            audio = np.empty((1, 0), dtype=np.float32)
        elif audio_bytes is None:  # an empty window
            audio = np.zeros((k, 0), dtype=np.float32)
        else:
            audio = np.ascontiguousarray(np.frombuffer(audio_bytes, dtype="<f4").reshape(s.b - s.a, k).T, dtype=np.float32)
        return VideoClip(video, audio, r["label"], r["video_index"], s.clip)

    def _jpeg_video(self, s: ClipSpan, c: ClipRead, packed: memoryview, h: int, w: int, defer: bool) -> Any:
        """The clip's frames decoded (into pooled memory when large), or with ``defer`` undecoded."""
        cb = c.bytes
        sizes = cb.ends - cb.starts
        at = np.concatenate([[0], np.cumsum(sizes)])
        distinct = [packed[int(at[i]): int(at[i + 1])] for i in range(len(sizes))]
        frames = distinct if cb.order is None else [distinct[i] for i in cb.order]
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
            raise self._error(c.g, s, video_frame_member(int(s.frames[0])), str(exc)) from exc

    def _error(self, g: int, s: ClipSpan, field: Optional[str], reason: str) -> ShardReadError:
        key = video_key(int(self.table["video_index"][s.row]))
        return ShardReadError(self.index.transport.url_of(self._shard(s.row)), g, f"{key}.{field}" if field else key, reason)


def clip_output(clip: VideoClip, output_format: str, transform: Optional[Callable[[Any], Any]], *, with_ids: bool,
                padded: bool = False, shard: str = "") -> tuple[Any, ...]:
    """torchvision's ``(video, audio, label)`` of a clip (see :func:`~clipshards.loader.reader.to_output`;
    an undecoded JPEG video becomes a :class:`~clipshards.loader.reader.DeferredVideo` naming
    ``shard``), with ``(video_idx, clip_idx)`` after it when ``with_ids`` (``video_idx`` -1 when
    ``padded``: a repeat that only evens out the ranks, for an evaluation to mask out)."""
    deferred = isinstance(clip.video, (JpegFrames, RunPixels))
    raw = RawSample(clip.clip_idx, shard, video_key(clip.video_idx), {}) if deferred else None
    out = to_output({"video": clip.video, "audio": clip.audio, "label": clip.label}, output_format, transform, raw)
    return (*out, -1 if padded else clip.video_idx, clip.clip_idx) if with_ids else out
