"""Encoding one whole video as one sample (the ``videos`` layout): every frame, the whole audio track.

While the video is decoded, its frames (raw, or one JPEG each) and its audio (interleaved
float32) go to two scratch files, so a worker holds one frame at a time whatever the length of
the video. Once the frame count is known the sample's members (see
:mod:`clipshards.convert.video_sample`) are written to the spool in their fixed order, the
scratch data copied in. The bytes are a function of the file and the options alone.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Optional

import numpy as np

from .decode import AudioTrack, VideoInfo, decode_audio_track, iter_frames
from .layout import VideoEntry
from .options import ConvertOptions
from .prefetch import prefetch, spare_core
from .schema import dumps_json, encode_jpeg, npy_parts
from .video_sample import FRAMES_MEMBER, npy_header_for, video_frame_member, video_key
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

    def member(self, name: str, parts: tuple[bytes | memoryview, ...], copy: Optional[tuple[BinaryIO, int]] = None) -> int:
        """Write a member made of ``parts`` then ``copy`` (a scratch file, its byte count);
        returns the offset of the data's first byte after ``parts`` (where copied data starts)."""
        size = sum(len(p) for p in parts) + (copy[1] if copy else 0)
        self._write(member_header(name, size))
        for p in parts:
            self._write(p)
        data_at = self.pos
        if copy is not None:
            self._copy(*copy)
        self._write(b"\0" * ((-size) % BLOCK))
        return data_at

    def _write(self, data: bytes | memoryview) -> None:
        if len(data):
            self.fh.write(data)
            if self.hasher is not None:
                self.hasher.update(data)
            self.pos += len(data)

    def _copy(self, src: BinaryIO, nbytes: int) -> None:
        src.seek(0)
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
    if track.sample_rate and track.channels:
        header = npy_header_for((track.channels, track.samples), np.dtype("<f4"), fortran=True)
        audio_at = out.member(f"{key}.audio.npy", (header,), (audio_tmp, 4 * track.channels * track.samples))
    else:
        audio_at = out.member(f"{key}.audio.npy", npy_parts(np.empty((1, 0), dtype=np.float32)))
    n = len(frames.lengths)
    if frames.codec == "raw":
        header = npy_header_for((n, *frames.shape), np.dtype(np.uint8))
        video_at = out.member(f"{key}.video.npy", (header,), (frames.scratch, sum(frames.lengths)))
    else:
        video_at = _write_jpegs(out, key, frames)
    placement = {
        "video_at": video_at, "audio_at": audio_at, "audio_channels": track.channels if track.sample_rate else 1,
        "audio_samples": track.samples if track.sample_rate else 0, "sample_rate": track.sample_rate,
        "t_first": track.t_first, "audio_partial": int(track.partial),
    }
    return VideoSample(out.pos, placement)


def _write_jpegs(out: _SampleOut, key: str, frames: _Frames) -> int:
    """The frame table then one member per JPEG; returns where the table's rows start."""
    n = len(frames.lengths)
    header = npy_header_for((n, 2), np.dtype("<i8"))
    table_size = len(header) + 16 * n
    pos = out.pos + BLOCK + table_size + (-table_size) % BLOCK  # the first frame member's header
    table = np.zeros((n, 2), dtype="<i8")
    for t, length in enumerate(frames.lengths):
        table[t] = (pos + BLOCK, length)
        pos += BLOCK + length + (-length) % BLOCK
    video_at = out.member(f"{key}.{FRAMES_MEMBER}", (header, table.tobytes()))
    video_at -= 16 * n  # the member() return value is after its parts: the rows start 16 n bytes before
    frames.scratch.seek(0)
    for t, length in enumerate(frames.lengths):
        data = frames.scratch.read(length)
        if len(data) != length:
            raise RuntimeError(f"scratch file is short at frame {t}")
        out.member(f"{key}.{video_frame_member(t)}", (data,))
    if out.pos != pos:  # pragma: no cover - internal invariant
        raise RuntimeError(f"frame table says the sample ends at {pos}, it ends at {out.pos}")
    return video_at
