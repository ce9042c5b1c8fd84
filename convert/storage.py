"""Transport: where shards and indexes live, through fsspec (local paths, s3://, gs://, https://).

Writes are all-or-nothing: on a local disk a file is written under a hidden temporary name
and renamed when complete; on object storage an object only becomes visible when its upload
completes. Credentials are passed through ``storage_options`` and never logged.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import posixpath
import stat
import time
from contextlib import contextmanager
from typing import Any, BinaryIO, Iterator, Mapping, Optional

import fsspec
from fsspec.asyn import AsyncFileSystem
from fsspec.core import url_to_fs
from fsspec.exceptions import FSTimeoutError

from .storage_errors import UNREACHABLE, StorageError, classify, permanent_error, unreachable_error

logger = logging.getLogger(__name__)

__all__ = ["Location", "parse_storage_options", "redact", "open_regular", "open_regular_fd", "NotRegularFileError", "StorageError", "reach"]

_SECRET_WORDS = ("secret", "token", "password", "key", "credential", "session")


def redact(options: Optional[Mapping[str, Any]]) -> dict[str, Any]:
    """A copy of storage options safe to log: values of credential-like keys are hidden."""
    out: dict[str, Any] = {}
    for k, v in (options or {}).items():
        if isinstance(v, Mapping):
            out[k] = redact(v)
        elif any(w in k.lower() for w in _SECRET_WORDS) and "endpoint" not in k.lower():
            out[k] = "***"
        else:
            out[k] = v
    return out


class NotRegularFileError(OSError):
    """A dataset file that is a FIFO, a device, a socket or a folder: refused before it is read."""


def open_regular(path: str, url: Optional[str] = None) -> BinaryIO:
    """``path`` opened for unbuffered reading, only when it is a regular file: a FIFO would block
    the open (and a read) forever, a device never end. Opened without blocking, checked with
    ``fstat``, so nothing is read before the check; :class:`NotRegularFileError` names ``url``."""
    fd, _ = open_regular_fd(path, url)
    try:
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb", buffering=0)
    except BaseException:
        os.close(fd)
        raise


def open_regular_fd(path: str, url: Optional[str] = None) -> tuple[int, os.stat_result]:
    """:func:`open_regular` as a bare descriptor and its ``fstat``, for ``pread``-style reads (the
    descriptor stays non-blocking, which a regular file ignores): one ``open`` and one ``fstat``."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            mode = st.st_mode
            kind = "a FIFO" if stat.S_ISFIFO(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else (
                "a folder" if stat.S_ISDIR(mode) else "not a regular file")
            raise NotRegularFileError(errno.EINVAL, f"{url or path} is {kind}, not a regular file: refused")
        return fd, st
    except BaseException:
        os.close(fd)
        raise


def parse_storage_options(pairs: list[str] | None) -> dict[str, Any]:
    """``["key=value", ...]`` from the command line into fsspec ``storage_options``.

    Values ``true``/``false``/integers are converted; a dotted key ``a.b=v`` nests as
    ``{"a": {"b": v}}`` (e.g. ``client_kwargs.endpoint_url=http://127.0.0.1:9000``).
    """
    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, eq, value = pair.partition("=")
        if not eq or not key:
            raise ValueError(f"--storage-option {pair!r}: expected KEY=VALUE")
        parsed: Any = value
        if value.lower() in ("true", "false"):
            parsed = value.lower() == "true"
        else:
            try:
                parsed = int(value)
            except ValueError:
                pass
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = parsed
    return out


class Location:
    """A directory-like location (local folder or object-store prefix) opened through fsspec."""

    def __init__(self, url: str | os.PathLike, storage_options: Optional[Mapping[str, Any]] = None):
        self.url = os.fspath(url).rstrip("/") or "/"
        self.storage_options = dict(storage_options or {})
        self.fs, self.root = url_to_fs(self.url, **self.storage_options)
        self.is_local = "file" in _protocols(self.fs)

    def __repr__(self) -> str:
        return f"Location({self.url!r})"

    def child(self, name: str) -> "Location":
        loc = object.__new__(Location)
        loc.url = self.join_url(name)
        loc.storage_options = self.storage_options
        loc.fs = self.fs
        loc.root = posixpath.join(self.root, name)
        loc.is_local = self.is_local
        return loc

    def join_url(self, name: str) -> str:
        return f"{self.url}/{name}"

    def path(self, name: str) -> str:
        return posixpath.join(self.root, name)

    def makedirs(self) -> None:
        if self.is_local:
            os.makedirs(self.root, exist_ok=True)

    def _fresh(self, path: str) -> str:
        """``path``, with the filesystem's cached listings of it dropped.

        Object-store filesystems cache listings per process; another process (an interrupted
        run, a Ray worker) may have written since, so each query asks the store.
        """
        if not self.is_local:
            self.fs.invalidate_cache(path)
        return path

    def exists(self, name: str) -> bool:
        return self.fs.exists(self._fresh(self.path(name)))

    def size(self, name: str) -> Optional[int]:
        try:
            return int(self.fs.size(self._fresh(self.path(name))))
        except (FileNotFoundError, OSError) as exc:
            _raise_permanent(self, name, exc)
            return None

    def listdir(self, sub: str = "") -> list[str]:
        """Base names under ``sub`` (empty list when it does not exist)."""
        target = self._fresh(self.path(sub) if sub else self.root)
        try:
            entries = self.fs.ls(target, detail=False)
        except (FileNotFoundError, OSError) as exc:
            _raise_permanent(self, sub, exc)
            return []
        return sorted(posixpath.basename(e.rstrip("/")) for e in entries)

    def open_read(self, name: str) -> BinaryIO:
        """``name`` opened for reading; a local one only when it is a regular file (see
        :func:`open_regular`)."""
        if self.is_local:
            return open_regular(self.path(name), self.join_url(name))
        return self.fs.open(self.path(name), "rb")

    def read_bytes(self, name: str, start: Optional[int] = None, end: Optional[int] = None) -> bytes:
        """Bytes ``[start, end)`` of ``name``; a local file is read only when regular and never
        past the size it had when opened (a file in /proc says 0 and never ends)."""
        if self.is_local:
            with open_regular(self.path(name), self.join_url(name)) as fh:
                size = os.fstat(fh.fileno()).st_size
                lo = min(start or 0, size)
                hi = size if end is None else max(lo, min(end, size))
                fh.seek(lo)
                return _read_exactly(fh, hi - lo)
        if start is None and end is None:
            return self.fs.cat_file(self.path(name))
        return self.fs.cat_file(self.path(name), start=start, end=end)

    def remove(self, name: str) -> None:
        try:
            self.fs.rm(self.path(name))
        except (FileNotFoundError, OSError):
            pass

    def remove_tree(self, sub: str) -> None:
        """Remove every file under ``sub`` and, on a local disk, the folder itself."""
        for name in self.listdir(sub):
            self.remove(f"{sub}/{name}")
        if self.is_local:
            try:
                os.rmdir(self.path(sub))
            except OSError:
                pass

    @contextmanager
    def open_atomic(self, name: str, *, durable: bool = True) -> Iterator[Any]:
        """Open ``name`` for writing so that it appears only once closed without error.

        ``durable=False`` skips the local ``fsync``: for scratch files read back and deleted
        within seconds (the spool), which then need never reach the disk.
        """
        final = self.path(name)
        if self.is_local:
            parent = posixpath.dirname(final)
            os.makedirs(parent, exist_ok=True)
            tmp = posixpath.join(parent, f".{posixpath.basename(final)}.partial")
            try:
                with open(tmp, "wb") as fh:
                    yield fh
                    fh.flush()
                    if durable:
                        os.fsync(fh.fileno())
                os.replace(tmp, final)
            except BaseException:
                try:
                    os.remove(tmp)
                except OSError:
                    pass
                raise
        else:
            fh = self.fs.open(final, "wb")
            try:
                yield fh
            except BaseException:
                _abandon(fh, self.join_url(name))
                raise
            try:
                fh.close()
            except BaseException:
                _abandon(fh, self.join_url(name))
                raise

    def write_bytes_atomic(self, name: str, data: bytes) -> None:
        with self.open_atomic(name) as fh:
            fh.write(data)


def _raise_permanent(loc: Location, name: str, exc: BaseException) -> None:
    """Raise the :class:`StorageError` for a remote failure that is no mere absence (no
    credentials, access denied, no such bucket): a listing refused is not an empty folder."""
    if not loc.is_local and not isinstance(exc, StorageError):
        err = permanent_error(loc.join_url(name) if name else loc.url, exc)
        if err is not None:
            raise err from None


def reach(loc: Location, name: str = "", *, timeout: float) -> None:
    """Make sure the object store behind ``loc`` can be used before any work starts.

    One cheap request (the info of ``name``, or of the folder) is made, and made again while
    the endpoint cannot be connected to, for at most ``timeout`` seconds in all (each attempt
    is cut at the time left). Raises :class:`StorageError` naming the URL and the fix when
    there are no credentials, access is denied, the bucket does not exist, or the endpoint is
    still unreachable; any other answer (the file not there yet, a server error) is left to
    the caller. Local folders: nothing to check.
    """
    if loc.is_local:
        return
    url, path = (loc.join_url(name), loc.path(name)) if name else (loc.url, loc.root)
    deadline = time.monotonic() + timeout
    last: Optional[BaseException] = None
    pause = 0.25
    while True:
        left = deadline - time.monotonic()
        kwargs = {"timeout": max(left, 0.5)} if isinstance(loc.fs, AsyncFileSystem) else {}
        try:
            loc.fs.invalidate_cache(path)
            loc.fs.info(path, **kwargs)
            return
        except Exception as exc:
            err = permanent_error(url, exc)
            if err is not None:
                raise err from None
            timed_out = isinstance(exc, (FSTimeoutError, asyncio.TimeoutError))
            if not timed_out and classify(exc) != UNREACHABLE:
                return
            if last is None or not timed_out:  # the backend's own words beat a timeout's
                last = TimeoutError(f"no answer within {timeout:g} s") if timed_out else exc
        left = deadline - time.monotonic()
        if left <= 0:
            raise unreachable_error(url, last, timeout) from None
        logger.info("%s: cannot connect yet (%s); trying again for %.0f s more", url, type(last).__name__, left)
        time.sleep(min(pause, left))
        pause = min(2 * pause, 2.0)


def _read_exactly(fh: BinaryIO, n: int) -> bytes:
    """Up to ``n`` bytes of ``fh`` (fewer only at its end)."""
    parts, left = [], n
    while left > 0:
        chunk = fh.read(left)
        if not chunk:
            break
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)


def _abandon(fh: Any, url: str) -> None:
    """Give up an unfinished upload so that no object, partial or not, appears at ``url``.

    ``discard()`` aborts a started multipart (S3) or resumable (GCS) upload. The file is then
    marked closed: otherwise its ``__del__`` would call ``close()``, and gcsfs would upload
    the buffered part of a small file as a complete object.
    """
    discard = getattr(fh, "discard", None)
    if discard is not None:
        try:
            discard()
        except Exception:
            logger.debug("discarding the unfinished upload of %s failed", url, exc_info=True)
    try:
        fh.closed = True
    except AttributeError:
        pass
    if hasattr(fh, "buffer"):
        fh.buffer = None


def _protocols(fs: fsspec.AbstractFileSystem) -> tuple[str, ...]:
    proto = fs.protocol
    return (proto,) if isinstance(proto, str) else tuple(proto)
