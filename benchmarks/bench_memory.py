"""Section 4: peak memory (RSS) of the loader per DataLoader worker against its shuffle
buffer, and of the converter on a short and a long video."""

from __future__ import annotations

import logging
import os
import shutil

from . import data
from .config import BenchConfig
from .measure import Stat, run_python
from .report import Check, Section, chart_data

logger = logging.getLogger(__name__)

__all__ = ["run"]

MEMORY_WORKERS = 2


def _converter(cfg: BenchConfig) -> tuple[list[list[str]], list[Check], dict, list]:
    rows, checks, raw, chart = [], [], {}, []
    peaks: dict[tuple[str, float], Stat] = {}
    for codec in ("raw", "jpeg"):
        for seconds in cfg.memory_seconds:
            root = data.single_video_root(cfg, seconds)
            out = os.path.join(cfg.work, "memory_out")
            vals, before = [], []
            for _ in range(cfg.repeats):
                res = run_python("benchmarks.probe", {"kind": "convert_memory", "root": root, "out": out, "codec": codec,
                                                      "frames_per_clip": cfg.frames_per_clip,
                                                      "step_between_clips": cfg.step_between_clips})
                vals.append(res["peak_mib"])
                before.append(res["before_mib"])
            shutil.rmtree(out, ignore_errors=True)
            peaks[(codec, seconds)] = st = Stat.of(vals, "MiB")
            rows.append([f"converter {codec}, --workers 1", f"one {seconds:g} s video", st.fmt(),
                         f"{Stat.of(before).median:.0f} MiB after imports, +{st.median - Stat.of(before).median:.0f} MiB converting"])
            chart.append((f"convert {codec} {seconds:g}s", st, "C0" if codec == "raw" else "C1"))
        short, long_ = cfg.memory_seconds
        ratio = peaks[(codec, long_)].median / peaks[(codec, short)].median
        checks.append(Check(f"converter {codec}: RSS for a {long_:g} s video within 10% of a {short:g} s video",
                            f"{100 * (ratio - 1):+.1f}%", ratio <= 1.10))
    raw["converter_peak_mib"] = {f"{c}_{s:g}s": st for (c, s), st in peaks.items()}
    return rows, checks, raw, chart


def _loader(cfg: BenchConfig, root: str) -> tuple[list[list[str]], list[Check], dict, list]:
    rows, checks, raw, chart = [], [], {}, []
    out = data.converted(cfg, root, "raw")
    per_buffer: dict[int, Stat] = {}
    clip_mib = 0.0
    for b in cfg.shuffle_buffers:
        vals = []
        for _ in range(cfg.repeats):
            res = run_python("benchmarks.probe", {"kind": "loader_memory", "out": out, "shuffle_buffer": b, "block_size": 1,
                                                  "batch_size": cfg.batch_size, "workers": MEMORY_WORKERS,
                                                  "clips": cfg.memory_clips})
            if len(res["worker_peak_mib"]) != MEMORY_WORKERS:
                raise RuntimeError(f"expected {MEMORY_WORKERS} DataLoader workers, saw {len(res['worker_peak_mib'])}")
            vals.append(max(res["worker_peak_mib"]))
            clip_mib = res["clip_bytes"] / 2 ** 20
        per_buffer[b] = st = Stat.of(vals, "MiB")
        bound = b * clip_mib
        rows.append([f"loader raw, worker of {MEMORY_WORKERS}", f"shuffle_buffer={b} ({bound:.0f} MiB of clips)", st.fmt(),
                     f"{st.median - bound:.0f} MiB besides the buffer"])
        chart.append((f"loader worker buf {b}", st, "C2"))
    bs = sorted(per_buffer)
    lo, hi = bs[0], bs[-1]
    base = per_buffer[lo].median - lo * clip_mib
    excess = max(per_buffer[b].median - b * clip_mib for b in bs)
    if hi > lo:
        slope = (per_buffer[hi].median - per_buffer[lo].median) / (hi - lo)
        checks.append(Check(
            "loader RSS per worker bounded by its shuffle buffer plus a constant",
            f"{slope:+.2f} MiB per buffered clip ({clip_mib:.2f} MiB a clip); at most {excess:.0f} MiB besides the "
            f"buffer ({base:.0f} MiB with the smallest)",
            slope <= 1.25 * clip_mib and excess <= 1.25 * base,
        ))
    raw["loader_worker_peak_mib"] = {str(b): st for b, st in per_buffer.items()}
    raw["clip_mib"] = clip_mib
    return rows, checks, raw, chart


def run(cfg: BenchConfig, root: str) -> Section:
    s = Section("memory", "Peak memory (RSS)")
    s.headers = ["Process", "Input", "Peak RSS", "Note"]
    for part in (_loader(cfg, root), _converter(cfg)):
        rows, checks, raw, chart = part
        s.rows += rows
        s.checks += checks
        s.raw.update(raw)
        s.chart.setdefault("items", []).extend(chart)
    s.chart = chart_data(s.chart["items"], xlabel="peak RSS (MiB)")
    s.notes += [
        f"Loader: raw clips, block_size=1 (uniformly random order), `num_workers={MEMORY_WORKERS}`, {cfg.memory_clips or 'all'} clips a run; the peak "
        "(VmHWM) of each worker process is read from /proc; the larger of the two is shown. A buffered clip is held "
        "as read, in a buffer of its own (clips are copied on read, never mapped), so it counts in the worker's RSS.",
        "Converter: one video, `--workers 1` (decoding in the measured process), peak RSS (VmHWM) of a fresh process; "
        "it includes the Python interpreter, NumPy and PyAV (the RSS after importing them is in the note).",
        "Bounded is met when memory grows by at most 1.25x the buffered bytes and, whatever the buffer, the memory "
        "besides the buffered bytes is at most 1.25x that of the smallest buffer.",
    ]
    return s
