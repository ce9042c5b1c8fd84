"""Encoding one whole video as one sample (the ``videos`` layout): every frame, the whole audio track.

While the video is decoded, its frames (raw, or one JPEG each) and its audio (interleaved
float32) go to two scratch files, so a worker holds one frame at a time whatever the length of
the video. Once the frame count and the audio are known the sample's members (see
:mod:`clipshards.convert.video_sample`) are written to the spool in their fixed order, the
scratch data copied in, each frame before the audio sample its audio starts at. The bytes are
a function of the file and the options alone.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Iterator, Optional

import numpy as np

from .decode import AudioTrack, VideoInfo, decode_audio_track, iter_frames
from .layout import VideoEntry
from .options import ConvertOptions
from .prefetch import prefetch, spare_core
from .schema import dumps_json, encode_jpeg
from .video_sample import FRAMES_MEMBER, MEDIA_MEMBER, audio_points, frame_starts, npy_header_for, video_key
from .writer import BLOCK, member_header

logger = logging.getLogger(__name__)

__all__ = ["VideoSample", "write_video_sample"]

COPY_CHUNK = 4 << 20
FRAMES_AHEAD = 16  # frames decoded ahead of the one being encoded


@dataclass
class VideoSample:
    """What the run records of a written video sample: its size, and where its frames and audio
    start inside it (``placement``, the fields of the table of videos this video's row takes)."""

    size: int
    placement: dict[str, Any] = field(default_factory=dict)


class _Frames:
    """The decoded frames in a scratch file: raw pixels back to back, or JPEGs with their lengths."""

    def __init__(self, scratch: BinaryIO, codec: str, quality: int):
        self.scratch, self.codec, self.quality = scratch, codec, quality
        self.lengths: list[int] = []
        self.shape: tuple[int, ...] = ()

    def add(self, frame: np.ndarray) -> None:
        if self.codec == "raw":
            self.scratch.write(memoryview(np.ascontiguousarray(frame)).cast("B"))
            self.lengths.append(frame.nbytes)
        else:
            data = encode_jpeg(frame, self.quality)
            self.scratch.write(data)
            self.lengths.append(len(data))
        self.shape = frame.shape


class _SampleOut:
    """Tar members written to the spool, counting bytes from the sample's first byte."""

    def __init__(self, fh: BinaryIO, hasher: Optional[Any] = None):
        self.fh, self.pos, self.hasher = fh, 0, hasher
        self._buf = bytearray(COPY_CHUNK)

    def member(self, name: str, parts: tuple[bytes | memoryview, ...], copy: Optional["_Interleaved"] = None) -> int:
        """Write a member made of ``parts`` then ``copy``'s pieces (scratch data); returns the
        offset of the data's first byte after ``parts`` (where copied data starts)."""
        size = sum(len(p) for p in parts) + (copy.size if copy else 0)
        self._write(member_header(name, size))
        for p in parts:
            self._write(p)
        data_at = self.pos
        if copy is not None:
            for src, nbytes in copy.pieces():
                self._copy(src, nbytes)
        if self.pos - data_at != (copy.size if copy else 0):  # pragma: no cover - internal invariant
            raise RuntimeError(f"{name}: wrote {self.pos - data_at} bytes of data, expected {copy.size if copy else 0}")
        self._write(b"\0" * ((-size) % BLOCK))
        return data_at

    def _write(self, data: bytes | memoryview) -> None:
        if len(data):
            self.fh.write(data)
            if self.hasher is not None:
                self.hasher.update(data)
            self.pos += len(data)

    def _copy(self, src: BinaryIO, nbytes: int) -> None:
        """``nbytes`` from where ``src`` is."""
        view = memoryview(self._buf)
        left = nbytes
        while left:
            got = src.readinto(view[: min(left, len(view))])
            if not got:
                raise RuntimeError(f"scratch file is short: {nbytes - left} of {nbytes} bytes")
            self._write(view[:got])
            left -= got


def _meta(e: VideoEntry, info: VideoInfo, track: AudioTrack) -> dict[str, Any]:
    return {
        "path": e.relpath, "class": e.class_name, "label": e.label, "video_index": e.index, "layout": "videos",
        "num_frames": info.num_frames, "fps": info.fps, "width": info.width, "height": info.height,
        "audio_sample_rate": track.sample_rate or None, "audio_t_first": track.t_first,
        "audio_samples": track.samples, "audio_channels": track.channels, "audio_partial": track.partial,
    }


def write_video_sample(fh: BinaryIO, e: VideoEntry, o: ConvertOptions, info: VideoInfo, *,
                       scratch_dir: Optional[str] = None, hasher: Optional[Any] = None) -> VideoSample:
    """Decode ``e`` whole and write its sample to ``fh`` (``hasher``, when given, is updated with
    every byte written). Raises the decoder's errors (:class:`~clipshards.convert.decode.VideoError`
    for an unusable file)."""
    with tempfile.TemporaryFile(dir=scratch_dir) as frames_tmp, tempfile.TemporaryFile(dir=scratch_dir) as audio_tmp:
        frames = _Frames(frames_tmp, o.codec, o.jpeg_quality)
        decoded = iter_frames(e.path, video_width=o.video_width, video_height=o.video_height,
                              video_min_dimension=o.video_min_dimension, threads=o.decoder_threads, info=info)
        if spare_core(o.resolved_workers):  # decode ahead in a thread while this one encodes
            decoded = prefetch(decoded, depth=FRAMES_AHEAD)
        for frame in decoded:
            frames.add(frame)
        track = decode_audio_track(e.path, rate=o.audio_samples, channels=o.audio_channels, threads=o.decoder_threads,
                                   info=info, sink=lambda chunk: audio_tmp.write(np.ascontiguousarray(chunk.T, dtype=np.float32).data))
        if info.audio_error:
            logger.warning("%s: %s", e.path, info.audio_error)
        return _write(_SampleOut(fh, hasher), e, info, track, frames, audio_tmp)


def _write(out: _SampleOut, e: VideoEntry, info: VideoInfo, track: AudioTrack, frames: _Frames,
           audio_tmp: BinaryIO) -> VideoSample:
    key = video_key(e.index)
    out.member(f"{key}.cls", (str(int(e.label)).encode("ascii"),))
    out.member(f"{key}.json", (dumps_json(_meta(e, info, track)),))
    channels, samples = (track.channels, track.samples) if track.sample_rate else (1, 0)
    lengths = np.asarray(frames.lengths, dtype=np.int64)
    points = audio_points(len(lengths), info.fps, track.sample_rate, track.t_first, samples)
    starts = frame_starts(lengths, points, channels)
    table_at = None
    if frames.codec == "jpeg":
        header = npy_header_for((len(lengths), 2), np.dtype("<i8"))
        rows = np.stack([starts, lengths], axis=1).astype("<i8")
        table_at = out.member(f"{key}.{FRAMES_MEMBER}", (header, rows.tobytes())) - 16 * len(lengths)  # after the parts
    media_at = out.member(f"{key}.{MEDIA_MEMBER}", (), copy=_Interleaved(frames, lengths, audio_tmp, points, channels, samples))
    placement = {
        "video_at": media_at if table_at is None else table_at, "audio_at": media_at, "audio_channels": channels,
        "audio_samples": samples, "sample_rate": track.sample_rate,
        "t_first": track.t_first, "audio_partial": int(track.partial),
    }
    return VideoSample(out.pos, placement)


class _Interleaved:
    """``media.bin``'s data from the two scratch files: the audio track with each frame inserted
    before its point (:func:`~clipshards.convert.video_sample.audio_points`), both read in order."""

    def __init__(self, frames: _Frames, lengths: np.ndarray, audio: BinaryIO, points: np.ndarray, channels: int,
                 samples: int) -> None:
        self.frames, self.lengths, self.audio = frames, lengths, audio
        self.points, self.sample_bytes, self.samples = points, 4 * channels, samples
        self.size = int(lengths.sum()) + 4 * channels * samples

    def pieces(self) -> Iterator[tuple[BinaryIO, int]]:
        """``(scratch file, bytes)`` to copy next, in the member's order."""
        self.frames.scratch.seek(0)
        self.audio.seek(0)
        done = 0
        for i, length in enumerate(self.lengths.tolist()):
            yield self.audio, self.sample_bytes * (int(self.points[i]) - done)
            done = int(self.points[i])
            yield self.frames.scratch, length
        yield self.audio, self.sample_bytes * (self.samples - done)
