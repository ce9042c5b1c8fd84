"""Local files of one folder, read straight into buffers, through descriptors kept open.

No retries or cache: the page cache is the cache. Only regular files are opened (a FIFO or a
device is refused before anything is read), and no read goes past the size the file has when
it is read. Nothing is mapped: a clip is copied into memory of its own, so the tensors made
from it never change when its shard is rewritten, and a shard cut short gives a short read (an
error naming the clip), never SIGBUS.

Each thread keeps the last :data:`KEEP_OPEN` files it read open (:class:`KeptFiles`): a raw clip
is then one ``stat`` and one ``preadv``, not an open, checks and a close (and a file not kept
is one ``open`` and one ``fstat``: clips in a random order of thousands of shards). The ``stat`` of the
path finds a file that was replaced (renamed over, deleted, a FIFO put in its place): its inode
differs, so it is opened afresh and checked as any. A forked child (a DataLoader worker) closes
its copies of the parent's and opens its own; :meth:`LocalFiles.release` closes them at the end
of an epoch.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections import OrderedDict
from typing import Any, Callable, Optional, Sequence

from clipshards.convert.storage import Location, open_regular, open_regular_fd

from .options import TransportOptions
from .ranges import RangeReader, TransportStats

__all__ = ["LocalFiles", "KeptFiles", "KEEP_OPEN", "PIECE", "preadv_full"]

KEEP_OPEN = 16
"""Files a thread keeps open: a worker reads a few shards at a time (its blocks, in turn)."""
PIECE = 512 * 1024
"""Bytes read at a time when each piece is hashed as it is read (``each=``): it is then still in
the core's cache (hashing a 4 MB clip afterwards, from memory, cost a third of reading it)."""


def preadv_full(fd: int, buffers: Sequence[memoryview | bytearray], offset: int) -> int:
    """Bytes from ``offset`` of ``fd`` into ``buffers`` in turn, ``preadv`` after ``preadv`` until
    they are full or the file ends; returns how many were read."""
    views = [memoryview(b).cast("B") for b in buffers if len(b)]
    got = 0
    while views:
        n = os.preadv(fd, views, offset + got)
        if n <= 0:
            break
        got += n
        while views and n >= len(views[0]):
            n -= len(views[0])
            views.pop(0)
        if views and n:
            views[0] = views[0][n:]
    return got


_threads_lock = threading.RLock()  # re-entrant: a collection inside may finish a reader, which releases its files
_forks = 0  # forks this process has gone through: kept descriptors belong to the count they were opened at


def _forked() -> None:
    global _forks
    _forks += 1


os.register_at_fork(after_in_child=_forked)


class KeptFiles:
    """One thread's open files, least recently read closed first beyond ``limit``: name ->
    ``(fd, st_dev, st_ino)``. Closes them when dropped (thread end, fork, :meth:`close`)."""

    def __init__(self, limit: int = KEEP_OPEN) -> None:
        self.forks = _forks  # a child of a fork sees another count (no getpid syscall a read)
        self.limit = limit
        self.files: OrderedDict[str, tuple[int, int, int]] = OrderedDict()

    def get(self, name: str, st: os.stat_result) -> Optional[int]:
        """The kept descriptor of ``name`` when it is still the file ``st`` describes (the same
        device and inode); a kept descriptor of another file is closed."""
        entry = self.files.get(name)
        if entry is None:
            return None
        if entry[1] == st.st_dev and entry[2] == st.st_ino:
            self.files.move_to_end(name)
            return entry[0]
        self.drop(name)
        return None

    def put(self, name: str, fd: int, st: os.stat_result) -> None:
        self.drop(name)
        self.files[name] = (fd, st.st_dev, st.st_ino)
        while len(self.files) > self.limit:
            os.close(self.files.popitem(last=False)[1][0])

    def drop(self, name: str) -> None:
        entry = self.files.pop(name, None)
        if entry is not None:
            os.close(entry[0])

    def close(self) -> None:
        while self.files:
            os.close(self.files.popitem()[1][0])

    def __del__(self) -> None:
        try:
            self.close()
        except OSError:
            pass


