"""The iterable dataset for training: :class:`StreamingKinetics` (and, re-exported, :class:`IndexedKinetics`).

Both yield what ``torchvision.datasets.Kinetics`` yields: ``(video, audio, label)`` with
video uint8 ``[T, C, H, W]`` (``output_format="TCHW"``, the default) or ``[T, H, W, C]``,
audio float32 ``[K, L]`` and label a Python ``int``. Which clips a worker yields, in which
order, is :mod:`.plan`; where an epoch stands and how a saved position resumes is
:mod:`.progress`; reading clips is :mod:`.reader`. This module ties them to a DataLoader
worker and applies the ``errors`` policy.

``StreamingKinetics(block_size="auto")`` makes a block one read of about 4 MiB (raw 16 x 256 x 340
clips: one clip a block, a uniformly random order; JPEG clips of that size: about ten);
``shuffle_buffer="auto"`` holds about 256 MiB of clips (none when blocks are single clips). The
resolved values are the attributes ``block_size`` and ``shuffle_buffer``.
``benchmarks/shuffle_quality.py`` measures what each choice gives.

``errors="raise"`` (default) raises :class:`ShardReadError` on an unreadable clip; ``"skip"``
logs and counts it (``skipped``) and yields a neighbouring good clip of the same worker in its
place, so counts stay equal across ranks. ``errors`` may also be a webdataset handler
(``wds.warn_and_continue``, ``wds.ignore_and_continue``, ``wds.reraise_exception`` ...): it is
called with the :class:`ShardReadError`; True skips as ``"skip"`` does (counted, without the
log line: the handler reports), False raises the error (an epoch cut short would leave the
ranks with unequal counts).

On a ``videos`` layout output (each video stored once) clips are cut when loading, for any
``frames_per_clip``, ``step_between_clips`` and ``frame_rate`` (None: as recorded when
converting), and ``clips_per_video=k`` takes ``k`` clips of every video each epoch,
``clip_sampling="random"`` (seeded by ``(seed, epoch)``) or ``"uniform"`` (:mod:`.video_epochs`).

Iterated clip by clip in the main process (``for clip in ds``, or ``ds.loader(batch_size=None)``
without workers), a JPEG dataset reads ahead (:mod:`.parallel`): the next ``read_ahead`` clips
(``"auto"``: 8 where the process has two cores or more) are read and checked, then decoded
together on two threads or more, then handed out one by one. The clips, their order, errors, skips and
saved positions are those of ``read_ahead=0``; ``transform`` runs in the caller's thread. Raw
clips are read in the caller's thread: their reads are short native calls, and two threads
spent more time waiting for each other (the GIL) than they saved.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from functools import partial
from typing import Any, Callable, Iterable, Iterator, Mapping, Optional

import numpy as np
import torch
from torch.utils.data import get_worker_info

from clipshards.convert.schema import LAYOUTS

from .arguments import (
    ERROR_POLICIES,
    Transform,
    check_choice,
    check_errors,
    check_flag,
    check_output,
    check_rank,
    int_option,
    resolve_rank,
)
from .dataloader import ClipLoader
from .index import ClassesFromIndex, DatasetIndex
from .indexed import IndexedKinetics
from .options import TransportOptions
from .parallel import in_groups, read_ahead_depth, read_threads
from .plan import AUTO, REMAINDERS, EpochPlan, auto_block_size, auto_shuffle_buffer, rank_length
from .progress import STATE_FORMAT, EpochProgress, ResumableDataset
from .reader import DeferredVideo, RawSample, SampleReader, ShardReadError, decode, to_output
from .video_epochs import video_epochs
from .video_reader import VideoClip, clip_output

logger = logging.getLogger(__name__)

__all__ = ["IndexedKinetics", "StreamingKinetics", "ERROR_POLICIES", "STATE_FORMAT", "skips", "fill_skipped"]

Output = tuple[Any, torch.Tensor, int]


class _CollateDecoding:
    """Lets a ClipLoader's collate decode JPEG clips, and read large local raw clips' pixels,
    straight into the batch (one clip-sized copy fewer)."""

    transform: Optional[Transform]
    errors: str | Callable[[BaseException], bool]
    _defer_jpeg = False  # True while a ClipLoader's collate decodes JPEG clips into the batch

    @contextlib.contextmanager
    def decoding_in_collate(self, on: bool) -> Iterator[None]:
        """While in effect (and ``on``), JPEG clips are yielded undecoded (and large local raw
        clips with their pixels unread) for the collate to decode (read) straight into the batch;
        only without ``transform`` and with ``errors="raise"``, so nothing else can see the difference."""
        self._defer_jpeg = on and self.transform is None and self.errors == "raise"
        try:
            yield
        finally:
            self._defer_jpeg = False


class _ClipOutputs:
    """What a :class:`StreamingKinetics` yields of each clip read: the output tuple (or the error
    that makes the clip unreadable), and, when reading ahead, the clip completed on a read-ahead
    thread and its ``transform`` applied in the caller's."""

    index: DatasetIndex
    output_format: str
    transform: Optional[Transform]
    with_ids: bool

    def _reads_ahead(self) -> bool:
        """Whether reading ahead pays: JPEG clips (decoding them is long stretches of native
        code, without the GIL). Raw clips are read and checked in short native calls; on two
        threads each waits on the other for the GIL (measured: slower than one thread)."""
        return self.index.codec == "jpeg"

    def _output(self, item: RawSample | VideoClip | ShardReadError, padded: bool = False, *, defer: bool = False,
                transform: Optional[Transform] = None) -> Output | ShardReadError:
        """A clip as the dataset yields it (its video through ``transform``; ``defer``: a
        :class:`DeferredVideo` where its pixels are unread or its frames undecoded), or the
        error that makes it unreadable (``padded``: see ``with_ids``)."""
        if isinstance(item, (ShardReadError, VideoClip)):
            return item if isinstance(item, ShardReadError) else clip_output(
                item, self.output_format, transform, with_ids=self.with_ids, padded=padded, shard=self.index.url)
        try:
            return to_output(decode(item, defer_jpeg=defer), self.output_format, transform, item)
        except ShardReadError as exc:
            return exc

    def _completed(self, output: Output | ShardReadError) -> Output | ShardReadError:
        """A clip taken for reading ahead, made what the dataset yields (before ``transform``):
        its pixels read (its frames decoded) into memory of its own; the error that makes it
        unreadable instead. Runs on the read-ahead threads."""
        if isinstance(output, ShardReadError) or not isinstance(output[0], DeferredVideo):
            return output
        try:
            return (output[0].tensor(pooled=True), *output[1:])  # type: ignore[return-value]
        except ShardReadError as exc:
            return exc

    def _transformed(self, output: Output) -> Output:
        """``output`` with ``transform`` applied to its video (as :func:`to_output` applies it)."""
        return (self.transform(output[0]), *output[1:])  # type: ignore[misc,return-value]

    def _read_ahead(self, outputs: Iterator[Output | ShardReadError], ahead: int) -> Iterator[Output | ShardReadError]:
        """``outputs`` (taken with their videos deferred) completed ``ahead`` at a time on the
        read-ahead threads, then transformed here (its random draws in the caller's order)."""
        completed = in_groups(outputs, self._completed, size=ahead, threads=read_threads())
        if self.transform is None:
            return completed
        return (item if isinstance(item, ShardReadError) else self._transformed(item) for item in completed)


