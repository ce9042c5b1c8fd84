"""Which bytes one clip of a ``videos`` layout output reads, and reading them.

A clip (:class:`~clipshards.loader.video_clips.ClipSpan`) needs its distinct frames, each once
however often the clip repeats it (a frame rate above the source's), and its audio window, all
in its video's sample. These are its *pieces*: byte ranges of the sample, each bound for the
clip's frames or its audio. Pieces less than a gap apart are read together as one *run*, with
the bytes between them (the audio of skipped frames of a frame rate below the source's, or
skipped frames, where they are small), farther ones apart.

From index version 4 a sample interleaves each frame with the audio that follows it
(:mod:`clipshards.convert.video_sample`), so the frames of a clip and its audio window are
one range: a clip of consecutive frames is one run, one read. Versions 2-3 stored the track
before the frames: the audio window is a second run.

The gap limits were measured (clips of 16 frames at stride 2, page cache warm, one ``preadv`` a
run against one read of the whole span): a local read costs a few microseconds, about what
copying 64 KiB costs, so skipped raw frames of 112x149 (49 KiB) or JPEG frames (~20 KiB) are
cheaper to read along (0.6-0.8x the time of a read each) and raw frames of 340x256 (255 KiB) are
not (a read a frame: 0.5x the time of reading the span). A remote read is a request; a batch's
requests go out together, and a gap under :data:`REMOTE_MAX_GAP` costs less than a request.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import numpy as np

from clipshards.convert.schema import ShardFormatError

from .pixels import UnreadPixels
from .ranges import empty_buffer
from .reader import ShardReadError
from .transport import Transport

__all__ = [
    "ClipBytes",
    "ClipRead",
    "ClipBytesReader",
    "RunPixels",
    "clip_bytes",
    "LOCAL_MAX_GAP",
    "REMOTE_MAX_GAP",
    "MAX_RUN_PIECES",
    "FRAME",
    "AUDIO",
]

LOCAL_MAX_GAP = 64 * 1024
"""Bytes between two pieces of a local clip below which they are read in one ``preadv``."""
REMOTE_MAX_GAP = 128 * 1024
"""Bytes between two pieces of a remote clip below which they are one request."""
MAX_RUN_PIECES = 256
"""Pieces a run holds at most: a local run is one ``preadv`` of a buffer per piece and per gap
at worst, and the system takes at most 1024 (``IOV_MAX``)."""
FRAME, AUDIO = 0, 1
"""What a piece is: a frame's bytes (bound for the clip's frames) or audio (for its audio window)."""

Ranges = tuple[np.ndarray, np.ndarray]
Locate = Callable[[np.ndarray], Ranges]
"""Byte ranges ``(starts, ends)`` in the sample of the given source frames."""


@dataclass(frozen=True)
class ClipBytes:
    """Where a clip's bytes lie in its video's sample (offsets from the sample's first byte).

    ``frames``: the distinct source frames, ascending; ``order``: for each frame of the clip, its
    position in ``frames`` (None: the clip is ``frames``, in order). ``starts``/``ends``/``kinds``/
    ``at``: the pieces, ascending in the sample: their byte ranges, :data:`FRAME` or
    :data:`AUDIO`, and where each goes in its buffer (the distinct frames packed in order; the
    audio window in order). ``runs``: ``(first, end)`` positions in the pieces of each read."""

    frames: np.ndarray
    order: Optional[np.ndarray]
    starts: np.ndarray
    ends: np.ndarray
    kinds: np.ndarray
    at: np.ndarray
    runs: tuple[tuple[int, int], ...]
    frame_bytes: int
    audio_bytes: int

    def run_range(self, run: int) -> tuple[int, int]:
        """Bytes ``[start, end)`` of the sample read by run ``run``."""
        a, b = self.runs[run]
        return int(self.starts[a]), int(self.ends[a:b].max())

    def has_frames(self, run: int) -> bool:
        """Whether run ``run`` holds a frame (not only audio)."""
        a, b = self.runs[run]
        return bool(np.any(self.kinds[a:b] == FRAME))

    @property
    def frame_sizes(self) -> np.ndarray:
        """Each distinct frame's bytes, in order (frames lie in the sample in their order)."""
        is_frame = self.kinds == FRAME
        return self.ends[is_frame] - self.starts[is_frame]


def clip_bytes(frames: np.ndarray, locate: Locate, audio: Optional[Ranges], max_gap: int) -> ClipBytes:
    """The :class:`ClipBytes` of a clip of source ``frames`` (clip order, nondecreasing), whose
    frames lie where ``locate`` says and whose audio window is the pieces ``audio`` (in window
    order; None: none to read); pieces read together across gaps of at most ``max_gap`` bytes."""
    n = len(frames)
    if int(frames[-1]) - int(frames[0]) == n - 1 or bool(np.all(frames[1:] > frames[:-1])):
        distinct, order = frames, None  # each frame once (consecutive, or a frame rate below the source's)
    else:
        distinct, order = np.unique(frames, return_inverse=True)
    f_starts, f_ends = (np.asarray(x, dtype=np.int64) for x in locate(distinct))
    a_starts, a_ends = (np.asarray(x, dtype=np.int64) for x in audio) if audio is not None else (_NONE, _NONE)
    f_sizes, a_sizes = f_ends - f_starts, a_ends - a_starts
    starts, ends = np.concatenate([f_starts, a_starts]), np.concatenate([f_ends, a_ends])
    kinds = np.concatenate([np.full(len(f_starts), FRAME, dtype=np.int8), np.full(len(a_starts), AUDIO, dtype=np.int8)])
    at = np.concatenate([np.cumsum(f_sizes) - f_sizes, np.cumsum(a_sizes) - a_sizes])
    if len(a_starts):
        by = np.argsort(starts, kind="stable")
        starts, ends, kinds, at = starts[by], ends[by], kinds[by], at[by]
    return ClipBytes(distinct, order, starts, ends, kinds, at, _runs(starts, ends, max_gap),
                     int(f_sizes.sum()), int(a_sizes.sum()))


_NONE = np.zeros(0, dtype=np.int64)


def _runs(starts: np.ndarray, ends: np.ndarray, max_gap: int) -> tuple[tuple[int, int], ...]:
    """Pieces read together while the next starts at most ``max_gap`` bytes after the one before
    ends (not before it: a piece out of order starts a run), at most :data:`MAX_RUN_PIECES` a run."""
    gaps = starts[1:] - ends[:-1]
    cuts = [0, *(np.flatnonzero((gaps < 0) | (gaps > max_gap)) + 1).tolist(), len(starts)]
    return tuple((a, min(a + MAX_RUN_PIECES, b)) for lo, b in zip(cuts, cuts[1:])
                 for a in range(lo, b, MAX_RUN_PIECES))


@dataclass(frozen=True)
class ClipRead:
    """One clip to read: the shard, the sample's offset in it, its :class:`ClipBytes`, and its
    global index (named by a failed read)."""

    shard: str
    base: int
    bytes: ClipBytes
    g: int


Clip = tuple[Optional[memoryview], Optional[memoryview]]
"""A clip as read: its distinct frames one after another (None: left for the collate), and its
audio window's bytes (None: none)."""


class ClipBytesReader:
    """Reads clips' frames and audio out of their samples through ``transport``: a local clip's
    runs ``preadv``'d straight into the clip's own memory (frames and audio each into theirs,
    the bytes between pieces into a scratch buffer), a remote batch's runs requested together."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport
        self.local = transport.location.is_local
        self.max_gap = LOCAL_MAX_GAP if self.local else REMOTE_MAX_GAP
        self._scratch: Optional[memoryview] = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_scratch": None}

    def read_clips(self, clips: Sequence[ClipRead], later: Optional[Sequence[bool]] = None) -> list[Clip]:
        """Each clip's frames and audio window; ``later[i]`` (local clips only): the runs holding
        its frames are left unread (frames None, the audio they hold not filled yet), for
        :class:`RunPixels` to read into a batch."""
        if not self.local:
            return self._read_remote(clips)
        return [self._read_local(c, bool(later and later[i])) for i, c in enumerate(clips)]

    def _read_local(self, c: ClipRead, later: bool = False) -> Clip:
        cb = c.bytes
        frames = None if later else empty_buffer(cb.frame_bytes)
        audio = memoryview(np.empty(cb.audio_bytes, dtype=np.uint8)) if cb.audio_bytes else None
        runs = range(len(cb.runs))
        self.read_runs(c, frames, audio, [r for r in runs if not cb.has_frames(r)] if later else runs)
        return frames, audio

    def read_runs(self, c: ClipRead, frames: Optional[memoryview], audio: Optional[memoryview],
                  runs: Sequence[int]) -> None:
        """Runs ``runs`` of a local clip, each piece into ``frames`` or ``audio`` (a frame's at
        its place among the distinct frames, ``frame_bytes`` long; audio in window order)."""
        cb = c.bytes
        starts, ends, kinds, at = cb.starts.tolist(), cb.ends.tolist(), cb.kinds.tolist(), cb.at.tolist()
        for run in runs:
            a, b = cb.runs[run]
            start, end = cb.run_range(run)
            views, pos = [], start
            for i in range(a, b):
                if starts[i] > pos:
                    views.append(self._gap(starts[i] - pos))
                dest = frames if kinds[i] == FRAME else audio
                views.append(dest[at[i]: at[i] + ends[i] - starts[i]] if dest is not None else self._gap(ends[i] - starts[i]))
                pos = ends[i]
            self._into(c, start, end, views)

    def _into(self, c: ClipRead, start: int, end: int, views: list[memoryview]) -> None:
        """Bytes ``[start, end)`` of ``c``'s sample into ``views`` in turn: all of them, or an error."""
        try:
            got = self.transport.read_into(c.shard, c.base + start, views)
        except OSError as exc:
            raise self._failed(c.shard, c.g, c.base + start, c.base + end, exc) from exc
        if got != end - start:
            raise ShardReadError(self.transport.url_of(c.shard), c.g, None,
                                 f"truncated: {got} of {end - start} bytes at {c.base + start}")

    def _gap(self, n: int) -> memoryview:
        """``n`` bytes of scratch memory for the bytes read between two pieces (never looked at)."""
        if self._scratch is None or len(self._scratch) < n:
            self._scratch = memoryview(np.empty(max(n, LOCAL_MAX_GAP), dtype=np.uint8))
        return self._scratch[:n]

    def _read_remote(self, clips: Sequence[ClipRead]) -> list[Clip]:
        reqs, owners = [], []
        for c in clips:
            reqs += [(c.shard, c.base + a, c.base + b) for a, b in map(c.bytes.run_range, range(len(c.bytes.runs)))]
            owners += [c.g] * len(c.bytes.runs)
        bufs, out, k = self.read(reqs, owners), [], 0
        for c in clips:
            cb = c.bytes
            runs = [memoryview(buf) for buf in bufs[k: k + len(cb.runs)]]
            k += len(cb.runs)
            if len(runs) == 1 and not cb.audio_bytes and len(runs[0]) == cb.frame_bytes:
                out.append((runs[0], None))  # the frames as read, without a copy
                continue
            frames = empty_buffer(cb.frame_bytes)
            audio = memoryview(np.empty(cb.audio_bytes, dtype=np.uint8)) if cb.audio_bytes else None
            for run, (a, b) in enumerate(cb.runs):
                start = int(cb.starts[a])
                for i in range(a, b):
                    dest = frames if cb.kinds[i] == FRAME else audio
                    lo, hi, to = int(cb.starts[i]) - start, int(cb.ends[i]) - start, int(cb.at[i])
                    dest[to: to + hi - lo] = runs[run][lo:hi]
            out.append((frames, audio))
        return out

    def read(self, reqs: list[tuple[str, int, int]], owners: list[int]) -> list[Any]:
        """Buffers of ``reqs`` (``owners``: the clip each is for), read together (concurrently on
        remote storage); a failed or short read names the shard and the clip."""
        bufs = self.transport.read_many(reqs, return_exceptions=True, buffers=True)
        for (name, a, b), g, buf in zip(reqs, owners, bufs):
            if isinstance(buf, OSError):
                raise self._failed(name, g, a, b, buf) from buf
            if isinstance(buf, BaseException):
                raise buf
            if len(buf) != b - a:
                raise ShardReadError(self.transport.url_of(name), g, None, f"truncated: {len(buf)} of {b - a} bytes at {a}")
        return bufs

    def _failed(self, name: str, g: int, a: int, b: int, exc: BaseException) -> ShardReadError:
        return ShardReadError(self.transport.url_of(name), g, None, f"read of bytes [{a}, {b}) failed: {exc}")


class RunPixels(UnreadPixels):
    """The distinct frames of a local raw ``videos`` layout clip that shows each once, not
    read yet: the collate reads the runs holding them straight into the batch, on the cores it
    may use (:mod:`.parallel`), as it does the pixels of a ``clips`` layout clip. The audio
    those runs hold goes into ``audio``, the clip's audio window's memory, in the same read:
    the clip's audio tensor is complete once its video has been read (the collate reads the
    videos of a batch before it copies the audio)."""

    __slots__ = ("reader", "clip", "shape", "audio")

    def __init__(self, reader: ClipBytesReader, clip: ClipRead, shape: tuple[int, int, int, int],
                 audio: Optional[memoryview] = None) -> None:
        self.reader, self.clip, self.shape, self.audio = reader, clip, shape, audio

    def decode_into(self, out: np.ndarray) -> np.ndarray:
        if tuple(out.shape) != self.shape or not out.flags.c_contiguous or out.dtype != np.uint8:
            raise ShardFormatError(f"clip is {self.shape}, the destination {tuple(out.shape)}")
        cb = self.clip.bytes
        self.reader.read_runs(self.clip, memoryview(out.reshape(-1)), self.audio,
                              [r for r in range(len(cb.runs)) if cb.has_frames(r)])
        return out
