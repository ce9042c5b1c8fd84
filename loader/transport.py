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

Local files are read directly. Reads fill writable buffers (``bytearray``, or for clip payloads
an uninitialised one from :func:`empty_buffer`): arrays parsed from them are writable, so
tensors can share their memory without a copy. Credentials stay inside
``storage_options``; they are never logged.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import io
import logging
import mmap
import os
import random
import threading
import time
import uuid
from collections import Counter, deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from typing import Any, BinaryIO, Callable, Mapping, Optional, Sequence, TypeVar

import numpy as np
from fsspec.asyn import AsyncFileSystem
from fsspec.exceptions import FSTimeoutError

from clipshards.convert.storage import Location

from .buffers import MIN_POOLED, pool

logger = logging.getLogger(__name__)

__all__ = ["Transport", "TransportOptions", "TransportStats", "TransportError", "RangeReader", "BlockCache", "empty_buffer"]

MiB = 1024 * 1024
REMOTE_BLOCK_SIZE = 8 * MiB
_PERMANENT = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)
_ENV_PREFIX = "CLIPSHARDS_"
_BATCH_CONCURRENCY = 8  # ranged reads of one read_many() in flight at once
T = TypeVar("T")


def _size_value(name: str, value: Any) -> int:
    """Bytes from an int or a size string ('512MB', '20GB'); ValueError naming ``name``."""
    if isinstance(value, bool):
        raise ValueError(f"{name}={value!r}: expected a number of bytes or a size such as '20GB'")
    if isinstance(value, int):
        return value
    from clipshards.convert.cli import _size

    try:
        return _size(str(value))
    except argparse.ArgumentTypeError:
        raise ValueError(f"{name}={value!r}: expected a number of bytes or a size such as '20GB'") from None


