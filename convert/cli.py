"""Command line: a thin layer over :func:`clipshards.convert.convert` and the other tools.

Exit status: 0 all videos converted; 3 finished but some videos skipped (see the report);
4 ``--strict`` refused because some video is unusable; 2 bad arguments; 1 other errors.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any, Optional, Sequence

from .folds import DATASETS
from .options import CONNECT_TIMEOUT, GROWTH_LIMIT, SPLITS, ConvertOptions, load_config
from .report import EXIT_SKIPPED, EXIT_STRICT
from .units import parse_size

__all__ = ["main", "build_parser"]

logger = logging.getLogger("clipshards")

EXIT_STATUS_HELP = (
    "exit status: 0 every video converted; 3 converted, but some videos were skipped "
    "(each listed with its reason in OUT/<split>/report.json); 4 --strict and a video was "
    "unusable (nothing final written); 2 bad arguments; 1 other error."
)


def package_version() -> str:
    """The installed clipshards version (``importlib.metadata``), for ``--version``."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("clipshards")
    except PackageNotFoundError:  # pragma: no cover - running from a bare source tree
        return "unknown (not installed)"


def _size(text: str) -> int:
    """Bytes from '256MB', '1GiB', '500000' ... (:func:`~clipshards.convert.units.parse_size`), as argparse wants."""
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_convert_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("root", help="dataset root holding <split>/<class>/<video>.mp4|avi (torchvision Kinetics layout), "
                   "or <class>/<video>.avi with --dataset ucf101|hmdb51")
    p.add_argument("out", help="output folder or fsspec URL (s3://bucket/prefix, gs://...); shards go to OUT/<split>/")
    g = p.add_argument_group("clips (torchvision Kinetics meanings)")
    g.add_argument("--split", choices=SPLITS, default=None, help="split folder to convert (default train; "
                   "ucf101/hmdb51: the whole root goes to OUT/all)")
    g.add_argument("--dataset", choices=DATASETS, default=None,
                   help="kinetics (default): ROOT/<split>/<class>/...; ucf101, hmdb51: ROOT/<class>/<video>.avi, every "
                   "video converted once to OUT/all, the index records folds 1-3 from --annotation-path")
    g.add_argument("--annotation-path", default=None, metavar="DIR",
                   help="ucf101: the folder of trainlist01.txt .. testlist03.txt; hmdb51: of *_test_split{1,2,3}.txt")
    g.add_argument("--frames-per-clip", "-T", type=int, default=None, help="frames in each clip (required, here or in --config)")
    g.add_argument("--step-between-clips", "-S", type=int, default=None, help="frames between clip starts (default 1: every window)")
    g.add_argument("--frame-rate", type=float, default=None, help="resample every video to this many fps before cutting clips")
    g.add_argument("--extensions", default=None, help="comma-separated file extensions to take (default avi,mp4)")
    g.add_argument("--num-classes", choices=("400", "600", "700"), default=None, help="Kinetics variant, recorded in the index")
    g = p.add_argument_group("resize and resample (0 keeps the source; torchvision ignores these, clipshards applies them)")
    g.add_argument("--video-width", type=int, default=None, help="output width; with --video-height: exact size, alone: keeps aspect")
    g.add_argument("--video-height", type=int, default=None, help="output height; alone: keeps aspect")
    g.add_argument("--video-min-dimension", type=int, default=None, help="resize the shorter side to this, keeping aspect")
    g.add_argument("--audio-samples", type=int, default=None, help="audio sample rate to resample to (Hz)")
    g.add_argument("--audio-channels", type=int, default=None, help="audio channel count to remix to")
    g = p.add_argument_group("storage")
    g.add_argument(
        "--layout", choices=("clips", "videos", "auto"), default=None,
        help="clips: one sample per clip, T/S/frame rate fixed now; videos: each video stored once, clips cut when "
        "loading with any T/S/frame rate (these flags are then the loaders' defaults); auto (default): videos when "
        "--step-between-clips < --frames-per-clip (overlapping clips), else clips. The plan prints both sizes "
        "and the layout chosen",
    )
    g.add_argument("--codec", choices=("raw", "jpeg"), default=None, help="raw: lossless uint8 frames (default); jpeg: one JPEG per frame")
    g.add_argument("--jpeg-quality", type=int, default=None, help="JPEG quality 1-100 (default 90)")
    g.add_argument("--shard-size", type=_size, default=None, help="target bytes per shard, e.g. 256MB (default 256MB)")
    g.add_argument(
        "--checksum", choices=("xxh3_128", "sha256"), default=None,
        help="checksum the index records per shard, checked by `clipshards verify` (default xxh3_128: "
        "memory speed; sha256 costs a raw conversion about a third of a core)",
    )
    g.add_argument(
        "--storage-option", action="append", default=[], metavar="KEY=VALUE",
        help="fsspec storage option for OUT, repeatable (e.g. client_kwargs.endpoint_url=http://127.0.0.1:9000); "
        "credentials are better left to the environment or profiles; they are never logged",
    )
    g = p.add_argument_group("run")
    g.add_argument("--config", default=None, help="TOML preset (see configs/); flags given here override it")
    g.add_argument("--workers", type=int, default=None, help="decoder processes (default: one per CPU core)")
    g.add_argument("--decoder-threads", type=int, default=None, help="FFmpeg threads per decoder (default 1: the workers give the parallelism; 0: FFmpeg decides)")
    g.add_argument("--engine", choices=("local", "ray"), default="local", help="local process pool (default) or a Ray cluster")
    g.add_argument("--ray-address", default=None, help="Ray cluster address for --engine ray (default: start a local one)")
    g.add_argument("--dry-run", action="store_true", help="probe and print the plan, write nothing")
    g.add_argument("--strict", action="store_true", help="fail (status 4) instead of skipping unusable videos")
    g.add_argument("--overwrite", action="store_true", help="replace an existing conversion made with other options")
    g.add_argument(
        "--append", action="store_true",
        help="OUT holds a finished conversion of an earlier state of ROOT (same options): convert only the videos "
        "added or changed since into new shards, drop the removed ones, and replace the index atomically; the "
        "existing shards are kept byte for byte (the added, changed and removed videos are listed in report.json)",
    )
    g.add_argument(
        "--yes", "-y", action="store_true",
        help=f"go on when the planned output is over {GROWTH_LIMIT}x the input or over the free space of OUT "
        "(without it such a run stops before writing, status 2; CLIPSHARDS_YES=1 answers it for every run)",
    )
    g.add_argument(
        "--connect-timeout", type=float, default=None, metavar="SECONDS",
        help="give up on an object store that cannot be reached after this long "
        f"(default {CONNECT_TIMEOUT:g} s, or CLIPSHARDS_CONNECT_TIMEOUT)",
    )
    g.add_argument("--no-progress", action="store_true", help="no progress bars")
    g.add_argument("--quiet", "-q", action="store_true", help="only warnings and errors")


