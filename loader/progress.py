"""Where an epoch stands: the epoch number, what each worker has consumed, skip counts, saved states.

A DataLoader hands out its workers' batches round-robin; :meth:`EpochProgress.schedule` replays
that order, so the main process knows, batch by batch, how many samples each worker has
yielded. A state (:meth:`EpochProgress.state_dict`) is that position plus the settings it is
valid for; a restart skips, per worker, what was consumed and rotates the workers' roles so
the next batch comes from the worker that would have made it. Pure bookkeeping: no shard is
read here, so every rule can be tested without media.

Elastic resume: a state restarted at another world size or worker count starts a new *leg*
of its epoch (:class:`~clipshards.loader.plan.Leg`): the state it was saved in becomes an
earlier leg, and the dataset deals out what no earlier leg yielded (:meth:`EpochPlan.after
<clipshards.loader.plan.EpochPlan.after>`). Under DDP every rank makes the same batches in
lockstep (equal part lengths per worker on every rank, the same round-robin), so the counts
per logical worker are the same on every rank: rank 0's state describes all of them. A state
holds one entry per leg (bounded by the number of resumes in the epoch), never clip lists.

:class:`ResumableDataset` is what :class:`~clipshards.loader.ClipLoader` drives: an iterable
dataset that keeps an :class:`EpochProgress`.
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass, field
from typing import Any, ContextManager, Iterable, Iterator, Mapping, Optional, TypeVar

import torch
from torch.utils.data import IterableDataset

from .arguments import int_option
from .plan import EpochPlan, Leg, batches_of, part_bounds

__all__ = ["Position", "EpochProgress", "ResumableDataset", "part_lengths", "batches_per_epoch",
           "STATE_FORMAT", "STATE_VERSION", "READABLE_STATE_VERSIONS", "ELASTIC", "SKIP_SLOTS"]

STATE_FORMAT = "clipshards.loader.StreamingKinetics"
STATE_VERSION = 2
READABLE_STATE_VERSIONS = (1, 2)
"""Version 2 adds the leg's ``world_size`` as a position (not a setting) and ``legs``; 1 still loads."""
ELASTIC = ("world_size",)
"""Settings of a state that may differ when it is loaded: the resume then starts a new leg."""
_CHANGED = {"index": " (the dataset's classes or shards changed since the state was saved: videos appended "
                     "or another conversion; its position cannot be resumed, start the epoch afresh)"}
"""Why a setting differs, for the settings where that needs saying; a state without one (saved
before it was recorded) is not refused for it."""
SKIP_SLOTS = 64
"""Skip counters shared with the DataLoader workers (worker ``i`` counts in slot ``i % SKIP_SLOTS``)."""
T = TypeVar("T")


@dataclass
class Position:
    """How far an epoch got: samples consumed per logical worker, and which logical worker
    gives the next batch (the DataLoader's worker ``i`` plays logical worker ``(i + rotation) % W``)."""

    epoch: int
    num_workers: Optional[int] = None
    consumed: list[int] = field(default_factory=list)
    rotation: int = 0
    world_size: Optional[int] = None
    legs: list[Leg] = field(default_factory=list)


def part_lengths(length: int, num_workers: int) -> list[int]:
    """Samples each of ``num_workers`` workers yields from a rank's ``length`` (see :func:`part_bounds`)."""
    return [b - a for a, b in (part_bounds(length, num_workers, w) for w in range(num_workers))]


def batches_per_epoch(length: int, num_workers: int, batch_size: Optional[int], drop_last: bool = False) -> int:
    """Batches a DataLoader with ``num_workers`` workers (0 counts as 1) makes from ``length`` samples."""
    return sum(batches_of(n, batch_size, drop_last) for n in part_lengths(length, max(1, num_workers)))


