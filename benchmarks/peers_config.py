"""Sizes, repeats and peers of ``python -m benchmarks.peers``: one validated dataclass and a ``--quick`` preset."""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from typing import Any

from .config import HERE, BenchConfig
from .peers_registry import PEERS

__all__ = ["PeersConfig", "quick_peers_config", "parse_size"]


def parse_size(text: str) -> tuple[int, int]:
    """``"340x256"`` -> ``(340, 256)``: even sides (H.264 4:2:0) of at least 16 pixels."""
    try:
        w, h = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"size {text!r}: expected WIDTHxHEIGHT, e.g. 160x120") from None
    if w < 16 or h < 16 or w % 2 or h % 2:
        raise ValueError(f"size {text!r}: sides must be even and at least 16")
    return w, h


@dataclass(frozen=True)
class PeersConfig:
    """What the side-by-side run measures (defaults: the full run, ~10 minutes on 2 cores).

    Each size gets its own Kinetics-like set (the harness's video spec) holding about
    ``raw_mb`` MB of raw clips, so small clips are many: 340x256 -> 12 videos, 216 clips;
    160x120 -> 55 videos, 990 clips. A run reads one shuffled epoch, or its first
    ``clips_<codec>`` clips where that is set (0: the whole epoch): decoding and JPEG are
    slow, and so is handing 990 clips one by one across DataLoader workers.
    """

    out: str = os.path.join(HERE, "results")
    work: str = os.path.join(HERE, "work", "peers")
    sizes: tuple[str, ...] = ("340x256", "160x120")
    peers: tuple[str, ...] = tuple(p.key for p in PEERS)
    codecs: tuple[str, ...] = ("raw", "jpeg")
    raw_mb: float = 900.0
    seconds: float = 10.0
    fps: int = 30
    gop: int = 250
    bframes: int = 2
    sample_rate: int = 44100
    classes: int = 4
    min_videos: int = 4
    frames_per_clip: int = 16
    step_between_clips: int = 16
    batch_size: int = 8
    workers: tuple[int, ...] = (0, 2)
    repeats: int = 3
    clips_raw: int = 400
    clips_jpeg: int = 64
    clips_video: int = 16
    shuffle_mib: int = 256
    torch_threads: int = 1
    quick: bool = False

    def __post_init__(self) -> None:
        def bad(name: str, why: str) -> None:
            raise ValueError(f"{name}={getattr(self, name)!r}: {why}")

        for s in self.sizes:
            parse_size(s)
        if not self.sizes:
            bad("sizes", "give at least one WIDTHxHEIGHT")
        keys = {p.key for p in PEERS}
        if not self.peers or any(k not in keys for k in self.peers):
            bad("peers", f"each must be one of {', '.join(sorted(keys))}")
        if not self.codecs or any(c not in ("raw", "jpeg") for c in self.codecs):
            bad("codecs", "each must be raw or jpeg")
        for name in ("fps", "gop", "classes", "min_videos", "frames_per_clip", "step_between_clips", "batch_size",
                     "repeats", "shuffle_mib", "torch_threads"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                bad(name, "must be an integer >= 1")
        for name in ("clips_raw", "clips_jpeg", "clips_video", "bframes"):
            if getattr(self, name) < 0:
                bad(name, "must be >= 0 (clips: 0 reads the whole epoch)")
        if not self.workers or any(w < 0 for w in self.workers):
            bad("workers", "must be integers >= 0")
        if not self.raw_mb > 0:
            bad("raw_mb", "must be > 0")
        if self.seconds * self.fps < self.frames_per_clip:
            bad("seconds", f"must give at least frames_per_clip={self.frames_per_clip} frames at {self.fps} fps")
        if self.classes > self.min_videos:
            bad("classes", f"cannot exceed min_videos={self.min_videos}")

    @property
    def clips_per_video(self) -> int:
        frames = int(round(self.seconds * self.fps))
        return (frames - self.frames_per_clip) // self.step_between_clips + 1

    def videos(self, size: str) -> int:
        """Videos of the ``size`` set: about ``raw_mb`` MB of raw clips, at least ``min_videos``."""
        w, h = parse_size(size)
        video_mb = self.clips_per_video * self.frames_per_clip * w * h * 3 / 1e6
        return max(self.min_videos, math.ceil(self.raw_mb / video_mb - 1e-9))

    def bench_config(self, size: str) -> BenchConfig:
        """The harness config that builds and converts the ``size`` set (its own work folder)."""
        w, h = parse_size(size)
        n = self.videos(size)
        return BenchConfig(work=os.path.join(self.work, size), out=self.out, videos=n, classes=self.classes,
                           convert_videos=n, seconds=self.seconds, width=w, height=h, fps=self.fps, gop=self.gop,
                           bframes=self.bframes, sample_rate=self.sample_rate, frames_per_clip=self.frames_per_clip,
                           step_between_clips=self.step_between_clips, batch_size=self.batch_size)

    def clips(self, codec: str) -> int:
        return {"raw": self.clips_raw, "jpeg": self.clips_jpeg, "video": self.clips_video}[codec]

    def replace(self, **changes: Any) -> "PeersConfig":
        return dataclasses.replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def quick_peers_config(**changes: Any) -> PeersConfig:
    """A tiny run of every installed peer (about a minute or two): what the tests use."""
    base: dict[str, Any] = dict(
        out=os.path.join(HERE, "work", "peers_quick", "results"), work=os.path.join(HERE, "work", "peers_quick"),
        sizes=("64x48",), raw_mb=0.1, min_videos=4, classes=2, seconds=2.0, gop=12, bframes=0, sample_rate=22050,
        batch_size=2, workers=(0,), repeats=1, clips_raw=0, clips_jpeg=0, clips_video=0, quick=True,
    )
    base.update(changes)
    return PeersConfig(**base)