_OPTION_FLAGS = (
    "split", "dataset", "frames_per_clip", "step_between_clips", "frame_rate", "extensions", "num_classes",
    "video_width", "video_height", "video_min_dimension", "audio_samples", "audio_channels",
    "codec", "jpeg_quality", "shard_size", "checksum", "workers", "decoder_threads", "layout",
)


def options_from_args(args: argparse.Namespace) -> ConvertOptions:
    values: dict[str, Any] = load_config(args.config) if args.config else {}
    for name in _OPTION_FLAGS:
        v = getattr(args, name)
        if v is not None:
            values[name] = v
    values["dry_run"] = args.dry_run
    values["strict"] = args.strict
    values["progress"] = not args.no_progress
    values["yes"] = args.yes
    if args.connect_timeout is not None:
        values["connect_timeout"] = args.connect_timeout
    if "frames_per_clip" not in values:
        raise ValueError("--frames-per-clip is required (or set frames_per_clip in --config)")
    return ConvertOptions(**values)


def run_convert(args: argparse.Namespace) -> int:
    from .api import ConversionError, StrictModeError, convert
    from .storage import StorageError, parse_storage_options

    try:
        opts = options_from_args(args)
    except ValueError as exc:  # every option is checked here, before anything runs: one line, status 2
        sys.stderr.write(f"{getattr(args, 'prog', 'clipshards convert')}: error: {exc}\n")
        raise SystemExit(2) from None  # as argparse does for a bad argument
    try:
        report = convert(
            args.root, args.out, options=opts, engine=args.engine, ray_address=args.ray_address,
            storage_options=parse_storage_options(args.storage_option), overwrite=args.overwrite,
            append=args.append, annotation_path=args.annotation_path,
        )
    except StrictModeError as exc:
        logger.error("%s", exc)
        return EXIT_STRICT
    except ConversionError as exc:
        logger.error("%s", exc)
        return exc.exit_code
    except StorageError as exc:  # no credentials, access denied, endpoint unreachable: one line, the fix in it
        logger.error("%s", exc)
        return 1
    if report.dry_run:
        change = report.append  # --append: the videos planned are those added or changed
        print(f"dry run: nothing written. {len(report.videos)} videos"
              + (f" to convert (append: {len(change['added'])} added, {len(change['changed'])} changed, "
                 f"{len(change['removed'])} removed)" if change else "") + f", plan: {report.plan}")
        return 0
    print(report.summary())
    return EXIT_SKIPPED if report.skipped else 0


