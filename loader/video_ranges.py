"""Which bytes one clip of a ``videos`` layout output reads, and reading them.

A clip (:class:`~clipshards.loader.video_clips.ClipSpan`) needs its distinct frames, each once
however often the clip repeats it (a frame rate above the source's), and its audio window, all
in its video's sample. The frames are grouped into *runs*: frames less than a gap apart are read
together, with the bytes between them (JPEG: the tar headers between frames; skipped frames of
a frame rate below the source's where they are small), farther ones apart. The audio window is
one read of its own: the track is stored before the frames, whole, so it lies next to a clip's
frames only in a video too short to matter.

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
    "MAX_RUN_FRAMES",
]

LOCAL_MAX_GAP = 64 * 1024
"""Bytes between two frames of a local clip below which they are read in one ``preadv``."""
REMOTE_MAX_GAP = 128 * 1024
"""Bytes between two frames of a remote clip below which they are one request."""
MAX_RUN_FRAMES = 256
"""Frames a run holds at most: a local run is one ``preadv`` of a buffer per frame and per gap
at worst, and the system takes at most 1024 (``IOV_MAX``)."""

Locate = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
"""Byte ranges ``(starts, ends)`` in the sample of the given source frames."""


@dataclass(frozen=True)
class ClipBytes:
    """Where a clip's bytes lie in its video's sample (offsets from the sample's first byte).

    ``frames``: the distinct source frames, ascending, at ``starts``/``ends``; ``order``: for
    each frame of the clip, its position in ``frames`` (None: the clip is ``frames``, in order).
    ``runs``: ``(first, end)`` positions in ``frames`` of each read. ``audio``: the audio
    window's byte range (None: nothing to read)."""

    frames: np.ndarray
    order: Optional[np.ndarray]
    starts: np.ndarray
    ends: np.ndarray
    runs: tuple[tuple[int, int], ...]
    audio: Optional[tuple[int, int]]

    def run_range(self, run: int) -> tuple[int, int]:
        """Bytes ``[start, end)`` of the sample read by run ``run``."""
        a, b = self.runs[run]
        return int(self.starts[a]), int(self.ends[a:b].max())

    @property
    def frame_bytes(self) -> int:
        """The bytes of the distinct frames, what the clip's video is made from."""
        return int((self.ends - self.starts).sum())

    @property
    def bytes_read(self) -> int:
        """What the reads of the clip fetch: its runs (frames, and the gaps read along) and its audio window."""
        runs = sum(b - a for a, b in map(self.run_range, range(len(self.runs))))
        return runs + (self.audio[1] - self.audio[0] if self.audio else 0)


def clip_bytes(frames: np.ndarray, locate: Locate, audio: Optional[tuple[int, int]], max_gap: int) -> ClipBytes:
    """The :class:`ClipBytes` of a clip of source ``frames`` (clip order, nondecreasing), whose
    frames lie where ``locate`` says and whose audio window at ``audio`` (None: none to read);
    frames read together across gaps of at most ``max_gap`` bytes."""
    n = len(frames)
    if int(frames[-1]) - int(frames[0]) == n - 1 or bool(np.all(frames[1:] > frames[:-1])):
        distinct, order = frames, None  # each frame once (consecutive, or a frame rate below the source's)
    else:
        distinct, order = np.unique(frames, return_inverse=True)
    starts, ends = (np.asarray(x, dtype=np.int64) for x in locate(distinct))
    return ClipBytes(distinct, order, starts, ends, _runs(starts, ends, max_gap), audio)


def _runs(starts: np.ndarray, ends: np.ndarray, max_gap: int) -> tuple[tuple[int, int], ...]:
    """Frames read together while the next starts at most ``max_gap`` bytes after the one before
    ends (not before it: a frame out of order starts a run), at most :data:`MAX_RUN_FRAMES` a run."""
    gaps = starts[1:] - ends[:-1]
    cuts = [0, *(np.flatnonzero((gaps < 0) | (gaps > max_gap)) + 1).tolist(), len(starts)]
    return tuple((a, min(a + MAX_RUN_FRAMES, b)) for lo, b in zip(cuts, cuts[1:])
                 for a in range(lo, b, MAX_RUN_FRAMES))


@dataclass(frozen=True)
class ClipRead:
    """One clip to read: the shard, the sample's offset in it, its :class:`ClipBytes`, and its
    global index (named by a failed read)."""

    shard: str
    base: int
    bytes: ClipBytes
    g: int


Clip = tuple[memoryview, Optional[memoryview]]
"""A clip as read: its distinct frames one after another, and its audio window (None: none)."""


class ClipBytesReader:
    """Reads clips' frames and audio out of their samples through ``transport``: a local clip's
    runs ``preadv``'d straight into the clip's own memory (the bytes between frames into a
    scratch buffer), a remote batch's runs and audio windows requested together."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport
        self.local = transport.location.is_local
        self.max_gap = LOCAL_MAX_GAP if self.local else REMOTE_MAX_GAP
        self._scratch: Optional[memoryview] = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_scratch": None}

    def read_clips(self, clips: Sequence[ClipRead], later: Optional[Sequence[bool]] = None) -> list[tuple[Any, Any]]:
        """Each clip's frames and audio window; ``later[i]`` (local clips only): its frames
        are left unread (None), for :class:`RunPixels` to read into a batch."""
        if not self.local:
            return self._read_remote(clips)
        return [self._read_local(c, bool(later and later[i])) for i, c in enumerate(clips)]

    def _read_local(self, c: ClipRead, later: bool = False) -> tuple[Optional[memoryview], Optional[memoryview]]:
        cb = c.bytes
        frames = None
        if not later:
            frames = empty_buffer(cb.frame_bytes)
            self.read_frames(c, frames)
        audio = None
        if cb.audio is not None:
            audio = memoryview(np.empty(cb.audio[1] - cb.audio[0], dtype=np.uint8))
            self._into(c, cb.audio[0], cb.audio[1], [audio])
        return frames, audio

    def read_frames(self, c: ClipRead, frames: memoryview) -> None:
        """A local clip's distinct frames, one after another, into ``frames`` (``frame_bytes`` long)."""
        cb = c.bytes
        at = np.concatenate([[0], np.cumsum(cb.ends - cb.starts)]).tolist()  # each frame's place in ``frames``
        for run, (a, b) in enumerate(cb.runs):
            start, end = cb.run_range(run)
            if int(cb.ends[b - 1]) - start == at[b] - at[a]:  # no gap: one buffer
                views = [frames[at[a]: at[b]]]
            else:
                views, pos = [], start
                for i in range(a, b):
                    if int(cb.starts[i]) > pos:
                        views.append(self._gap(int(cb.starts[i]) - pos))
                    views.append(frames[at[i]: at[i + 1]])
                    pos = int(cb.ends[i])
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
        """``n`` bytes of scratch memory for the bytes read between two frames (never looked at)."""
        if self._scratch is None or len(self._scratch) < n:
            self._scratch = memoryview(np.empty(max(n, LOCAL_MAX_GAP), dtype=np.uint8))
        return self._scratch[:n]

    def _read_remote(self, clips: Sequence[ClipRead]) -> list[Clip]:
        reqs, owners = [], []
        for c in clips:
            ranges = [c.bytes.run_range(run) for run in range(len(c.bytes.runs))] + ([c.bytes.audio] if c.bytes.audio else [])
            reqs += [(c.shard, c.base + a, c.base + b) for a, b in ranges]
            owners += [c.g] * len(ranges)
        bufs, out, k = self.read(reqs, owners), [], 0
        for c in clips:
            cb = c.bytes
            runs = [memoryview(buf) for buf in bufs[k: k + len(cb.runs)]]
            audio = memoryview(bufs[k + len(cb.runs)]) if cb.audio else None
            k += len(cb.runs) + (cb.audio is not None)
            if len(runs) == 1 and cb.run_range(0)[1] - int(cb.starts[0]) == cb.frame_bytes:
                out.append((runs[0], audio))  # the frames as read, without a copy
                continue
            frames, at = empty_buffer(cb.frame_bytes), 0
            for run, (a, b) in enumerate(cb.runs):
                start = int(cb.starts[a])
                for i in range(a, b):
                    n = int(cb.ends[i] - cb.starts[i])
                    frames[at: at + n] = runs[run][int(cb.starts[i]) - start: int(cb.ends[i]) - start]
                    at += n
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
    read yet: the collate reads its runs straight into the batch, on the cores it may use
    (:mod:`.parallel`), as it does the pixels of a ``clips`` layout clip."""

    __slots__ = ("reader", "clip", "shape")

    def __init__(self, reader: ClipBytesReader, clip: ClipRead, shape: tuple[int, int, int, int]) -> None:
        self.reader, self.clip, self.shape = reader, clip, shape

    def decode_into(self, out: np.ndarray) -> np.ndarray:
        if tuple(out.shape) != self.shape or not out.flags.c_contiguous or out.dtype != np.uint8:
            raise ShardFormatError(f"clip is {self.shape}, the destination {tuple(out.shape)}")
        self.reader.read_frames(self.clip, memoryview(out.reshape(-1)))
        return out
