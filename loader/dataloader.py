"""A DataLoader that knows how far it got, so training can stop and resume mid-epoch.

It drives any :class:`~clipshards.loader.progress.ResumableDataset` (in practice a
:class:`~clipshards.loader.StreamingKinetics`): the dataset's :class:`EpochProgress` replays the
DataLoader's batch order, so the position is known in the main process.
"""

from __future__ import annotations

from typing import Any, ContextManager, Iterator, Mapping, Optional

from torch.utils.data import DataLoader

from .buffers import SharedSlots
from .collate import SlotCollate, Slotted, collate_clips
from .progress import ResumableDataset

__all__ = ["ClipLoader"]


class ClipLoader(DataLoader):
    """``torch.utils.data.DataLoader`` over a :class:`StreamingKinetics` (any
    :class:`~clipshards.loader.progress.ResumableDataset`), with
    :meth:`state_dict` / :meth:`load_state_dict` and an exact ``len()``.

    A plain DataLoader hands batches from its workers round-robin (``in_order=True``); this
    subclass counts the batches it yields and credits each to the worker that made it, so
    the dataset's position is known in the main process. After a restart from a saved
    state, the workers' roles are rotated so the next batch comes from the worker that
    would have made it: the resumed run yields exactly the batches the uninterrupted one
    would have (same world size and ``num_workers``). Resumed at another world size or
    ``num_workers``, the rest of the epoch yields every clip not yet yielded once across the
    ranks, equal batch counts per rank (see :mod:`.progress`); ``len()`` stays a whole
    epoch's. ``collate_fn`` defaults to
    :func:`collate_clips` (with ``batch_size=None`` samples come unbatched, the tuples the
    dataset yields).

    With workers and the default ``collate_fn``, each worker builds its batches in a few
    shared-memory slots it reuses (:class:`~clipshards.loader.buffers.SharedSlots`): a slot
    is filled again only after the batch in it is no longer referenced in this process, so
    holding on to batches is safe (the worker then allocates new memory, as DataLoader does).
    With ``batch_size=None`` each clip is made in a slot the same way (:func:`~.collate.place_clip`).
    """

    def __init__(self, dataset: ResumableDataset, batch_size: Optional[int] = 1, **kwargs: Any) -> None:
        if not isinstance(dataset, ResumableDataset):
            raise ValueError(f"ClipLoader needs a StreamingKinetics, got {type(dataset).__name__}")
        if kwargs.get("in_order", True) is not True:
            raise ValueError("in_order=False makes the batch order depend on timing; ClipLoader needs in_order=True")
        if batch_size is not None and kwargs.get("collate_fn", collate_clips) is collate_clips:
            kwargs["collate_fn"] = SlotCollate()
        elif batch_size is None and "collate_fn" not in kwargs:  # clips one by one, each read into its slot
            kwargs["collate_fn"] = SlotCollate(single=True)
        super().__init__(dataset, batch_size=batch_size, **kwargs)
        self._slots: Optional[SharedSlots] = None

    def __iter__(self) -> Iterator[Any]:
        dataset: ResumableDataset = self.dataset  # type: ignore[assignment]
        if self.num_workers == 0:
            with self._deferred_jpeg():
                yield from super().__iter__()
            return
        slots = self._slots_for_workers()
        start = dataset.start_position(self.num_workers)
        schedule = dataset.progress.schedule(start, dataset.leg_length(start), self.batch_size, self.drop_last)
        with self._deferred_jpeg():
            batches = super().__iter__()
        for batch in batches:
            next(schedule)
            if isinstance(batch, Slotted):
                batch = self._unwrap(batch, slots)
            yield batch
        leftover = sum(1 for _ in schedule)
        if leftover:
            raise RuntimeError(f"ClipLoader expected {leftover} more batches than the DataLoader yielded")

    def _deferred_jpeg(self) -> ContextManager[None]:
        """While the dataset is iterated for this loader (in this process, or copied into the
        workers started here), JPEG clips reach the collate undecoded and are decoded straight
        into the batch: one clip-sized copy fewer. Only with the default collate (and, the
        dataset decides, no ``transform`` and ``errors="raise"``), so nothing else can see the difference."""
        dataset: ResumableDataset = self.dataset  # type: ignore[assignment]
        collate = self.collate_fn
        # one clip at a time in this process: the clip read whole is already in memory of its own
        single_here = isinstance(collate, SlotCollate) and collate.single and self.num_workers == 0
        return dataset.decoding_in_collate(isinstance(collate, SlotCollate) and not single_here)

    def _slots_for_workers(self) -> Optional[SharedSlots]:
        """The slots the workers about to start get: new ones for new workers (workers of an
        earlier iterator may still be alive with theirs), the same for persistent workers."""
        if not isinstance(self.collate_fn, SlotCollate):
            return None
        if self._slots is None or not (self.persistent_workers and self._iterator is not None):
            per_worker = (self.prefetch_factor or 2) + 2
            self._slots = SharedSlots(self.num_workers, per_worker)
            self.collate_fn.slots = self._slots
        return self._slots

    @staticmethod
    def _unwrap(item: Slotted, slots: Optional[SharedSlots]) -> Any:
        if slots is None:
            raise RuntimeError("a batch came in a shared slot, but this loader has none")
        slots.release_unused()
        if item.pinned:
            slots.release(item.slot)
        else:
            slots.delivered(item.slot, item.storage)
        return item.batch

    def __len__(self) -> int:
        dataset: ResumableDataset = self.dataset  # type: ignore[assignment]
        return dataset.batches_per_epoch(self.num_workers, self.batch_size, self.drop_last)

    def state_dict(self) -> dict[str, Any]:
        """The dataset's position (see :meth:`StreamingKinetics.state_dict`)."""
        return self.dataset.state_dict()  # type: ignore[attr-defined]

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume from ``state`` at the next iteration (call it before iterating)."""
        self.dataset.load_state_dict(state)  # type: ignore[attr-defined]
