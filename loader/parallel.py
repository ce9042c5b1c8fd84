"""A batch's clips read or decoded on the cores the calling process may use, the caller included.

Reading a raw clip (``preadv`` and its XXH3 hash) and decoding a JPEG frame (simplejpeg) both
release the GIL, so the clips of one batch spread over threads run side by side. The caller
works too, taking the next clip as the helpers do, so a helper the machine does not schedule
costs no more than the clip it took. How many threads: :func:`batch_threads`, which follows
``torch.get_num_threads()``: the machine's cores in a main process (``num_workers=0``), 1 in a
DataLoader worker (PyTorch sets it so), and whatever a user sets with ``torch.set_num_threads``.
"""

from __future__ import annotations

import itertools
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Optional

import torch

__all__ = ["batch_threads", "each_index"]

_executor: Optional[ThreadPoolExecutor] = None
_size = 0
_lock = threading.Lock()


def batch_threads() -> int:
    """Threads a batch's clips are spread over: ``torch.get_num_threads()``, at least 1."""
    return max(1, torch.get_num_threads())


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
