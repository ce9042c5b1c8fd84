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
from typing import Callable, Iterator, Optional, Sequence

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from .clips import audio_window, clip_count, selected_count, selected_index
from .prefetch import prefetch

logger = logging.getLogger(__name__)

AUDIO_BATCH = 8  # audio frames (AAC: 1024 samples each) a thread decoding ahead hands over at a time
AUDIO_AHEAD = 4  # batches it may hold besides the one it decodes (~two 16-frame clips' audio)

__all__ = ["VideoError", "Probe", "probe", "target_size", "ClipFrames", "DecodedClip", "iter_clips", "iter_frames", "AudioTrack",
           "decode_audio_track"]

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


class ClipFrames:
    """A clip's ``T`` frames (uint8 ``[H, W, 3]`` each, views of the scaler's output) as one
    array-like of shape ``[T, H, W, 3]``: ``np.asarray`` stacks them (one copy), ``[t]`` is
    frame ``t`` uncopied. A JPEG clip encodes its frames where they are: megabytes a clip
    not copied."""

    __slots__ = ("frames", "shape")
    dtype = np.dtype(np.uint8)
    ndim = 4

    def __init__(self, frames: Sequence[np.ndarray]):
        self.frames = tuple(frames)
        if not self.frames:
            raise ValueError("a clip has at least one frame")
        self.shape = (len(self.frames), *self.frames[0].shape)

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, t: int) -> np.ndarray:
        return self.frames[t]

    def __array__(self, dtype: Optional[np.dtype] = None, copy: Optional[bool] = None) -> np.ndarray:
        video = np.stack(self.frames)
        return video if dtype is None else video.astype(dtype, copy=False)


@dataclass
class DecodedClip:
    clip_index: int
    frame_indices: tuple[int, ...]
    video: ClipFrames  # uint8 [T, H, W, 3]; np.asarray(video) is the array
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


def _resampled(frames: list) -> list[tuple[np.ndarray, int]]:
    """The resampler's output frames as float32 ``[K, n]`` arrays, each with its sample rate."""
    out = []
    for frame in frames:
        arr = frame.to_ndarray()
        if arr.dtype != np.float32:
            arr = arr.astype(np.float32)
        if arr.ndim == 1:
            arr = arr[None, :]
        out.append((arr, int(frame.sample_rate)))
    return out


AudioBatch = tuple[Optional[float], list[tuple[np.ndarray, int]], bool]


def _audio_batches(frames: Iterator, resampler, size: int) -> Iterator[AudioBatch]:
    """``(time, chunks, last)`` for up to ``size`` decoded audio frames at a time: the time of
    the first (0.0 when it has none; None for an empty batch) and the float32 chunks their
    resampling gave; ``last``: the stream ended, the resampler's flush included. A decoding
    error is raised after the batch of the frames decoded before it, as decoding frame by
    frame would."""
    time: Optional[float] = None
    chunks: list[tuple[np.ndarray, int]] = []
    count = 0
    try:
        for frame in frames:
            if time is None:
                time = float(frame.time) if frame.time is not None else 0.0
            chunks += _resampled(resampler.resample(frame))
            count += 1
            if count == size:
                yield time, chunks, False
                time, chunks, count = None, [], 0
        chunks += _resampled(resampler.resample(None))
    except Exception:
        if count:
            yield time, chunks, False
        raise
    yield time, chunks, True


class _AudioReader:
    """Sequential float32 audio with a sliding buffer; ``window(a, b)`` must be called with
    non-decreasing ``a``. ``ahead``: decoded and resampled in a thread of its own (a core to spare)."""

    def __init__(self, path: str, stream_index: int, rate: int, channels: int, threads: int, ahead: bool = False):
        self.container = _open(path)
        self.stream = self.container.streams[stream_index]
        self.stream.thread_type = "AUTO"
        layout = f"{channels}c" if channels else None  # FFmpeg's default layout for that many channels
        resampler = av.AudioResampler(format="fltp", layout=layout, rate=rate or None)
        # a thread decoding ahead hands over whole batches: one wake-up for many frames
        self.decoded: Iterator[AudioBatch] = _audio_batches(self.container.decode(self.stream), resampler,
                                                            AUDIO_BATCH if ahead else 1)
        if ahead:
            self.decoded = prefetch(self.decoded, depth=AUDIO_AHEAD, name="clipshards-audio")
        self.chunks: deque[np.ndarray] = deque()
        self.base = 0  # global index of the first buffered sample
        self.total = 0  # samples decoded so far
        self.done = False
        self.t_first: Optional[float] = None
        self.sample_rate = 0
        self.channels = 0
        try:
            self._fill_first()
        except BaseException:
            self.close()
            raise

    def _append(self, chunks: list[tuple[np.ndarray, int]]) -> None:
        for arr, rate in chunks:
            if not self.sample_rate:
                self.sample_rate = rate
                self.channels = arr.shape[0]
            self.chunks.append(arr)
            self.total += arr.shape[1]

    def _decode_one(self) -> bool:
        """Decode the next frame (or batch); False once the stream has ended."""
        time, chunks, last = next(self.decoded)
        if self.t_first is None and time is not None:
            self.t_first = time
        self._append(chunks)
        self.done = last
        return not last

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
        close = getattr(self.decoded, "close", None)
        if close is not None:
            close()  # a thread decoding ahead stops before its container closes
        self.container.close()


