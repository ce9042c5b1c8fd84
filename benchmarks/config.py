"""What the harness measures and at which sizes: one validated dataclass, with a ``--quick`` preset."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any

__all__ = ["BenchConfig", "SECTIONS", "quick_config"]

SECTIONS = ("loader", "convert", "first_batch", "memory", "layouts")
HERE = os.path.dirname(os.path.abspath(__file__))


@dataclass(frozen=True)
class BenchConfig:
    """Sizes and repeats of one harness run (defaults: the full run the README quotes).

    The dataset imitates Kinetics: 10 s H.264 clips (x264 default GOP of 250 frames, B-frames)
    with 44.1 kHz stereo AAC, in ``classes`` class folders.
    """

    out: str = os.path.join(HERE, "results")
    work: str = os.path.join(HERE, "work")
    sections: tuple[str, ...] = SECTIONS
    videos: int = 40
    classes: int = 4
    seconds: float = 10.0
    width: int = 340
    height: int = 256
    fps: int = 30
    gop: int = 250
    bframes: int = 2
    sample_rate: int = 44100
    frames_per_clip: int = 16
    step_between_clips: int = 16
    repeats: int = 5
    batch_size: int = 8
    loader_workers: tuple[int, ...] = (0, 2)
    loader_clips: int = 640
    baseline_clips: int = 64
    convert_videos: int = 40
    convert_repeats: int = 3
    convert_workers: tuple[int, ...] = (1, 2)
    index_videos: tuple[int, ...] = (1000, 10000, 100000)
    scan_files: int = 8
    memory_seconds: tuple[float, float] = (10.0, 60.0)
    shuffle_buffers: tuple[int, ...] = (0, 16, 64)
    memory_clips: int = 320
    quick: bool = False

    def __post_init__(self) -> None:
        def bad(name: str, why: str) -> None:
            raise ValueError(f"{name}={getattr(self, name)!r}: {why}")

        unknown = [s for s in self.sections if s not in SECTIONS]
        if unknown or not self.sections:
            bad("sections", f"each must be one of {SECTIONS}")
        for name in ("videos", "classes", "width", "height", "fps", "gop", "frames_per_clip", "step_between_clips",
                     "repeats", "convert_repeats", "batch_size", "baseline_clips", "convert_videos", "scan_files"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                bad(name, "must be an integer >= 1")
        if self.width % 2 or self.height % 2:
            bad("width" if self.width % 2 else "height", "must be even (H.264 4:2:0)")
        if self.classes > self.videos:
            bad("classes", f"cannot exceed videos={self.videos}")
        if self.convert_videos > self.videos:
            bad("convert_videos", f"cannot exceed videos={self.videos}")
        if not self.seconds > 0 or self.seconds * self.fps < self.frames_per_clip:
            bad("seconds", f"must give at least frames_per_clip={self.frames_per_clip} frames at {self.fps} fps")
        for name in ("loader_clips", "memory_clips"):
            if getattr(self, name) < 0:
                bad(name, "must be >= 0 (0: one whole epoch)")
        if any(w < 0 for w in self.loader_workers) or not self.loader_workers:
            bad("loader_workers", "must be integers >= 0")
        if any(w < 1 for w in self.convert_workers) or not self.convert_workers:
            bad("convert_workers", "must be integers >= 1")
        if any(n < 1 for n in self.index_videos) or not self.index_videos:
            bad("index_videos", "must be integers >= 1")
        if len(self.memory_seconds) != 2 or not 0 < self.memory_seconds[0] < self.memory_seconds[1]:
            bad("memory_seconds", "must be two durations, short < long")
        if any(b < 0 for b in self.shuffle_buffers) or not self.shuffle_buffers:
            bad("shuffle_buffers", "must be integers >= 0")

    @property
    def frames(self) -> int:
        return int(round(self.seconds * self.fps))

    def replace(self, **changes: Any) -> "BenchConfig":
        return dataclasses.replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def quick_config(**changes: Any) -> BenchConfig:
    """A tiny run (well under a minute) that exercises every section: used by the tests."""
    base = dict(
        work=os.path.join(HERE, "work", "quick"),
        out=os.path.join(HERE, "work", "quick", "results"),
        videos=4, classes=2, seconds=1.2, width=64, height=48, gop=12, bframes=0, sample_rate=22050,
        repeats=1, convert_repeats=1, batch_size=2, baseline_clips=4, convert_videos=2, convert_workers=(1, 2),
        index_videos=(100, 400), scan_files=2, memory_seconds=(1.0, 3.0), shuffle_buffers=(0, 4), loader_clips=0, memory_clips=0, quick=True,
    )
    base.update(changes)
    return BenchConfig(**base)
