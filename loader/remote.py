"""Remote files of one folder (``s3://``, ``gs://``, ``https://`` ... through fsspec): exact ranged requests.

Every request asks for an exact byte range and is checked for length, so a request that is
repeated returns the same bytes: a retry (:mod:`.retry`) can neither lose nor repeat a clip.
Shards go through the block cache (:mod:`.cache`) when there is one; sequential streams read
ahead (:mod:`.readahead`). Credentials stay inside the location's ``storage_options``.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Optional

from fsspec.asyn import AsyncFileSystem

from clipshards.convert.storage import Location

from .cache import BlockCache
from .options import TransportOptions
from .ranges import TransportStats
from .readahead import ReadaheadReader
from .retry import ShortRead, retrying

__all__ = ["RemoteFiles", "BATCH_CONCURRENCY"]

BATCH_CONCURRENCY = 8  # ranged reads of one Transport.read_many() in flight at once
_VERSION_KEYS = ("ETag", "etag", "generation", "md5Hash", "Content-MD5", "Digest", "Last-Modified", "LastModified", "mtime")


class RemoteFiles:
    """Ranged, retried, cached reads of the files under one remote ``location``."""

    def __init__(self, location: Location, options: TransportOptions) -> None:
        self.location = location
        self.options = options
        self.stats = TransportStats()
        self.cache = BlockCache(options.cache_dir, options.cache_limit) if options.cache_dir else None
        self._info: dict[str, tuple[int, str]] = {}
        self._sizes: dict[str, int] = {}
        self._executor: Optional[ThreadPoolExecutor] = None
        self._executor_pid = 0
        self._fs_pid = os.getpid()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.update(stats=TransportStats(), _executor=None, _executor_pid=0, _fs_pid=0)
        return state

    def url_of(self, name: str) -> str:
        return self.location.join_url(name)

    def fs(self) -> Any:
        """The filesystem, made again in a new process: fsspec's async filesystems are not
        fork-safe (DataLoader workers are forked)."""
        if self._fs_pid != os.getpid():
            self.location = Location(self.location.url, self.location.storage_options)
            self._fs_pid = os.getpid()
        return self.location.fs

    def pool(self) -> ThreadPoolExecutor:
        """This process's threads for concurrent and read-ahead requests."""
        if self._executor is None or self._executor_pid != os.getpid():
            workers = max(BATCH_CONCURRENCY, 1 + self.options.readahead)
            self._executor = ThreadPoolExecutor(workers, thread_name_prefix="clipshards-readahead")
            self._executor_pid = os.getpid()
        return self._executor

    def known(self, name: str, *, size: int, version: str = "") -> None:
        """What the index says of a file (see :meth:`Transport.known`)."""
        self._sizes[name] = int(size)
        if version:
            self._info[name] = (int(size), version)

    def hint_size(self, name: str, size: int) -> None:
        """The file's size as the caller knows it, unless already known."""
        self._sizes.setdefault(name, int(size))

    def stat(self, name: str) -> tuple[int, str]:
        """``(size, version)`` of a file, asked once per process."""
        got = self._info.get(name)
        if got is None:
            def ask() -> tuple[int, str]:
                info = self.fs().info(self.location.path(name))
                version = next((str(info[k]) for k in _VERSION_KEYS if info.get(k) is not None), "")
                return int(info["size"]), version

            got = retrying(ask, url=self.url_of(name), what="stat", options=self.options, on_retry=self.stats.retried)
            self._info[name] = got
        return got

    def size(self, name: str) -> int:
        return self.stat(name)[0]

    def _request(self, name: str, start: int, end: Optional[int]) -> bytes:
        """One ranged read, checked for length (a short answer before the end is an error)."""
        fs, path = self.fs(), self.location.path(name)
        kwargs: dict[str, Any] = {}
        if isinstance(fs, AsyncFileSystem) and self.options.timeout is not None:
            kwargs["timeout"] = self.options.timeout
        try:
            data = fs.cat_file(path, start=start, end=end, **kwargs)
        except Exception:
            if start > 0 and start >= self.stat(name)[0]:  # asked from the end on: nothing there
                return b""
            raise
        self.stats.add(name, len(data))
        want = None if end is None else end - start
        if want is not None and len(data) == want:
            return data
        size = self._sizes.get(name)
        if size is None:
            size = self.stat(name)[0]
        expect = max(0, min(size, start + want if want is not None else size) - start)
        if len(data) == expect:
            return data
        if len(data) == size and start < size:  # a server that ignored the range
            return data[start : start + expect]
        if len(data) < expect:
            fs.invalidate_cache(path)
            actual = int(fs.info(path)["size"])
            if start + len(data) >= actual:  # the file really ends here (shorter than its index says)
                return data
        raise ShortRead(f"asked for bytes [{start}, {end}) of a {size}-byte file, got {len(data)}")

    def _retried(self, name: str, start: int, end: Optional[int]) -> bytes:
        return retrying(lambda: self._request(name, start, end), url=self.url_of(name),
                        what=f"read of bytes [{start}, {end})", options=self.options, on_retry=self.stats.retried)

    def read(self, name: str, start: int, end: Optional[int]) -> bytes:
        """Bytes ``[start, end)`` of a file, retried, shards through the cache when there is one."""
        if self.cache is None or not name.endswith(".tar"):
            return self._retried(name, start, end)
        size, version = self.stat(name)
        return self.cache.read(self.url_of(name), version, size, start, end, self.options.block_size,
                               lambda lo, hi: self._retried(name, lo, hi), on_hit=self.stats.cache_hit)

    def open_range(self, name: str, start: int, end: Optional[int]) -> ReadaheadReader:
        """A sequential stream over bytes ``[start, end)`` (``end`` None: the file's end)."""
        opts = self.options
        end = end if end is not None else self.size(name)
        return ReadaheadReader(lambda a, b: self.read(name, a, b), self.pool(), url=self.url_of(name), start=start,
                               end=end, block_size=opts.block_size, readahead=opts.readahead, aligned=self.cache is not None)
