"""Every byte the loader reads goes through here: whole files, byte ranges, sequential range streams.

Built on fsspec (through :class:`clipshards.convert.storage.Location`), so ``url`` may be a
local path or ``s3://``, ``gs://``, ``https://`` with ``storage_options``. Retries,
read-ahead and caching for object storage belong in this module, behind the same three
calls (:meth:`Transport.read`, :meth:`Transport.open_range`, :meth:`Transport.size`), so the
rest of the loader never changes when they do.

Reads fill ``bytearray`` buffers: arrays parsed from them are writable, so tensors can
share their memory without a copy. Credentials stay inside ``storage_options``; they are
never logged.
"""

from __future__ import annotations

import io
import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Mapping, Optional

from clipshards.convert.storage import Location

logger = logging.getLogger(__name__)

__all__ = ["Transport", "TransportStats", "RangeReader"]

REMOTE_BLOCK_SIZE = 8 * 1024 * 1024


@dataclass
class TransportStats:
    """Requests and bytes per file name, in this process (for tests and benchmarks)."""

    requests: Counter = field(default_factory=Counter)
    bytes: Counter = field(default_factory=Counter)

    def add(self, name: str, nbytes: int) -> None:
        self.requests[name] += 1
        self.bytes[name] += nbytes


class RangeReader:
    """Sequential reads over bytes ``[start, end)`` of one file; ``readinto`` fills a buffer."""

    def __init__(self, fh: BinaryIO, *, url: str, start: int, end: Optional[int], on_read) -> None:
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


class Transport:
    """Byte access to the files of one folder (a converted split): local or any fsspec URL."""

    def __init__(self, url: str | os.PathLike, *, storage_options: Optional[Mapping[str, Any]] = None) -> None:
        self.location = Location(url, storage_options)
        self.stats = TransportStats()

    @property
    def url(self) -> str:
        return self.location.url

    def __repr__(self) -> str:
        return f"Transport({self.url!r})"

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["stats"] = TransportStats()
        return state

    def url_of(self, name: str) -> str:
        return self.location.join_url(name)

    def size(self, name: str) -> int:
        try:
            return int(self.location.fs.size(self.location.path(name)))
        except FileNotFoundError:
            raise FileNotFoundError(f"{self.url_of(name)} does not exist") from None

    def read(self, name: str, start: int = 0, end: Optional[int] = None) -> bytearray:
        """Bytes ``[start, end)`` of ``name`` (to its end when ``end`` is None); shorter only
        where the file ends before ``end``."""
        if start < 0 or (end is not None and end < start):
            raise ValueError(f"byte range [{start}, {end}) of {self.url_of(name)} is not a valid range")
        try:
            if self.location.is_local:
                with open(self.location.path(name), "rb", buffering=0) as fh:
                    if end is None:
                        end = os.fstat(fh.fileno()).st_size
                    fh.seek(start)
                    buf = bytearray(max(0, end - start))
                    got = RangeReader(fh, url="", start=start, end=end, on_read=lambda n: None).readinto(buf)
                    del buf[got:]
            else:
                buf = bytearray(self.location.fs.cat_file(self.location.path(name), start=start, end=end))
        except FileNotFoundError:
            raise FileNotFoundError(f"{self.url_of(name)} does not exist") from None
        self.stats.add(name, len(buf))
        return buf

    def open_range(self, name: str, start: int = 0, end: Optional[int] = None) -> RangeReader:
        """A sequential reader over bytes ``[start, end)`` of ``name`` (one open, forward reads)."""
        if start < 0 or (end is not None and end < start):
            raise ValueError(f"byte range [{start}, {end}) of {self.url_of(name)} is not a valid range")
        path = self.location.path(name)
        try:
            if self.location.is_local:
                fh: BinaryIO = open(path, "rb", buffering=0)
            else:
                fh = self.location.fs.open(path, "rb", block_size=REMOTE_BLOCK_SIZE)
        except FileNotFoundError:
            raise FileNotFoundError(f"{self.url_of(name)} does not exist") from None
        try:
            fh.seek(start)
        except BaseException:
            fh.close()
            raise
        self.stats.requests[name] += 1
        return RangeReader(fh, url=self.url_of(name), start=start, end=end,
                           on_read=lambda n: self.stats.bytes.update({name: n}))