class _ClipAudio:
    """Each clip's audio from the video's best audio stream, or empty audio (``[1, 0]``)
    when it has none or it cannot be decoded (``info.audio_error`` then says why)."""

    def __init__(self, path: str, stream, info: VideoInfo, *, fps: float, rate: int, channels: int, threads: int,
                 ahead: bool = False):
        self.info, self.fps = info, fps
        self.reader: Optional[_AudioReader] = None
        if stream is not None:
            try:
                self.reader = _AudioReader(path, stream.index, rate, channels, threads, ahead)
                info.sample_rate = self.reader.sample_rate
                info.audio_channels = self.reader.channels
            except (av.error.FFmpegError, VideoError, ValueError) as exc:
                info.audio_error = f"audio not decodable ({exc}); clips have empty audio"

    def clip(self, c: int, video: ClipFrames, indices: tuple[int, ...]) -> DecodedClip:
        """Clip ``c`` of source frames ``indices``, with the audio those frames span."""
        if self.reader is not None:
            try:
                return DecodedClip(c, indices, video, self.reader.window(indices[0], indices[-1], self.fps))
            except av.error.FFmpegError as exc:
                self.info.audio_error = f"audio decode failed ({_why(exc)}); later clips have empty audio"
                self.close()
        return DecodedClip(c, indices, video, np.empty((1, 0), dtype=np.float32))

    def close(self) -> None:
        if self.reader is not None:
            _close_quietly(self.reader)
            self.reader = None


class _FrameCount:
    """Frames decoded so far and the last timestamp, held against what the container declares,
    so that a file cut short is reported as truncated however the decoder notices."""

    def __init__(self, vstream, fps: float):
        self.fps = fps
        self.declared_end = _declared_end(vstream)
        self.declared_frames = int(vstream.frames or 0)
        self.decoded = 0
        self.last_time = -1.0

    def count(self, frame) -> int:
        """Count ``frame``; its index in decoding order."""
        i = self.decoded
        self.decoded += 1
        if frame.time is not None and frame.time > self.last_time:
            self.last_time = float(frame.time)
        return i

    def decode_error(self, exc: av.error.FFmpegError) -> VideoError:
        """What a decoding failure means: a file that lost its tail (the reason must not
        depend on where the decoder notices: one thread fails on the partial packet, frame
        threads at the end), or a damaged one."""
        fps, end = self.fps, self.declared_end
        if _cut_short(end, self.last_time, fps):
            return VideoError(
                f"truncated: decoding stopped at {self.last_time + 1.0 / fps:.3f} s ({_why(exc)}), "
                f"the container declares {end:.3f} s"
            )
        return VideoError(f"video decode failed after {self.decoded} frames: {_why(exc)}")

    def check_complete(self) -> None:
        """Raise :class:`VideoError` when decoding ended cleanly but too early (or at once)."""
        fps, end, declared = self.fps, self.declared_end, self.declared_frames
        if self.decoded == 0:
            raise VideoError("no decodable video frame")
        if _cut_short(end, self.last_time, fps):
            raise VideoError(
                f"truncated: frames end at {self.last_time + 1.0 / fps:.3f} s, the container declares {end:.3f} s"
            )
        if declared and self.decoded < declared - 2 - 0.01 * declared:
            # an AVI cut short re-derives its duration from the data left, but keeps the header's frame count
            raise VideoError(f"truncated: {self.decoded} frames decoded, the container declares {declared}")


