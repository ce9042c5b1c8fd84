"""Every byte the loader reads goes through here: whole files, byte ranges, sequential range streams.

Built on fsspec (through :class:`clipshards.convert.storage.Location`), so ``url`` may be a
local path or ``s3://``, ``gs://``, ``https://`` with ``storage_options``. The rest of the
loader sees three calls (:meth:`Transport.read`, :meth:`Transport.open_range`,
:meth:`Transport.size`); behind them, for remote files (see :class:`TransportOptions`):

- every request asks for an exact byte range and is checked for length, so a request that
  is repeated returns the same bytes: a retry can neither lose nor repeat a clip;
- transient failures (connection reset, a body cut short, HTTP 5xx, a request slower than
  ``timeout``) are retried with exponential backoff; when the retries run out the
  :class:`TransportError` names the URL;
- a sequential stream keeps ``readahead`` blocks in flight, so the loader is not latency-bound;
- an optional local cache (``cache_dir``) keeps blocks of shards, least recently used
  evicted beyond ``cache_limit`` bytes; ``index.json`` and ``offsets.npy`` are always read
  from the source.

Local files are read directly (:mod:`.local`), remote ones through :mod:`.remote`, which
uses :mod:`.retry`, :mod:`.readahead` and :mod:`.cache`; :mod:`.options` holds the settings.
Reads fill writable buffers (:mod:`.ranges`): arrays parsed from them are writable, so
tensors can share their memory without a copy. Credentials stay inside
``storage_options``; they are never logged.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Mapping, Optional, Sequence

from clipshards.convert.storage import Location

from .cache import BlockCache
from .local import LocalFiles
from .options import REMOTE_BLOCK_SIZE, TransportOptions
from .ranges import RangeReader, TransportStats, check_range, empty_buffer
from .remote import RemoteFiles
from .retry import TransportError, is_transient

__all__ = [
    "Transport",
    "TransportOptions",
    "TransportStats",
    "TransportError",
    "RangeReader",
    "BlockCache",
    "empty_buffer",
    "is_transient",
    "REMOTE_BLOCK_SIZE",
]


class Transport:
    """Byte access to the files of one folder (a converted split): local or any fsspec URL.

    ``options`` (default: :meth:`TransportOptions.from_env`) set retries, timeouts,
    read-ahead and the local cache for remote files.
    """

    def __init__(
        self,
        url: str | os.PathLike,
        *,
        storage_options: Optional[Mapping[str, Any]] = None,
        options: Optional[TransportOptions] = None,
    ) -> None:
        location = Location(url, storage_options)
        self.options = options if options is not None else TransportOptions.from_env()
        if not isinstance(self.options, TransportOptions):
            raise ValueError(f"options={options!r}: expected a TransportOptions")
        self._files: LocalFiles | RemoteFiles = (LocalFiles(location, self.options) if location.is_local
                                                 else RemoteFiles(location, self.options))

    @property
    def location(self) -> Location:
        return self._files.location

    @property
    def url(self) -> str:
        return self.location.url

    @property
    def stats(self) -> TransportStats:
        """Requests, bytes, retries and cache hits of this transport in this process."""
        return self._files.stats

    @property
    def cache(self) -> Optional[BlockCache]:
        """The local block cache of remote shards (None: local files, or no ``cache_dir``)."""
        return self._files.cache if isinstance(self._files, RemoteFiles) else None

    def __repr__(self) -> str:
        return f"Transport({self.url!r})"

    def url_of(self, name: str) -> str:
        return self.location.join_url(name)

    def known(self, name: str, *, size: int, version: str = "") -> None:
        """Record what the index says of a file: its size and ``version`` (its checksum as
        ``"<algorithm>:<hex>"``); the cache then keys its blocks by content, and no stat
        request is needed for it."""
        if isinstance(self._files, RemoteFiles):
            self._files.known(name, size=size, version=version)

    # -- the three calls ------------------------------------------------------------------
    def size(self, name: str) -> int:
        return self._files.size(name)

    def read(self, name: str, start: int = 0, end: Optional[int] = None) -> bytearray:
        """Bytes ``[start, end)`` of ``name`` (to its end when ``end`` is None); shorter only
        where the file ends before ``end``."""
        return self._read(name, start, end, bytearray)

    def read_buffer(self, name: str, start: int = 0, end: Optional[int] = None, *,
                    each: Optional[Callable[[memoryview], Any]] = None) -> memoryview:
        """:meth:`read` into a writable buffer that is not zero-filled first (see
        :func:`empty_buffer`): for clip payloads, where the zero-fill costs as much as a copy.
        ``each(piece)``: called with the bytes returned, in order (a local file: as each piece
        of :data:`~.local.PIECE` bytes is read, so a checksum reads them from cache; a remote
        one: once, at the end)."""
        if isinstance(self._files, LocalFiles):
            if start < 0 or (end is not None and end < start):
                check_range(self.url_of(name), start, end)
            return self._files.read(name, start, end, empty_buffer, each=each)
        buf = self._read(name, start, end, empty_buffer)
        if each is not None:
            each(buf)
        return buf

    @property
    def maps(self) -> bool:
        """Always False: clips are copied on read (see :meth:`map_buffer`)."""
        return False

    def map_buffer(self, name: str, start: int = 0, end: Optional[int] = None) -> memoryview:
        """:meth:`read_buffer`. Local clips used to be mapped here (``map_local``); they are
        copied now: a mapped clip's tensors changed when its shard file was rewritten, and a
        shard truncated while mapped killed the process with SIGBUS."""
        return self.read_buffer(name, start, end)

    def read_into(self, name: str, start: int, buffers: Sequence[memoryview | bytearray], *,
                  each: Optional[Callable[[memoryview | bytearray], Any]] = None) -> int:
        """Local files only: bytes from ``start`` straight into ``buffers`` in turn (no copy in
        between: raw pixels go into their batch this way); returns how many were read, fewer
        only where the file ends. ``each(buffer)`` is called as each buffer is filled (a
        checksum taken while the bytes are in cache)."""
        if not isinstance(self._files, LocalFiles):
            raise ValueError(f"{self.url}: read_into reads local files only")
        if start < 0:
            check_range(self.url_of(name), start, None)
        return self._files.read_into(name, start, buffers, each=each)

    def release(self) -> None:
        """Close the local files this thread keeps open (see :mod:`.local`); the next read
        opens them again. Called when an epoch ends; nothing to do for remote files."""
        if isinstance(self._files, LocalFiles):
            self._files.release()

    def _read(self, name: str, start: int, end: Optional[int], alloc: Callable[[int], Any]) -> Any:
        check_range(self.url_of(name), start, end)
        if isinstance(self._files, RemoteFiles):
            data = bytearray(self._files.read(name, start, end))
            return data if alloc is bytearray else memoryview(data)
        return self._files.read(name, start, end, alloc)

    def read_many(self, requests: Sequence[tuple[str, int, Optional[int]]], *,
                  return_exceptions: bool = False, buffers: bool = False) -> list[Any]:
        """:meth:`read` (``buffers``: :meth:`read_buffer`) of each ``(name, start, end)``, in
        order. Remote reads run concurrently, so a batch of random clips costs about one round
        trip, not one per clip. A failed read raises (the first in order), or with
        ``return_exceptions`` stands in its place."""
        read = self.read_buffer if buffers else self.read
        if isinstance(self._files, RemoteFiles) and len(requests) >= 2:
            pool = self._files.pool()
            futures = [pool.submit(read, name, start, end) for name, start, end in requests]
        else:
            futures = None
        out: list[Any] = []
        for i, (name, start, end) in enumerate(requests):
            try:
                out.append(futures[i].result() if futures is not None else read(name, start, end))
            except Exception as exc:
                if not return_exceptions:
                    for f in futures or ():
                        f.cancel()
                    raise
                out.append(exc)
        return out

    def open_range(self, name: str, start: int = 0, end: Optional[int] = None, *, size: Optional[int] = None) -> RangeReader:
        """A sequential reader over bytes ``[start, end)`` of ``name`` (forward reads only).

        ``size``: the file's size when known (the index lists each shard's), which spares a
        remote stat request when a short answer must be told from the file's end.
        """
        check_range(self.url_of(name), start, end)
        if size is not None and isinstance(self._files, RemoteFiles):
            self._files.hint_size(name, size)
        return self._files.open_range(name, start, end)
