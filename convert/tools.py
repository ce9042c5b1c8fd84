"""The ``inspect``, ``verify`` and ``preview`` commands of ``clipshards``: arguments and output.

Each command's work is done in its own module (:mod:`.inspection`, :mod:`.verify`,
:mod:`.preview`), on an output opened by :mod:`.output`; this module registers them on the
command line and re-exports their public names (``clipshards.convert.tools`` is where they
used to live).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from .inspection import format_inspect, inspect_output
from .options import SPLITS
from .output import read_clip
from .preview import PreviewResult, preview_clip
from .storage import parse_storage_options
from .verify import EXIT_DAMAGED, VerifyResult, verify_output

__all__ = [
    "inspect_output",
    "format_inspect",
    "verify_output",
    "VerifyResult",
    "read_clip",
    "preview_clip",
    "PreviewResult",
    "add_subcommands",
    "EXIT_DAMAGED",
]


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("url", help="conversion OUT (local folder or fsspec URL) or one of its split folders")
    p.add_argument("--split", choices=SPLITS, default=None, help="split to read (default: the first of train/val/test present)")
    p.add_argument(
        "--storage-option", action="append", default=[], metavar="KEY=VALUE",
        help="fsspec storage option, repeatable (e.g. client_kwargs.endpoint_url=http://127.0.0.1:9000)",
    )
    p.add_argument("--quiet", "-q", action="store_true", help="only warnings and errors")


def add_subcommands(subparsers: Any) -> None:
    """Register ``inspect``, ``verify`` and ``preview`` on the ``clipshards`` command."""
    p = subparsers.add_parser(
        "inspect", help="show what a conversion holds",
        description="Options, classes with clip counts, shards with sizes, total bytes and skipped videos "
        "of a conversion, from its index (no shard is read).",
    )
    _add_common(p)
    p.add_argument("--json", action="store_true", help="print JSON for scripts instead of text")
    p.add_argument("--all", action="store_true", help="list every class, shard and skipped video")
    p.set_defaults(func=_run_inspect)

    p = subparsers.add_parser(
        "verify", help="check every shard against the index",
        description="Re-read every shard and the offsets file, check sizes and SHA-256 against the index, "
        "and decode some clips.",
        epilog=f"exit status: 0 intact; {EXIT_DAMAGED} damage found (each bad shard named); 2 bad arguments "
        "or no index; 1 other error.",
    )
    _add_common(p)
    p.add_argument("--decode", default="16", metavar="N|all", help="decode N random clips, or every clip with 'all' (default 16)")
    p.add_argument("--seed", type=int, default=0, help="seed for picking the clips to decode (default 0)")
    p.add_argument("--jobs", type=int, default=4, help="shards hashed in parallel (default 4)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_run_verify)

    p = subparsers.add_parser(
        "preview", help="draw one clip's frames and waveform into a PNG",
        description="A contact sheet of one clip: frames in a grid with their numbers, class and path in the "
        "title, audio waveform below (matplotlib when installed, else Pillow).",
    )
    _add_common(p)
    p.add_argument("--index", "-i", type=int, required=True, help="global clip index (0 .. clips-1)")
    p.add_argument("--out", "-o", required=True, help="PNG file to write")
    p.add_argument("--width", type=int, default=1280, help="sheet width in pixels (default 1280)")
    p.add_argument("--columns", type=int, default=8, help="frames per row (default 8)")
    p.add_argument("--backend", choices=("auto", "matplotlib", "pillow"), default="auto", help="waveform renderer (default auto)")
    p.set_defaults(func=_run_preview)


def _run_inspect(args: argparse.Namespace) -> int:
    info = inspect_output(args.url, args.split, storage_options=parse_storage_options(args.storage_option))
    print(json.dumps(info, indent=1, ensure_ascii=False) if args.json else format_inspect(info, show_all=args.all))
    return 0


def _run_verify(args: argparse.Namespace) -> int:
    res = verify_output(
        args.url, args.split, decode=args.decode, seed=args.seed, jobs=args.jobs,
        storage_options=parse_storage_options(args.storage_option), progress=not args.no_progress and not args.json,
    )
    print(json.dumps(res.to_json(), indent=1) if args.json else res.summary())
    return 0 if res.ok else EXIT_DAMAGED


def _run_preview(args: argparse.Namespace) -> int:
    res = preview_clip(
        args.url, args.split, index=args.index, out=args.out, width=args.width, columns=args.columns,
        backend=args.backend, storage_options=parse_storage_options(args.storage_option),
    )
    print(f"{res.path}: {res.width}x{res.height} PNG")
    return 0
