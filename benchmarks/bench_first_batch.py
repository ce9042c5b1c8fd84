"""Section 3: time to the first batch against the number of videos in the index, and the time
torchvision's ``VideoClips`` needs to scan as many videos (measured on a few, scaled)."""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from . import data
from .baseline import scan_video
from .config import BenchConfig
from .measure import Stat, run_python
from .report import Check, Section, chart_data

logger = logging.getLogger(__name__)

__all__ = ["run", "scan_seconds_per_video"]

GRACE_S = 0.05


def scan_seconds_per_video(paths: list[str], repeats: int) -> Stat:
    """Seconds to scan one video as ``VideoClips`` does (open + read every packet timestamp)."""
    values = []
    for _ in range(repeats):
        for p in paths:
            start = time.perf_counter()
            scan_video(p)
            values.append(time.perf_counter() - start)
    return Stat.of(values, "s")


def _first_batch(cfg: BenchConfig, out: str, workers: int, **options: Any) -> tuple[Stat, dict[str, Any]]:
    results = [run_python("benchmarks.probe", {"kind": "first_batch", "out": out, "batch_size": cfg.batch_size,
                                               "workers": workers, "seed": r, **options}) for r in range(cfg.repeats)]
    return Stat.of([r["seconds"] for r in results], "s"), results[-1]


def run(cfg: BenchConfig, root: str) -> Section:
    s = Section("first_batch", "Time to the first batch")
    s.headers = ["Dataset", "Videos", "num_workers", "clipshards: first batch",
                 "torchvision: scan before the first batch (est.)", "speed-up"]
    paths = data.dataset_videos(root)[: cfg.scan_files]
    per_video = scan_seconds_per_video(paths, cfg.repeats)
    firsts: dict[tuple[int, int], Stat] = {}
    for n in cfg.index_videos:
        out = data.synthetic_index(cfg, n)
        for w in cfg.loader_workers:
            # what "auto" picks for raw Kinetics-size clips: one clip a block, no buffer to fill
            firsts[(n, w)], _ = _first_batch(cfg, out, w, block_size=1, shuffle_buffer=0)
            logger.info("first batch, %d videos, workers=%d: %s", n, w, firsts[(n, w)].fmt())
            scan = per_video.scaled(n, "s")
            s.rows.append([f"synthetic index, raw-clip settings", f"{n:,}", str(w), firsts[(n, w)].fmt(),
                           _duration(scan.median), f"{scan.median / firsts[(n, w)].median:,.0f}x"])
    real: dict[tuple[str, int], Stat] = {}
    for codec in ("raw", "jpeg"):
        out = data.converted(cfg, root, codec)
        for w in cfg.loader_workers:
            real[(codec, w)], info = _first_batch(cfg, out, w)
            scan = per_video.scaled(cfg.videos, "s")
            s.rows.append([f"benchmark dataset, {codec}, auto (block {info['block_size']}, buffer {info['shuffle_buffer']})",
                           f"{cfg.videos:,}", str(w), real[(codec, w)].fmt(), _duration(scan.median),
                           f"{scan.median / real[(codec, w)].median:,.1f}x"])
    big, small = max(cfg.index_videos), min(cfg.index_videos)
    target = 10000 if 10000 in cfg.index_videos else big
    for w in cfg.loader_workers:
        st = firsts[(target, w)]
        s.checks.append(Check(f"first batch < 1 s for {target:,} videos (num_workers {w})", st.fmt(), st.median < 1.0))
        if big != small:
            base = firsts[(small, w)].median
            s.checks.append(Check(f"first batch independent of the number of videos ({small:,} -> {big:,}, num_workers {w})",
                                  f"{base:.3g} s -> {firsts[(big, w)].median:.3g} s",
                                  firsts[(big, w)].median <= 1.5 * base + GRACE_S))
    s.notes += [
        "Synthetic index: one small clip a video, shards written by the converter's ShardWriter, `index.json` in the "
        "converter's layout; opened with the settings `auto` picks for raw 16x256x340 clips (block_size=1, no shuffle "
        f"buffer). Timed in a fresh process from `StreamingKinetics(...)` to the first batch of {cfg.batch_size}, "
        "imports excluded, shuffle on.",
        "Benchmark dataset rows: the real conversions with `auto` settings; a shuffle buffer is filled before the first "
        "clip leaves a worker, so its size (auto: up to 256 MiB of clips) adds to the first batch.",
        f"torchvision scan: open + demux every video packet's timestamp (as `VideoClips` does), measured on "
        f"{len(paths)} of the benchmark's {cfg.seconds:g} s videos: {per_video.fmt()} a video, times the number of videos "
        "(one process, Kinetics' default `num_workers=1`).",
        f"'Independent' is met when the largest index takes at most 1.5x the time of the smallest plus {GRACE_S * 1000:.0f} ms "
        "(timer noise on a shared machine).",
    ]
    s.chart = chart_data(
        [(f"clipshards {n:,} w{w}", firsts[(n, w)], "C0") for n in cfg.index_videos for w in cfg.loader_workers]
        + [(f"torchvision scan {target:,}", per_video.scaled(target, "s"), "C3")],
        xlabel="seconds (log)", log=True,
    )
    s.raw = {"first_batch_s": {f"{n}_w{w}": st for (n, w), st in firsts.items()},
             "real_first_batch_s": {f"{c}_w{w}": st for (c, w), st in real.items()},
             "scan_s_per_video": per_video, "scan_files": [os.path.basename(p) for p in paths]}
    return s


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.2f} s"
