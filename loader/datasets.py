"""The two datasets: :class:`IndexedKinetics` (map-style) and :class:`StreamingKinetics` (iterable).

Both yield what ``torchvision.datasets.Kinetics`` yields: ``(video, audio, label)`` with
video uint8 ``[T, C, H, W]`` (``output_format="TCHW"``, the default) or ``[T, H, W, C]``,
audio float32 ``[K, L]`` and label a Python ``int``.
"""

from __future__ import annotations

import copy
import itertools
import logging
import operator
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from .index import DatasetIndex
from .plan import (
    AUTO,
    REMAINDERS,
    EpochPlan,
    auto_block_size,
    auto_shuffle_buffer,
    batches_of,
    iter_buffer_order,
    iter_segments,
    part_bounds,
    rank_length,
    worker_rng,
)
from .reader import OUTPUT_FORMATS, RawSample, SampleReader, ShardReadError, decode, to_output
from .transport import TransportOptions

logger = logging.getLogger(__name__)

__all__ = ["IndexedKinetics", "StreamingKinetics", "ERROR_POLICIES", "STATE_FORMAT"]

ERROR_POLICIES = ("raise", "skip")
STATE_FORMAT = "clipshards.loader.StreamingKinetics"
STATE_VERSION = 1
_SKIP_SLOTS = 64

Transform = Callable[[torch.Tensor], Any]


def _check_common(output_format: str, transform: Optional[Transform]) -> None:
    if output_format not in OUTPUT_FORMATS:
        raise ValueError(f"output_format={output_format!r}: must be one of {OUTPUT_FORMATS}")
    if transform is not None and not callable(transform):
        raise ValueError(f"transform={transform!r}: must be callable (it is applied to the video tensor)")


def _int_option(name: str, value: Any, minimum: int, *, allow_none: bool = False, auto: bool = False) -> Any:
    """``value`` checked: an integer >= ``minimum`` (or None / "auto" where allowed)."""
    if (value is None and allow_none) or (auto and isinstance(value, str) and value == AUTO):
        return value
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        choices = (["'auto'"] if auto else []) + [f"an integer >= {minimum}"] + (["None"] if allow_none else [])
        raise ValueError(f"{name}={value!r}: must be {' or '.join(choices)}")
    return int(value)


class _KineticsBase:
    index: DatasetIndex

    @property
    def classes(self) -> list[str]:
        """Class names in label order (label ``i`` is ``classes[i]``)."""
        return list(self.index.classes)

    @property
    def class_to_idx(self) -> dict[str, int]:
        return {c: i for i, c in enumerate(self.index.classes)}


class IndexedKinetics(_KineticsBase, Dataset):
    """Map-style: ``ds[i]`` is clip ``i`` of the global clip order, the same as
    ``torchvision.datasets.Kinetics(root, frames_per_clip, ...)[i]``.

    Each item is one ranged read of the clip's bytes (located with ``offsets.npy``), so any
    sampler, ``Subset`` or ``DistributedSampler`` works. ``url`` is the converter's OUT (a
    local path or an fsspec URL, with ``storage_options``; ``transport`` sets retries,
    read-ahead and the local cache for remote reads, see :class:`TransportOptions`).
    """

    def __init__(
        self,
        url: str | os.PathLike,
        split: str = "train",
        *,
        output_format: str = "TCHW",
        transform: Optional[Transform] = None,
        storage_options: Optional[Mapping[str, Any]] = None,
        transport: Optional[TransportOptions] = None,
    ) -> None:
        _check_common(output_format, transform)
        self.index = DatasetIndex(url, split, storage_options=storage_options, transport=transport)
        self.output_format = output_format
        self.transform = transform
        self._reader = SampleReader(self.index)

    def __len__(self) -> int:
        return self.index.num_clips

    def __repr__(self) -> str:
        return f"IndexedKinetics({self.index.url!r}, clips={len(self)})"

    def _clip(self, i: int) -> int:
        try:
            g = operator.index(i)
        except TypeError:
            raise TypeError(f"IndexedKinetics indices are integers, got {type(i).__name__}") from None
        n = self.index.num_clips
        if g < 0:
            g += n
        if not 0 <= g < n:
            raise IndexError(f"clip {i} out of range for {n} clips")
        return g

    def __getitem__(self, i: int) -> tuple[Any, torch.Tensor, int]:
        return to_output(decode(self._reader.fetch(self._clip(i))), self.output_format, self.transform)

    def __getitems__(self, indices: Sequence[int]) -> list[tuple[Any, torch.Tensor, int]]:
        """``[self[i] for i in indices]``, with the reads issued together: a DataLoader asks
        for its batches this way, so on remote storage a batch costs about one round trip."""
        raws = self._reader.fetch_many([self._clip(i) for i in indices])
        return [to_output(decode(raw), self.output_format, self.transform) for raw in raws]


