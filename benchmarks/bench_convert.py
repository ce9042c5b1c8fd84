"""Section 2: converter throughput (videos/s, frames/s) for ``raw`` and ``jpeg`` against
decode-only, with ``--workers`` 1 and 2."""

from __future__ import annotations

import logging
import os

from . import data
from .config import BenchConfig
from .measure import Stat, run_python
from .report import Check, Section, chart_data

logger = logging.getLogger(__name__)

__all__ = ["run"]

CODECS = ("raw", "jpeg")


def run(cfg: BenchConfig, root: str) -> Section:
    sub = data.subset_root(cfg, root, cfg.convert_videos)
    paths = data.dataset_videos(sub)
    out = os.path.join(cfg.work, "convert_bench_out")
    fps: dict[tuple[str, int], list[float]] = {}
    vps: dict[tuple[str, int], list[float]] = {}
    for r in range(cfg.convert_repeats):
        for w in cfg.convert_workers:
            for kind in ("decode",) + CODECS:
                if kind == "decode":
                    res = run_python("benchmarks.probe", {"kind": "decode_timing", "paths": paths, "workers": w})
                else:
                    res = run_python("benchmarks.probe", {
                        "kind": "convert_timing", "root": sub, "out": out, "codec": kind, "workers": w,
                        "frames_per_clip": cfg.frames_per_clip, "step_between_clips": cfg.step_between_clips})
                fps.setdefault((kind, w), []).append(res["frames"] / res["seconds"])
                vps.setdefault((kind, w), []).append(res["videos"] / res["seconds"])
                logger.info("%s workers=%d repeat %d: %.1f frames/s", kind, w, r, res["frames"] / res["seconds"])
    F = {k: Stat.of(v, "frames/s") for k, v in fps.items()}
    V = {k: Stat.of(v, "videos/s") for k, v in vps.items()}
    s = Section("convert", "Converter throughput")
    s.headers = ["Run", "workers", "videos/s", "frames/s", "vs decode-only (same workers)", f"vs workers {cfg.convert_workers[0]}"]
    w1 = cfg.convert_workers[0]
    for w in cfg.convert_workers:
        for kind in ("decode",) + CODECS:
            name = "decode-only (PyAV, RGB24 + audio)" if kind == "decode" else f"convert {kind}"
            vs_dec = "" if kind == "decode" else f"{F[(kind, w)].median / F[('decode', w)].median:.2f}x"
            scale = "" if w == w1 else f"{F[(kind, w)].median / F[(kind, w1)].median:.2f}x"
            s.rows.append([name, str(w), V[(kind, w)].fmt(), F[(kind, w)].fmt(), vs_dec, scale])
    for w in cfg.convert_workers:
        ratio = F[("raw", w)].median / F[("decode", w)].median
        s.checks.append(Check(f"converter raw >= 60% of decode-only (workers {w})", f"{100 * ratio:.0f}%", ratio >= 0.6))
    for w in cfg.convert_workers:
        if w == 2 and w1 == 1:
            ratio = F[("raw", 2)].median / F[("raw", 1)].median
            s.checks.append(Check("converter raw: --workers 2 >= 1.7x --workers 1", f"{ratio:.2f}x", ratio >= 1.7))
            jr = F[("jpeg", 2)].median / F[("jpeg", 1)].median
            s.notes.append(f"jpeg: --workers 2 is {jr:.2f}x --workers 1; decode-only: "
                           f"{F[('decode', 2)].median / F[('decode', 1)].median:.2f}x.")
    s.notes.append(
        f"{len(paths)} videos ({len(paths) * cfg.frames} frames) a run, {cfg.convert_repeats} runs, each in a fresh process; a run is "
        "`convert()` end to end: worker start-up, probe, decode, encode, shard writing (fsync), index. Decode-only decodes every video frame to RGB24 and the "
        "audio, with the converter's settings (one decoder thread a worker, freed memory kept) and RGB conversion (one reused scaler a video) in the same number of processes."
    )
    s.chart = chart_data(
        [(f"{'decode-only' if k == 'decode' else k} w{w}", F[(k, w)], "C7" if k == "decode" else ("C0" if k == "raw" else "C1"))
         for w in cfg.convert_workers for k in ("decode",) + CODECS],
        xlabel="frames/s",
    )
    s.raw = {"frames_per_s": {f"{k}_w{w}": st for (k, w), st in F.items()}, "videos_per_s": {f"{k}_w{w}": st for (k, w), st in V.items()}}
    return s