def run_example_command(args: argparse.Namespace) -> int:
    from .example import run_example

    run_example(args.dir, workers=args.workers, progress=not args.no_progress)
    return 0


def build_convert_parser(prog: str = "clipshards convert") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description="Pre-decode every video of a torchvision-layout dataset into fixed-length clips "
        "and pack them into WebDataset tar shards with an index.",
        epilog=EXIT_STATUS_HELP,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"clipshards {package_version()}")
    add_convert_arguments(p)
    p.set_defaults(prog=p.prog)
    return p


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="clipshards", description="Video-classification datasets as pre-decoded WebDataset clip shards.")
    p.add_argument("--version", action="version", version=f"clipshards {package_version()}", help="print the version and exit")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    c = sub.add_parser(
        "convert", help="convert a dataset into clip shards",
        description="Pre-decode every video into fixed-length clips and pack them into WebDataset shards.",
        epilog=EXIT_STATUS_HELP,
    )
    add_convert_arguments(c)
    c.set_defaults(func=run_convert, prog=c.prog)
    e = sub.add_parser(
        "example", help="make a tiny dataset, convert it and load it back (a smoke test of the whole path)",
        description="Write a tiny Kinetics-layout dataset to DIR/dataset with PyAV, convert it to DIR/shards "
        "(16-frame JPEG clips), then stream it with StreamingKinetics in a DataLoader and read one clip with "
        "IndexedKinetics.",
    )
    e.add_argument("dir", nargs="?", default="example", help="working folder (default ./example)")
    e.add_argument("--workers", type=int, default=0, help="converter processes (default: one per core)")
    e.add_argument("--no-progress", action="store_true", help="no progress bars")
    e.set_defaults(func=run_example_command)
    try:
        from . import tools
    except ImportError:  # pragma: no cover
        tools = None
    if tools is not None:
        tools.add_subcommands(sub)
    return p


def _setup_logging(quiet: bool) -> None:
    logging.basicConfig(
        level=logging.WARNING if quiet else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(getattr(args, "quiet", False))
    try:
        return int(args.func(args) or 0)
    except ValueError as exc:
        parser.exit(2, f"clipshards: error: {exc}\n")
    except FileNotFoundError as exc:
        parser.exit(2, f"clipshards: error: {exc}\n")
    except KeyboardInterrupt:
        return 130


def convert_main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m clipshards.convert``: the convert command alone."""
    parser = build_convert_parser("python -m clipshards.convert")
    args = parser.parse_args(argv)
    _setup_logging(args.quiet)
    try:
        return run_convert(args)
    except (ValueError, FileNotFoundError) as exc:
        parser.exit(2, f"clipshards: error: {exc}\n")
    except KeyboardInterrupt:
        return 130
