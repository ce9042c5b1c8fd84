"""Shuffle quality of StreamingKinetics: how often two clips of one video share a batch.

Clips of one video are consecutive in the global order and so in the shards; a streaming
shuffle (shard or block order plus a buffer) can only spread them so far. This measures,
per configuration, the mean number of same-video clip pairs per batch and the share of
batches holding at least one such pair, against a uniform random order of all clips
(what a map-style sampler gives), and the reads it costs (sequential runs per epoch).

Batches are formed as the DataLoader forms them: each batch is ``batch_size`` consecutive
clips of one worker (the tests check that the dataset yields exactly this plan), so no
shard is read: the numbers come from the plan alone and take seconds.

Usage: ``python -m benchmarks.shuffle_quality [--videos 2000] [--batch-size 32] ...`` or
``--out OUT`` to use a converted dataset's own video and shard layout (then the clip size
only sets the block and buffer sizes of the "auto" rows). Prints Markdown.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from clipshards.loader.plan import AUTO, EpochPlan, auto_block_size, auto_shuffle_buffer, buffer_order, segments, worker_rng

logger = logging.getLogger(__name__)

__all__ = ["Layout", "synthetic_layout", "layout_from_index", "measure", "main"]


@dataclass(frozen=True)
class Layout:
    """Which video each global clip belongs to, and how many clips each shard holds."""

    video_of_clip: np.ndarray
    shard_clips: np.ndarray

    @property
    def num_clips(self) -> int:
        return int(self.video_of_clip.size)


def synthetic_layout(videos: int, clips_per_video: tuple[int, int], shard_clips: int, seed: int = 0) -> Layout:
    """Kinetics-like: each video gives a uniform number of clips in ``clips_per_video``;
    shards hold ``shard_clips`` consecutive clips (the converter packs in global order)."""
    rng = np.random.default_rng(seed)
    per_video = rng.integers(clips_per_video[0], clips_per_video[1] + 1, size=videos)
    video_of_clip = np.repeat(np.arange(videos), per_video)
    n = video_of_clip.size
    counts = np.full(n // shard_clips, shard_clips)
    if n % shard_clips:
        counts = np.append(counts, n % shard_clips)
    return Layout(video_of_clip, counts)


def layout_from_index(out: str, split: str = "train") -> Layout:
    from clipshards.loader import DatasetIndex

    index = DatasetIndex(out, split)
    video_of_clip = np.zeros(index.num_clips, dtype=np.int64)
    for v in index.videos:
        if v.get("status") == "ok" and v.get("clips"):
            video_of_clip[v["first_clip"]: v["first_clip"] + v["clips"]] = v["index"]
    return Layout(video_of_clip, np.array([s.clips for s in index.shards]))


def batch_stats(batches: Sequence[np.ndarray], video_of_clip: np.ndarray) -> tuple[float, float]:
    """Mean same-video pairs per batch, and the share of batches with at least one pair."""
    pairs = []
    for b in batches:
        _, k = np.unique(video_of_clip[b], return_counts=True)
        pairs.append(int((k * (k - 1) // 2).sum()))
    arr = np.array(pairs, dtype=np.float64)
    return float(arr.mean()), float((arr > 0).mean())


def plan_batches(layout: Layout, *, shuffle: bool, block_size: Optional[int], buffer: int, workers: int,
                 batch_size: int, seed: int, epoch: int) -> tuple[list[np.ndarray], int]:
    """The batches of one epoch on one rank, and the number of sequential reads they take."""
    plan = EpochPlan(layout.shard_clips, epoch=epoch, shuffle=shuffle, seed=seed, block_size=block_size)
    firsts = np.concatenate(([0], np.cumsum(layout.shard_clips)[:-1]))
    batches, reads = [], 0
    for w in range(workers):
        clips = plan.part(0, workers, w)
        order = buffer_order(len(clips), buffer if shuffle else 0, worker_rng(seed, epoch, 0, w))
        out = clips[order]
        batches.extend(out[i: i + batch_size] for i in range(0, len(out), batch_size))
        reads += len(segments(clips, np.searchsorted(firsts, clips, side="right") - 1))
    return batches, reads


def uniform_batches(layout: Layout, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    perm = np.random.default_rng([seed, epoch, 99]).permutation(layout.num_clips)
    return [perm[i: i + batch_size] for i in range(0, perm.size, batch_size)]


RAW_MB = 16 * 256 * 340 * 3 / 1e6  # a raw 16-frame clip at Kinetics' usual 340x256
JPEG_MB = 0.35  # the same clip as quality-90 JPEG frames, about
SMALL_RAW_MB = 16 * 112 * 112 * 3 / 1e6

# (name, clip size in MB, block_size, shuffle_buffer); None buffer/block -> the "auto" rule
CONFIGS: list[tuple[str, float, object, object, bool]] = [
    ("no shuffle (global order)", RAW_MB, None, 0, False),
    ("shard order + buffer 64 (classic WebDataset)", RAW_MB, None, 64, True),
    ("shard order + buffer 1000", RAW_MB, None, 1000, True),
    ("blocks of 16 + buffer 64", RAW_MB, 16, 64, True),
    ("blocks of 4 + buffer 64", RAW_MB, 4, 64, True),
    ("auto, raw 16x256x340 clips", RAW_MB, AUTO, AUTO, True),
    ("auto, raw 16x112x112 clips", SMALL_RAW_MB, AUTO, AUTO, True),
    ("auto, JPEG clips", JPEG_MB, AUTO, AUTO, True),
]


def measure(args: argparse.Namespace) -> list[dict]:
    rows = []
    fixed = layout_from_index(args.out, args.split) if args.out else None

    def layout_for(clip_mb: float) -> Layout:
        shard_clips = max(1, int(args.shard_mb // clip_mb))
        return fixed or synthetic_layout(args.videos, tuple(args.clips_per_video), shard_clips, args.seed)

    ref_layout = layout_for(RAW_MB)
    uni = [batch_stats(uniform_batches(ref_layout, args.batch_size, args.seed, e), ref_layout.video_of_clip)
           for e in range(args.epochs)]
    rows.append({"config": "uniform random order (map-style sampler)", "clip": "any", "block": 1, "buffer": 0,
                 "pairs": np.mean([u[0] for u in uni]), "share": np.mean([u[1] for u in uni]),
                 "reads": ref_layout.num_clips, "clips": ref_layout.num_clips, "mb": RAW_MB})
    for name, clip_mb, block, buffer, shuffle in CONFIGS:
        layout = layout_for(clip_mb)
        if block == AUTO:
            block = auto_block_size(clip_mb * 1e6)
        if buffer == AUTO:
            buffer = auto_shuffle_buffer(clip_mb * 1e6, block)
        stats, reads = [], []
        for e in range(args.epochs):
            batches, r = plan_batches(layout, shuffle=shuffle, block_size=block, buffer=buffer, workers=args.workers,
                                      batch_size=args.batch_size, seed=args.seed, epoch=e)
            stats.append(batch_stats(batches, layout.video_of_clip))
            reads.append(r)
        rows.append({"config": name, "clip": f"{clip_mb:.2f} MB", "block": "shard" if block is None else block,
                     "buffer": buffer, "pairs": np.mean([s[0] for s in stats]), "share": np.mean([s[1] for s in stats]),
                     "reads": float(np.mean(reads)), "clips": layout.num_clips, "mb": clip_mb})
    return rows


def table(rows: list[dict]) -> str:
    ref = rows[0]["pairs"] or float("nan")
    lines = [
        "| order | clip | block | buffer | same-video pairs per batch | x uniform | batches with a pair | reads per epoch | MB per read |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(f"| {r['config']} | {r['clip']} | {r['block']} | {r['buffer']} | {r['pairs']:.2f} | "
                     f"{r['pairs'] / ref:.1f} | {100 * r['share']:.0f}% | {r['reads']:.0f} | "
                     f"{r['clips'] * r['mb'] / r['reads']:.1f} |")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", help="a converted dataset (converter OUT) to take the layout from")
    p.add_argument("--split", default="train")
    p.add_argument("--videos", type=int, default=2000)
    p.add_argument("--clips-per-video", type=int, nargs=2, default=(5, 15), metavar=("MIN", "MAX"))
    p.add_argument("--shard-mb", type=float, default=256.0, help="shard size (the converter's default: 256 MB)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    rows = measure(args)
    source = f"the layout of {args.out}" if args.out else (
        f"{args.videos} videos of {args.clips_per_video[0]}..{args.clips_per_video[1]} clips, {args.shard_mb:.0f} MB shards")
    print(f"{rows[0]['clips']} clips ({source}); batch size {args.batch_size}, {args.workers} workers, "
          f"mean over {args.epochs} epochs\n")
    print(table(rows))


if __name__ == "__main__":
    main()
