"""The epoch plan: which clips each rank and worker reads, in which order. Pure arithmetic.

Everything here is a function of the index's shard sizes (or of the runs of clips a dataset
keeps) and of (seed, epoch, world size, rank, worker count, worker), never of timing, so every
process computes the same plan without talking to the others, and a resumed worker can jump to
any position.

1. The clips are cut into *blocks*: runs of at most ``block_size`` consecutive clips inside
   one shard (``None``: a block is a whole shard, as classic WebDataset shard shuffling). A
   dataset that keeps only some clips (a UCF101/HMDB51 fold) gives its *runs* of consecutive
   kept clips, each inside one shard, instead of the shard sizes: blocks are cut from the
   runs and never cross one (``None``: a block is a whole run).
2. With shuffle, the blocks are permuted by ``rng(seed, epoch)``; the epoch's clip sequence
   is the concatenation of the permuted blocks (without shuffle: the global clip order).
3. The sequence is cut into ``world_size`` contiguous slices of equal length: ``remainder=
   "pad"`` makes them ``ceil(N / world_size)`` long, repeating clips from the start of the
   epoch sequence; ``"drop"`` makes them ``N // world_size`` long, leaving out the last clips.
4. A rank's slice is cut into ``num_workers`` contiguous parts whose lengths differ by at most
   one; worker ``w`` has the same length on every rank, so every rank yields the same batches.
5. Within a part, a shuffle buffer of ``shuffle_buffer`` clips permutes the read order as a
   reservoir does (:func:`buffer_order`), seeded by ``rng(seed, epoch, rank, worker)``.

An epoch resumed at another world size or worker count is run in *legs* (:meth:`EpochPlan.after`):
leg 0 is the plan above; each later leg deals out the positions of the epoch sequence that no
earlier leg yielded (recomputed from the earlier legs' per-worker counts, never stored), in
sequence order, cut as in steps 3-5 for its own world size and worker count, its buffers
seeded by ``rng(seed, epoch, rank, worker, leg)``.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from itertools import islice
from typing import Iterator, Optional, Sequence

import numpy as np
import numpy.random  # noqa: F401  (NumPy loads it lazily, ~90 ms: at import, not in the first batch)

__all__ = [
    "EpochPlan",
    "Segment",
    "runs_in_shards",
    "buffer_order",
    "iter_buffer_order",
    "rank_length",
    "part_bounds",
    "segments",
    "iter_segments",
    "worker_rng",
    "Leg",
    "batches_of",
    "auto_block_size",
    "auto_shuffle_buffer",
    "REMAINDERS",
    "AUTO",
]

REMAINDERS = ("pad", "drop")
AUTO = "auto"
READ_BYTES = 4 * 1024 * 1024
BUFFER_BYTES = 256 * 1024 * 1024
MAX_AUTO_BUFFER = 1000
_BLOCK_STREAM = 0
_BUFFER_STREAM = 1


@dataclass(frozen=True)
class Leg:
    """One stretch of an epoch run at one world size and worker count: what each logical
    worker (the same on every rank) had yielded when it ended."""

    world_size: int
    num_workers: int
    consumed: tuple[int, ...]


def rank_length(num_clips: int, world_size: int, remainder: str) -> int:
    """Clips per rank per epoch."""
    if num_clips == 0:
        return 0
    if remainder == "pad":
        return -(-num_clips // world_size)
    return num_clips // world_size


def auto_block_size(clip_bytes: float) -> int:
    """Clips per block so that a block is one read of about :data:`READ_BYTES` (at least one
    clip): large enough for good throughput on object storage, small enough to mix well.
    Raw Kinetics-size clips (16 x 256 x 340, 4.2 MB) get 1: a uniformly random order."""
    return max(1, int(READ_BYTES // max(1.0, clip_bytes)))


def auto_shuffle_buffer(clip_bytes: float, block_size: Optional[int]) -> int:
    """Buffer of about :data:`BUFFER_BYTES` of clips (at most :data:`MAX_AUTO_BUFFER`), and none
    when blocks are single clips (their order is already uniformly random)."""
    if block_size == 1:
        return 0
    return max(1, min(MAX_AUTO_BUFFER, int(BUFFER_BYTES // max(1.0, clip_bytes))))


def part_bounds(length: int, num_workers: int, worker: int) -> tuple[int, int]:
    """``[a, b)`` of worker ``worker``'s part of a slice of ``length`` (the first ``length %
    num_workers`` parts are one longer)."""
    base, extra = divmod(length, num_workers)
    a = worker * base + min(worker, extra)
    return a, a + base + (worker < extra)


def iter_buffer_order(n: int, size: int, rng: np.random.Generator) -> Iterator[int]:
    """Output order of ``n`` items read in order through a reservoir of ``size`` items, lazily.

    The first ``size`` items fill the reservoir; each later item replaces a uniformly chosen
    occupant, which is emitted; at the end the remaining occupants are emitted in random
    order. The t-th value is the read position of the t-th emitted item; emitting it never
    needs more than ``size`` items held: ``max(out[:t+1]) < size + t + 1``. Lazy, so the
    first clip of an epoch costs O(1) Python steps whatever the number of clips.
    """
    if size <= 1 or n <= 1:
        yield from range(n)
        return
    fill = min(size, n)
    held = list(range(fill))
    picks = rng.integers(0, fill, size=n - fill).tolist()
    for t, j in enumerate(picks):
        yield held[j]
        held[j] = fill + t
    tail = np.array(held, dtype=np.int64)
    rng.shuffle(tail)
    yield from tail.tolist()


def buffer_order(n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """:func:`iter_buffer_order` as an array ``out`` (``out[t]``: read position of the t-th item)."""
    return np.fromiter(iter_buffer_order(n, size, rng), dtype=np.int64, count=n)


@dataclass(frozen=True)
class Segment:
    """``count`` consecutive clips of one shard, starting at global clip ``first``; they are
    items ``pos .. pos + count - 1`` of a part's read order."""

    shard: int
    first: int
    count: int
    pos: int


