"""A DataLoader that knows how far it got, so training can stop and resume mid-epoch."""

from __future__ import annotations

from typing import Any, Iterator, Mapping, Optional

from torch.utils.data import DataLoader

from .collate import collate_clips
from .datasets import StreamingKinetics

__all__ = ["ClipLoader"]


class ClipLoader(DataLoader):
    """``torch.utils.data.DataLoader`` over a :class:`StreamingKinetics`, with
    :meth:`state_dict` / :meth:`load_state_dict` and an exact ``len()``.

    A plain DataLoader hands batches from its workers round-robin (``in_order=True``); this
    subclass counts the batches it yields and credits each to the worker that made it, so
    the dataset's position is known in the main process. After a restart from a saved
    state, the workers' roles are rotated so the next batch comes from the worker that
    would have made it: the resumed run yields exactly the batches the uninterrupted one
    would have (same world size and ``num_workers``). ``collate_fn`` defaults to
    :func:`collate_clips` (with ``batch_size=None`` samples come unbatched, as they are).
    """

    def __init__(self, dataset: StreamingKinetics, batch_size: Optional[int] = 1, **kwargs: Any) -> None:
        if not isinstance(dataset, StreamingKinetics):
            raise ValueError(f"ClipLoader needs a StreamingKinetics, got {type(dataset).__name__}")
        if kwargs.get("in_order", True) is not True:
            raise ValueError("in_order=False makes the batch order depend on timing; ClipLoader needs in_order=True")
        if batch_size is not None:
            kwargs.setdefault("collate_fn", collate_clips)
        super().__init__(dataset, batch_size=batch_size, **kwargs)

    def __iter__(self) -> Iterator[Any]:
        dataset: StreamingKinetics = self.dataset  # type: ignore[assignment]
        if self.num_workers == 0:
            yield from super().__iter__()
            return
        schedule = dataset._schedule(self.num_workers, self.batch_size, self.drop_last)
        for batch in super().__iter__():
            next(schedule)
            yield batch
        leftover = sum(1 for _ in schedule)
        if leftover:
            raise RuntimeError(f"ClipLoader expected {leftover} more batches than the DataLoader yielded")

    def __len__(self) -> int:
        dataset: StreamingKinetics = self.dataset  # type: ignore[assignment]
        return dataset.batches_per_epoch(self.num_workers, self.batch_size, self.drop_last)

    def state_dict(self) -> dict[str, Any]:
        """The dataset's position (see :meth:`StreamingKinetics.state_dict`)."""
        return self.dataset.state_dict()  # type: ignore[attr-defined]

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume from ``state`` at the next iteration (call it before iterating)."""
        self.dataset.load_state_dict(state)  # type: ignore[attr-defined]
