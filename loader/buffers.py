"""Memory: large buffers reused once nothing refers to them any more.

A raw clip is megabytes and a batch of them tens of megabytes. Freshly allocated memory of
that size comes from ``mmap`` and is paid for again on every use (page faults, the kernel
zeroing each page): measured, that is as much as reading the clip itself. The loader
therefore takes clip read buffers and batch tensors from a :class:`BufferPool`.

A pooled buffer is a ``torch.UntypedStorage``; every tensor, NumPy array or memoryview
made from it holds a reference to that storage (NumPy views through the array they were
made from). The pool keeps one reference itself, so a storage whose use count is 1 is
referenced by nothing else and may be handed out again. Buffers handed to the caller are
never written by the pool while anything still refers to them.

:class:`SharedSlots` does the same across processes for batches made in DataLoader
workers: the worker fills a batch in a shared-memory slot it owns, the main process marks
the slot free (in a small shared flag array) once the batch is no longer referenced there,
and the worker fills it again instead of creating, faulting in and passing a new
shared-memory segment for every batch.
"""

from __future__ import annotations

import ctypes
import logging
import math
import os
import sys
import threading
import weakref
from typing import Any, Optional

import numpy as np
import torch

logger = logging.getLogger(__name__)

__all__ = ["BufferPool", "SharedSlots", "advise_huge_pages", "carve", "itemsize", "pool", "shared_storage", "slots_by_token",
           "use_count"]

MIN_POOLED = 1 << 20  # smaller buffers: malloc serves them from its heap without page faults
POOLED_CLIP = 64 << 10
"""A clip read ahead on several threads takes pooled memory from this size (see :meth:`BufferPool.take`)."""
_ROUND = 1 << 16

_use_count_fn = getattr(torch._C, "_storage_Use_Count", None)


def use_count(storage: torch.UntypedStorage) -> int:
    """Owners of ``storage``'s memory (tensors, the NumPy arrays made from them, storage
    objects); 0 when this torch cannot tell (pooling is then off)."""
    if _use_count_fn is None:
        return 0
    return int(_use_count_fn(storage._cdata))


def shared_storage(nbytes: int) -> torch.UntypedStorage:
    """A storage in shared memory, created there (``share_memory_`` would allocate, then copy)."""
    return torch.UntypedStorage._new_shared(nbytes)


_HUGE = 2 << 20
_madvise: Any = None


