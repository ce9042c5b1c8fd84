"""The spool, read side: where workers leave each video's tar-encoded samples for the writer.

A local run spools to a private temporary folder of ``window + 1`` slot files reused video
after video (see :mod:`.worker`); a slot is handed to the next task only once the writer is
done with it, direct writes from its mapped pages included. A run on Ray, whose workers may
sit on other machines, spools one file per video under ``OUT/<split>/_spool``.
"""

from __future__ import annotations

import functools
import logging
import mmap
import os
import shutil
import tempfile
import threading
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional

from .storage import Location
from .writer import MIN_DIRECT_VIEW

if TYPE_CHECKING:  # pragma: no cover
    from .worker import VideoResult

logger = logging.getLogger(__name__)

__all__ = ["SPOOL_DIR", "SPOOL_PREFIX", "Spool", "MappedSpool", "remove_orphan_spools"]

SPOOL_DIR = "_spool"
SPOOL_PREFIX = "clipshards-spool-"  # + pid + "-": local spool folders, see remove_orphan_spools


def remove_orphan_spools() -> None:
    """Delete local spool folders of conversions whose process is gone (killed runs)."""
    tmp = tempfile.gettempdir()
    for name in os.listdir(tmp):
        if not name.startswith(SPOOL_PREFIX):
            continue
        pid = name[len(SPOOL_PREFIX):].partition("-")[0]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            logger.info("removing the spool of a killed conversion: %s", os.path.join(tmp, name))
            shutil.rmtree(os.path.join(tmp, name), ignore_errors=True)
        except OSError:
            pass


class MappedSpool:
    """A spool slot whose samples are written straight from its pages, run by run.

    Each run is its own read-only mapping, unmapped as soon as the writer thread has written
    it: the pages it touched leave this process's RSS, which so stays the same whatever the
    length of the videos. The slot stays taken (``free`` cleared) until every run is
    written, so no worker overwrites pages being written.
    """

    def __init__(self, fd: int, free: threading.Event):
        self.fd, self.free = fd, free
        self._lock = threading.Lock()
        self._open = 0
        self._finished = False

    def view(self, pos: int, size: int) -> tuple[memoryview, Callable[[], None]]:
        """Bytes ``[pos, pos + size)`` of the slot (``pos`` need not be page-aligned), and the
        function the writer thread calls once they are written."""
        start = pos - pos % mmap.ALLOCATIONGRANULARITY
        mm = mmap.mmap(self.fd, pos + size - start, offset=start, access=mmap.ACCESS_READ)
        with self._lock:
            self._open += 1
            self.free.clear()
        return memoryview(mm)[pos - start : pos - start + size], functools.partial(self._release, mm)

    def _release(self, mm: mmap.mmap) -> None:
        try:
            mm.close()
        except BufferError:  # pragma: no cover - a view still exported: it unmaps when collected
            pass
        with self._lock:
            self._open -= 1
            self._maybe_done()

    def finish(self) -> None:
        """No more views will be made."""
        with self._lock:
            self._finished = True
            self._maybe_done()

    def _maybe_done(self) -> None:
        if self._finished and self._open == 0:
            self.free.set()


class Spool:
    """One run's spool: where tasks write (``url``, ``storage_options``), which slot each
    task gets, and reading a finished video's samples back."""

    def __init__(self, out: Location, *, local: bool, window: int):
        """``local``: a private temporary folder with ``window + 1`` reused slot files (tasks
        run on this machine, at most ``window`` ahead of the writer); else ``out/_spool``."""
        self._out = out
        self._dir = tempfile.mkdtemp(prefix=f"{SPOOL_PREFIX}{os.getpid()}-") if local else None
        self.url = self._dir or out.join_url(SPOOL_DIR)
        self.storage_options = None if self._dir else out.storage_options
        self.location = Location(self.url, self.storage_options)
        self.location.makedirs()
        # when task k is submitted, the tasks before k - window have been consumed, so slot
        # k % (window + 1) is free unless the writer still writes from its pages
        self.slots = window + 1 if self._dir else 0
        self._free = [threading.Event() for _ in range(self.slots)]  # cleared while the writer maps the slot
        for free in self._free:
            free.set()

    def slot_for(self, k: int) -> int:
        """The slot file of the ``k``-th task (-1: a file of its own), once the writer is done with it."""
        if not self.slots:
            return -1
        self._free[k % self.slots].wait()
        return k % self.slots

    @contextmanager
    def read(self, res: "VideoResult") -> Iterator[tuple[Any, Optional[MappedSpool]]]:
        """The open spool file of ``res`` and, where direct writes can gain, its slot to map
        run by run; a video's own file is removed afterwards, whatever happens."""
        loc = self.location
        path = loc.path(res.spool_name)
        try:
            with open(path, "rb", buffering=0) if loc.is_local else loc.fs.open(path, "rb") as fh:
                mapped = self._map(fh, res) if loc.is_local else None
                try:
                    yield fh, mapped
                finally:
                    if mapped is not None:
                        mapped.finish()
        finally:
            if not res.spool_reused:
                loc.remove(res.spool_name)

    def _map(self, fh: Any, res: "VideoResult") -> Optional[MappedSpool]:
        """The slot file, to be mapped run by run for direct writes (the slot is not handed to
        another task until they are done); None where that cannot gain."""
        total = sum(res.sample_sizes)
        if not res.spool_reused or total < MIN_DIRECT_VIEW:
            return None
        try:
            if os.fstat(fh.fileno()).st_size < total:
                return None  # short: the copying path reports it
        except OSError:
            return None
        return MappedSpool(fh.fileno(), self._free[res.slot])

    def remove(self) -> None:
        """Delete the spool (at the end of the run, whatever its outcome)."""
        if self._dir:
            shutil.rmtree(self._dir, ignore_errors=True)
        else:
            self._out.remove_tree(SPOOL_DIR)
