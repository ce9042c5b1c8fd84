"""Synthetic videos and datasets, written with PyAV: for the example, the tests, the benchmarks.

Frames are deterministic per (seed, frame) and vary enough that a frame shifted by one, a
wrong resize or a wrong stream is visible; audio is a tone whose phase encodes time, so an
audio window that is off by a few samples differs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from fractions import Fraction
from typing import Optional, Sequence

import av
import numpy as np

__all__ = ["VideoSpec", "write_video", "make_dataset", "EXAMPLE_CLASSES"]

EXAMPLE_CLASSES = ("archery", "bowling", "juggling balls")


@dataclass(frozen=True)
class VideoSpec:
    """How to write one synthetic video (defaults: H.264 + AAC stereo in MP4)."""

    frames: int = 30
    fps: Fraction | float | int = 30
    width: int = 64
    height: int = 48
    codec: str = "libx264"  # or "mpeg4", "libvpx-vp9", ...
    pix_fmt: str = "yuv420p"
    audio_codec: Optional[str] = "aac"  # None: no audio stream; "mp3", "pcm_s16le", ...
    sample_rate: int = 22050
    channels: int = 2
    seed: int = 0
    gop: int = 12
    bframes: int = 0


def synthetic_frame(t: int, width: int, height: int, seed: int = 0) -> np.ndarray:
    """A smooth gradient that moves with ``t`` plus a frame-number bar: compresses well,
    yet every frame differs."""
    y, x = np.mgrid[0:height, 0:width]
    r = (x * 255 // max(1, width - 1) + 7 * t + 31 * seed) % 256
    g = (y * 255 // max(1, height - 1) + 3 * t) % 256
    b = ((x + y) * 2 + 11 * t + 17 * seed) % 256
    img = np.stack([r, g, b], axis=-1).astype(np.uint8)
    bar = min(width, 2 + (t * 3) % max(1, width - 2))
    img[: max(1, height // 8), :bar] = 255
    return img


def write_video(path: str | os.PathLike, spec: VideoSpec = VideoSpec()) -> str:
    """Write ``spec`` to ``path`` (the container follows the extension) and return the path."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    rate = Fraction(spec.fps).limit_denominator(100000) if not isinstance(spec.fps, Fraction) else spec.fps
    with av.open(path, "w") as c:
        v = c.add_stream(spec.codec, rate=rate)
        pix_fmt = spec.pix_fmt
        if pix_fmt == "yuv420p" and (spec.width % 2 or spec.height % 2) and spec.codec == "libx264":
            pix_fmt = "yuv444p"  # 4:2:0 needs even sizes; odd sizes still decode to odd RGB frames
        v.width, v.height, v.pix_fmt = spec.width, spec.height, pix_fmt
        v.codec_context.gop_size = spec.gop
        if spec.bframes:
            v.codec_context.max_b_frames = spec.bframes
        if spec.codec == "libx264":
            v.options = {"preset": "ultrafast" if not spec.bframes else "fast", "crf": "18"}
        a = None
        if spec.audio_codec:
            a = c.add_stream(spec.audio_codec, rate=spec.sample_rate)
            a.layout = "mono" if spec.channels == 1 else "stereo"
        for t in range(spec.frames):
            frame = av.VideoFrame.from_ndarray(synthetic_frame(t, spec.width, spec.height, spec.seed), format="rgb24")
            for p in v.encode(frame):
                c.mux(p)
        for p in v.encode():
            c.mux(p)
        if a is not None:
            _write_audio(c, a, spec, float(spec.frames / rate))
    return path


def _write_audio(container, stream, spec: VideoSpec, seconds: float) -> None:
    total = int(round(seconds * spec.sample_rate))
    ctx = stream.codec_context
    fmt = ctx.format.name if ctx.format is not None else "fltp"
    chunk = ctx.frame_size or 1024
    pos = 0
    freq = 220.0 + 40.0 * spec.seed
    while pos < total:
        n = min(chunk, total - pos)
        tt = np.arange(pos, pos + n) / spec.sample_rate
        chans = [0.4 * np.sin(2 * np.pi * (freq + 60 * ch) * tt + tt) for ch in range(spec.channels)]
        arr = np.stack(chans).astype(np.float32)
        layout = "mono" if spec.channels == 1 else "stereo"
        base = fmt.rstrip("p")
        if base == "s16":
            arr = (arr * 32767).astype(np.int16)
        elif base == "s32":
            arr = (arr * 2147483647).astype(np.int32)
        elif base == "dbl":
            arr = arr.astype(np.float64)
        data = arr if fmt.endswith("p") else arr.T.reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(data), format=fmt, layout=layout)
        frame.sample_rate = spec.sample_rate
        frame.pts = pos
        for p in stream.encode(frame):
            container.mux(p)
        pos += n
    for p in stream.encode():
        container.mux(p)


def make_dataset(
    root: str | os.PathLike,
    *,
    split: str = "train",
    classes: Sequence[str] = EXAMPLE_CLASSES,
    videos_per_class: int = 3,
    spec: VideoSpec = VideoSpec(),
    vary_length: bool = True,
    extension: str = "mp4",
) -> list[str]:
    """A tiny Kinetics-layout dataset under ``root/split/<class>/``; returns the video paths."""
    paths = []
    for ci, cls in enumerate(classes):
        for vi in range(videos_per_class):
            seed = ci * videos_per_class + vi
            frames = spec.frames + (7 * vi if vary_length else 0)
            s = VideoSpec(**{**spec.__dict__, "frames": frames, "seed": seed})
            paths.append(write_video(os.path.join(os.fspath(root), split, cls, f"video_{vi:03d}.{extension}"), s))
    return paths
