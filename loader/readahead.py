"""Read-ahead for sequential streams over remote files, so the loader is not bound by request latency.

A :class:`ReadaheadReader` cuts its byte range into blocks, keeps ``1 + readahead`` block
requests in flight on a thread pool and hands their bytes out in order. Each block is one
request, retried on its own underneath; block boundaries depend only on the range and the
options, so the bytes handed out are the file's bytes in order whatever failed and was repeated.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import Executor, Future
from typing import Callable

from .ranges import RangeReader

__all__ = ["ReadaheadReader"]


class ReadaheadReader(RangeReader):
    """A sequential stream over bytes ``[start, end)`` of a remote file.

    ``fetch(a, b)`` returns bytes ``[a, b)`` (fewer only at the file's end) and runs on
    ``executor``. ``aligned``: blocks start at multiples of ``block_size`` (what the block
    cache stores), else at ``start + k * block_size``.
    """

    def __init__(self, fetch: Callable[[int, int], bytes], executor: Executor, *, url: str, start: int, end: int,
                 block_size: int, readahead: int, aligned: bool) -> None:
        self._fetch = fetch
        self._executor = executor
        self._block = block_size
        self._ahead = readahead
        self._aligned = aligned
        self.url = url
        self.pos = start
        self.end = end
        self._next = start
        self._pending: deque[tuple[int, int, Future]] = deque()
        self._cur = memoryview(b"")
        self._done = False

    def _schedule(self) -> None:
        block = self._block
        while not self._done and len(self._pending) < 1 + self._ahead and self._next < self.end:
            a = self._next
            b = min(self.end, (a // block + 1) * block if self._aligned else a + block)
            self._pending.append((a, b, self._executor.submit(self._fetch, a, b)))
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
