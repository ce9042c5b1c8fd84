"""A batch's clips read or decoded on the cores the calling process may use, the caller included.

Reading a raw clip (``preadv`` and its XXH3 hash) and decoding a JPEG frame (simplejpeg) both
release the GIL, so the clips of one batch spread over threads run side by side. The caller
works too, taking the next clip as the helpers do, so a helper the machine does not schedule
costs no more than the clip it took. How many threads: :func:`batch_threads`, which follows
``torch.get_num_threads()``: the machine's cores in a main process (``num_workers=0``), 1 in a
DataLoader worker (PyTorch sets it so), and whatever a user sets with ``torch.set_num_threads``.

A dataset iterated clip by clip in the main process (no DataLoader workers, no batch for the
collate to fill) reads ahead instead (:func:`in_groups`): it takes the next
:func:`read_ahead_depth` clips with their pixels unread or JPEG frames undecoded (cheap), then
reads and decodes them on :func:`read_threads` threads, and hands them out one by one. Handing
each clip to a helper thread alone does not pay here: waking a thread costs tens of
microseconds on a VM, as much as a small clip's read, so the work goes out a group at a time.
That is a pipeline stage, as DataLoader's pin-memory thread is, not intra-op parallelism: it
takes one helper thread even where ``torch.get_num_threads()`` is 1; ``read_ahead=0`` turns it off.
"""

from __future__ import annotations

import itertools
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Iterator, Optional, TypeVar

import torch

from clipshards.convert.prefetch import usable_cores

__all__ = ["READ_AHEAD", "batch_threads", "each_index", "in_groups", "read_ahead_depth", "read_threads"]

READ_AHEAD = 8
"""Clips read ahead by default (``read_ahead="auto"``) where the process may use two cores or
more: a group large enough that one thread wake-up per group costs little, in little memory
(8 raw 16 x 256 x 340 clips: 34 MB)."""

T = TypeVar("T")
U = TypeVar("U")

_executor: Optional[ThreadPoolExecutor] = None
_size = 0
_lock = threading.Lock()


def batch_threads() -> int:
    """Threads a batch's clips are spread over: ``torch.get_num_threads()``, at least 1."""
    return max(1, torch.get_num_threads())


def read_ahead_depth(read_ahead: int | str) -> int:
    """Clips read ahead as a group: ``read_ahead`` (an integer >= 0, checked by the caller; 0 or
    1: none), or for ``"auto"`` :data:`READ_AHEAD` where this process may use two cores or more
    (and 0 on one core, where a helper thread would only take turns with its caller)."""
    if read_ahead == "auto":
        return READ_AHEAD if usable_cores() > 1 else 0
    return int(read_ahead) if int(read_ahead) > 1 else 0


def read_threads() -> int:
    """Threads a group read ahead is spread over: :func:`batch_threads`, at least 2 (the caller
    and one helper), at most the cores this process may use."""
    return max(1, min(usable_cores(), max(2, batch_threads())))


def in_groups(items: Iterable[T], work: Callable[[T], U], *, size: int, threads: int) -> Iterator[U]:
    """``work(item)`` of each of ``items``, in order, computed ``size`` items at a time over up to
    ``threads`` threads (:func:`each_index`). An exception of ``work`` or of ``items`` is raised
    where a loop in order would have raised it: after the results before it were yielded.
    Closing this generator closes ``items``."""
    it = iter(items)
    try:
        while True:
            group: list[T] = []
            failed: Optional[BaseException] = None
            try:
                for item in itertools.islice(it, size):
                    group.append(item)
            except Exception as exc:  # noqa: BLE001 - raised below, after the items before it
                failed = exc
            results: list[tuple[bool, object]] = [(False, None)] * len(group)

            def one(i: int) -> None:
                try:
                    results[i] = (True, work(group[i]))
                except Exception as exc:  # noqa: BLE001 - raised at its place in the order
                    results[i] = (False, exc)

            each_index(len(group), one, threads=threads)
            for ok, value in results:
                if not ok:
                    raise value  # type: ignore[misc]
                yield value  # type: ignore[misc]
            if failed is not None:
                raise failed
            if len(group) < size:
                return
    finally:
        close = getattr(it, "close", None)
        if close is not None:
            close()


def _helpers(n: int) -> ThreadPoolExecutor:
    """This process's pool of at least ``n`` helper threads (a forked child makes its own)."""
    global _executor, _size
    with _lock:
        if _executor is None or _size < n:
            old, _executor, _size = _executor, ThreadPoolExecutor(n, thread_name_prefix="clipshards-batch"), n
            if old is not None:
                old.shutdown(wait=False)
        return _executor


def _forget() -> None:
    global _executor, _size, _lock
    _executor, _size, _lock = None, 0, threading.Lock()


os.register_at_fork(after_in_child=_forget)


def each_index(count: int, work: Callable[[int], None], *, threads: int) -> None:
    """``work(i)`` for each ``i`` in ``range(count)``, once each, over up to ``threads`` threads
    (the caller one of them). Returns when every call has returned; when calls raised, raises
    the exception of the lowest ``i`` (what a loop in order would have raised first)."""
    helpers = min(threads, count) - 1
    if helpers <= 0:
        for i in range(count):
            work(i)
        return
    taken = itertools.count()  # next() on it is atomic under the GIL: each index goes to one thread
    errors: dict[int, BaseException] = {}

    def drain() -> None:
        while (i := next(taken)) < count:
            try:
                work(i)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller below
                errors[i] = exc

    pool = _helpers(helpers)
    futures = [pool.submit(drain) for _ in range(helpers)]
    drain()
    for f in futures:
        f.result()
    if errors:
        raise errors[min(errors)]
