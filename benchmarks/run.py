"""``python -m benchmarks.run``: build a Kinetics-like dataset, convert it, measure, write the results.

Sections (``--sections``): ``loader`` (throughput vs the torchvision-style baseline and the
storage/JPEG limits), ``convert`` (vs decode-only, ``--workers`` 1 and 2), ``first_batch``
(vs torchvision's scan), ``memory`` (loader per worker, converter on a short and a long video),
``layouts`` (the videos layout against the clips layout: read rate, stored bytes, start-up).
Results go to ``--out`` (default ``benchmarks/results/``): ``results.md``, ``results.png``,
``results.json``. ``--quick`` runs every section on a tiny dataset in well under a minute.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
import time
from typing import Callable, Optional, Sequence

if __package__ in (None, ""):  # ``python benchmarks/run.py``
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import bench_convert, bench_first_batch, bench_layouts, bench_loader, bench_memory, data  # noqa: E402
from benchmarks.config import SECTIONS, BenchConfig, quick_config  # noqa: E402
from benchmarks.report import Section, write_readme_section, write_results  # noqa: E402

logger = logging.getLogger("benchmarks")

__all__ = ["main", "build_parser", "run", "load_average"]

RUNNERS: dict[str, Callable[[BenchConfig, str], Section]] = {
    "loader": bench_loader.run,
    "convert": bench_convert.run,
    "first_batch": bench_first_batch.run,
    "memory": bench_memory.run,
    "layouts": bench_layouts.run,
}


def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one integer")
    return values


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of numbers") from None


def _sections(text: str) -> tuple[str, ...]:
    names = tuple(x.strip() for x in text.split(",") if x.strip())
    bad = [n for n in names if n not in SECTIONS]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"unknown section(s) {bad or text!r}; choose from {','.join(SECTIONS)}")
    return names


def build_parser() -> argparse.ArgumentParser:
    d = BenchConfig()
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.run",
        description=__doc__.split("\n\n")[0] + " Defaults are the full run (~5-10 min on 2 cores).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--quick", action="store_true", help="tiny dataset, one repeat: a smoke run of every section (< 1 min)")
    p.add_argument("--out", default=None, help="folder for results.md/.png/.json (default benchmarks/results, "
                                                "or benchmarks/work/quick/results with --quick)")
    p.add_argument("--work", default=None, help="cache folder for the dataset and conversions (default benchmarks/work)")
    p.add_argument("--sections", type=_sections, default=None, help=f"comma-separated subset of {','.join(SECTIONS)} [all]")
    p.add_argument("--repeats", type=int, default=None, help=f"runs per measurement (median and min-max reported) [{d.repeats}]")
    g = p.add_argument_group("dataset")
    g.add_argument("--videos", type=int, default=None, help=f"synthetic videos [{d.videos}]")
    g.add_argument("--classes", type=int, default=None, help=f"class folders [{d.classes}]")
    g.add_argument("--seconds", type=float, default=None, help=f"video length [{d.seconds:g}]")
    g.add_argument("--width", type=int, default=None, help=f"[{d.width}]")
    g.add_argument("--height", type=int, default=None, help=f"[{d.height}]")
    g.add_argument("--fps", type=int, default=None, help=f"[{d.fps}]")
    g.add_argument("--gop", type=int, default=None, help=f"H.264 keyframe interval, frames [{d.gop}, x264's default]")
    g.add_argument("--frames-per-clip", type=int, default=None, help=f"[{d.frames_per_clip}]")
    g.add_argument("--step-between-clips", type=int, default=None, help=f"[{d.step_between_clips}]")
    g = p.add_argument_group("sizes")
    g.add_argument("--batch-size", type=int, default=None, help=f"DataLoader batch size [{d.batch_size}]")
    g.add_argument("--loader-workers", type=_ints, default=None, help=f"DataLoader num_workers to try [{','.join(map(str, d.loader_workers))}]")
    g.add_argument("--loader-clips", type=int, default=None, help=f"clips per loader run, 0 for one epoch [{d.loader_clips}]")
    g.add_argument("--baseline-clips", type=int, default=None, help=f"clips per baseline run [{d.baseline_clips}]")
    g.add_argument("--convert-videos", type=int, default=None, help=f"videos per converter run [{d.convert_videos}]")
    g.add_argument("--convert-repeats", type=int, default=None, help=f"runs per converter measurement [{d.convert_repeats}]")
    g.add_argument("--convert-workers", type=_ints, default=None, help=f"converter --workers to try [{','.join(map(str, d.convert_workers))}]")
    g.add_argument("--index-videos", type=_ints, default=None, help=f"index sizes for the first batch [{','.join(map(str, d.index_videos))}]")
    g.add_argument("--scan-files", type=int, default=None, help=f"videos scanned to estimate torchvision's scan [{d.scan_files}]")
    g.add_argument("--memory-seconds", type=_floats, default=None, help="short,long video for converter memory [10,60]")
    g.add_argument("--memory-clips", type=int, default=None, help=f"clips per loader memory run, 0 for one epoch [{d.memory_clips}]")
    g.add_argument("--shuffle-buffers", type=_ints, default=None, help=f"loader shuffle buffers for memory [{','.join(map(str, d.shuffle_buffers))}]")
    p.add_argument("--quiet", "-q", action="store_true", help="warnings only")
    return p


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    names = ["repeats", "videos", "classes", "seconds", "width", "height", "fps", "gop", "frames_per_clip",
             "step_between_clips", "batch_size", "loader_workers", "loader_clips", "baseline_clips", "convert_videos",
             "convert_repeats", "convert_workers", "index_videos", "scan_files", "memory_seconds", "memory_clips", "shuffle_buffers", "out", "work", "sections"]
    changes = {n: getattr(args, n) for n in names if getattr(args, n) is not None}
    if args.work and not args.out:
        changes["out"] = os.path.join(args.work, "results")
    return quick_config(**changes) if args.quick else BenchConfig(**changes)


def run(cfg: BenchConfig, *, command: str) -> dict[str, str]:
    """Run the configured sections and write the results; returns the paths written."""
    started = time.perf_counter()
    load_before = load_average()
    os.makedirs(cfg.work, exist_ok=True)
    root = data.build_dataset(cfg)
    sections = []
    for name in cfg.sections:
        t = time.perf_counter()
        logger.info("section %s ...", name)
        sections.append(RUNNERS[name](cfg, root))
        logger.info("section %s done in %.0f s", name, time.perf_counter() - t)
    conditions = (f"Load average (1 min) {load_before} at the start, {load_average()} at the end: "
                  "the machine is shared, so other work adds noise (see the min-max spreads).")
    paths = write_results(cfg.out, sections, command=command, config=cfg.to_json(), seconds=time.perf_counter() - started,
                          conditions=conditions)
    if not cfg.quick and os.path.abspath(cfg.out) == os.path.abspath(BenchConfig().out) and set(cfg.sections) == set(SECTIONS):
        with open(paths["table"]) as fh:
            paths["readme"] = write_readme_section(fh.read())
    for s in sections:
        for c in s.checks:
            logger.info("%-4s %s: %s", "ok" if c.met else ("n/a" if c.met is None else "MISS"), c.target, c.measured)
    return paths


def load_average() -> str:
    """The 1-minute load average, formatted (``n/a`` where the platform has none)."""
    try:
        return f"{os.getloadavg()[0]:.1f}"
    except OSError:  # pragma: no cover - platforms without getloadavg
        return "n/a"


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("clipshards").setLevel(logging.WARNING)
    try:
        cfg = config_from_args(args)
    except ValueError as exc:
        parser.error(str(exc))
    paths = run(cfg, command=" ".join(["python -m benchmarks.run"] + [shlex.quote(a) for a in argv]))
    logger.info("wrote %s", ", ".join(paths.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
