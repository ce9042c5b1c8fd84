"""Where a clip of a ``videos`` layout output lies: the table of videos, checked, and each clip's
bytes in its video's sample (:mod:`clipshards.convert.video_sample`).

The table (``videos.npy``, read once, checked against the index's size and checksum and the
shards) says where each video's sample lies and where its frame table and media start in it.
A clip (:class:`~clipshards.loader.video_clips.ClipSpan`) needs its distinct frames (raw: placed
by arithmetic; JPEG: with the video's frame table, a small read cached per video, checked
against the audio points) and its audio window: from index version 4 each frame is followed
by its own audio, so a clip of consecutive frames and its window are one range
(:class:`ClipLocator.plan`; :mod:`.video_ranges` groups the pieces into reads).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Optional

import numpy as np

from clipshards.convert.schema import ShardFormatError, checksum_of, entry_checksum
from clipshards.convert.video_sample import (
    FRAMES_MEMBER,
    INTERLEAVED_VERSION,
    TABLE_DTYPE,
    VIDEOS_TABLE_NAME,
    audio_points,
    frame_points,
    frame_starts,
    frame_table,
    read_table,
    video_key,
)

from .index import DatasetIndex
from .reader import ShardReadError
from .video_clips import ClipSpan
from .video_ranges import ClipRead, Locate, Ranges, clip_bytes

__all__ = ["ClipLocator", "open_table", "FRAME_TABLE_CACHE"]

FRAME_TABLE_CACHE = 512
"""JPEG frame tables kept (one per video, the most recently read)."""


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
    k, n = t["audio_channels"].astype(np.int64), t["audio_samples"]
    raw_frames = t["width"].astype(np.int64) * t["height"] * 3 * t["num_frames"]
    if index.version >= INTERLEAVED_VERSION:  # raw: the frames and the track, one after another
        media = raw_frames if index.codec != "jpeg" else 0  # JPEG frames: checked with their frame table
        outside = (np.any(t["audio_at"] + media + 4 * k * n > t["sample_bytes"])
                   or (index.codec == "jpeg" and np.any(t["video_at"] + 16 * t["num_frames"].astype(np.int64) > t["audio_at"])))
    else:
        per_frame = 16 * t["num_frames"].astype(np.int64) if index.codec == "jpeg" else raw_frames
        outside = (np.any(t["video_at"] + per_frame > t["sample_bytes"])
                   or np.any(t["audio_at"] + 4 * k * n > t["sample_bytes"]))
    if bool(outside):
        raise ShardFormatError(f"{url}: a video's frames or audio lie outside its sample")

class ClipLocator:
    """Where the clips of ``index``'s videos (rows of ``table``) lie in their samples; keeps the
    JPEG frame tables of the last :data:`FRAME_TABLE_CACHE` videos read."""

    def __init__(self, index: DatasetIndex, table: np.ndarray, max_gap: int) -> None:
        self.index, self.table, self.max_gap = index, table, max_gap
        self.jpeg = index.codec == "jpeg"
        self.interleaved = index.version >= INTERLEAVED_VERSION
        self._frame_tables: OrderedDict[int, np.ndarray] = OrderedDict()

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_frame_tables": OrderedDict()}

    def shard(self, row: int) -> str:
        """The shard file holding table row ``row``'s sample."""
        return self.index.files[int(self.table["shard"][row])].name

    def plan(self, s: ClipSpan, g: int) -> ClipRead:
        """Where clip ``s`` (global ``g``) lies: its distinct frames and audio window, in runs."""
        r = dict(zip(TABLE_DTYPE.names, s.fields))
        if int(s.frames[-1]) >= r["num_frames"]:
            raise self.error(g, s, None, f"frame {int(s.frames[-1])} is past the video's {r['num_frames']} frames")
        locate, audio = self._interleaved(s, r, g) if self.interleaved else self._apart(s, r)
        cb = clip_bytes(s.frames, locate, audio, self.max_gap)
        lo, hi = int(cb.starts.min()), int(cb.ends.max())
        if lo < 0 or hi > r["sample_bytes"]:
            raise self.error(g, s, None, f"bytes [{lo}, {hi}) of the sample are outside its {r['sample_bytes']} bytes")
        return ClipRead(self.shard(s.row), r["sample_offset"], cb, g)

    def _interleaved(self, s: ClipSpan, r: dict[str, Any], g: int) -> tuple[Locate, Optional[Ranges]]:
        """Version 4: frame ``f`` starts after the frames and the audio samples before it
        (:func:`~clipshards.convert.video_sample.frame_starts`), its audio ``[p[f], p[f + 1])``
        right after it; the clip's window is the audio of its frames ``first..last``."""
        first, last = int(s.frames[0]), int(s.frames[-1])
        k, media = r["audio_channels"], r["audio_at"]
        span = np.arange(first, last + 2)
        p = frame_points(span, r["fps"], r["sample_rate"], r["t_first"], r["audio_samples"])
        if self.jpeg:
            ft = self._frame_tables[s.row]

            def locate(frames: np.ndarray) -> Ranges:
                return media + ft[frames, 0], media + ft[frames, 0] + ft[frames, 1]
        else:
            size = r["width"] * r["height"] * 3

            def locate(frames: np.ndarray) -> Ranges:
                starts = media + frames.astype(np.int64) * size + 4 * k * p[frames - first]
                return starts, starts + size
        if not (s.audio and s.b > s.a):
            return locate, None
        if int(p[0]) != s.a or int(p[-1]) != s.b:
            raise self.error(g, s, None, f"audio window [{s.a}, {s.b}) does not fall on its frames' audio "
                                          f"[{int(p[0])}, {int(p[-1])})")
        ends = locate(span[:-1])[1]  # each frame's audio follows it
        sizes = 4 * k * np.diff(p)
        keep = sizes > 0
        return locate, (ends[keep], ends[keep] + sizes[keep])

    def _apart(self, s: ClipSpan, r: dict[str, Any]) -> tuple[Locate, Optional[Ranges]]:
        """Versions 2-3: the frames one after another (JPEG: where the frame table says), the
        track, whole, before them."""
        if self.jpeg:
            ft = self._frame_tables[s.row]

            def locate(frames: np.ndarray) -> Ranges:
                return ft[frames, 0], ft[frames, 0] + ft[frames, 1]
        else:
            frame_bytes = r["width"] * r["height"] * 3

            def locate(frames: np.ndarray) -> Ranges:
                starts = r["video_at"] + frames.astype(np.int64) * frame_bytes
                return starts, starts + frame_bytes
        if not (s.audio and s.b > s.a):
            return locate, None
        k = r["audio_channels"]
        return locate, (np.array([r["audio_at"] + 4 * k * s.a]), np.array([r["audio_at"] + 4 * k * s.b]))

    def load_frame_tables(self, spans: list[ClipSpan], gs: list[int], read: Any) -> None:
        """Read (together) the JPEG frame tables of the videos not in the cache."""
        rows = sorted({s.row for s in spans if s.row not in self._frame_tables})
        reqs = []
        for row in rows:
            r = self.table[row]
            start = int(r["sample_offset"]) + int(r["video_at"])
            reqs.append((self.shard(row), start, start + 16 * int(r["num_frames"])))
        bufs = read(reqs, [gs[0]] * len(reqs)) if reqs else []
        for row, buf in zip(rows, bufs):
            key = video_key(int(self.table["video_index"][row]))
            try:
                ft = frame_table(buf, int(self.table["num_frames"][row]), where=f"{key}.{FRAMES_MEMBER}")
                if self.interleaved:
                    self._check_frame_table(ft, self.table[row], where=f"{key}.{FRAMES_MEMBER}")
            except ShardFormatError as exc:
                raise ShardReadError(self.index.transport.url_of(self.shard(row)), gs[0], f"{key}.{FRAMES_MEMBER}", str(exc)) from exc
            self._frame_tables[row] = ft
            while len(self._frame_tables) > FRAME_TABLE_CACHE:
                self._frame_tables.popitem(last=False)
        for s in spans:
            self._frame_tables.move_to_end(s.row)

    @staticmethod
    def _check_frame_table(ft: np.ndarray, r: np.void, *, where: str) -> None:
        """A version-4 frame table places each frame where the frames and audio before it end,
        and the frames and the track inside the sample."""
        n, k = int(r["num_frames"]), int(r["audio_channels"])
        points = audio_points(n, float(r["fps"]), int(r["sample_rate"]), float(r["t_first"]), int(r["audio_samples"]))
        if not np.array_equal(ft[:, 0], frame_starts(ft[:, 1], points, k)):
            raise ShardFormatError(f"{where}: a frame is not where the frames and audio before it end")
        if int(r["audio_at"]) + int(ft[:, 1].sum()) + 4 * k * int(r["audio_samples"]) > int(r["sample_bytes"]):
            raise ShardFormatError(f"{where}: the frames and audio run past the sample's {int(r['sample_bytes'])} bytes")

    def error(self, g: int, s: ClipSpan, field: Optional[str], reason: str) -> ShardReadError:
        """A failed read of clip ``g`` of ``s``'s video, naming its shard and the sample's key (and ``field``)."""
        key = video_key(int(self.table["video_index"][s.row]))
        return ShardReadError(self.index.transport.url_of(self.shard(s.row)), g, f"{key}.{field}" if field else key, reason)