class StreamingKinetics(ClassesFromIndex, _CollateDecoding, _ClipOutputs, ResumableDataset):
    """Iterable dataset for training: reads shards in sequential runs, shuffles by blocks and a buffer.

    Each epoch is a deterministic plan (see :mod:`clipshards.loader.plan`): blocks of up to
    ``block_size`` consecutive clips (``None``: whole shards) are permuted with
    ``(seed, epoch)``; the sequence is cut into equal slices for the ranks of
    ``torch.distributed`` (or ``rank``/``world_size``) and into parts for the DataLoader
    workers; each worker reads its part block by block and shuffles it through a buffer of
    ``shuffle_buffer`` clips. Call :meth:`set_epoch` before each epoch, as with
    ``DistributedSampler``; without it every epoch repeats the same order.

    ``block_size`` and ``shuffle_buffer`` default to ``"auto"`` (see the module's docstring).

    ``remainder``: when the clip count does not divide by the world size, ``"pad"`` (default,
    as ``DistributedSampler``) repeats clips from the start of the epoch, ``"drop"`` leaves
    the last clips out; either way every rank yields ``len(self)`` clips and the same number
    of batches. ``errors``: ``"raise"``, ``"skip"`` or a webdataset handler (module docstring).
    A ``videos`` layout output also takes ``frames_per_clip``, ``step_between_clips``,
    ``frame_rate``, ``clips_per_video`` and ``clip_sampling``; ``with_ids`` adds each clip's
    ``(video_idx, clip_idx)``, ``video_idx`` -1 on the repeats ``"pad"`` adds (mask them out).

    ``read_ahead``: JPEG clips decoded ahead together when iterated clip by clip in the main
    process (module docstring; 0: none).

    Memory: each worker holds up to ``shuffle_buffer`` clips (as read, undecoded). Remote
    ``url``: ``storage_options`` go to fsspec, ``transport`` sets retries, read-ahead and cache.
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
        frames_per_clip: Optional[int] = None,
        step_between_clips: Optional[int] = None,
        frame_rate: Optional[float] | str = None,
        clips_per_video: Optional[int] = None,
        clip_sampling: str = "random",
        with_ids: bool = False,
        output_format: str = "TCHW",
        transform: Optional[Transform] = None,
        errors: str | Callable[[BaseException], bool] = "raise",
        rank: Optional[int] = None,
        world_size: Optional[int] = None,
        remainder: str = "pad",
        storage_options: Optional[Mapping[str, Any]] = None,
        transport: Optional[TransportOptions] = None,
        read_ahead: int | str = AUTO,
    ) -> None:
        check_output(output_format, transform)
        self.read_ahead = int_option("read_ahead", read_ahead, 0, auto=True)
        self.shuffle = check_flag("shuffle", shuffle)
        buffer_opt = int_option("shuffle_buffer", shuffle_buffer, 0, auto=True)
        block_opt = int_option("block_size", block_size, 1, allow_none=True, auto=True)
        self.seed = int_option("seed", seed, 0)
        check_errors(errors)
        check_choice("remainder", remainder, REMAINDERS)
        self._rank, self._world = check_rank(rank, world_size)
        self.output_format = output_format
        self.transform = transform
        self.errors = errors
        self.remainder = remainder
        self.index = DatasetIndex(url, split, storage_options=storage_options, transport=transport, layouts=LAYOUTS)
        self._reader = SampleReader(self.index)
        self.videos = video_epochs(self.index, frames_per_clip=frames_per_clip, step_between_clips=step_between_clips,
                                   frame_rate=frame_rate, clips_per_video=clips_per_video, clip_sampling=clip_sampling,
                                   seed=self.seed)
        self.with_ids = check_flag("with_ids", with_ids)
        if with_ids and self.videos is None:
            raise ValueError("with_ids=True: needs a videos layout output (or IndexedKinetics(..., with_ids=True))")
        clip_bytes = self.index.clip_bytes if self.videos is None else float("inf")  # videos: a clip is a read
        self.block_size: Optional[int] = auto_block_size(clip_bytes) if block_opt == AUTO else block_opt  # type: ignore[assignment]
        self.shuffle_buffer: int = (auto_shuffle_buffer(clip_bytes, self.block_size) if buffer_opt == AUTO
                                    else buffer_opt)  # type: ignore[assignment]
        self.progress = EpochProgress()

    def __repr__(self) -> str:
        return (f"StreamingKinetics({self.index.url!r}, clips={self.index.num_clips}, shuffle={self.shuffle}, "
                f"epoch={self.epoch})")

    def rank_and_world(self) -> tuple[int, int]:
        """``(rank, world_size)``: as given, else from ``torch.distributed`` when initialised, else (0, 1)."""
        return resolve_rank(self._rank, self._world)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_rank"], state["_world"] = self.rank_and_world()
        return state

    def __len__(self) -> int:
        """Clips this rank yields per epoch (from the index alone)."""
        return rank_length(self._items(), self.rank_and_world()[1], self.remainder)

    def _items(self) -> int:
        return self.index.num_clips if self.videos is None else self.videos.num_items

    def state_identity(self) -> dict[str, Any]:
        return {"num_clips": self._items(), "world_size": self.rank_and_world()[1], "seed": self.seed,
                "shuffle": self.shuffle, "shuffle_buffer": self.shuffle_buffer, "block_size": self.block_size,
                "remainder": self.remainder, "index": index_identity(self.index),
                **(self.videos.identity() if self.videos is not None else {})}

    # -- the order ----------------------------------------------------------------------------
    def _plan(self, epoch: int) -> EpochPlan:
        return EpochPlan(
            [s.clips for s in self.index.shards] if self.videos is None else [self.videos.num_items], epoch=epoch,
            shuffle=self.shuffle, seed=self.seed,
            block_size=self.block_size, world_size=self.rank_and_world()[1], remainder=self.remainder,
            shuffle_buffer=self.shuffle_buffer,
        )

    def epoch_order(self, epoch: Optional[int] = None, *, num_workers: int = 1) -> list[np.ndarray]:
        """Global clip indices each DataLoader worker of this rank yields in ``epoch`` (default:
        the current one), in order, for a fresh (not resumed) epoch. Reads no shard."""
        epoch = self.epoch if epoch is None else int_option("epoch", epoch, 0)
        num_workers = int_option("num_workers", num_workers, 1)
        orders = self._plan(epoch).yield_orders(self.rank_and_world()[0], num_workers)
        return orders if self.videos is None else [self.videos.items(epoch)[o] for o in orders]

    # -- iteration ----------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Output]:
        info = get_worker_info()
        num_workers, wid = (info.num_workers, info.id) if info is not None else (1, 0)
        epoch = self.epoch
        start = self.progress.start(epoch, num_workers, self.world_size())
        logical = (wid + start.rotation) % num_workers
        skip, plan, rank = start.consumed[logical], self.leg_plan(start), self.rank_and_world()[0]
        ahead = read_ahead_depth(self.read_ahead) if info is None and not self._defer_jpeg and self._reads_ahead() else 0
        defer = self._defer_jpeg or ahead > 0
        make = partial(self._output, defer=defer, transform=None if ahead else self.transform)
        if self.videos is not None:  # clips cut from whole videos: the epoch's choice of clips
            count, outputs = self.videos.outputs(plan, rank, num_workers, logical, skip, make, defer_jpeg=defer)
        else:
            clips, order = plan.worker_order(rank, num_workers, logical)
            reads = self._reader.in_order(clips, order, skip, defer=defer)  # raw pixels too: see .pixels
            count, outputs = len(clips), (make(item) for item in reads)
        if ahead:
            outputs = self._read_ahead(outputs, ahead)
        clips_out = fill_skipped(outputs, count - skip, partial(skips, self.errors),
                                 on_skip=partial(self.progress.count_skip, wid))
        # iterated here (no DataLoader workers): the position is known here, sample by sample
        yield from (self.progress.track(start, clips_out) if info is None else clips_out)

    def loader(self, batch_size: Optional[int] = 1, **kwargs: Any) -> ClipLoader:
        """A :class:`ClipLoader` over this dataset (``collate_fn`` defaults to :func:`collate_clips`)."""
        return ClipLoader(self, batch_size=batch_size, **kwargs)


def index_identity(index: DatasetIndex) -> str:
    """A short digest of what a saved position refers to: the classes and every shard (name,
    clips, bytes, checksum). A dataset changed since (videos appended, another conversion) has
    another one, so a state of the old one is refused rather than resumed on other clips."""
    what = [list(index.classes), [[s.name, s.clips, s.bytes, s.checksum] for s in index.shards]]
    return hashlib.blake2b(json.dumps(what).encode(), digest_size=8).hexdigest()


def skips(errors: str | Callable[[BaseException], bool], error: ShardReadError) -> bool:
    """Whether the ``errors`` policy skips ``error`` (a handler may also raise it itself)."""
    if callable(errors):
        skip = bool(errors(error))
        logger.debug("errors handler %r %s unreadable clip (%s)", errors, "skips" if skip else "stops at", error)
        return skip
    if errors == "raise":
        return False
    logger.warning("skipping unreadable clip (%s)", error)
    return True


def fill_skipped(outputs: Iterable[Output | ShardReadError], total: int, skip: Callable[[ShardReadError], bool], *,
                 on_skip: Callable[[], None] = lambda: None) -> Iterator[Output]:
    """``outputs`` (``total`` of them) with each error that ``skip`` accepts replaced by the last
    good output (by the next one for errors before any), so a worker yields as many clips as
    its part holds and every rank the same count. An error ``skip`` refuses is raised, as is
    one when no clip at all is good."""
    last_good: Optional[Output] = None
    owed = 0
    for t, item in enumerate(outputs):
        if isinstance(item, ShardReadError):
            if not skip(item):
                raise item
            on_skip()
            if last_good is None:
                owed += 1
                if t == total - 1:
                    raise ShardReadError(item.shard, item.clip, item.member,
                                         f"no readable clip in this worker's {total} clips; last error: {item.reason}")
                continue
            out = last_good
        else:
            out = last_good = item
        for _ in range(owed + 1):
            yield out
        owed = 0