def advise_huge_pages(storage: torch.UntypedStorage) -> None:
    """Ask Linux for transparent huge pages under the whole 2 MiB blocks of ``storage`` (before its
    pages are first touched; THP is commonly "madvise" only). A raw batch is tens of megabytes
    written once per batch: with 2 MiB pages the copy of a clip into it measured 10-15% faster
    (fewer TLB misses). Nothing happens elsewhere, or when the call fails."""
    global _madvise
    if _madvise is None:
        _madvise = False
        if sys.platform.startswith("linux"):
            try:
                _madvise = ctypes.CDLL(None, use_errno=True).madvise
                _madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
            except (OSError, AttributeError):
                pass
    if not _madvise or storage.nbytes() < 2 * _HUGE:
        return
    start = -(-storage.data_ptr() // _HUGE) * _HUGE
    end = (storage.data_ptr() + storage.nbytes()) // _HUGE * _HUGE
    if end > start:
        _madvise(start, end - start, 14)  # MADV_HUGEPAGE; an error (EINVAL on old kernels) changes nothing


def _u8(storage: torch.UntypedStorage) -> torch.Tensor:
    return torch.empty(0, dtype=torch.uint8).set_(storage)


def itemsize(dtype: torch.dtype) -> int:
    return torch.empty(0, dtype=dtype).element_size()


def carve(memory: torch.Tensor, offset: int, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """A ``dtype`` tensor of ``shape`` at byte ``offset`` (a multiple of the item size) of the
    uint8 tensor ``memory``, sharing its memory."""
    return torch.empty(0, dtype=dtype).set_(memory.untyped_storage(), (memory.storage_offset() + offset) // itemsize(dtype), shape)


class BufferPool:
    """Reusable storages of at least :data:`MIN_POOLED` bytes, at most ``max_buffers`` of
    them and ``max_bytes`` in all; requests beyond that get unpooled memory."""

    def __init__(self, *, max_buffers: int = 24, max_bytes: int = 512 << 20) -> None:
        self.max_buffers = max_buffers
        self.max_bytes = max_bytes
        self._free_check = _use_count_fn is not None
        self._storages: list[torch.UntypedStorage] = []
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def _new(self, nbytes: int) -> torch.UntypedStorage:
        storage = torch.UntypedStorage(nbytes)
        advise_huge_pages(storage)
        return storage

    def take(self, nbytes: int, *, minimum: int = MIN_POOLED) -> torch.Tensor:
        """A uint8 tensor of ``nbytes`` bytes whose memory nothing else refers to; its content
        is undefined (it is about to be overwritten). The tensor is made while the pool's lock
        is held, so no other thread can see the memory as free once it is handed out. Requests
        under ``minimum`` bytes get memory of their own (a caller that makes many such buffers
        on several threads lowers it: a freed buffer of hundreds of KB goes back to the system,
        and on a VM each thread's next one costs page faults and cross-core TLB flushes)."""
        if nbytes < minimum or not self._free_check:
            return _u8(self._new(nbytes))
        with self._lock:
            best = None
            snug = -(-nbytes // _ROUND) * _ROUND  # the size this request would be given: none fits better
            for s in self._storages:
                size = s.nbytes()
                if nbytes <= size <= nbytes + nbytes // 4 and use_count(s) == 1 and (best is None or size < best.nbytes()):
                    best = s
                    if size == snug:
                        break
            if best is not None:
                self.hits += 1
                return _u8(best)[:nbytes]
            self.misses += 1
            cap = -(-nbytes // _ROUND) * _ROUND
            fresh = self._new(cap)
            if len(self._storages) >= self.max_buffers or sum(s.nbytes() for s in self._storages) + cap > self.max_bytes:
                idle = [s for s in self._storages if use_count(s) == 1]
                if not idle:
                    return _u8(fresh)[:nbytes]
                self._storages.remove(min(idle, key=lambda s: s.nbytes()))
            self._storages.append(fresh)
            return _u8(fresh)[:nbytes]

    def buffer(self, nbytes: int) -> memoryview:
        """A writable byte buffer of ``nbytes`` (uninitialised) for reading into; arrays
        parsed from it are writable, so ``torch.from_numpy`` needs no copy."""
        return memoryview(self.take(nbytes).numpy())

    def tensor(self, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        """An uninitialised contiguous tensor of ``shape`` and ``dtype``."""
        return carve(self.take(math.prod(shape) * itemsize(dtype)), 0, shape, dtype)



_by_token: "weakref.WeakValueDictionary[str, SharedSlots]" = weakref.WeakValueDictionary()
"""The main process's slots by token: a batch received names its slots by their token."""


def slots_by_token(token: str) -> "SharedSlots":
    """The :class:`SharedSlots` of this process whose token is ``token``."""
    slots = _by_token.get(token)
    if slots is None:
        raise RuntimeError(f"a batch came in shared slots this process does not have (token {token})")
    return slots


_pool: Optional[BufferPool] = None
_pool_lock = threading.Lock()


def pool() -> BufferPool:
    """This process's pool (a forked child starts with an empty one)."""
    global _pool
    if _pool is None:
        with _pool_lock:
            if _pool is None:
                _pool = BufferPool()
    return _pool


def _forget_pool() -> None:
    global _pool
    _pool = None


os.register_at_fork(after_in_child=_forget_pool)


class SharedSlots:
    """Shared-memory batch slots that DataLoader workers reuse, released by the main process.

    Made in the main process before the workers start, and handed to them inside the
    ``collate_fn``. ``flags[w * per_worker + k]`` is 1 while slot ``k`` of worker ``w`` holds
    a batch the main process has not released. Each worker keeps its own slot storages
    (created on first use), so only the flags are shared up front.
    """

    def __init__(self, num_workers: int, per_worker: int) -> None:
        if num_workers < 1 or per_worker < 1:
            raise ValueError(f"SharedSlots needs num_workers >= 1 and per_worker >= 1, got {num_workers}, {per_worker}")
        self.num_workers = num_workers
        self.per_worker = per_worker
        self.flags = torch.zeros(num_workers * per_worker, dtype=torch.int32).share_memory_()
        self.token = os.urandom(8).hex()
        _by_token[self.token] = self
        self._init_local()

    def _init_local(self) -> None:
        self._view = self.flags.numpy()
        self._mine: dict[int, torch.UntypedStorage] = {}  # worker side: slot -> storage
        self._sent: set[int] = set()  # worker side: slots whose storage the main process has
        self._mapped: dict[int, torch.UntypedStorage] = {}  # main side: slot -> its storage, kept mapped
        self._in_use: set[int] = set()  # main side: delivered, not yet released

    def __getstate__(self) -> dict[str, Any]:
        return {"num_workers": self.num_workers, "per_worker": self.per_worker, "flags": self.flags, "token": self.token}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._init_local()

    # -- worker side --------------------------------------------------------------------------

    def acquire(self, worker: int, nbytes: int) -> Optional[tuple[int, torch.Tensor]]:
        """A free slot of ``worker`` with room for ``nbytes``, now marked in use; None when all
        its slots hold batches the main process still uses (the caller allocates as usual)."""
        if not 0 <= worker < self.num_workers:
            return None
        flags = self._view
        for k in range(worker * self.per_worker, (worker + 1) * self.per_worker):
            if flags[k] != 0:
                continue
            storage = self._mine.get(k)
            if storage is None or storage.nbytes() < nbytes:
                storage = shared_storage(-(-nbytes // _ROUND) * _ROUND)
                self._mine[k] = storage
                self._sent.discard(k)
            flags[k] = 1
            return k, _u8(storage)[:nbytes]
        return None

    def wire(self, slot: int) -> Optional[torch.UntypedStorage]:
        """What a batch in ``slot`` sends of its memory: the slot's storage the first time (its
        file descriptor goes through a socket to the main process, which maps it), nothing
        after (the main process keeps it mapped: :meth:`mapped`). Batches of one worker are
        received in the order they are sent, and a slot is filled again only after the main
        process released it, so the storage always arrives before a batch that needs it."""
        if slot in self._sent:
            return None
        self._sent.add(slot)
        return self._mine[slot]

    # -- main side ----------------------------------------------------------------------------

    def mapped(self, slot: int, storage: Optional[torch.UntypedStorage]) -> torch.UntypedStorage:
        """The storage of a batch received in ``slot``: ``storage`` when it came with it (kept
        for the batches after), else the one kept."""
        if storage is not None:
            self._mapped[slot] = storage
            return storage
        try:
            return self._mapped[slot]
        except KeyError:
            raise RuntimeError(f"a batch came in shared slot {slot} before its memory did") from None

    def delivered(self, slot: int, storage: torch.UntypedStorage) -> None:
        """The main process received a batch in ``slot`` (backed by ``storage``)."""
        self._mapped[slot] = storage
        self._in_use.add(slot)

    def release(self, slot: int) -> None:
        """Mark ``slot`` free now (its batch was copied, e.g. pinned, and dropped)."""
        self._in_use.discard(slot)
        self._view[slot] = 0

    def release_unused(self) -> int:
        """Mark free every delivered slot whose batch nothing references any more; returns
        how many were freed. The main process keeps its mapping of the slot (so the next
        batch in it arrives without a new ``mmap``): that reference is the 1 counted."""
        freed = [slot for slot in self._in_use if use_count(self._mapped[slot]) == 1]
        for slot in freed:
            self._in_use.discard(slot)
            self._view[slot] = 0
        return len(freed)
