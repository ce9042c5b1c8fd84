"""Section 3: time to the first batch against the number of videos in the index, and the time
torchvision's ``VideoClips`` needs to scan as many videos (measured on a few, scaled)."""

from __future__ import annotations

import logging
import os
import time

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


def run(cfg: BenchConfig, root: str) -> Section:
    s = Section("first_batch", "Time to the first batch")
    s.headers = ["Videos in the index", "num_workers", "clipshards: first batch", "torchvision: scan before the first batch (est.)", "speed-up"]
    paths = data.dataset_videos(root)[: cfg.scan_files]
    per_video = scan_seconds_per_video(paths, cfg.repeats)
    firsts: dict[tuple[int, int], Stat] = {}
    for n in cfg.index_videos:
        out = data.synthetic_index(cfg, n)
        for w in cfg.loader_workers:
            vals = [run_python("benchmarks.probe", {"kind": "first_batch", "out": out, "batch_size": cfg.batch_size,
                                                     "workers": w, "seed": r})["seconds"] for r in range(cfg.repeats)]
            firsts[(n, w)] = Stat.of(vals, "s")
            logger.info("first batch, %d videos, workers=%d: %s", n, w, firsts[(n, w)].fmt())
    for n in cfg.index_videos:
        scan = per_video.scaled(n, "s")
        for w in cfg.loader_workers:
            st = firsts[(n, w)]
            s.rows.append([f"{n:,}", str(w), st.fmt(), _duration(scan.median), f"{scan.median / st.median:,.0f}x"])
    big = max(cfg.index_videos)
    small = min(cfg.index_videos)
    for w in cfg.loader_workers:
        st = firsts[(big, w)]
        s.checks.append(Check(f"first batch < 1 s for {big:,} videos (num_workers {w})", st.fmt(), st.median < 1.0))
        if big != small:
            base = firsts[(small, w)].median
            s.checks.append(Check(f"first batch independent of the number of videos ({small:,} -> {big:,}, num_workers {w})",
                                  f"{base:.3g} s -> {st.median:.3g} s", st.median <= 1.5 * base + GRACE_S))
    s.notes += [
        f"The index and shards are synthetic (one small clip a video, written by the converter's ShardWriter); the "
        f"first batch is timed in a fresh process from `StreamingKinetics(...)` to the first batch of {cfg.batch_size} "
        "(imports excluded), shuffle on.",
        f"torchvision scan: open + demux every video packet's timestamp (as `VideoClips` does), measured on "
        f"{len(paths)} of the benchmark's {cfg.seconds:g} s videos: {per_video.fmt()} a video, times the number of videos "
        "(one process, Kinetics' default `num_workers=1`).",
        f"'Independent' is met when the largest index takes at most 1.5x the time of the smallest plus {GRACE_S * 1000:.0f} ms "
        "(timer noise on a shared machine).",
    ]
    s.chart = chart_data(
        [(f"clipshards {n:,} w{w}", firsts[(n, w)], "C0") for n in cfg.index_videos for w in cfg.loader_workers]
        + [(f"torchvision scan {big:,}", per_video.scaled(big, "s"), "C3")],
        xlabel="seconds (log)", log=True,
    )
    s.raw = {"first_batch_s": {f"{n}_w{w}": st for (n, w), st in firsts.items()}, "scan_s_per_video": per_video,
             "scan_files": [os.path.basename(p) for p in paths]}
    return s


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.2f} s"
