"""What every read path of the transport shares: read buffers, the sequential range reader, and the counters.

Reads fill writable buffers (``bytearray``, or for clip payloads an uninitialised one from
:func:`empty_buffer`): arrays parsed from them are writable, so tensors can share their
memory without a copy.
"""

from __future__ import annotations

import io
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Callable, Optional

import numpy as np

from .buffers import MIN_POOLED, pool

__all__ = ["RangeReader", "TransportStats", "empty_buffer", "check_range"]


def check_range(url: str, start: int, end: Optional[int]) -> None:
    """``ValueError`` naming ``url`` unless ``[start, end)`` is a byte range (``end`` None: to the file's end)."""
    if start < 0 or (end is not None and end < start):
        raise ValueError(f"byte range [{start}, {end}) of {url} is not a valid range")


def empty_buffer(length: int) -> memoryview:
    """A writable byte buffer of ``length`` bytes that is not zero-filled (it is about to be
    read into); arrays viewing it are writable, so ``torch.from_numpy`` needs no copy. Large
    buffers come from the process's :class:`~clipshards.loader.buffers.BufferPool`."""
    if length >= MIN_POOLED:
        return pool().buffer(length)
    return memoryview(np.empty(length, dtype=np.uint8))


@dataclass
class TransportStats:
    """Requests and bytes per file name, retries and cache hits, in this process (for tests and
    benchmarks). A remote request is one ranged read; a local one is one open."""

    requests: Counter = field(default_factory=Counter)
    bytes: Counter = field(default_factory=Counter)
    retries: int = 0
    cache_hits: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, name: str, nbytes: int) -> None:
        """One request for ``name`` that returned ``nbytes`` bytes."""
        with self._lock:
            self.requests[name] += 1
            self.bytes[name] += nbytes

    def retried(self) -> None:
        with self._lock:
            self.retries += 1

    def cache_hit(self) -> None:
        with self._lock:
            self.cache_hits += 1

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_lock", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()


class RangeReader:
    """Sequential reads over bytes ``[start, end)`` of one file; ``readinto`` fills a buffer."""

    def __init__(self, fh: BinaryIO, *, url: str, start: int, end: Optional[int], on_read: Callable[[int], Any]) -> None:
        self._fh = fh
        self.url = url
        self.pos = start
        self.end = end
        self._on_read = on_read

    def readinto(self, buf: bytearray | memoryview) -> int:
        """Fill ``buf`` from the current position; fewer bytes only at the range's or file's end."""
        view = memoryview(buf).cast("B")
        want = len(view) if self.end is None else max(0, min(len(view), self.end - self.pos))
        got = 0
        while got < want:
            n = _readinto(self._fh, view[got:want])
            if not n:
                break
            got += n
        self.pos += got
        self._on_read(got)
        return got

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> "RangeReader":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _readinto(fh: BinaryIO, view: memoryview) -> int:
    readinto = getattr(fh, "readinto", None)
    if readinto is not None:
        try:
            return readinto(view) or 0
        except (NotImplementedError, io.UnsupportedOperation):
            pass
    data = fh.read(len(view))
    view[: len(data)] = data
    return len(data)
