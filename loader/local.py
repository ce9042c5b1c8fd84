"""Local files of one folder: read straight into buffers, or mapped when a range is large.

No retries or cache: the page cache is the cache. ``map_local`` (see
:class:`~clipshards.loader.TransportOptions`) maps clips of 1 MiB or more privately instead of
copying them, so a raw clip costs page-table entries, not a copy.
"""

from __future__ import annotations

import mmap
import os
from typing import Any, BinaryIO, Callable, Optional

from clipshards.convert.storage import Location

from .buffers import MIN_POOLED
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

    def read(self, name: str, start: int, end: Optional[int], alloc: Callable[[int], Any]) -> Any:
        """Bytes ``[start, end)`` into ``alloc(length)``, cut short where the file ends."""
        try:
            with open(self.location.path(name), "rb", buffering=0) as fh:
                if end is None:
                    end = os.fstat(fh.fileno()).st_size
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

    def map(self, name: str, start: int, end: Optional[int], fallback: Callable[[int], memoryview]) -> memoryview:
        """Bytes ``[start, end)`` mapped privately and writable (copy-on-write); a range under
        1 MiB (once the file's end is known) is read into ``fallback(length)`` instead."""
        try:
            fd = os.open(self.location.path(name), os.O_RDONLY)
        except FileNotFoundError:
            raise self._missing(name) from None
        try:
            size = os.fstat(fd).st_size
            end = size if end is None else min(end, size)
            if end - start < MIN_POOLED:
                os.close(fd)
                fd = -1
                return self.read(name, start, end, fallback)
            base = start - start % mmap.ALLOCATIONGRANULARITY
            mapped = mmap.mmap(fd, end - base, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ | mmap.PROT_WRITE, offset=base)
        finally:
            if fd >= 0:
                os.close(fd)
        self.stats.add(name, end - start)
        return memoryview(mapped)[start - base:]

    def open_range(self, name: str, start: int, end: Optional[int]) -> RangeReader:
        """A sequential reader over bytes ``[start, end)``: one open file, read forward."""
        try:
            fh: BinaryIO = open(self.location.path(name), "rb", buffering=0)
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
