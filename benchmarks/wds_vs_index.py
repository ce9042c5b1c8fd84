"""webdataset's tar iteration against the loader's index-driven reads, on the same shard in one run.

Why :class:`StreamingKinetics` reads shards with its own reader (byte ranges from
``offsets.npy``) rather than webdataset's tar iterator: this times, on the first shard of a
conversion (already in the page cache, so the disk is not what is measured), the clips per
second of

- ``wds.WebDataset`` (stock tar iteration) + the project's schema decode into ``(video, audio, label)``;
- :func:`webdataset_pipeline` (``shuffle=False``): the same iteration, with the project's checks;
- :class:`StreamingKinetics` (``shuffle=False``) and :class:`IndexedKinetics` (one ranged read a clip).

All four yield the same tuples. Runs alternate between the readers, ``--repeats`` times each;
the median and the range are printed (Markdown). Default data: the benchmark harness's
Kinetics-like conversion (``benchmarks/work``, built on first use); ``--out`` takes any OUT.

Usage: ``python -m benchmarks.wds_vs_index [--codec raw|jpeg] [--repeats 5] [--out OUT]``.
"""

from __future__ import annotations

import argparse
import logging
import os
from functools import partial
from itertools import islice
from typing import Any, Callable, Iterable, Optional, Sequence

import webdataset as wds

from clipshards.convert.schema import decode_sample
from clipshards.loader import DatasetIndex, IndexedKinetics, StreamingKinetics, webdataset_pipeline
from clipshards.loader.reader import to_output

from .measure import Stat, Timer, repeat

logger = logging.getLogger(__name__)

__all__ = ["stock_webdataset", "readers", "measure", "main"]


def _stock_tuple(sample: dict[str, Any]) -> tuple[Any, Any, int]:
    fields = {k: v for k, v in sample.items() if not k.startswith("__")}
    return to_output(decode_sample(fields, where=sample["__key__"]), "TCHW", None)


def stock_webdataset(shard_path: str) -> Iterable[tuple[Any, Any, int]]:
    """``wds.WebDataset`` over one shard, samples decoded by the schema (as a user would write it)."""
    return wds.WebDataset([shard_path], shardshuffle=False, empty_check=False).map(_stock_tuple)


def readers(out: str, split: str = "train") -> tuple[int, int, dict[str, Callable[[], Iterable[Any]]]]:
    """``(clips, bytes, {name: make_iterator})`` for the first shard of ``out/split``."""
    index = DatasetIndex(out, split)
    if not index.transport.location.is_local:
        raise ValueError(f"out={out!r}: give a local conversion (this compares readers, not storage)")
    shard = index.shards[0]
    n = shard.clips
    path = index.transport.location.path(shard.name)
    indexed = IndexedKinetics(out, split)
    return n, shard.bytes, {
        "webdataset tar iteration + schema decode (wds.WebDataset)": partial(stock_webdataset, path),
        "webdataset_pipeline(shuffle=False)": lambda: islice(webdataset_pipeline(out, split, shuffle=False), n),
        "StreamingKinetics(shuffle=False)": lambda: islice(StreamingKinetics(out, split, shuffle=False), n),
        "IndexedKinetics[g] (one ranged read a clip)": lambda: (indexed[g] for g in range(n)),
    }


def _clips_per_second(make: Callable[[], Iterable[Any]], n: int) -> float:
    count = 0
    with Timer() as t:
        for _video, _audio, _label in make():
            count += 1
    if count != n:
        raise RuntimeError(f"read {count} clips, expected {n}")
    return n / t.seconds


def measure(out: str, *, split: str = "train", repeats: int = 5) -> dict[str, Stat]:
    """Clips per second of each reader on the first shard, runs interleaved."""
    n, _, makers = readers(out, split)
    for make in makers.values():  # warm the page cache and imports
        _clips_per_second(make, n)
    values: dict[str, list[float]] = {name: [] for name in makers}
    for _ in range(repeats):
        for name, make in makers.items():
            values[name] += repeat(partial(_clips_per_second, make, n), 1)
    return {name: Stat.of(v, "clips/s") for name, v in values.items()}


def _default_out(codec: str) -> str:
    from . import data
    from .config import BenchConfig

    cfg = BenchConfig()
    return data.converted(cfg, data.build_dataset(cfg), codec)


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--out", help="a local conversion (default: the harness's, built on first use)")
    parser.add_argument("--split", default="train")
    parser.add_argument("--codec", choices=("raw", "jpeg"), default="raw", help="which harness conversion (without --out)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats={args.repeats}: must be at least 1")
    logging.basicConfig(level=logging.WARNING)
    out = args.out or _default_out(args.codec)
    n, nbytes, _ = readers(out, args.split)
    stats = measure(out, split=args.split, repeats=args.repeats)
    base = stats["StreamingKinetics(shuffle=False)"].median
    lines = [
        f"First shard of `{os.path.join(out, args.split)}`: {n} clips, {nbytes / 2**20:.0f} MiB "
        f"({nbytes / n / 2**20:.2f} MiB a clip), {args.repeats} interleaved runs, page cache warm, 1 process.",
        "",
        "| reader | clips/s, median (min-max) | MiB/s | vs StreamingKinetics |",
        "|---|---|---|---|",
    ]
    for name, stat in stats.items():
        lines.append(f"| {name} | {stat.fmt()} | {stat.median * nbytes / n / 2**20:,.0f} | {stat.median / base:.2f}x |")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
