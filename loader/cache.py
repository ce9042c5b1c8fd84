"""The local cache of remote shards: blocks of files as files in one folder, least recently used evicted.

Only shards go through it (``index.json`` and ``offsets.npy`` are always read from the
source). Several processes and DataLoader workers can share the folder: writes are atomic
and a block that vanishes under a reader is fetched again.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
import uuid
from typing import Any, Callable, Optional

logger = logging.getLogger(__name__)

__all__ = ["BlockCache"]


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

    def read(self, url: str, version: str, size: int, start: int, end: Optional[int], block_size: int,
             fetch: Callable[[int, int], bytes], on_hit: Callable[[], None] = lambda: None) -> bytes:
        """Bytes ``[start, end)`` of a ``size``-byte file, assembled from whole blocks of
        ``block_size``: each block from the cache when it holds it (``on_hit``), else ``fetch(lo, hi)``,
        then stored. Blocks are keyed by ``url`` and ``version``: a changed file is never served stale."""
        end = size if end is None else min(end, size)
        if start >= end:
            return b""
        parts = []
        for i in range(start // block_size, (end - 1) // block_size + 1):
            lo, hi = i * block_size, min(size, (i + 1) * block_size)
            key = self.key(url, f"{size}|{version}", i)
            data = self.get(key, hi - lo)
            if data is None:
                data = fetch(lo, hi)
                self.put(key, data)
            else:
                on_hit()
            parts.append(memoryview(data)[max(start, lo) - lo : min(end, hi) - lo])
        return b"".join(parts)

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
