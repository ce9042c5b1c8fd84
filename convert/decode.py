"""Decoding: probe a video, then stream its clips (frames + audio) with bounded memory.

The video and audio streams are FFmpeg's "best" streams. Frames are decoded sequentially
(never seeking, so MPEG-4 packed B-frames cannot shift a clip), converted to RGB24 by
FFmpeg, optionally resized; at most one clip window of frames is held at a time. Audio is
decoded from a second demuxer on the same file, as float32 planar, and only the samples
still needed by a later clip are kept.
"""

from __future__ import annotations

import logging
import math
import os
from collections import deque
from dataclasses import dataclass
from typing import Iterator, Optional

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from .clips import audio_window, clip_count, selected_count, selected_index

logger = logging.getLogger(__name__)

__all__ = ["VideoError", "Probe", "probe", "target_size", "DecodedClip", "iter_clips"]

# No Python log callback: with one installed, a frame-threaded decoder that logs an error
# while its context is being freed waits for the GIL held by the freeing thread (a deadlock
# seen on corrupt files). FFmpeg's messages still reach the VideoError text via strerror.
av.logging.set_level(None)


class VideoError(Exception):
    """A video that cannot be used; ``reason`` is what the conversion report shows."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Probe:
    """What a demux-only pass (or the container's header) tells of a video; no frame is decoded."""

    video_stream: int
    packets: int
    declared_frames: int
    fps: float
    width: int
    height: int
    codec: str
    audio_stream: Optional[int]
    sample_rate: int
    channels: int


def _open(path: str) -> av.container.InputContainer:
    try:
        size = os.path.getsize(path)
    except OSError as exc:
        raise VideoError(f"cannot read file: {exc.strerror or exc}") from exc
    if size == 0:
        raise VideoError("empty file (0 bytes)")
    try:
        return av.open(path, mode="r", metadata_errors="ignore")
    except av.error.FFmpegError as exc:
        raise VideoError(f"not a readable media file: {_why(exc)}") from exc
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise VideoError(f"cannot open: {exc}") from exc


def _best(container: av.container.InputContainer, kind: str):
    streams = getattr(container.streams, kind)
    if not streams:
        return None
    try:
        return container.streams.best(kind)
    except Exception:  # pragma: no cover - PyAV without best(): fall back to the first stream
        return streams[0]


def _video_stream(container: av.container.InputContainer):
    """FFmpeg's best video stream and its average frame rate; a :class:`VideoError` without one."""
    vstream = _best(container, "video")
    if vstream is None:
        raise VideoError("no video stream")
    rate = vstream.average_rate or vstream.guessed_rate
    if not rate or float(rate) <= 0:
        raise VideoError("video stream has no frame rate")
    return vstream, float(rate)


def probe(path: str, *, count_packets: bool = True) -> Probe:
    """Open ``path``, pick the best streams and count video packets (demux only).

    With ``count_packets=False``, a container that declares its frame count (MP4, AVI, ...)
    is read for its header only and ``packets`` is that count: the probe then costs an open,
    not a pass over the whole file (on network storage, the dataset read once more).
    """
    container = _open(path)
    try:
        vstream, fps = _video_stream(container)
        astream = _best(container, "audio")
        packets = 0 if count_packets else int(vstream.frames or 0)
        try:
            if not packets:
                for packet in container.demux(vstream):
                    if packet.size:
                        packets += 1
        except av.error.FFmpegError as exc:
            raise VideoError(f"demux failed after {packets} packets: {_why(exc)}") from exc
        cc = vstream.codec_context
        return Probe(
            video_stream=vstream.index,
            packets=packets,
            declared_frames=int(vstream.frames or 0),
            fps=fps,
            width=int(cc.width or 0),
            height=int(cc.height or 0),
            codec=cc.name,
            audio_stream=astream.index if astream is not None else None,
            sample_rate=int(astream.rate or 0) if astream is not None else 0,
            channels=int(astream.channels or 0) if astream is not None else 0,
        )
    finally:
        container.close()


def target_size(src_w: int, src_h: int, width: int = 0, height: int = 0, min_dimension: int = 0) -> tuple[int, int]:
    """Output ``(w, h)`` under torchvision's ``video_reader`` resize rules (0 keeps the source).

    Width and height both set: exactly that size. One set: keep the aspect ratio.
    Only ``min_dimension``: the shorter side becomes ``min_dimension``. Rounds half up.
    """
    if src_w <= 0 or src_h <= 0:
        raise ValueError(f"source size must be positive, got {src_w}x{src_h}")
    if width and height:
        return width, height
    if width:
        return width, max(1, int(src_h * width / src_w + 0.5))
    if height:
        return max(1, int(src_w * height / src_h + 0.5)), height
    if min_dimension:
        if src_w > src_h:
            return max(1, int(src_w * min_dimension / src_h + 0.5)), min_dimension
        return min_dimension, max(1, int(src_h * min_dimension / src_w + 0.5))
    return src_w, src_h


@dataclass
class DecodedClip:
    clip_index: int
    frame_indices: tuple[int, ...]
    video: np.ndarray  # uint8 [T, H, W, 3]
    audio: np.ndarray  # float32 [K, L]


@dataclass
class VideoInfo:
    """Filled in while decoding: what the report and metadata record."""

    num_frames: int = 0
    fps: float = 0.0
    width: int = 0
    height: int = 0
    sample_rate: int = 0
    audio_channels: int = 0
    audio_error: str = ""


class _AudioReader:
    """Sequential float32 audio with a sliding buffer; ``window(a, b)`` must be called with
    non-decreasing ``a``."""

    def __init__(self, path: str, stream_index: int, rate: int, channels: int, threads: int):
        self.container = _open(path)
        self.stream = self.container.streams[stream_index]
        self.stream.thread_type = "AUTO"
        layout = f"{channels}c" if channels else None  # FFmpeg's default layout for that many channels
        self.resampler = av.AudioResampler(format="fltp", layout=layout, rate=rate or None)
        self.frames = self.container.decode(self.stream)
        self.chunks: deque[np.ndarray] = deque()
        self.base = 0  # global index of the first buffered sample
        self.total = 0  # samples decoded so far
        self.done = False
        self.t_first: Optional[float] = None
        self.sample_rate = 0
        self.channels = 0
        self._fill_first()

    def _append(self, frames: list) -> None:
        for out in frames:
            arr = out.to_ndarray()
            if arr.dtype != np.float32:
                arr = arr.astype(np.float32)
            if arr.ndim == 1:
                arr = arr[None, :]
            if not self.sample_rate:
                self.sample_rate = int(out.sample_rate)
                self.channels = arr.shape[0]
            self.chunks.append(arr)
            self.total += arr.shape[1]

    def _decode_one(self) -> bool:
        try:
            frame = next(self.frames)
        except StopIteration:
            self._append(self.resampler.resample(None))
            self.done = True
            return False
        if self.t_first is None:
            self.t_first = float(frame.time) if frame.time is not None else 0.0
        self._append(self.resampler.resample(frame))
        return True

    def _fill_first(self) -> None:
        while not self.done and self.t_first is None:
            self._decode_one()
        if self.t_first is None:
            self.t_first = 0.0
        while not self.done and not self.sample_rate:
            self._decode_one()

    def window(self, first_frame: int, last_frame: int, fps: float) -> np.ndarray:
        rate = self.sample_rate
        if not rate:
            return np.empty((1, 0), dtype=np.float32)
        a, b = audio_window(first_frame, last_frame, fps, rate, self.t_first or 0.0)
        while not self.done and self.total < b:
            self._decode_one()
        b = min(b, self.total)
        a = min(a, b)
        self._drop_before(a)
        parts = []
        pos = self.base
        for chunk in self.chunks:
            n = chunk.shape[1]
            lo, hi = max(a, pos), min(b, pos + n)
            if lo < hi:
                parts.append(chunk[:, lo - pos : hi - pos])
            pos += n
            if pos >= b:
                break
        if not parts:
            return np.zeros((self.channels or 1, 0), dtype=np.float32)
        return np.ascontiguousarray(np.concatenate(parts, axis=1), dtype=np.float32)

    def _drop_before(self, a: int) -> None:
        while self.chunks and self.base + self.chunks[0].shape[1] <= a:
            self.base += self.chunks.popleft().shape[1]

    def close(self) -> None:
        self.container.close()


def iter_clips(
    path: str,
    *,
    frames_per_clip: int,
    step_between_clips: int,
    frame_rate: Optional[float] = None,
    video_width: int = 0,
    video_height: int = 0,
    video_min_dimension: int = 0,
    audio_samples: int = 0,
    audio_channels: int = 0,
    skip_clips: int = 0,
    threads: int = 0,
    info: Optional[VideoInfo] = None,
) -> Iterator[DecodedClip]:
    """Decode ``path`` once, front to back, yielding its clips in order.

    ``skip_clips`` clips are decoded past but not yielded (used when resuming inside a video).
    Raises :class:`VideoError` for a file that cannot be used. A clip is yielded only once
    it is certain that the video has enough frames for it (the count of resampled indices
    depends on the total frame count), so the output equals the rules applied to the whole
    decoded video.
    """
    info = info if info is not None else VideoInfo()
    container = _open(path)
    audio: Optional[_AudioReader] = None
    try:
        vstream, fps = _video_stream(container)
        info.fps = fps
        vstream.thread_type = "AUTO"
        if threads:
            vstream.codec_context.thread_count = threads
        declared_end = _declared_end(vstream)
        declared_frames = int(vstream.frames or 0)
        last_time = -1.0
        astream = _best(container, "audio")
        if astream is not None:
            try:
                audio = _AudioReader(path, astream.index, audio_samples, audio_channels, threads)
                info.sample_rate = audio.sample_rate
                info.audio_channels = audio.channels
            except (av.error.FFmpegError, VideoError, ValueError) as exc:
                info.audio_error = f"audio not decodable ({exc}); clips have empty audio"
                audio = None

        T, S = frames_per_clip, step_between_clips
        window: deque[tuple[int, int, np.ndarray]] = deque()  # (entry k, source index, frame)
        next_k = 0  # next resampled entry to fill
        next_clip = 0
        pending: list[int] = []  # clips whose frames are complete but whose validity is unknown
        held: dict[int, tuple[tuple[int, ...], np.ndarray]] = {}
        size: Optional[tuple[int, int]] = None
        decoded = 0
        # one scaler for the whole video: ``frame.to_ndarray(format=...)`` builds (and tears down,
        # with its slice threads) a new SwsContext for every frame. It runs in this thread: slice
        # threads would compete with the decoder's for the same cores (measured 8% slower).
        reformatter = VideoReformatter()

        def make(c: int, video: np.ndarray, indices: tuple[int, ...]) -> DecodedClip:
            nonlocal audio
            if audio is not None:
                try:
                    a = audio.window(indices[0], indices[-1], fps)
                except av.error.FFmpegError as exc:
                    info.audio_error = f"audio decode failed ({_why(exc)}); later clips have empty audio"
                    _close_quietly(audio)
                    audio = None
                    a = np.empty((1, 0), dtype=np.float32)
            else:
                a = np.empty((1, 0), dtype=np.float32)
            return DecodedClip(c, indices, video, a)

        def release(valid_upto: int) -> Iterator[DecodedClip]:
            nonlocal pending
            keep = []
            for c in pending:
                last_k = c * S + T - 1
                if last_k < valid_upto:
                    indices, video = held.pop(c)
                    if c >= skip_clips:
                        yield make(c, video, indices)
                else:
                    keep.append(c)
            pending = keep

        try:
            for frame in container.decode(vstream):
                i = decoded
                decoded += 1
                if frame.time is not None and frame.time > last_time:
                    last_time = float(frame.time)
                k_hi = next_k
                while selected_index(k_hi, fps, frame_rate) == i:
                    k_hi += 1
                if k_hi > next_k:
                    if size is None:
                        size = target_size(frame.width, frame.height, video_width, video_height, video_min_dimension)
                        info.width, info.height = size
                    needed = any(_clip_range_contains(k, T, S) for k in range(next_k, k_hi))
                    rgb = None
                    if needed:
                        rgb = reformatter.reformat(frame, width=size[0], height=size[1], format="rgb24", threads=1).to_ndarray()
                    for k in range(next_k, k_hi):
                        if rgb is not None and _clip_range_contains(k, T, S):
                            window.append((k, i, rgb))
                    next_k = k_hi
                    # a clip is complete once entry c*S+T-1 is in the window
                    while next_clip * S + T - 1 < next_k:
                        c = next_clip
                        lo = c * S
                        entries = [e for e in window if lo <= e[0] < lo + T]
                        if len(entries) != T:  # pragma: no cover - internal invariant
                            raise RuntimeError(f"clip {c}: {len(entries)} frames gathered, expected {T}")
                        held[c] = (tuple(e[1] for e in entries), np.stack([e[2] for e in entries]))
                        pending.append(c)
                        next_clip += 1
                        while window and window[0][0] < next_clip * S:
                            window.popleft()
                # clips are certainly valid while their last entry is below the count implied by
                # the frames decoded so far (the count only grows with more frames)
                yield from release(selected_count(decoded, fps, frame_rate))
        except av.error.FFmpegError as exc:
            if _cut_short(declared_end, last_time, fps):
                # a file that lost its tail: the reason must not depend on where the decoder
                # notices (one thread fails on the partial packet, frame threads at the end)
                raise VideoError(
                    f"truncated: decoding stopped at {last_time + 1.0 / fps:.3f} s ({_why(exc)}), "
                    f"the container declares {declared_end:.3f} s"
                ) from exc
            raise VideoError(f"video decode failed after {decoded} frames: {_why(exc)}") from exc
        if decoded == 0:
            raise VideoError("no decodable video frame")
        if _cut_short(declared_end, last_time, fps):
            raise VideoError(
                f"truncated: frames end at {last_time + 1.0 / fps:.3f} s, the container declares {declared_end:.3f} s"
            )
        if declared_frames and decoded < declared_frames - 2 - 0.01 * declared_frames:
            # an AVI cut short re-derives its duration from the data left, but keeps the header's frame count
            raise VideoError(f"truncated: {decoded} frames decoded, the container declares {declared_frames}")
        info.num_frames = decoded
        yield from release(selected_count(decoded, fps, frame_rate))
        for c in pending:
            held.pop(c, None)
        if info.audio_error:
            logger.warning("%s: %s", path, info.audio_error)
    finally:
        if audio is not None:
            _close_quietly(audio)
        container.close()


def _why(exc: av.error.FFmpegError) -> str:
    """FFmpeg's message and last log line, without the file path (the report names the video)."""
    text = exc.strerror or type(exc).__name__
    log = getattr(exc, "log", None)
    if isinstance(log, tuple) and len(log) == 3 and log[2]:
        text += f" ([{log[1]}] {str(log[2]).strip()})"
    return text


def _cut_short(declared_end: Optional[float], last_time: float, fps: float) -> bool:
    """Whether frames stop clearly before the end the container declares (a file cut short)."""
    return declared_end is not None and last_time >= 0 and last_time + 1.0 / fps < declared_end - 2.0 / fps - 0.01 * declared_end


def _declared_end(stream) -> Optional[float]:
    """End time (s) of the video stream as its container declares it, if it does."""
    if not stream.duration or stream.time_base is None:
        return None
    start = stream.start_time or 0
    return float((start + stream.duration) * stream.time_base)


def _clip_range_contains(k: int, T: int, S: int) -> bool:
    """Whether resampled entry ``k`` belongs to some clip window (windows may leave gaps)."""
    return k % S < T if S > T else True


def _close_quietly(reader: _AudioReader) -> None:
    try:
        reader.close()
    except Exception:  # pragma: no cover
        pass


def expected_clips(num_frames: int, fps: float, frame_rate: Optional[float], T: int, S: int) -> int:
    return clip_count(selected_count(num_frames, fps, frame_rate), T, S)


def estimate_duration(probe_: Probe) -> float:
    return probe_.packets / probe_.fps if probe_.fps else math.nan