@dataclass(frozen=True)
class TransportOptions:
    """How shards are read: remote files (retries, streaming, cache) and local ones (``map_local``).

    Each field can also come from the environment (``CLIPSHARDS_RETRIES``,
    ``CLIPSHARDS_CACHE_DIR``, ``CLIPSHARDS_CACHE_LIMIT=50GB`` ...), see :meth:`from_env`:
    handy under ``torchrun`` or in DataLoader workers, which inherit it.
    """

    retries: int = 5
    """Attempts after the first for a request that failed transiently."""
    backoff: float = 0.5
    """Seconds before the first retry; doubled each time (with jitter) up to ``max_backoff``."""
    max_backoff: float = 16.0
    timeout: Optional[float] = 120.0
    """Seconds one request may take before it is abandoned and retried (None: no limit)."""
    block_size: int = REMOTE_BLOCK_SIZE
    """Bytes per request of a sequential stream, and per cached block."""
    readahead: int = 2
    """Blocks a sequential stream requests ahead of the one being read."""
    cache_dir: Optional[str] = None
    """Local folder for cached blocks of shards (None: no cache). Processes may share it."""
    cache_limit: int = 20 * 1024 * MiB
    """Bytes the cache may hold; least recently used blocks go first."""
    map_local: bool = True
    """Local shards: map clips of 1 MiB or more into memory (private, copy-on-write) instead of
    copying them out of the page cache; a raw clip then costs page-table entries, not a copy.
    Shards must not be truncated in place while mapped (the converter never does)."""

    def __post_init__(self) -> None:
        def bad(name: str, why: str) -> None:
            raise ValueError(f"{name}={getattr(self, name)!r}: {why}")

        for name in ("retries", "readahead"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                bad(name, "must be an integer >= 0")
        for name in ("backoff", "max_backoff"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
                bad(name, "must be a number of seconds >= 0")
        if self.timeout is not None and (isinstance(self.timeout, bool) or not isinstance(self.timeout, (int, float)) or self.timeout <= 0):
            bad("timeout", "must be a number of seconds > 0, or None for no limit")
        object.__setattr__(self, "block_size", _size_value("block_size", self.block_size))
        object.__setattr__(self, "cache_limit", _size_value("cache_limit", self.cache_limit))
        if self.block_size < 64 * 1024:
            bad("block_size", "must be at least 64 KiB")
        if not isinstance(self.map_local, bool):
            bad("map_local", "must be True or False")
        if self.cache_dir is not None:
            object.__setattr__(self, "cache_dir", os.fspath(self.cache_dir))
            if self.cache_limit < self.block_size:
                bad("cache_limit", f"must hold at least one block ({self.block_size} bytes)")

    @classmethod
    def from_env(cls, environ: Optional[Mapping[str, str]] = None, **overrides: Any) -> "TransportOptions":
        """Defaults, updated from ``CLIPSHARDS_<FIELD>`` environment variables, then ``overrides``."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(_ENV_PREFIX + f.name.upper())
            if raw is None or raw == "":
                continue
            try:
                if f.name in ("retries", "readahead"):
                    values[f.name] = int(raw)
                elif f.name in ("backoff", "max_backoff"):
                    values[f.name] = float(raw)
                elif f.name == "timeout":
                    values[f.name] = None if raw.lower() in ("none", "0") else float(raw)
                elif f.name == "map_local":
                    if raw.lower() not in ("0", "1", "true", "false", "yes", "no"):
                        raise ValueError(raw)
                    values[f.name] = raw.lower() in ("1", "true", "yes")
                else:
                    values[f.name] = raw
            except ValueError:
                raise ValueError(f"{_ENV_PREFIX}{f.name.upper()}={raw!r}: not a valid {f.name}") from None
        values.update(overrides)
        return cls(**values)


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
        with self._lock:
            self.requests[name] += 1
            self.bytes[name] += nbytes

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_lock", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()


class TransportError(OSError):
    """A remote read that still failed after its retries; names the URL and the last error."""

    def __init__(self, url: str, what: str, attempts: int, last: BaseException) -> None:
        self.url, self.what, self.attempts = url, what, attempts
        self.last = f"{type(last).__name__}: {last}"
        super().__init__(_transport_message(url, what, attempts, self.last))

    def __reduce__(self):
        return (_rebuild_transport_error, (self.url, self.what, self.attempts, self.last))


def _rebuild_transport_error(url: str, what: str, attempts: int, last: str) -> TransportError:
    err = TransportError.__new__(TransportError)
    OSError.__init__(err, _transport_message(url, what, attempts, last))
    err.url, err.what, err.attempts, err.last = url, what, attempts, last
    return err


def _transport_message(url: str, what: str, attempts: int, last: str) -> str:
    return f"{url}: {what} failed after {attempts} attempt{'s' if attempts != 1 else ''} (last error {last})"


class _ShortRead(OSError):
    """A response with fewer bytes than asked for, before the end of the file."""


def _http_status(exc: BaseException) -> Optional[int]:
    """The HTTP status an fsspec backend's exception carries (aiohttp, gcsfs, botocore)."""
    for attr in ("status", "code"):
        v = getattr(exc, attr, None)
        if isinstance(v, int):
            return v
    response = getattr(exc, "response", None)
    if isinstance(response, Mapping):
        code = str(response.get("Error", {}).get("Code", ""))
        if code in ("NoSuchKey", "NoSuchBucket", "NotFound"):
            return 404
        v = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if isinstance(v, int):
            return v
    return None


def is_transient(exc: BaseException) -> bool:
    """Whether a failed request may succeed when repeated (network trouble, 5xx, 408, 429)."""
    if isinstance(exc, _PERMANENT):
        return False
    status = _http_status(exc)
    if isinstance(status, int) and 400 <= status < 500:
        return status in (408, 429)
    if isinstance(exc, (OSError, TimeoutError, asyncio.TimeoutError, FSTimeoutError, ConnectionError)):
        return True
    return _backend_error(exc)


def _backend_error(exc: BaseException) -> bool:
    return type(exc).__module__.split(".")[0] in ("aiohttp", "botocore", "aiobotocore", "urllib3", "requests", "gcsfs", "google")


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


def empty_buffer(length: int) -> memoryview:
    """A writable byte buffer of ``length`` bytes that is not zero-filled (it is about to be
    read into); arrays viewing it are writable, so ``torch.from_numpy`` needs no copy. Large
    buffers come from the process's :class:`~clipshards.loader.buffers.BufferPool`."""
    if length >= MIN_POOLED:
        return pool().buffer(length)
    return memoryview(np.empty(length, dtype=np.uint8))


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


class _RemoteRangeReader(RangeReader):
    """A sequential stream over a remote file: blocks requested ahead, each retried on its own.

    Block boundaries depend only on ``start``, ``end`` and the options, so the bytes handed
    out are the file's bytes in order whatever failed and was repeated underneath.
    """

    def __init__(self, transport: "Transport", name: str, start: int, end: Optional[int]) -> None:
        self._t = transport
        self._name = name
        self.url = transport.url_of(name)
        self.pos = start
        self.end = end if end is not None else transport.size(name)
        self._next = start
        self._pending: deque[tuple[int, int, Future]] = deque()
        self._cur = memoryview(b"")
        self._done = False

    def _schedule(self) -> None:
        opts = self._t.options
        block = opts.block_size
        while not self._done and len(self._pending) < 1 + opts.readahead and self._next < self.end:
            a = self._next
            b = min(self.end, (a // block + 1) * block if self._t.cache is not None else a + block)
            self._pending.append((a, b, self._t._pool().submit(self._t._read_remote, self._name, a, b)))
            self._next = b

    def readinto(self, buf: bytearray | memoryview) -> int:
        view = memoryview(buf).cast("B")
        want = max(0, min(len(view), self.end - self.pos))
        got = 0
        while got < want:
            if not self._cur:
                self._schedule()
                if not self._pending:
                    break
                a, b, fut = self._pending.popleft()
                try:
                    data = fut.result()
                except BaseException:
                    self._cancel()
                    raise
                if len(data) < b - a:  # the file ends here
                    self._done = True
                    self._cancel()
                self._cur = memoryview(data)
                self._schedule()
                if not self._cur:
                    break
            n = min(len(self._cur), want - got)
            view[got : got + n] = self._cur[:n]
            self._cur = self._cur[n:]
            got += n
        self.pos += got
        return got

    def _cancel(self) -> None:
        while self._pending:
            self._pending.popleft()[2].cancel()

    def close(self) -> None:
        self._done = True
        self._cancel()
        self._cur = memoryview(b"")


class BlockCache:
    """Blocks of remote files as files in ``directory``; beyond ``limit`` bytes the least
    recently used go. Writes are atomic (temporary name, then rename), so processes and
    DataLoader workers can share one folder; a block that vanishes is simply fetched again."""

    def __init__(self, directory: str | os.PathLike, limit: int) -> None:
        self.directory = os.fspath(directory)
        self.limit = int(limit)
        os.makedirs(self.directory, exist_ok=True)
        self._total: Optional[int] = None  # this process's estimate of the bytes held
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        return {"directory": self.directory, "limit": self.limit}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["directory"], state["limit"])

    @staticmethod
    def key(url: str, version: str, block: int) -> str:
        return f"{hashlib.sha256(f'{url}|{version}'.encode()).hexdigest()[:32]}.{block:08d}"

    def get(self, key: str, length: int) -> Optional[bytes]:
        path = os.path.join(self.directory, key)
        try:
            with open(path, "rb") as fh:
                data = fh.read()
            os.utime(path)
        except OSError:
            return None
        return data if len(data) == length else None

    def put(self, key: str, data: bytes) -> None:
        tmp = os.path.join(self.directory, f".{key}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            with open(tmp, "wb") as fh:
                fh.write(data)
            os.replace(tmp, os.path.join(self.directory, key))
        except OSError as exc:
            logger.warning("cache %s: cannot store a block (%s); reading on without caching it", self.directory, exc)
            try:
                os.remove(tmp)
            except OSError:
                pass
            return
        with self._lock:
            if self._total is None:
                self._total = self.size()
            else:
                self._total += len(data)
            trim = self._total > self.limit
        if trim:
            self.trim()

    def size(self) -> int:
        return sum(e.stat().st_size for e in os.scandir(self.directory) if e.is_file() and not e.name.startswith("."))

    def trim(self) -> None:
        """Remove least recently used blocks until the cache holds at most 90 % of ``limit``
        bytes (and leftovers of interrupted writes older than an hour). Each process trims
        when its own count passes the limit, so several processes writing at once can go
        beyond it by what each wrote since its last trim."""
        entries = []
        now = time.time()
        for e in os.scandir(self.directory):
            try:
                st = e.stat()
            except OSError:
                continue
            if e.name.startswith("."):
                if e.name.endswith(".tmp") and now - st.st_mtime > 3600:
                    _unlink(e.path)
                continue
            entries.append((st.st_mtime, st.st_size, e.path))
        total = sum(s for _, s, _ in entries)
        target = self.limit * 9 // 10
        if total > target:
            entries.sort()
            for _, s, path in entries:
                if total <= target:
                    break
                _unlink(path)
                total -= s
            logger.debug("cache %s trimmed to %d bytes", self.directory, total)
        with self._lock:
            self._total = total


def _unlink(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass


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
        self.location = Location(url, storage_options)
        self.options = options if options is not None else TransportOptions.from_env()
        if not isinstance(self.options, TransportOptions):
            raise ValueError(f"options={options!r}: expected a TransportOptions")
        self.stats = TransportStats()
        remote = not self.location.is_local
        self.cache = BlockCache(self.options.cache_dir, self.options.cache_limit) if remote and self.options.cache_dir else None
        self._info: dict[str, tuple[int, str]] = {}
        self._sizes: dict[str, int] = {}
        self._executor: Optional[ThreadPoolExecutor] = None
        self._executor_pid = 0
        self._fs_pid = os.getpid()

    @property
    def url(self) -> str:
        return self.location.url

    def __repr__(self) -> str:
        return f"Transport({self.url!r})"

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["stats"] = TransportStats()
        state["_executor"] = None
        state["_executor_pid"] = 0
        state["_fs_pid"] = 0
        return state

    def url_of(self, name: str) -> str:
        return self.location.join_url(name)

    # -- retries --------------------------------------------------------------------------
    def _retrying(self, name: str, what: str, fn: Callable[[], T]) -> T:
        opts = self.options
        for attempt in range(opts.retries + 1):
            try:
                return fn()
            except Exception as exc:
                if isinstance(exc, FileNotFoundError):
                    # fsspec's HTTP stat reports any failure, a 503 too, as "not found"
                    if exc.__cause__ is None or not is_transient(exc.__cause__):
                        raise FileNotFoundError(f"{self.url_of(name)} does not exist") from None
                    exc = exc.__cause__  # type: ignore[assignment]
                elif _http_status(exc) == 404:
                    raise FileNotFoundError(f"{self.url_of(name)} does not exist") from None
                elif not is_transient(exc):
                    if _http_status(exc) is not None or _backend_error(exc):
                        raise TransportError(self.url_of(name), what, attempt + 1, exc) from exc
                    raise
                if attempt == opts.retries:
                    raise TransportError(self.url_of(name), what, attempt + 1, exc) from exc
                delay = min(opts.max_backoff, opts.backoff * 2**attempt) * random.uniform(0.5, 1.0)
                with self.stats._lock:
                    self.stats.retries += 1
                logger.warning("%s: %s failed (%s: %s); retry %d of %d in %.2f s", self.url_of(name), what,
                               type(exc).__name__, exc, attempt + 1, opts.retries, delay)
                time.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def _fs(self) -> Any:
        """The filesystem, made again in a new process: fsspec's async filesystems are not
        fork-safe (DataLoader workers are forked)."""
        if self._fs_pid != os.getpid():
            self.location = Location(self.location.url, self.location.storage_options)
            self._fs_pid = os.getpid()
        return self.location.fs

    def _pool(self) -> ThreadPoolExecutor:
        if self._executor is None or self._executor_pid != os.getpid():
            workers = max(_BATCH_CONCURRENCY, 1 + self.options.readahead)
            self._executor = ThreadPoolExecutor(workers, thread_name_prefix="clipshards-readahead")
            self._executor_pid = os.getpid()
        return self._executor

    def known(self, name: str, *, size: int, version: str = "") -> None:
        """Record what the index says of a file: its size and ``version`` (its checksum as
        ``"<algorithm>:<hex>"``); the cache then keys its blocks by content, and no stat
        request is needed for it."""
        self._sizes[name] = int(size)
        if version:
            self._info[name] = (int(size), version)

    # -- remote requests ------------------------------------------------------------------
    def _stat(self, name: str) -> tuple[int, str]:
        """``(size, version)`` of a remote file, asked once per process."""
        got = self._info.get(name)
        if got is None:
            def ask() -> tuple[int, str]:
                info = self._fs().info(self.location.path(name))
                version = next((str(info[k]) for k in ("ETag", "etag", "generation", "md5Hash", "Content-MD5", "Digest",
                                                         "Last-Modified", "LastModified", "mtime")
                                if info.get(k) is not None), "")
                return int(info["size"]), version

            got = self._retrying(name, "stat", ask)
            self._info[name] = got
        return got

    def _request(self, name: str, start: int, end: Optional[int]) -> bytes:
        """One ranged read, checked for length (a short answer before the end is an error)."""
        fs, path = self._fs(), self.location.path(name)
        kwargs: dict[str, Any] = {}
        if isinstance(fs, AsyncFileSystem) and self.options.timeout is not None:
            kwargs["timeout"] = self.options.timeout
        try:
            data = fs.cat_file(path, start=start, end=end, **kwargs)
        except Exception:
            if start > 0 and start >= self._stat(name)[0]:  # asked from the end on: nothing there
                return b""
            raise
        self.stats.add(name, len(data))
        want = None if end is None else end - start
        if want is not None and len(data) == want:
            return data
        size = self._sizes.get(name)
        if size is None:
            size = self._stat(name)[0]
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
        raise _ShortRead(f"asked for bytes [{start}, {end}) of a {size}-byte file, got {len(data)}")

    def _read_remote(self, name: str, start: int, end: Optional[int]) -> bytes:
        """Bytes ``[start, end)`` of a remote file, retried, through the cache when there is one."""
        if self.cache is None or not name.endswith(".tar"):
            return self._retrying(name, f"read of bytes [{start}, {end})", lambda: self._request(name, start, end))
        size, version = self._stat(name)
        end = size if end is None else min(end, size)
        if start >= end:
            return b""
        block = self.options.block_size
        parts = []
        for i in range(start // block, (end - 1) // block + 1):
            lo, hi = i * block, min(size, (i + 1) * block)
            key = BlockCache.key(self.url_of(name), f"{size}|{version}", i)
            data = self.cache.get(key, hi - lo)
            if data is None:
                data = self._retrying(name, f"read of bytes [{lo}, {hi})", lambda lo=lo, hi=hi: self._request(name, lo, hi))
                self.cache.put(key, data)
            else:
                with self.stats._lock:
                    self.stats.cache_hits += 1
            parts.append(memoryview(data)[max(start, lo) - lo : min(end, hi) - lo])
        return b"".join(parts)

    # -- the three calls ------------------------------------------------------------------
    def size(self, name: str) -> int:
        if self.location.is_local:
            try:
                return os.path.getsize(self.location.path(name))
            except FileNotFoundError:
                raise FileNotFoundError(f"{self.url_of(name)} does not exist") from None
        return self._stat(name)[0]

    def read(self, name: str, start: int = 0, end: Optional[int] = None) -> bytearray:
        """Bytes ``[start, end)`` of ``name`` (to its end when ``end`` is None); shorter only
        where the file ends before ``end``."""
        return self._read(name, start, end, bytearray)

    def read_buffer(self, name: str, start: int = 0, end: Optional[int] = None) -> memoryview:
        """:meth:`read` into a writable buffer that is not zero-filled first (see
        :func:`empty_buffer`): for clip payloads, where the zero-fill costs as much as a copy."""
        return self._read(name, start, end, empty_buffer)

    @property
    def maps(self) -> bool:
        """Whether :meth:`map_buffer` maps (local shards with ``map_local``) rather than reads."""
        return self.location.is_local and self.options.map_local

    def map_buffer(self, name: str, start: int = 0, end: Optional[int] = None) -> memoryview:
        """:meth:`read_buffer`, except that a local range of 1 MiB or more is mapped, not copied.

        The mapping is private and writable (copy-on-write: writing to a clip never changes
        the shard) and lives as long as anything made from the returned view. Its pages are
        mapped from the page cache on first touch, 16 at a time, by whichever threads copy the
        clip (``MADV_POPULATE_READ`` up front, in one thread, measured 1.5x slower).
        """
        if not self.maps or (end is not None and end - start < MIN_POOLED):
            return self.read_buffer(name, start, end)
        if start < 0 or (end is not None and end < start):
            raise ValueError(f"byte range [{start}, {end}) of {self.url_of(name)} is not a valid range")
        try:
            fd = os.open(self.location.path(name), os.O_RDONLY)
        except FileNotFoundError:
            raise FileNotFoundError(f"{self.url_of(name)} does not exist") from None
        try:
            size = os.fstat(fd).st_size
            end = size if end is None else min(end, size)
            if end - start < MIN_POOLED:
                os.close(fd)
                fd = -1
                return self.read_buffer(name, start, end)
            base = start - start % mmap.ALLOCATIONGRANULARITY
            mapped = mmap.mmap(fd, end - base, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ | mmap.PROT_WRITE, offset=base)
        finally:
            if fd >= 0:
                os.close(fd)
        self.stats.add(name, end - start)
        return memoryview(mapped)[start - base:]

    def _read(self, name: str, start: int, end: Optional[int], alloc: Callable[[int], Any]) -> Any:
        if start < 0 or (end is not None and end < start):
            raise ValueError(f"byte range [{start}, {end}) of {self.url_of(name)} is not a valid range")
        if not self.location.is_local:
            data = bytearray(self._read_remote(name, start, end))
            return data if alloc is bytearray else memoryview(data)
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
            raise FileNotFoundError(f"{self.url_of(name)} does not exist") from None
        self.stats.add(name, len(buf))
        return buf

    def read_many(self, requests: Sequence[tuple[str, int, Optional[int]]], *,
                  return_exceptions: bool = False, buffers: bool = False) -> list[Any]:
        """:meth:`read` (``buffers``: :meth:`read_buffer`) of each ``(name, start, end)``, in
        order. Remote reads run concurrently, so a batch of random clips costs about one round
        trip, not one per clip. A failed read raises (the first in order), or with
        ``return_exceptions`` stands in its place."""
        read = self.read_buffer if buffers else self.read
        if self.location.is_local or len(requests) < 2:
            futures = None
        else:
            pool = self._pool()
            futures = [pool.submit(read, name, start, end) for name, start, end in requests]
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
        if start < 0 or (end is not None and end < start):
            raise ValueError(f"byte range [{start}, {end}) of {self.url_of(name)} is not a valid range")
        if size is not None:
            self._sizes.setdefault(name, int(size))
        if not self.location.is_local:
            return _RemoteRangeReader(self, name, start, end)
        path = self.location.path(name)
        try:
            fh: BinaryIO = open(path, "rb", buffering=0)
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
