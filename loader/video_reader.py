"""Reading clips out of a ``videos`` layout output: each video stored once, clips cut when loading.

:class:`~clipshards.loader.video_locate.ClipLocator` says where a clip's frames and audio
window lie in its video's sample (from index version 4, a clip of consecutive frames and its
audio are one range); :mod:`.video_ranges` reads them (a local clip ``preadv``'d straight into
its own memory, its frames packed and its audio in order; a batch's remote runs requested
together, about one round trip); this module makes the clip of what was read.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import numpy as np

from clipshards.convert.schema import JpegFrames, ShardFormatError
from clipshards.convert.video_sample import MEDIA_MEMBER, TABLE_DTYPE, video_frame_member, video_key

from .buffers import MIN_POOLED, pool
from .index import DatasetIndex
from .reader import RawSample, to_output
from .video_clips import ClipSpan, ClipTable
from .video_locate import ClipLocator, open_table
from .video_ranges import ClipBytesReader, ClipRead, RunPixels

logger = logging.getLogger(__name__)

__all__ = ["VideoClip", "VideoClipReader", "open_table", "clip_output"]

@dataclass
class VideoClip:
    """One clip as read: video uint8 ``[T, H, W, 3]``, audio float32 ``[K, L]``, its label, the
    index of its video (discovery order, as the index's records count) and its place in it."""

    video: np.ndarray
    audio: np.ndarray
    label: int
    video_idx: int
    clip_idx: int


class VideoClipReader:
    """Reads the clips of ``clips`` (a :class:`ClipTable` over ``index``'s table of videos)."""

    def __init__(self, index: DatasetIndex, clips: ClipTable) -> None:
        self.index, self.clips, self.table = index, clips, clips.table
        self.jpeg = index.codec == "jpeg"
        self.reader = ClipBytesReader(index.transport)
        self.locator = ClipLocator(index, clips.table, self.reader.max_gap)

    def fetch(self, g: int, *, defer_jpeg: bool = False) -> VideoClip:
        """Clip ``g`` of the global order."""
        return self.fetch_many([g], defer_jpeg=defer_jpeg)[0]

    def fetch_many(self, gs: Sequence[int], *, defer_jpeg: bool = False) -> list[VideoClip]:
        """Clips ``gs``, their reads issued together (concurrent on remote storage). ``defer_jpeg``:
        a JPEG clip's video is its :class:`JpegFrames`, for the collate to decode into the batch."""
        spans = [self.clips.span(int(g)) for g in gs]
        if self.jpeg:
            self.locator.load_frame_tables(spans, [int(g) for g in gs], self.reader.read)
        reads = [self.locator.plan(s, int(g)) for s, g in zip(spans, gs)]
        later = [defer_jpeg and not self.jpeg and self.reader.local and r.bytes.order is None for r in reads]
        got = self.reader.read_clips(reads, later)
        return [self._assemble(s, c, frames, audio, defer_jpeg) for s, c, (frames, audio) in zip(spans, reads, got)]

    # -- where the bytes are ----------------------------------------------------------------
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
            raise self.locator.error(c.g, s, None, f"{len(cb.frames)} frames of {w}x{h} take {len(cb.frames) * h * w * 3} "
                                            f"bytes, the sample holds {cb.frame_bytes}")
        elif frames is None:  # read by the collate, into the batch (the audio its runs hold with it)
            video = RunPixels(self.reader, c, (len(cb.frames), h, w, 3), audio_bytes)
        else:
            distinct = np.frombuffer(frames, dtype=np.uint8).reshape(-1, h, w, 3)
            video = distinct if cb.order is None else distinct[cb.order]
        k = r["audio_channels"]
        if not s.audio:
            audio = np.empty((1, 0), dtype=np.float32)
        elif audio_bytes is None:  # an empty window
            audio = np.zeros((k, 0), dtype=np.float32)
        elif cb.audio_bytes != 4 * k * (s.b - s.a):
            raise self.locator.error(c.g, s, None, f"audio window of {s.b - s.a} samples of {k} channels read as {cb.audio_bytes} bytes")
        else:  # interleaved samples: channels first as a view, the collate copies it into the batch
            audio = np.frombuffer(audio_bytes, dtype="<f4").reshape(s.b - s.a, k).T
            if not isinstance(video, RunPixels):  # not filled until the collate reads the video: no copy now
                audio = np.ascontiguousarray(audio, dtype=np.float32)
        return VideoClip(video, audio, r["label"], r["video_index"], s.clip)

    def _jpeg_video(self, s: ClipSpan, c: ClipRead, packed: memoryview, h: int, w: int, defer: bool) -> Any:
        """The clip's frames decoded (into pooled memory when large), or with ``defer`` undecoded."""
        cb = c.bytes
        sizes = cb.frame_sizes
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
            raise self.locator.error(c.g, s, MEDIA_MEMBER if self.locator.interleaved else video_frame_member(int(s.frames[0])), str(exc)) from exc

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