class LocalFiles:
    """Reads of the files under one local ``location``; a missing file raises
    ``FileNotFoundError`` naming its URL."""

    def __init__(self, location: Location, options: TransportOptions) -> None:
        self.location = location
        self.options = options
        self.stats = TransportStats()
        self._local = threading.local()

    def __getstate__(self) -> dict[str, Any]:
        state = {**self.__dict__, "stats": TransportStats()}
        del state["_local"]
        state.pop("_threads", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._local = threading.local()

    def _missing(self, name: str) -> FileNotFoundError:
        return FileNotFoundError(f"{self.location.join_url(name)} does not exist")

    def size(self, name: str) -> int:
        try:
            return os.path.getsize(self.location.path(name))
        except FileNotFoundError:
            raise self._missing(name) from None

    def _kept(self) -> KeptFiles:
        kept = getattr(self._local, "kept", None)
        if kept is None or kept.forks != _forks:  # after a fork: the parent's copies close here
            kept = self._local.kept = KeptFiles()
            threads = self.__dict__.get("_threads")
            if threads is None:
                threads = self.__dict__.setdefault("_threads", weakref.WeakSet())
            with _threads_lock:  # weakly: a thread that ends closes its files (KeptFiles.__del__)
                threads.add(kept)
        return kept

    def _fd(self, name: str) -> tuple[int, int]:
        """``(descriptor, size)`` of ``name`` now: the one this thread keeps open when the path
        still names that file, else the file opened afresh (only when it is a regular file: see
        :func:`~clipshards.convert.storage.open_regular`)."""
        kept = self._kept()
        path = self.location.path(name)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            kept.drop(name)
            raise self._missing(name) from None
        fd = kept.get(name, st)
        if fd is not None:
            return fd, st.st_size
        try:
            fd, st = open_regular_fd(path, self.location.join_url(name))
        except FileNotFoundError:
            raise self._missing(name) from None
        kept.put(name, fd, st)
        return fd, st.st_size

    def release(self) -> None:
        """Close the files every thread of this process keeps open (the end of an epoch: the
        helpers that read a batch's clips, :mod:`.parallel`, are idle then)."""
        with _threads_lock:
            kept = [k for k in self.__dict__.get("_threads", ()) if k.forks == _forks]
        for k in kept:
            k.close()

    def read(self, name: str, start: int, end: Optional[int], alloc: Callable[[int], Any], *,
             each: Optional[Callable[[memoryview], Any]] = None) -> Any:
        """Bytes ``[start, end)`` into ``alloc(length)``, cut short where the file ends (its size
        now: a file that grows, or says 0 and never ends as in /proc, is read no further).
        ``each``: see :meth:`read_into`, over pieces of :data:`PIECE` bytes."""
        fd, size = self._fd(name)
        end = size if end is None else min(end, size)
        length = max(0, end - start)
        buf = alloc(length)
        if each is None:
            got = preadv_full(fd, [buf], start)
            self.stats.add(name, got)
        else:
            view = memoryview(buf).cast("B")
            got = self.read_into(name, start, [view[a: a + PIECE] for a in range(0, length, PIECE)], each=each, fd=fd)
        return buf[:got] if got < length else buf

    def read_into(self, name: str, start: int, buffers: Sequence[memoryview | bytearray], *,
                  each: Optional[Callable[[memoryview | bytearray], Any]] = None, fd: Optional[int] = None) -> int:
        """Bytes from ``start`` into ``buffers`` in turn (no copy in between); returns how many
        were read, fewer only where the file ends. ``each(buffer)``: called as each buffer is
        filled (then one ``preadv`` a buffer), none after a short one: a checksum taken while
        the bytes are in the core's cache. ``fd``: ``name``'s, just looked up."""
        if fd is None:
            fd = self._fd(name)[0]
        if each is None:
            got = preadv_full(fd, buffers, start)
        else:
            got = 0
            for buf in buffers:
                n = os.preadv(fd, (buf,), start + got) if len(buf) else 0
                if n < len(buf):  # a short read: more, unless the file ends here
                    n += preadv_full(fd, (memoryview(buf).cast("B")[n:],), start + got + n)
                got += n
                if n < len(buf):
                    break
                each(buf)
        self.stats.add(name, got)
        return got

    def open_range(self, name: str, start: int, end: Optional[int]) -> RangeReader:
        """A sequential reader over bytes ``[start, end)``: one open file, read forward."""
        try:
            fh = open_regular(self.location.path(name), self.location.join_url(name))
        except FileNotFoundError:
            raise self._missing(name) from None
        try:
            fh.seek(start)
        except BaseException:
            fh.close()
            raise
        self.stats.requests[name] += 1
        return RangeReader(fh, url=self.location.join_url(name), start=start, end=end,
                           on_read=lambda n: self.stats.bytes.update({name: n}))