class EpochProgress:
    """The epoch and the position in it, shared with the DataLoader workers where it must be.

    The epoch and the skip counters live in shared memory (persistent workers see
    :meth:`set_epoch`); the position is the main process's. ``position`` is the current one,
    the resume point (from :meth:`load_state_dict`) applies to the next iteration of its epoch.
    """

    def __init__(self) -> None:
        # [epoch, skipped per worker slot...]
        self._shared = torch.zeros(1 + SKIP_SLOTS, dtype=torch.int64).share_memory_()
        self.position = Position(epoch=0)
        self._resume: Optional[Position] = None

    @property
    def epoch(self) -> int:
        return int(self._shared[0])

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch the next iteration yields; a resume point of another epoch is dropped."""
        epoch = int_option("epoch", epoch, 0)
        self._shared[0] = epoch
        if self._resume is not None and self._resume.epoch != epoch:
            self._resume = None
        self.position = copy.deepcopy(self._resume) if self._resume is not None else Position(epoch=epoch)

    @property
    def skipped(self) -> int:
        """Samples skipped so far, by every worker."""
        return int(self._shared[1:].sum())

    def count_skip(self, worker: int) -> None:
        self._shared[1 + worker % SKIP_SLOTS] += 1

    def state_dict(self, identity: Mapping[str, Any]) -> dict[str, Any]:
        """The current position, and ``identity``: the settings it is valid for."""
        pos = self.position
        world = pos.world_size if pos.world_size is not None else identity.get("world_size", 1)
        return {"format": STATE_FORMAT, "version": STATE_VERSION, "epoch": pos.epoch, "num_workers": pos.num_workers,
                "consumed": list(pos.consumed), "rotation": pos.rotation, **identity, "world_size": world,
                "legs": [{"world_size": g.world_size, "num_workers": g.num_workers, "consumed": list(g.consumed)}
                         for g in pos.legs]}

    def load_state_dict(self, state: Mapping[str, Any], identity: Mapping[str, Any]) -> None:
        """Resume from ``state`` at the next iteration; ``ValueError`` if it is not a state, is
        malformed, or was saved with settings other than ``identity``."""
        fmt = state.get("format") if isinstance(state, Mapping) else type(state).__name__
        if fmt != STATE_FORMAT:
            raise ValueError(f"not a StreamingKinetics state (format={fmt!r}, expected {STATE_FORMAT!r})")
        if state.get("version") not in READABLE_STATE_VERSIONS:
            raise ValueError(f"StreamingKinetics state version {state.get('version')!r} is not one of "
                             f"{READABLE_STATE_VERSIONS}")
        for key, mine in sorted(identity.items(), key=lambda item: item[0] not in _CHANGED):  # why first: a changed dataset
            if key in ELASTIC or (key in _CHANGED and key not in state):
                continue
            if state.get(key) != mine:
                raise ValueError(f"state was saved with {key}={state.get(key)!r}, this dataset has {key}={mine!r}"
                                 + _CHANGED.get(key, ""))
        W = state.get("num_workers")
        consumed = [int(c) for c in state.get("consumed", [])]
        rotation = int(state.get("rotation", 0))
        if W is not None and (not isinstance(W, int) or W < 1 or len(consumed) != W or not 0 <= rotation < W):
            raise ValueError(f"malformed state: num_workers={W!r}, consumed={consumed!r}, rotation={rotation!r}")
        epoch = int_option("epoch", state.get("epoch"), 0)
        world = _positive("world_size", state.get("world_size", identity.get("world_size", 1)))
        legs = _legs(state.get("legs", []))
        self._shared[0] = epoch
        self._resume = Position(epoch, W, consumed, rotation, world, legs) if W is not None else None
        self.position = copy.deepcopy(self._resume) if W is not None else Position(epoch)

    def start(self, epoch: int, num_workers: int, world_size: int = 1) -> Position:
        """The position an iteration of ``epoch`` with ``num_workers`` workers (0 counts as 1)
        on ``world_size`` ranks starts from: the saved one when both match it (the exact
        continuation), else a new leg after it (a saved leg that yielded nothing is left out)."""
        res = self._resume if self._resume is not None and self._resume.epoch == epoch else None
        if res is None:
            return Position(epoch, num_workers, [0] * num_workers, 0, world_size)
        if (res.num_workers, res.world_size) == (num_workers, world_size):
            return copy.deepcopy(res)
        assert res.num_workers is not None and res.world_size is not None  # a resume point has both
        done = [Leg(res.world_size, res.num_workers, tuple(res.consumed))] if any(res.consumed) else []
        return Position(epoch, num_workers, [0] * num_workers, 0, world_size, list(res.legs) + done)

    def track(self, start: Position, samples: Iterable[T]) -> Iterator[T]:
        """``samples``, an iteration in this process (no DataLoader workers) from ``start``,
        with the position following them: each sample yielded is consumed; at the end the
        epoch is finished."""
        self.position = start
        for sample in samples:
            self.position.consumed[0] += 1
            yield sample
        self.finished()

    def finished(self) -> None:
        """The epoch was iterated to its end: a later iteration starts it afresh."""
        self._resume = None

    def schedule(self, pos: Position, length: int, batch_size: Optional[int], drop_last: bool) -> Iterator[None]:
        """Account the batches a DataLoader with ``pos.num_workers`` workers yields from a
        rank's ``length`` samples (of the leg ``pos`` is in, from :meth:`start`), one step per
        batch, in its order: round-robin over workers (in order), skipping workers that have run out."""
        num_workers = pos.num_workers or 1
        self.position = pos
        length_of = part_lengths(length, num_workers)
        rot = pos.rotation
        left = [batches_of(length_of[(i + rot) % num_workers] - pos.consumed[(i + rot) % num_workers], batch_size, drop_last)
                for i in range(num_workers)]
        return self._account(pos, rot, length_of, left, batch_size)

    def _account(self, pos: Position, rot: int, length: list[int], left: list[int],
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
        self.finished()


class ResumableDataset(IterableDataset):
    """An iterable dataset whose position is known batch by batch: what
    :class:`~clipshards.loader.ClipLoader` drives. It keeps an :class:`EpochProgress` in
    ``progress`` and says which settings a saved position is valid for (:meth:`state_identity`)."""

    progress: EpochProgress

    def __len__(self) -> int:
        raise NotImplementedError

    def state_identity(self) -> dict[str, Any]:
        """The settings a saved position is only valid with (a state saved with others is
        refused, except ``world_size``: see :data:`ELASTIC`)."""
        raise NotImplementedError

    def rank_and_world(self) -> tuple[int, int]:
        """``(rank, world_size)`` this dataset yields for ((0, 1) unless a subclass is distributed)."""
        return 0, 1

    def world_size(self) -> int:
        return self.rank_and_world()[1]

    def start_position(self, num_workers: int) -> Position:
        """Where an iteration of the current epoch with ``num_workers`` workers starts."""
        return self.progress.start(self.epoch, max(1, num_workers), self.world_size())

    def leg_length(self, start: Position) -> int:
        """Samples this rank yields in the leg ``start`` is in (``len(self)`` in a fresh epoch)."""
        return self.leg_plan(start).per_rank if start.legs else len(self)

    def leg_plan(self, start: Position) -> EpochPlan:
        """The plan of the leg ``start`` is in: the epoch's, or what its earlier legs left."""
        plan = self._plan(start.epoch)
        return plan.after(start.legs) if start.legs else plan

    def _plan(self, epoch: int) -> EpochPlan:
        """The epoch's plan at this world size (needed to resume at another world size or worker count)."""
        raise ValueError(f"{type(self).__name__} resumes only with the world size and worker count it saved")

    def decoding_in_collate(self, on: bool) -> ContextManager[None]:
        """While in effect, samples may reach a collate that can finish decoding them (no-op here)."""
        return contextlib.nullcontext()

    @property
    def epoch(self) -> int:
        return self.progress.epoch

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose order the next iteration yields (as ``DistributedSampler.set_epoch``)."""
        self.progress.set_epoch(epoch)

    @property
    def skipped(self) -> int:
        """Clips skipped under ``errors="skip"`` so far (all workers of this process's loaders)."""
        return self.progress.skipped

    def state_dict(self) -> dict[str, Any]:
        """The position in the current epoch, to restart from with :meth:`load_state_dict`.

        Exact when this dataset is iterated in this process (``num_workers=0``) or through a
        :class:`ClipLoader`; a plain ``DataLoader`` with workers cannot report what it consumed.
        """
        return self.progress.state_dict(self.state_identity())

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from ``state`` (from :meth:`state_dict`) at the next iteration: the epoch is
        set to the saved one and each worker skips what it had yielded, without reading it.
        Call it before the DataLoader is iterated (persistent workers copy the dataset once)."""
        self.progress.load_state_dict(state, self.state_identity())

    def batches_per_epoch(self, num_workers: int, batch_size: Optional[int], drop_last: bool = False) -> int:
        """Batches a DataLoader over this dataset yields on this rank in a full epoch."""
        return batches_per_epoch(len(self), num_workers, batch_size, drop_last)


def _positive(name: str, value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"malformed state: {name}={value!r} (an int >= 1)")
    return value


def _legs(raw: Any) -> list[Leg]:
    """The earlier legs of a state's epoch, each checked."""
    if not isinstance(raw, list):
        raise ValueError(f"malformed state: legs={raw!r} (a list)")
    legs = []
    for g in raw:
        if not isinstance(g, Mapping):
            raise ValueError(f"malformed state: leg {g!r} (a mapping)")
        world, workers = _positive("world_size", g.get("world_size")), _positive("num_workers", g.get("num_workers"))
        consumed = g.get("consumed")
        if (not isinstance(consumed, list) or len(consumed) != workers
                or not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in consumed)):
            raise ValueError(f"malformed state: leg consumed={consumed!r} for num_workers={workers}")
        legs.append(Leg(world, workers, tuple(consumed)))
    return legs