class _ClipAssembler:
    """Gathers a video's resampled frames into clips of ``T`` entries, one every ``S``.

    A clip is complete once its last entry is decoded, and released only once it is certain
    to exist: the count of resampled entries depends on the total frame count, which only
    grows as frames are decoded. At most one clip window of frames is held.
    """

    def __init__(self, T: int, S: int, *, fps: float, frame_rate: Optional[float], skip_clips: int,
                 make: Callable[[int, ClipFrames, tuple[int, ...]], DecodedClip]):
        self.T, self.S, self.fps, self.frame_rate = T, S, fps, frame_rate
        self.skip_clips, self.make = skip_clips, make
        self.window: deque[tuple[int, int, np.ndarray]] = deque()  # (entry k, source index, frame)
        self.next_k = 0  # next resampled entry to fill
        self.next_clip = 0
        self.pending: list[int] = []  # clips whose frames are complete but whose validity is unknown
        self.held: dict[int, tuple[tuple[int, ...], ClipFrames]] = {}

    def entries_end(self, i: int) -> int:
        """End of the resampled entries source frame ``i`` fills (``next_k``: none)."""
        k_hi = self.next_k
        while selected_index(k_hi, self.fps, self.frame_rate) == i:
            k_hi += 1
        return k_hi

    def needs(self, k_hi: int) -> bool:
        """Whether an entry before ``k_hi`` belongs to some clip (else its frame is not converted)."""
        return any(_clip_range_contains(k, self.T, self.S) for k in range(self.next_k, k_hi))

    def add(self, i: int, k_hi: int, rgb: Optional[np.ndarray]) -> None:
        """Source frame ``i`` (``rgb``, None where not :meth:`needs`) fills entries up to ``k_hi``."""
        T, S = self.T, self.S
        for k in range(self.next_k, k_hi):
            if rgb is not None and _clip_range_contains(k, T, S):
                self.window.append((k, i, rgb))
        self.next_k = k_hi
        # a clip is complete once entry c*S+T-1 is in the window
        while self.next_clip * S + T - 1 < self.next_k:
            c = self.next_clip
            lo = c * S
            entries = [e for e in self.window if lo <= e[0] < lo + T]
            if len(entries) != T:  # pragma: no cover - internal invariant
                raise RuntimeError(f"clip {c}: {len(entries)} frames gathered, expected {T}")
            self.held[c] = (tuple(e[1] for e in entries), ClipFrames([e[2] for e in entries]))
            self.pending.append(c)
            self.next_clip += 1
            while self.window and self.window[0][0] < self.next_clip * S:
                self.window.popleft()

    def release(self, decoded: int) -> Iterator[DecodedClip]:
        """The pending clips certain to exist once ``decoded`` frames are decoded (their last
        entry is below the count those frames imply), but the first ``skip_clips``."""
        valid_upto = selected_count(decoded, self.fps, self.frame_rate)
        keep = []
        for c in self.pending:
            last_k = c * self.S + self.T - 1
            if last_k < valid_upto:
                indices, video = self.held.pop(c)
                if c >= self.skip_clips:
                    yield self.make(c, video, indices)
            else:
                keep.append(c)
        self.pending = keep

    def drop_pending(self) -> None:
        """Forget the clips the video turned out too short for."""
        for c in self.pending:
            self.held.pop(c, None)


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
    audio_ahead: bool = False,
) -> Iterator[DecodedClip]:
    """Decode ``path`` once, front to back, yielding its clips in order.

    ``skip_clips`` clips are decoded past but not yielded (used when resuming inside a video).
    Raises :class:`VideoError` for a file that cannot be used. A clip is yielded only once
    it is certain that the video has enough frames for it (the count of resampled indices
    depends on the total frame count), so the output equals the rules applied to the whole
    decoded video. ``audio_ahead``: the audio is decoded in a thread of its own (a core to spare).
    """
    info = info if info is not None else VideoInfo()
    container = _open(path)
    audio: Optional[_ClipAudio] = None
    try:
        vstream, fps = _video_stream(container)
        info.fps = fps
        vstream.thread_type = "AUTO"
        if threads:
            vstream.codec_context.thread_count = threads
        frames = _FrameCount(vstream, fps)
        audio = _ClipAudio(path, _best(container, "audio"), info, fps=fps, rate=audio_samples, channels=audio_channels,
                           threads=threads, ahead=audio_ahead)
        clips = _ClipAssembler(frames_per_clip, step_between_clips, fps=fps, frame_rate=frame_rate,
                               skip_clips=skip_clips, make=audio.clip)
        # one scaler for the whole video: ``frame.to_ndarray(format=...)`` builds (and tears down,
        # with its slice threads) a new SwsContext for every frame. It runs in this thread: slice
        # threads would compete with the decoder's for the same cores (measured 8% slower).
        reformatter = VideoReformatter()
        resize = (video_width, video_height, video_min_dimension)
        try:
            yield from _decode_frames(container, vstream, frames, clips, reformatter, resize, info)
        except av.error.FFmpegError as exc:
            raise frames.decode_error(exc) from exc
        frames.check_complete()
        info.num_frames = frames.decoded
        yield from clips.release(frames.decoded)
        clips.drop_pending()
        if info.audio_error:
            logger.warning("%s: %s", path, info.audio_error)
    finally:
        if audio is not None:
            audio.close()
        container.close()


