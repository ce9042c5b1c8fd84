"""Section 2: converter throughput (videos/s, frames/s) for ``raw`` and ``jpeg`` against
decode-only, with ``--workers`` 1 and 2; and the JPEG converter's one-core bound (decoding
and encoding every frame in one loop)."""

from __future__ import annotations

import logging
import os

from clipshards.convert.options import ConvertOptions
from clipshards.convert.prefetch import spare_core, usable_cores

from . import data
from .config import BenchConfig
from .measure import Stat, run_python
from .report import Check, Section, chart_data

logger = logging.getLogger(__name__)

__all__ = ["run"]

CODECS = ("raw", "jpeg")
KINDS = ("decode", "bound") + CODECS
NAMES = {
    "decode": "decode-only (PyAV, RGB24 + audio)",
    "bound": "decode + JPEG encode, one loop (JPEG bound at a core a worker)",
    "raw": "convert raw",
    "jpeg": "convert jpeg",
}
TARGETS = {"raw": 0.85, "jpeg": 0.60}  # of decode-only, same workers (issue 18)


def _measure(cfg: BenchConfig, sub: str, paths: list[str], out: str, kind: str, workers: int) -> dict:
    if kind in ("decode", "bound"):
        quality = ConvertOptions(frames_per_clip=1).jpeg_quality if kind == "bound" else 0
        return run_python("benchmarks.probe", {"kind": "decode_timing", "paths": paths, "workers": workers,
                                               "jpeg_quality": quality})
    return run_python("benchmarks.probe", {
        "kind": "convert_timing", "root": sub, "out": out, "codec": kind, "workers": workers,
        "frames_per_clip": cfg.frames_per_clip, "step_between_clips": cfg.step_between_clips})


def run(cfg: BenchConfig, root: str) -> Section:
    sub = data.subset_root(cfg, root, cfg.convert_videos)
    paths = data.dataset_videos(sub)
    out = os.path.join(cfg.work, "convert_bench_out")
    fps: dict[tuple[str, int], list[float]] = {}
    vps: dict[tuple[str, int], list[float]] = {}
    for r in range(cfg.convert_repeats):  # interleaved: a busy spell of the machine hits every kind alike
        for w in cfg.convert_workers:
            for kind in KINDS:
                res = _measure(cfg, sub, paths, out, kind, w)
                fps.setdefault((kind, w), []).append(res["frames"] / res["seconds"])
                vps.setdefault((kind, w), []).append(res["videos"] / res["seconds"])
                logger.info("%s workers=%d repeat %d: %.1f frames/s", kind, w, r, res["frames"] / res["seconds"])
    F = {k: Stat.of(v, "frames/s") for k, v in fps.items()}
    V = {k: Stat.of(v, "videos/s") for k, v in vps.items()}
    s = Section("convert", "Converter throughput")
    s.headers = ["Run", "workers", "videos/s", "frames/s", "vs decode-only (same workers)", f"vs workers {cfg.convert_workers[0]}"]
    w1 = cfg.convert_workers[0]
    for w in cfg.convert_workers:
        for kind in KINDS:
            vs_dec = "" if kind == "decode" else f"{F[(kind, w)].median / F[('decode', w)].median:.2f}x"
            scale = "" if w == w1 else f"{F[(kind, w)].median / F[(kind, w1)].median:.2f}x"
            s.rows.append([NAMES[kind], str(w), V[(kind, w)].fmt(), F[(kind, w)].fmt(), vs_dec, scale])
    for codec in CODECS:
        for w in cfg.convert_workers:
            ratio = F[(codec, w)].median / F[("decode", w)].median
            s.checks.append(Check(f"converter {codec} >= {TARGETS[codec]:.0%} of decode-only (workers {w})",
                                  f"{100 * ratio:.0f}%", ratio >= TARGETS[codec]))
    s.notes += _notes(cfg, F, len(paths))
    s.chart = chart_data(
        [(f"{'decode-only' if k == 'decode' else 'decode+jpeg' if k == 'bound' else k} w{w}", F[(k, w)],
          {"decode": "C7", "bound": "C8", "raw": "C0", "jpeg": "C1"}[k])
         for w in cfg.convert_workers for k in KINDS],
        xlabel="frames/s",
    )
    s.raw = {"frames_per_s": {f"{k}_w{w}": st for (k, w), st in F.items()}, "videos_per_s": {f"{k}_w{w}": st for (k, w), st in V.items()}}
    return s


def _notes(cfg: BenchConfig, F: dict[tuple[str, int], Stat], videos: int) -> list[str]:
    cores = usable_cores()
    ahead = [w for w in cfg.convert_workers if spare_core(w)]
    notes = []
    if ahead:
        notes.append(
            f"{cores} cores: with --workers {', '.join(map(str, ahead))} each worker has a core to spare, so it decodes ahead "
            "in a second thread (its audio in a third) while its main thread encodes and writes: such a run uses more than "
            "one core a worker, decode-only and the one-loop bound one.")
    w1 = cfg.convert_workers[0]
    for w in cfg.convert_workers:
        if w != w1:
            notes.append(f"--workers {w} vs {w1}: raw {F[('raw', w)].median / F[('raw', w1)].median:.2f}x, jpeg "
                         f"{F[('jpeg', w)].median / F[('jpeg', w1)].median:.2f}x, decode-only "
                         f"{F[('decode', w)].median / F[('decode', w1)].median:.2f}x.")
    notes.append(
        f"{videos} videos ({videos * cfg.frames} frames) a run, {cfg.convert_repeats} runs of each kind interleaved, each in a "
        "fresh process; a run is `convert()` end to end: worker start-up, probe, decode, encode, shard writing (fsync), index. "
        "Decode-only decodes every video frame to RGB24 and the audio, with the converter's settings (one decoder thread a "
        "worker, freed memory kept) and RGB conversion (one reused scaler a video) in the same number of processes; the "
        "one-loop bound also JPEG-encodes each frame (the converter's encoder and quality) right after decoding it.")
    return notes