def iter_segments(clips: np.ndarray, shard_of_clips: np.ndarray, start: int = 0) -> Iterator[Segment]:
    """Cut ``clips[start:]`` (global clip indices in read order) into sequential runs, lazily:
    the run boundaries are found in one vectorised pass, the :class:`Segment` objects made
    one at a time, so a reader's first clip costs O(1) segments whatever the part's length."""
    c = np.asarray(clips[start:], dtype=np.int64)
    if c.size == 0:
        return
    s = np.asarray(shard_of_clips[start:], dtype=np.int64)
    breaks = np.flatnonzero((np.diff(c) != 1) | (np.diff(s) != 0)) + 1
    bounds = np.concatenate(([0], breaks, [c.size]))
    for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
        yield Segment(int(s[a]), int(c[a]), b - a, start + a)


def segments(clips: np.ndarray, shard_of_clips: np.ndarray, start: int = 0) -> list[Segment]:
    """:func:`iter_segments` as a list."""
    return list(iter_segments(clips, shard_of_clips, start))


class EpochPlan:
    """The clip sequence of one epoch and its cut into ranks and workers (see the module doc)."""

    def __init__(
        self,
        shard_clips: Optional[Sequence[int]] = None,
        *,
        runs: Optional[tuple[np.ndarray, np.ndarray]] = None,
        epoch: int,
        shuffle: bool,
        seed: int,
        block_size: Optional[int],
        world_size: int = 1,
        remainder: str = "pad",
        shuffle_buffer: int = 0,
    ) -> None:
        if remainder not in REMAINDERS:
            raise ValueError(f"remainder={remainder!r}: must be one of {REMAINDERS}")
        firsts, counts = _runs(shard_clips, runs)
        self.num_clips = int(counts.sum())
        self.epoch = epoch
        self.seed = seed
        self.buffer = shuffle_buffer if shuffle else 0
        self.world_size = world_size
        self.remainder = remainder
        if block_size is None:
            starts, lengths = firsts[counts > 0], counts[counts > 0]
        else:
            per = -(-counts // block_size)
            run_idx = np.repeat(np.arange(counts.size), per)
            within = np.arange(per.sum()) - np.repeat(np.cumsum(per) - per, per)
            starts = firsts[run_idx] + within * block_size
            lengths = np.minimum(block_size, counts[run_idx] - within * block_size)
        if shuffle and starts.size:
            perm = np.random.default_rng([seed, epoch, _BLOCK_STREAM]).permutation(starts.size)
            starts, lengths = starts[perm], lengths[perm]
        self.block_starts = starts
        self.block_lengths = lengths
        self._block_ends = np.cumsum(lengths)
        self.leg = 0
        self.remaining: Optional[np.ndarray] = None  # positions a later leg deals out (None: all)
        self.per_rank = rank_length(self.num_clips, world_size, remainder)

    @property
    def length(self) -> int:
        """Items this leg deals out to the ranks (every clip of the epoch for leg 0)."""
        return self.num_clips if self.remaining is None else int(self.remaining.size)

    def sequence(self, a: int, b: int) -> np.ndarray:
        """Global clips at positions ``a .. b-1`` of the epoch sequence (positions past the
        end wrap around to its start, which is how ``pad`` repeats clips)."""
        n = self.num_clips
        if b <= a or n == 0:
            return np.zeros(0, dtype=np.int64)
        return self.clips_at(np.arange(a, b, dtype=np.int64) % n)

    def clips_at(self, pos: np.ndarray) -> np.ndarray:
        """Global clips at positions ``pos`` (each ``< num_clips``) of the epoch sequence."""
        blk = np.searchsorted(self._block_ends, pos, side="right")
        return self.block_starts[blk] + (pos - (self._block_ends[blk] - self.block_lengths[blk]))

    def part_positions(self, rank: int, num_workers: int, worker: int) -> np.ndarray:
        """Positions in the epoch sequence of one worker's part of this leg, in read order."""
        a, b = part_bounds(self.per_rank, num_workers, worker)
        base = rank * self.per_rank
        m = self.length
        if b <= a or m == 0:
            return np.zeros(0, dtype=np.int64)
        idx = np.arange(base + a, base + b, dtype=np.int64) % m
        return idx if self.remaining is None else self.remaining[idx]

    def part(self, rank: int, num_workers: int, worker: int) -> np.ndarray:
        """Global clips of one worker of one rank, in read order (before the buffer shuffle)."""
        if self.remaining is None:
            a, b = part_bounds(self.per_rank, num_workers, worker)
            base = rank * self.per_rank
            return self.sequence(base + a, base + b)
        return self.clips_at(self.part_positions(rank, num_workers, worker))

    def padded_from(self, rank: int, num_workers: int, worker: int) -> int:
        """Read positions of a worker's part from this one on are ``"pad"`` repeats."""
        return self.length - (rank * self.per_rank + part_bounds(self.per_rank, num_workers, worker)[0])

    def after(self, legs: Sequence[Leg]) -> "EpochPlan":
        """The plan of the leg that follows ``legs`` (the earlier legs of this epoch, in order),
        at this plan's world size: the positions no earlier leg yielded, in sequence order.
        O(clips) NumPy work; nothing but the legs' counts is needed."""
        taken = np.zeros(self.num_clips, dtype=bool)
        remaining: Optional[np.ndarray] = None
        for number, leg in enumerate(legs):
            plan = self._leg(leg.world_size, remaining, number)
            for rank in range(leg.world_size):
                for w in range(leg.num_workers):
                    pos = plan.part_positions(rank, leg.num_workers, w)
                    order = islice(iter_buffer_order(pos.size, self.buffer, worker_rng(
                        self.seed, self.epoch, rank, w, number)), min(pos.size, leg.consumed[w]))
                    taken[pos[np.fromiter(order, dtype=np.int64)]] = True
            remaining = np.flatnonzero(~taken)
        return self._leg(self.world_size, remaining, len(legs))

    def _leg(self, world_size: int, remaining: Optional[np.ndarray], number: int) -> "EpochPlan":
        plan = copy.copy(self)
        plan.world_size, plan.remaining, plan.leg = world_size, remaining, number
        plan.per_rank = rank_length(plan.length, world_size, self.remainder)
        return plan

    def part_length(self, num_workers: int, worker: int) -> int:
        a, b = part_bounds(self.per_rank, num_workers, worker)
        return b - a

    def worker_order(self, rank: int, num_workers: int, worker: int) -> tuple[np.ndarray, Iterator[int]]:
        """A worker's clips in read order, and the lazy order in which its shuffle buffer
        yields them (read positions, see :func:`iter_buffer_order`)."""
        clips = self.part(rank, num_workers, worker)
        return clips, iter_buffer_order(len(clips), self.buffer,
                                        worker_rng(self.seed, self.epoch, rank, worker, self.leg))

    def yield_orders(self, rank: int, num_workers: int) -> list[np.ndarray]:
        """Global clips each worker of ``rank`` yields, in the order it yields them."""
        out = []
        for w in range(num_workers):
            clips, order = self.worker_order(rank, num_workers, w)
            out.append(clips[np.fromiter(order, dtype=np.int64, count=len(clips))])
        return out


def _runs(shard_clips: Optional[Sequence[int]], runs: Optional[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """``(first global clip, clip count)`` of each run: the shards themselves, or the given runs."""
    if (shard_clips is None) == (runs is None):
        raise ValueError("give the shards' clip counts or runs=(firsts, counts), one of the two")
    if runs is None:
        counts = np.asarray(shard_clips, dtype=np.int64)
        return (np.concatenate(([0], np.cumsum(counts)[:-1])) if counts.size else counts), counts
    firsts, counts = (np.asarray(a, dtype=np.int64) for a in runs)
    if firsts.shape != counts.shape or firsts.ndim != 1 or (counts < 0).any():
        raise ValueError(f"runs: expected two equal-length 1-D arrays (firsts, counts >= 0), got {firsts.shape}, {counts.shape}")
    return firsts, counts


def runs_in_shards(firsts: np.ndarray, counts: np.ndarray, shard_firsts: np.ndarray, num_clips: int) -> tuple[np.ndarray, np.ndarray]:
    """The clips of runs ``(firsts, counts)`` as maximal runs of consecutive clips inside one
    shard each (``shard_firsts``: each shard's first global clip): touching runs are joined,
    a run across a shard boundary is cut there. In global clip order."""
    if num_clips == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    edges = np.zeros(num_clips + 1, dtype=np.int64)
    np.add.at(edges, np.asarray(firsts, dtype=np.int64), 1)
    np.add.at(edges, np.asarray(firsts, dtype=np.int64) + np.asarray(counts, dtype=np.int64), -1)
    kept = np.cumsum(edges[:-1]) > 0
    new_shard = np.zeros(num_clips, dtype=bool)
    new_shard[np.asarray(shard_firsts, dtype=np.int64)[np.asarray(shard_firsts) < num_clips]] = True
    before = np.concatenate(([False], kept[:-1]))
    starts = np.flatnonzero(kept & (~before | new_shard))
    after_end = np.flatnonzero(kept & (~np.concatenate((kept[1:], [False])) | np.concatenate((new_shard[1:], [True])))) + 1
    return starts, after_end - starts


def worker_rng(seed: int, epoch: int, rank: int, worker: int, leg: int = 0) -> np.random.Generator:
    """A worker's buffer stream; leg 0 (a fresh epoch) keeps the key it always had."""
    key = [seed, epoch, _BUFFER_STREAM, rank, worker] + ([leg] if leg else [])
    return np.random.default_rng(key)


def batches_of(samples: int, batch_size: Optional[int], drop_last: bool) -> int:
    """Batches a DataLoader worker makes from ``samples`` samples."""
    if batch_size is None:
        return samples
    return samples // batch_size if drop_last else math.ceil(samples / batch_size)