@dataclass
class _Position:
    """How far an epoch got: samples consumed per logical worker, and which logical worker
    gives the next batch (the DataLoader's worker ``i`` plays logical worker ``(i + rotation) % W``)."""

    epoch: int
    num_workers: Optional[int] = None
    consumed: list[int] = field(default_factory=list)
    rotation: int = 0


class StreamingKinetics(_KineticsBase, IterableDataset):
    """Iterable dataset for training: reads shards in sequential runs, shuffles by blocks and a buffer.

    Each epoch is a deterministic plan (see :mod:`clipshards.loader.plan`): blocks of up to
    ``block_size`` consecutive clips (``None``: whole shards) are permuted with
    ``(seed, epoch)``; the sequence is cut into equal slices for the ranks of
    ``torch.distributed`` (or ``rank``/``world_size``) and into parts for the DataLoader
    workers; each worker reads its part block by block and shuffles it through a buffer of
    ``shuffle_buffer`` clips. Call :meth:`set_epoch` before each epoch, as with
    ``DistributedSampler``; without it every epoch repeats the same order.

    ``block_size="auto"`` makes a block one read of about 4 MiB (raw 16 x 256 x 340 clips:
    one clip a block, a uniformly random order; JPEG clips of that size: about ten);
    ``shuffle_buffer="auto"`` holds about 256 MiB of clips (none when blocks are single
    clips). The resolved values are the attributes ``block_size`` and ``shuffle_buffer``.
    ``benchmarks/shuffle_quality.py`` measures what each choice gives.

    ``remainder``: when the clip count does not divide by the world size, ``"pad"`` (default,
    as ``DistributedSampler``) repeats clips from the start of the epoch, ``"drop"`` leaves
    the last clips out; either way every rank yields ``len(self)`` clips and the same number
    of batches. ``errors="raise"`` (default) raises :class:`ShardReadError` on an unreadable
    clip; ``"skip"`` logs and counts it (:attr:`skipped`) and yields a neighbouring good clip
    of the same worker in its place, so counts stay equal across ranks. ``errors`` may also be
    a webdataset handler (``wds.warn_and_continue``, ``wds.ignore_and_continue``,
    ``wds.reraise_exception`` ...): it is called with the :class:`ShardReadError`; True skips
    as ``"skip"`` does (counted, without the log line: the handler reports), False raises the
    error (an epoch cut short would leave the ranks with unequal counts).

    Memory: each worker holds up to ``shuffle_buffer`` clips (as read, undecoded).

    Remote ``url`` (``s3://``, ``gs://``, ``https://``): ``storage_options`` go to fsspec;
    ``transport`` (:class:`TransportOptions`) sets retries, read-ahead and the local cache.
    """

    def __init__(
        self,
        url: str | os.PathLike,
        split: str = "train",
        *,
        shuffle: bool = True,
        shuffle_buffer: int | str = AUTO,
        block_size: int | str | None = AUTO,
        seed: int = 0,
        output_format: str = "TCHW",
        transform: Optional[Transform] = None,
        errors: str | Callable[[BaseException], bool] = "raise",
        rank: Optional[int] = None,
        world_size: Optional[int] = None,
        remainder: str = "pad",
        storage_options: Optional[Mapping[str, Any]] = None,
        transport: Optional[TransportOptions] = None,
    ) -> None:
        _check_common(output_format, transform)
        if not isinstance(shuffle, bool):
            raise ValueError(f"shuffle={shuffle!r}: must be True or False")
        buffer_opt = _int_option("shuffle_buffer", shuffle_buffer, 0, auto=True)
        block_opt = _int_option("block_size", block_size, 1, allow_none=True, auto=True)
        self.seed = _int_option("seed", seed, 0)
        if not (callable(errors) or (isinstance(errors, str) and errors in ERROR_POLICIES)):
            raise ValueError(f"errors={errors!r}: must be one of {ERROR_POLICIES} or a webdataset handler "
                             "(a callable taking the ShardReadError, returning True to skip)")
        if remainder not in REMAINDERS:
            raise ValueError(f"remainder={remainder!r}: must be one of {REMAINDERS}")
        self._world = _int_option("world_size", world_size, 1, allow_none=True)
        self._rank = _int_option("rank", rank, 0, allow_none=True)
        if self._rank is not None and self._world is not None and self._rank >= self._world:
            raise ValueError(f"rank={rank!r}: must be < world_size={world_size!r}")
        self.shuffle = shuffle
        self.output_format = output_format
        self.transform = transform
        self.errors = errors
        self._defer_jpeg = False  # set by ClipLoader: JPEG clips decoded by its collate, into the batch
        self.remainder = remainder
        self.index = DatasetIndex(url, split, storage_options=storage_options, transport=transport)
        self._reader = SampleReader(self.index)
        clip_bytes = self.index.clip_bytes
        self.block_size: Optional[int] = auto_block_size(clip_bytes) if block_opt == AUTO else block_opt  # type: ignore[assignment]
        self.shuffle_buffer: int = (auto_shuffle_buffer(clip_bytes, self.block_size) if buffer_opt == AUTO
                                    else buffer_opt)  # type: ignore[assignment]
        # shared with DataLoader workers (also persistent ones): [epoch, skipped per worker slot...]
        self._shared = torch.zeros(1 + _SKIP_SLOTS, dtype=torch.int64).share_memory_()
        self._position = _Position(epoch=0)
        self._resume: Optional[_Position] = None

    def __repr__(self) -> str:
        return (f"StreamingKinetics({self.index.url!r}, clips={self.index.num_clips}, shuffle={self.shuffle}, "
                f"epoch={self.epoch})")

    # -- distribution -----------------------------------------------------------------------
    def rank_and_world(self) -> tuple[int, int]:
        """``(rank, world_size)``: as given, else from ``torch.distributed`` when initialised, else (0, 1)."""
        rank, world = self._rank, self._world
        if rank is None or world is None:
            import torch.distributed as dist

            if dist.is_available() and dist.is_initialized():
                rank = dist.get_rank() if rank is None else rank
                world = dist.get_world_size() if world is None else world
        world = 1 if world is None else world
        rank = 0 if rank is None else rank
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} is not in 0..{world - 1} (world_size {world})")
        return rank, world

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_rank"], state["_world"] = self.rank_and_world()
        return state

    def __len__(self) -> int:
        """Clips this rank yields per epoch (from the index alone)."""
        return rank_length(self.index.num_clips, self.rank_and_world()[1], self.remainder)

    # -- epochs and positions ---------------------------------------------------------------
    @property
    def epoch(self) -> int:
        return int(self._shared[0])

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose order the next iteration yields (as ``DistributedSampler.set_epoch``)."""
        epoch = _int_option("epoch", epoch, 0)
        self._shared[0] = epoch
        if self._resume is not None and self._resume.epoch != epoch:
            self._resume = None
        self._position = copy.deepcopy(self._resume) if self._resume is not None else _Position(epoch=epoch)

    @property
    def skipped(self) -> int:
        """Clips skipped under ``errors="skip"`` so far (all workers of this process's loaders)."""
        return int(self._shared[1:].sum())

    def _plan(self, epoch: int) -> EpochPlan:
        return EpochPlan(
            [s.clips for s in self.index.shards], epoch=epoch, shuffle=self.shuffle, seed=self.seed,
            block_size=self.block_size, world_size=self.rank_and_world()[1], remainder=self.remainder,
        )

    def _worker_order(self, plan: EpochPlan, rank: int, num_workers: int, worker: int) -> tuple[np.ndarray, Iterator[int]]:
        """A worker's clips in read order, and the lazy order in which they are yielded."""
        clips = plan.part(rank, num_workers, worker)
        size = self.shuffle_buffer if self.shuffle else 0
        return clips, iter_buffer_order(len(clips), size, worker_rng(self.seed, plan.epoch, rank, worker))

    def epoch_order(self, epoch: Optional[int] = None, *, num_workers: int = 1) -> list[np.ndarray]:
        """Global clip indices each DataLoader worker of this rank yields in ``epoch`` (default:
        the current one), in order, for a fresh (not resumed) epoch. Reads no shard."""
        epoch = self.epoch if epoch is None else _int_option("epoch", epoch, 0)
        num_workers = _int_option("num_workers", num_workers, 1)
        plan = self._plan(epoch)
        rank = self.rank_and_world()[0]
        out = []
        for w in range(num_workers):
            clips, order = self._worker_order(plan, rank, num_workers, w)
            out.append(clips[np.fromiter(order, dtype=np.int64, count=len(clips))])
        return out

    def state_dict(self) -> dict[str, Any]:
        """The position in the current epoch, to restart from with :meth:`load_state_dict`.

        Exact when this dataset is iterated in this process (``num_workers=0``) or through a
        :class:`ClipLoader`; a plain ``DataLoader`` with workers cannot report what it consumed.
        """
        pos = self._position
        return {
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            "epoch": pos.epoch,
            "num_workers": pos.num_workers,
            "consumed": list(pos.consumed),
            "rotation": pos.rotation,
            **self._identity(),
        }

    def _identity(self) -> dict[str, Any]:
        return {
            "num_clips": self.index.num_clips,
            "world_size": self.rank_and_world()[1],
            "seed": self.seed,
            "shuffle": self.shuffle,
            "shuffle_buffer": self.shuffle_buffer,
            "block_size": self.block_size,
            "remainder": self.remainder,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from ``state`` (from :meth:`state_dict`) at the next iteration: the epoch is
        set to the saved one and each worker skips what it had yielded, without reading it.
        Call it before the DataLoader is iterated (persistent workers copy the dataset once)."""
        fmt = state.get("format") if isinstance(state, Mapping) else type(state).__name__
        if fmt != STATE_FORMAT:
            raise ValueError(f"not a StreamingKinetics state (format={fmt!r}, expected {STATE_FORMAT!r})")
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"StreamingKinetics state version {state.get('version')!r} is not {STATE_VERSION}")
        for key, mine in self._identity().items():
            if state.get(key) != mine:
                raise ValueError(f"state was saved with {key}={state.get(key)!r}, this dataset has {key}={mine!r}")
        W = state.get("num_workers")
        consumed = [int(c) for c in state.get("consumed", [])]
        rotation = int(state.get("rotation", 0))
        if W is not None and (not isinstance(W, int) or W < 1 or len(consumed) != W or not 0 <= rotation < W):
            raise ValueError(f"malformed state: num_workers={W!r}, consumed={consumed!r}, rotation={rotation!r}")
        epoch = _int_option("epoch", state.get("epoch"), 0)
        self._shared[0] = epoch
        self._resume = _Position(epoch, W, consumed, rotation) if W is not None else None
        self._position = _Position(epoch, W, list(consumed), rotation) if W is not None else _Position(epoch)

    def _start(self, epoch: int, num_workers: int) -> _Position:
        """The position an iteration of ``epoch`` with ``num_workers`` workers starts from."""
        res = self._resume if self._resume is not None and self._resume.epoch == epoch else None
        if res is None:
            return _Position(epoch, num_workers, [0] * num_workers, 0)
        if res.num_workers != num_workers:
            raise ValueError(
                f"the state was saved with num_workers={res.num_workers}; resume with the same number "
                f"of DataLoader workers (got {num_workers}, 0 counts as 1)"
            )
        return copy.deepcopy(res)

    # -- iteration --------------------------------------------------------------------------
    def __iter__(self) -> Iterator[tuple[Any, torch.Tensor, int]]:
        info = get_worker_info()
        num_workers, wid = (info.num_workers, info.id) if info is not None else (1, 0)
        epoch = self.epoch
        start = self._start(epoch, num_workers)
        in_process = info is None
        if in_process:
            self._position = start
        logical = (wid + start.rotation) % num_workers
        rank = self.rank_and_world()[0]
        clips, order = self._worker_order(self._plan(epoch), rank, num_workers, logical)
        for out in self._emit(clips, order, start.consumed[logical], slot=1 + wid % _SKIP_SLOTS):
            if in_process:
                self._position.consumed[0] += 1
            yield out
        if in_process:
            self._resume = None

    def _emit(self, clips: np.ndarray, order: Iterator[int], skip: int, slot: int) -> Iterator[tuple[Any, torch.Tensor, int]]:
        """Yield clips ``clips[order[skip:]]``: read sequentially from the first position not
        yet read before ``skip``; clips read before that (held in the buffer when the
        position was saved) are fetched by direct access."""
        n = len(clips)
        if skip >= n:
            return
        cursor = max(itertools.islice(order, skip)) + 1 if skip else 0
        stream = self._reader.stream(iter_segments(clips, self.index.shard_of(clips), cursor))
        held: dict[int, RawSample | ShardReadError] = {}
        next_pos = cursor
        last_good: Optional[tuple[Any, torch.Tensor, int]] = None
        owed = 0
        for t, p in zip(range(skip, n), order):
            if p in held:
                item = held.pop(p)
            elif p >= next_pos:
                while True:
                    q, got = next(stream)
                    next_pos = q + 1
                    if q == p:
                        item = got
                        break
                    held[q] = got
            else:
                try:
                    item = self._reader.fetch(int(clips[p]))
                except ShardReadError as exc:
                    item = exc
            if isinstance(item, RawSample):
                try:
                    out = to_output(decode(item, defer_jpeg=self._defer_jpeg), self.output_format, self.transform, item)
                except ShardReadError as exc:
                    item = exc
            if isinstance(item, ShardReadError):
                if not self._skips(item):
                    raise item
                self._shared[slot] += 1
                if last_good is None:
                    owed += 1
                    if t == n - 1:
                        raise ShardReadError(item.shard, item.clip, item.member,
                                             f"no readable clip in this worker's {n - skip} clips; last error: {item.reason}")
                    continue
                out = last_good
            else:
                last_good = out
            for _ in range(owed + 1):
                yield out
            owed = 0

    def _skips(self, error: ShardReadError) -> bool:
        """Whether the ``errors`` policy skips ``error`` (a handler may also raise it itself)."""
        if callable(self.errors):
            skip = bool(self.errors(error))
            logger.debug("errors handler %r %s unreadable clip (%s)", self.errors, "skips" if skip else "stops at", error)
            return skip
        if self.errors == "raise":
            return False
        logger.warning("skipping unreadable clip (%s)", error)
        return True

    def loader(self, batch_size: Optional[int] = 1, **kwargs: Any) -> "ClipLoader":
        """A :class:`ClipLoader` over this dataset (``collate_fn`` defaults to :func:`collate_clips`)."""
        from .dataloader import ClipLoader

        return ClipLoader(self, batch_size=batch_size, **kwargs)

    def _schedule(self, num_workers: int, batch_size: Optional[int], drop_last: bool) -> Iterator[None]:
        """Account the batches a DataLoader with ``num_workers`` workers yields, in its order:
        round-robin over workers (in order), skipping workers that have run out."""
        pos = self._start(self.epoch, num_workers)
        self._position = pos
        length = [b - a for a, b in (part_bounds(len(self), num_workers, w) for w in range(num_workers))]
        rot = pos.rotation
        left = [batches_of(length[(i + rot) % num_workers] - pos.consumed[(i + rot) % num_workers], batch_size, drop_last)
                for i in range(num_workers)]
        return self._account(pos, rot, length, left, batch_size)

    def _account(self, pos: _Position, rot: int, length: list[int], left: list[int],
                 batch_size: Optional[int]) -> Iterator[None]:
        num_workers = len(length)
        r = 0
        while any(r < c for c in left):
            for i in range(num_workers):
                if r < left[i]:
                    w = (i + rot) % num_workers
                    pos.consumed[w] += min(batch_size or 1, length[w] - pos.consumed[w])
                    pos.rotation = (w + 1) % num_workers
                    yield
            r += 1
        self._resume = None

    def batches_per_epoch(self, num_workers: int, batch_size: Optional[int], drop_last: bool = False) -> int:
        """Batches a DataLoader over this dataset yields on this rank in a full epoch."""
        w = max(1, num_workers)
        return sum(batches_of(b - a, batch_size, drop_last) for a, b in (part_bounds(len(self), w, i) for i in range(w)))
