"""Section ``layouts``: the ``videos`` layout (each video stored once, clips cut when loading)
against the ``clips`` layout, at T = S = ``frames_per_clip``, raw and JPEG.

- Read rate: ``StreamingKinetics`` (shuffle on, the same T, S and clips) over each layout,
  runs of the two layouts interleaved; target: the videos layout at >= 85% of the clips layout.
- Stored bytes: the videos layout stores each frame once whatever S (S is chosen when loading),
  the clips layout stores each frame ``T / S`` times: measured at S = T on the whole dataset
  and, for the clips layout at S = 1, on its first video, scaled by the frame count; target:
  the videos layout at <= 1.1x the clips layout at S = T.
- Reads a clip: ``IndexedKinetics`` over the videos layout at T, S = 1 (consecutive frames),
  transport calls and bytes counted over clips spread across the dataset; target: one ranged
  read a clip, of just its frames and its audio window (JPEG: plus each video's frame table, once).
- Start-up: ``IndexedKinetics`` over a videos layout of 1,000 to 100,000 videos (its table
  replicated from the real conversion), to the first clip; target: < 1 s at 100,000 videos.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from typing import Any

import numpy as np

from . import data
from .bench_loader import steady_rate
from .config import BenchConfig
from .measure import Stat
from .report import Check, Section, chart_data

logger = logging.getLogger(__name__)

__all__ = ["run", "converted_layout", "table_index"]

CODECS = ("raw", "jpeg")
LAYOUTS = ("clips", "videos")
STARTUP_VIDEOS = (1_000, 10_000, 100_000)


def converted_layout(cfg: BenchConfig, root: str, codec: str, layout: str, step: int) -> tuple[str, int]:
    """``root`` converted (once; the converter skips an identical conversion) with ``T =
    cfg.frames_per_clip`` and step ``step``; returns ``(OUT, bytes stored)``."""
    from clipshards.convert import convert

    out = os.path.join(cfg.work, f"layout_{layout}_{codec}_s{step}")
    report = convert(root, out, frames_per_clip=cfg.frames_per_clip, step_between_clips=step, codec=codec,
                     layout=layout, progress=False, overwrite=True, yes=True)  # S = 1 stores every frame T times
    if report.skipped:
        raise RuntimeError(f"converting {root} skipped {len(report.skipped)} videos")
    split = os.path.join(out, "train")
    return out, sum(os.path.getsize(os.path.join(split, n)) for n in os.listdir(split) if not n.startswith("_"))


def _rate(cfg: BenchConfig, out: str, workers: int, seed: int) -> float:
    from clipshards.loader import StreamingKinetics

    ds = StreamingKinetics(out, "train", shuffle=True, seed=seed)
    clips, seconds = steady_rate(ds.loader(batch_size=cfg.batch_size, num_workers=workers), cfg.loader_clips,
                                 warmup=max(1, workers))
    return clips / seconds


def table_index(cfg: BenchConfig, src: str, videos: int) -> str:
    """A videos layout output of ``videos`` videos: the real conversion ``src``'s shards, its table's
    rows repeated (each video points at a real sample), the index head saying so."""
    from clipshards.convert.schema import checksum_of
    from clipshards.convert.video_sample import TABLE_DTYPE, VIDEOS_TABLE_NAME, table_bytes

    out = os.path.join(cfg.work, f"layout_table_{videos}")
    split = os.path.join(out, "train")
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(os.path.join(src, "train"), split)
    table = np.load(os.path.join(split, VIDEOS_TABLE_NAME), allow_pickle=False)
    rows = np.resize(table, videos).astype(TABLE_DTYPE)
    rows["video_index"] = np.arange(videos)
    blob = table_bytes(dict(zip(TABLE_DTYPE.names, r)) for r in rows.tolist())
    with open(os.path.join(split, VIDEOS_TABLE_NAME), "wb") as fh:
        fh.write(blob)
    index = json.load(open(os.path.join(split, "index.json")))
    algo = index["options"]["checksum"]
    index["video_table"] = {"name": VIDEOS_TABLE_NAME, "bytes": len(blob), algo: checksum_of(algo, blob)}
    index["counts"]["videos"] = videos
    with open(os.path.join(split, "index.json"), "w") as fh:
        json.dump(index, fh, sort_keys=True, separators=(",", ":"))
    return out


def _startup(out: str) -> float:
    from clipshards.loader import IndexedKinetics

    t = time.perf_counter()
    ds = IndexedKinetics(out, frames_per_clip=8, step_between_clips=1)
    ds[len(ds) - 1]
    return time.perf_counter() - t


def _warm(out: str) -> None:
    """Read every file of ``out``'s split once, so the runs read from the page cache (as section 1's)."""
    split = os.path.join(out, "train")
    for name in sorted(os.listdir(split)):
        path = os.path.join(split, name)
        if os.path.isfile(path):
            with open(path, "rb", buffering=0) as fh:
                while fh.read(8 << 20):
                    pass


def _read_rates(cfg: BenchConfig, outs: dict[tuple[str, str], str]) -> dict[tuple[str, str, int], Stat]:
    rates: dict[tuple[str, str, int], list[float]] = {}
    for codec in CODECS:
        for layout in LAYOUTS:
            _warm(outs[(codec, layout)])
        for r in range(cfg.repeats):
            for w in cfg.loader_workers:
                for layout in (LAYOUTS if r % 2 == 0 else LAYOUTS[::-1]):  # interleaved, alternating first
                    rates.setdefault((codec, layout, w), []).append(_rate(cfg, outs[(codec, layout)], w, seed=r))
                logger.info("layouts %s w%d repeat %d: clips %.0f, videos %.0f clips/s", codec, w, r,
                            rates[(codec, "clips", w)][-1], rates[(codec, "videos", w)][-1])
    return {k: Stat.of(v, "clips/s") for k, v in rates.items()}


def run(cfg: BenchConfig, root: str) -> Section:
    T = cfg.frames_per_clip
    s = Section("layouts", f"Layouts: videos (clips cut when loading) vs clips (T = S = {T})")
    s.headers = ["Codec", "Layout", "num_workers", "clips/s", "vs clips layout"]
    outs: dict[tuple[str, str], str] = {}
    stored: dict[tuple[str, str], int] = {}
    for codec in CODECS:
        for layout in LAYOUTS:
            outs[(codec, layout)], stored[(codec, layout)] = converted_layout(cfg, root, codec, layout, T)
    stats = _read_rates(cfg, outs)
    for codec in CODECS:
        for w in cfg.loader_workers:
            ratio = stats[(codec, "videos", w)].median / stats[(codec, "clips", w)].median
            for layout in LAYOUTS:
                s.rows.append([codec, layout, str(w), stats[(codec, layout, w)].fmt(),
                               f"{100 * ratio:.0f}%" if layout == "videos" else "100%"])
            s.checks.append(Check(f"videos layout reads {codec} clips at >= 85% of the clips layout's rate (num_workers {w})",
                                  f"{100 * ratio:.0f}%", ratio >= 0.85))
    s.raw["stored_bytes"] = _stored_rows(cfg, root, s, stored)
    s.raw["reads_per_clip"] = {codec: _reads_row(cfg, outs[(codec, "videos")], codec, s) for codec in CODECS}
    s.raw["startup_s"] = _startup_rows(cfg, outs[("raw", "videos")], s)
    s.raw["clips_per_s"] = {f"{c}/{l}/w{w}": st.to_json() for (c, l, w), st in stats.items()}
    s.notes.append(f"Read rates: `StreamingKinetics(out, shuffle=True)` over each layout (the videos layout with its recorded "
                   f"T = S = {T}: the same clips), batches of {cfg.batch_size}, {cfg.loader_clips or 'all'} clips a run, "
                   "runs of the two layouts interleaved; shards in the page cache.")
    s.chart = chart_data([(f"{c} {l} w{w}", stats[(c, l, w)], "C0" if l == "videos" else "C7")
                          for c in CODECS for w in cfg.loader_workers for l in LAYOUTS], xlabel="clips/s")
    return s


def _stored_rows(cfg: BenchConfig, root: str, s: Section, stored: dict[tuple[str, str], int]) -> dict[str, Any]:
    """Stored bytes: both layouts at S = T; the clips layout at S = 1 on one video, scaled."""
    one = data.subset_root(cfg, root, 1)
    frames = cfg.frames
    per_video_clips_s1 = max(0, frames - cfg.frames_per_clip + 1)
    out: dict[str, Any] = {}
    for codec in CODECS:
        _, one_s1 = converted_layout(cfg, one, codec, "clips", 1)
        clips_s1 = one_s1 * cfg.videos  # every video has the same frame count
        v, c = stored[(codec, "videos")], stored[(codec, "clips")]
        s.notes.append(
            f"Stored, {codec}: videos layout {v / 1e6:,.1f} MB (any S: chosen when loading); clips layout at S = T "
            f"{c / 1e6:,.1f} MB, at S = 1 {clips_s1 / 1e9:,.2f} GB ({per_video_clips_s1} clips a video: measured on one "
            f"video, {one_s1 / 1e6:,.1f} MB, times {cfg.videos}); videos / clips at S = T: {v / c:.3f}x; "
            f"clips at S = 1 / videos: {clips_s1 / v:.1f}x.")
        s.checks.append(Check(f"videos layout stores {codec} at S=1 in <= 1.1x the clips layout at S=T",
                              f"{v / c:.3f}x", v / c <= 1.1))
        out[codec] = {"videos": v, "clips_s_t": c, "clips_s1": clips_s1, "clips_s1_one_video": one_s1}
    return out


def _startup_rows(cfg: BenchConfig, src: str, s: Section) -> dict[str, Any]:
    times: dict[int, Stat] = {}
    for n in (STARTUP_VIDEOS if not cfg.quick else STARTUP_VIDEOS[:2]):
        out = table_index(cfg, src, n)
        times[n] = Stat.of([_startup(out) for _ in range(cfg.repeats)], "s")
        shutil.rmtree(out, ignore_errors=True)
    biggest = max(times)
    s.notes.append("Start-up, `IndexedKinetics(out, frames_per_clip=8, step_between_clips=1)` to its last clip "
                   "(index head, the whole table of videos read and checked, every video's clips counted): "
                   + ", ".join(f"{n:,} videos {t.fmt()}" for n, t in times.items()) + ".")
    s.checks.append(Check(f"videos layout start-up < 1 s at {biggest:,} videos", times[biggest].fmt(),
                          times[biggest].median < 1.0))
    return {str(n): t.to_json() for n, t in times.items()}


READS_CLIPS = 400


def _reads_row(cfg: BenchConfig, out: str, codec: str, s: Section) -> dict[str, Any]:
    """Transport calls and bytes of :data:`READS_CLIPS` clips of T frames at S = 1, spread over the
    videos layout ``out``: ranged reads a clip, and bytes read against the clip's own (its
    frames' stored bytes and its audio window's)."""
    from clipshards.loader import IndexedKinetics

    ds = IndexedKinetics(out, "train", frames_per_clip=cfg.frames_per_clip, step_between_clips=1, frame_rate="source")
    calls = {"read_into": [0, 0], "read_many": [0, 0]}
    transport = ds.index.transport
    for name in calls:
        real = getattr(transport, name)

        def counted(*args: Any, _real: Any = real, _name: str = name, **kwargs: Any) -> Any:
            got = _real(*args, **kwargs)
            calls[_name][0] += 1
            calls[_name][1] += got if isinstance(got, int) else sum(len(b) for b in got)
            return got
        setattr(transport, name, counted)
    picks = np.unique(np.linspace(0, len(ds) - 1, min(READS_CLIPS, len(ds))).astype(np.int64))
    own = 0
    locator = ds._videos.locator  # the clips' own bytes, as the plan locates them
    for g in picks.tolist():
        ds[g]
        span = ds._videos.clips.span(g)
        cb = locator.plan(span, g).bytes
        own += cb.frame_bytes + cb.audio_bytes
    n = len(picks)
    reads, read_bytes = calls["read_into"]
    tables, table_bytes = calls["read_many"]
    per_clip = reads / n
    s.notes.append(f"Reads a clip, {codec}: {n} clips of {cfg.frames_per_clip} frames at S = 1 over the videos layout: "
                   f"{reads} ranged reads ({per_clip:.2f} a clip), {read_bytes / 1e6:,.1f} MB read for {own / 1e6:,.1f} MB "
                   f"of the clips' frames and audio ({read_bytes / own:.3f}x)"
                   + (f"; {tables} frame-table reads of {table_bytes / 1e3:,.0f} KB (once a video)" if tables else "") + ".")
    s.checks.append(Check(f"a videos layout {codec} clip (S = 1) is one ranged read of its frames and audio",
                          f"{per_clip:.2f} reads, {read_bytes / own:.3f}x its bytes", per_clip == 1.0 and read_bytes == own))
    return {"clips": n, "reads": reads, "bytes": read_bytes, "clip_bytes": own, "frame_tables": tables,
            "frame_table_bytes": table_bytes}
