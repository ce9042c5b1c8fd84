"""Section 1: loader throughput (clips/s, MB/s) for ``raw`` and ``jpeg`` with shuffle on and
DataLoader ``num_workers`` 0 and 2, against the torchvision-style baseline and the limits."""

from __future__ import annotations

import logging
import time
from typing import Any, Iterable

import torch

from . import data
from .baseline import TorchvisionStyleClips
from .config import BenchConfig
from .limits import ShardSet, jpeg_decode_limit, jpeg_frames, raw_batch_floor, raw_storage_limit
from .measure import Stat
from .report import Check, Section, chart_data

logger = logging.getLogger(__name__)

__all__ = ["run", "steady_rate", "warmup_batches"]

CODECS = ("raw", "jpeg")
WORKER_WARMUP = 4
"""Batches of each DataLoader worker left out of a steady rate: its start-up (the first), and
the first use of each of its shared-memory batch slots (``prefetch_factor + 2`` = 4): a 35 MB
raw batch written into fresh shared memory costs ~15 ms more on this machine (the kernel
allocating and mapping 9,000 pages), once per worker start (never again with
``persistent_workers=True``), against ~1.5 ms once the slot is mapped."""


def warmup_batches(workers: int, batches: int = 0) -> int:
    """Batches left out before timing a loader with ``workers`` DataLoader workers; at most
    half of its ``batches`` when given (a tiny ``--quick`` set)."""
    n = workers * WORKER_WARMUP if workers else 1
    return min(n, max(1, batches // 2)) if batches else n


def steady_rate(batches: Iterable[Any], limit: int, warmup: int = 1, *, min_seconds: float = 0.0) -> tuple[int, float]:
    """Clips per second after the first ``warmup`` batches (start-up is section 3's business:
    with W DataLoader workers, pass :func:`warmup_batches`).

    Returns ``(clips counted, seconds)``; stops once ``limit`` clips (0: all) were counted and
    ``min_seconds`` have passed (a fast reader is timed over more clips than ``limit``, so one
    hiccup of a shared machine weighs less), or at the epoch's end.
    """
    seen = counted = 0
    start = None
    for batch in batches:
        n = int(batch.label.shape[0]) if hasattr(batch, "label") else len(batch[2])
        seen += 1
        if seen == warmup:
            start = time.perf_counter()
        elif start is not None:
            counted += n
        if limit and counted >= limit and (not min_seconds or time.perf_counter() - start >= min_seconds):
            break
    if start is None or counted == 0:
        raise RuntimeError("too few batches to time: raise loader_clips/baseline_clips or lower batch_size")
    return counted, time.perf_counter() - start


def _loader_rate(cfg: BenchConfig, out: str, workers: int, seed: int) -> float:
    from clipshards.loader import StreamingKinetics

    ds = StreamingKinetics(out, "train", shuffle=True, seed=seed)
    loader = ds.loader(batch_size=cfg.batch_size, num_workers=workers)
    clips, seconds = steady_rate(loader, cfg.loader_clips, warmup=warmup_batches(workers, len(loader)))
    return clips / seconds


def _baseline_rate(cfg: BenchConfig, ds: TorchvisionStyleClips, workers: int, seed: int) -> float:
    from clipshards.loader import collate_clips

    g = torch.Generator().manual_seed(seed)
    loader = torch.utils.data.DataLoader(ds, batch_size=cfg.batch_size, shuffle=True, num_workers=workers,
                                         collate_fn=collate_clips, generator=g)
    clips, seconds = steady_rate(loader, cfg.baseline_clips, warmup=warmup_batches(workers, len(loader)))
    return clips / seconds


def run(cfg: BenchConfig, root: str) -> Section:
    from clipshards.convert.layout import discover

    videos = [(v.path, v.label) for v in discover(root, "train", ("mp4",)).videos]
    baseline = TorchvisionStyleClips(videos, frames_per_clip=cfg.frames_per_clip, step_between_clips=cfg.step_between_clips)
    s = Section("loader", "Loader throughput (shuffle on, steady state)")
    s.headers = ["Codec", "Reader", "num_workers", "clips/s", "MB/s", "vs baseline", "vs limit"]
    stats: dict[tuple[str, str, int], Stat] = {}
    clip_mb: dict[str, float] = {}
    for codec in CODECS:
        out = data.converted(cfg, root, codec)
        shards = ShardSet.open(out)
        shards.warm()
        limit_clips = cfg.loader_clips or shards.clips
        frames = jpeg_frames(shards, limit_clips) if codec == "jpeg" else None
        rates: dict[tuple[str, int], list[float]] = {}
        for r in range(cfg.repeats):
            if codec == "raw":
                n, nbytes, sec = raw_storage_limit(shards, limit_clips)
            else:
                assert frames is not None
                n, nbytes, sec = jpeg_decode_limit(frames[0])
                nbytes += frames[1]
            clip_mb[codec] = nbytes / n / 1e6
            rates.setdefault(("limit", 0), []).append(n / sec)
            if codec == "raw":
                n, _, sec = raw_batch_floor(shards, limit_clips, cfg.batch_size)
                rates.setdefault(("floor", 0), []).append(n / sec)
            for w in cfg.loader_workers:
                rates.setdefault(("clipshards", w), []).append(_loader_rate(cfg, out, w, seed=r))
                if codec == "raw":  # the baseline reads the source videos: the same for both codecs
                    rates.setdefault(("baseline", w), []).append(_baseline_rate(cfg, baseline, w, seed=r))
                logger.info("loader %s workers=%d repeat %d: %.1f clips/s", codec, w, r, rates[("clipshards", w)][-1])
        for (kind, w), v in rates.items():
            stats[(codec, kind, w)] = Stat.of(v, "clips/s")
    for (codec, kind, w) in list(stats):
        if kind == "baseline":
            stats[("jpeg", kind, w)] = stats[(codec, kind, w)]
    mb = clip_mb.get("raw") or next(iter(clip_mb.values()))
    limit_name = {"raw": "storage limit (sequential read, no decode)", "jpeg": "JPEG tight-loop decode (the loader's decoder: simplejpeg, 1 process)"}
    for codec in CODECS:
        mb_c = clip_mb.get(codec, mb)
        for w in cfg.loader_workers:
            st, base, lim = stats[(codec, "clipshards", w)], stats[(codec, "baseline", w)], stats[(codec, "limit", 0)]
            s.rows.append([codec, "clipshards StreamingKinetics", str(w), st.fmt(), f"{st.median * mb_c:,.0f}",
                           f"{st.median / base.median:.1f}x", f"{100 * st.median / lim.median:.0f}%"])
        for w in cfg.loader_workers:
            base = stats[(codec, "baseline", w)]
            s.rows.append([codec, "baseline: torchvision-style PyAV seek+decode", str(w), base.fmt(),
                           f"{base.median * mb_c:,.0f}", "1x", ""])
        lim = stats[(codec, "limit", 0)]
        if (codec, "floor", 0) in stats:
            floor = stats[(codec, "floor", 0)]
            s.rows.append([codec, "batch floor (the same reads straight into batch memory, hashed, nothing parsed)", "-",
                           floor.fmt(), f"{floor.median * mb_c:,.0f}", "", f"{100 * floor.median / lim.median:.0f}%"])
        s.rows.append([codec, limit_name[codec], "-", lim.fmt(), f"{lim.median * mb_c:,.0f}", "", "100%"])
    goals = {"raw": (30.0, 0.6), "jpeg": (8.0, 0.8)}
    for codec in CODECS:
        xb, xl = goals[codec]
        for w in cfg.loader_workers:
            st = stats[(codec, "clipshards", w)]
            vb = st.median / stats[(codec, "baseline", w)].median
            vl = st.median / stats[(codec, "limit", 0)].median
            s.checks.append(Check(f"loader {codec} >= {xb:g}x baseline clips/s (num_workers {w})", f"{vb:.1f}x", vb >= xb))
            s.checks.append(Check(f"loader {codec} >= {100 * xl:.0f}% of {'storage limit' if codec == 'raw' else 'tight-loop JPEG decode'} "
                                  f"(num_workers {w})", f"{100 * vl:.0f}%", vl >= xl))
    s.notes += [
        f"MB/s counts decoded clip tensors (video uint8 + audio float32): {clip_mb.get('raw', mb):.2f} MB a clip. "
        f"Batches of {cfg.batch_size} with `collate_clips`; rates exclude the first batch with num_workers 0, "
        f"each worker's first {WORKER_WARMUP} with workers (its start-up, timed in the first-batch section, and the "
        "first use of each of its shared-memory batch slots: ~15 ms each, once per worker start). Shards are read from the page cache (read once before timing).",
        f"Loader: `StreamingKinetics(out, shuffle=True)` (auto block size and shuffle buffer) through "
        f"`ds.loader(batch_size={cfg.batch_size}, num_workers=W)`, {cfg.loader_clips or 'all'} clips a run. "
        f"Baseline: a map-style dataset that scans the videos once, then per clip opens the file, seeks, decodes "
        f"the clip's frames (RGB24) and audio with PyAV, as torchvision's `read_video`; DataLoader shuffle=True, "
        f"{cfg.baseline_clips} clips a run.",
        "Limits run in one process; the loader with 2 workers may exceed them (they are not parallel).",
        "Batch floor: what a loader that hands out checked batches of raw clips does at least (each clip read "
        "into its batch's memory in 512 KiB pieces, each hashed with XXH3-64 while in cache; nothing parsed, no "
        "key or label checked). The storage limit reads each clip into one buffer that stays in the CPU's cache; "
        "a batch (tens of MB) goes to memory, so the floor, not the limit, bounds the loader.",
    ]
    s.chart = chart_data(
        [(f"{c} {k if k != 'clipshards' else 'loader'}" + (f" w{w}" if k not in ("limit", "floor") else ""), stats[(c, k, w)],
          {"clipshards": "C0", "baseline": "C3", "limit": "C7", "floor": "C2"}[k])
         for c in CODECS for (cc, k, w) in sorted(stats) if cc == c],
        xlabel="clips/s (log)", log=True,
    )
    s.raw = {"clips_per_s": {f"{c}_{k}_w{w}": st for (c, k, w), st in stats.items()}, "clip_mb": clip_mb}
    return s