def _decode_frames(container, vstream, frames: _FrameCount, clips: _ClipAssembler, reformatter: VideoReformatter,
                   resize: tuple[int, int, int], info: VideoInfo) -> Iterator[DecodedClip]:
    """Decode every frame into ``clips`` (converted to RGB, resized, only where a clip needs
    it); yield each clip as soon as it is certain to exist."""
    size: Optional[tuple[int, int]] = None
    for frame in container.decode(vstream):
        i = frames.count(frame)
        k_hi = clips.entries_end(i)
        if k_hi > clips.next_k:
            if size is None:
                size = target_size(frame.width, frame.height, *resize)
                info.width, info.height = size
            rgb = None
            if clips.needs(k_hi):
                rgb = reformatter.reformat(frame, width=size[0], height=size[1], format="rgb24", threads=1).to_ndarray()
            clips.add(i, k_hi, rgb)
        # clips are certainly valid while their last entry is below the count implied by
        # the frames decoded so far (the count only grows with more frames)
        yield from clips.release(frames.decoded)


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


# -- whole videos (the ``videos`` layout): every frame, and the whole audio track -------------------


def iter_frames(path: str, *, video_width: int = 0, video_height: int = 0, video_min_dimension: int = 0,
                threads: int = 0, info: Optional[VideoInfo] = None) -> Iterator[np.ndarray]:
    """Every frame of the best video stream, front to back, RGB24 uint8 ``[H, W, 3]``, resized:
    the very frames :func:`iter_clips` cuts its clips from (same scaler, same checks). Raises
    :class:`VideoError` for a file that cannot be used; ``info`` gets fps, size and frame count."""
    info = info if info is not None else VideoInfo()
    container = _open(path)
    try:
        vstream, fps = _video_stream(container)
        info.fps = fps
        vstream.thread_type = "AUTO"
        if threads:
            vstream.codec_context.thread_count = threads
        frames = _FrameCount(vstream, fps)
        reformatter = VideoReformatter()
        size: Optional[tuple[int, int]] = None
        try:
            for frame in container.decode(vstream):
                frames.count(frame)
                if size is None:
                    size = target_size(frame.width, frame.height, video_width, video_height, video_min_dimension)
                    info.width, info.height = size
                yield reformatter.reformat(frame, width=size[0], height=size[1], format="rgb24", threads=1).to_ndarray()
        except av.error.FFmpegError as exc:
            raise frames.decode_error(exc) from exc
        frames.check_complete()
        info.num_frames = frames.decoded
    finally:
        container.close()


@dataclass
class AudioTrack:
    """A whole decoded audio track: rate, channels, first timestamp and sample count. ``partial``:
    decoding failed part-way and ``samples`` are those decoded before (a clip whose audio window
    ends later has empty audio, as :func:`iter_clips` gives it)."""

    sample_rate: int = 0
    channels: int = 0
    t_first: float = 0.0
    samples: int = 0
    partial: bool = False


def decode_audio_track(path: str, *, rate: int = 0, channels: int = 0, threads: int = 0, info: VideoInfo,
                       sink: Callable[[np.ndarray], None]) -> AudioTrack:
    """Decode the best audio stream whole, resampled as :func:`iter_clips` does, handing each
    float32 ``[K, n]`` chunk to ``sink`` in order (memory: one chunk). No audio stream, or
    audio that cannot be decoded: an empty track (``info.audio_error`` says why)."""
    track = AudioTrack()
    container = _open(path)
    try:
        stream = _best(container, "audio")
        index = stream.index if stream is not None else None  # read before close: the stream dies with it
    finally:
        container.close()
    if index is None:
        return track
    try:
        reader = _AudioReader(path, index, rate, channels, threads)
    except (av.error.FFmpegError, VideoError, ValueError) as exc:
        info.audio_error = f"audio not decodable ({exc}); clips have empty audio"
        return track
    track.sample_rate, track.channels, track.t_first = reader.sample_rate, reader.channels, reader.t_first or 0.0
    info.sample_rate, info.audio_channels = reader.sample_rate, reader.channels
    try:
        while True:
            while reader.chunks:
                sink(reader.chunks.popleft())
            if reader.done or not reader.sample_rate:
                break
            reader._decode_one()
    except av.error.FFmpegError as exc:
        info.audio_error = f"audio decode failed ({_why(exc)}); later clips have empty audio"
        track.partial = True
        while reader.chunks:
            sink(reader.chunks.popleft())
    finally:
        _close_quietly(reader)
    track.samples = reader.total
    return track
