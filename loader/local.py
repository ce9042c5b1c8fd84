"""Local files of one folder, read straight into buffers.

No retries or cache: the page cache is the cache. Only regular files are opened (a FIFO or a
device is refused before anything is read), and no read goes past the size a file had when it
was opened. Nothing is mapped: a clip is copied into memory of its own, so the tensors made from
it never change when its shard is rewritten, and a shard cut short gives a short read (an error
naming the clip), never SIGBUS.
"""

from __future__ import annotations

import os
from typing import Any, BinaryIO, Callable, Optional

from clipshards.convert.storage import Location, open_regular

from .options import TransportOptions
from .ranges import RangeReader, TransportStats

__all__ = ["LocalFiles"]


class LocalFiles:
    """Reads of the files under one local ``location``; a missing file raises
    ``FileNotFoundError`` naming its URL."""

    def __init__(self, location: Location, options: TransportOptions) -> None:
        self.location = location
        self.options = options
        self.stats = TransportStats()

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "stats": TransportStats()}

    def _missing(self, name: str) -> FileNotFoundError:
        return FileNotFoundError(f"{self.location.join_url(name)} does not exist")

    def size(self, name: str) -> int:
        try:
            return os.path.getsize(self.location.path(name))
        except FileNotFoundError:
            raise self._missing(name) from None

    def _open(self, name: str) -> BinaryIO:
        """``name`` opened for reading when it is a regular file (a FIFO or a device is refused
        before anything is read: see :func:`~clipshards.convert.storage.open_regular`)."""
        try:
            return open_regular(self.location.path(name), self.location.join_url(name))
        except FileNotFoundError:
            raise self._missing(name) from None

    def read(self, name: str, start: int, end: Optional[int], alloc: Callable[[int], Any]) -> Any:
        """Bytes ``[start, end)`` into ``alloc(length)``, cut short where the file ends (its size
        when opened: a file that grows, or says 0 and never ends as in /proc, is read no further)."""
        try:
            with self._open(name) as fh:
                size = os.fstat(fh.fileno()).st_size
                end = size if end is None else min(end, size)
                fh.seek(start)
                length = max(0, end - start)
                buf = alloc(length)
                got = RangeReader(fh, url="", start=start, end=end, on_read=lambda n: None).readinto(buf)
                if got < length:
                    buf = buf[:got]
        except FileNotFoundError:
            raise self._missing(name) from None
        self.stats.add(name, len(buf))
        return buf

    def read_into(self, name: str, start: int, buffers: list[memoryview | bytearray]) -> int:
        """Bytes from ``start`` into ``buffers`` in turn (one ``preadv`` a time, no copy in
        between); returns how many were read, fewer only where the file ends."""
        with self._open(name) as fh:
            fd, want = fh.fileno(), sum(len(b) for b in buffers)
            views = [memoryview(b).cast("B") for b in buffers if len(b)]
            got = 0
            while views:
                n = os.preadv(fd, views, start + got)
                if n <= 0:
                    break
                got += n
                while views and n >= len(views[0]):
                    n -= len(views[0])
                    views.pop(0)
                if views and n:
                    views[0] = views[0][n:]
        self.stats.add(name, got)
        return min(got, want)

    def open_range(self, name: str, start: int, end: Optional[int]) -> RangeReader:
        """A sequential reader over bytes ``[start, end)``: one open file, read forward."""
        fh = self._open(name)
        try:
            fh.seek(start)
        except BaseException:
            fh.close()
            raise
        self.stats.requests[name] += 1
        return RangeReader(fh, url=self.location.join_url(name), start=start, end=end,
                           on_read=lambda n: self.stats.bytes.update({name: n}))
