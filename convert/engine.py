"""Execution engines: run per-video tasks in parallel and hand results back in input order.

Results come back in order, so the single shard writer sees the same sample sequence
whatever the number of workers: the output bytes do not depend on the engine.
``local`` uses a process pool on this machine (default); ``ray`` submits the same tasks to
a Ray cluster, which retries a task whose worker died.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable, Iterable, Iterator, Optional, TypeVar

logger = logging.getLogger(__name__)

__all__ = [
    "Engine", "LocalEngine", "RayEngine", "make_engine", "WorkerCrashed", "WorkerStartError", "keep_freed_memory",
    "die_with_parent",
]

T = TypeVar("T")
R = TypeVar("R")


class WorkerStartError(RuntimeError):
    """The local pool's processes cannot run at all (nothing would be converted)."""


class WorkerCrashed(Exception):
    """A task whose worker process died twice (for example FFmpeg crashing on a file)."""


class Engine:
    workers: int = 1

    def map_ordered(self, fn: Callable[[T], R], tasks: Iterable[T], *, window: Optional[int] = None) -> Iterator[R | WorkerCrashed]:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def start_method() -> str:
    """``fork`` on Linux while this process runs no other thread, else ``spawn``.

    A forked worker starts in milliseconds; a spawned one starts a fresh interpreter and
    imports PyAV, NumPy and this package (~0.25 s, 9% of a 40-video conversion with 2 workers).
    Forking is unsafe only when another thread may hold a lock at that instant, so the
    choice is made each time a pool starts: a run inside a threaded program (a notebook
    kernel, a server) spawns, as does a pool restarted after a crash (the run's writer
    and progress threads exist by then).
    """
    if sys.platform.startswith("linux") and threading.active_count() == 1:
        return "fork"
    return "spawn"


class LocalEngine(Engine):
    """A pool of ``workers`` processes (see :func:`start_method`); one worker runs tasks in this process."""

    def __init__(self, workers: int):
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.workers = workers
        self._pool: Optional[ProcessPoolExecutor] = None
        self._any_result = False

    def _new_pool(self) -> ProcessPoolExecutor:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        self._pool = ProcessPoolExecutor(
            self.workers, mp_context=multiprocessing.get_context(start_method()), initializer=_init_worker,
            initargs=(os.getpid(),),
        )
        return self._pool

    def map_ordered(self, fn, tasks, *, window=None):
        if self.workers == 1:
            # tasks run in this process: keep freed memory as a pool worker does (measured
            # +15% frames/s on raw clips), and give glibc its usual thresholds back after
            restore = keep_freed_memory()
            try:
                for t in tasks:
                    yield fn(t)
            finally:
                restore()
            return
        window = window or 2 * self.workers
        pool = self._pool or self._new_pool()
        pending: deque[tuple[Any, Future, int]] = deque()
        it = iter(tasks)
        exhausted = False
        while True:
            exhausted = exhausted or _fill(pending, it, window, lambda t: (t, pool.submit(fn, t), 0))
            if not pending:
                return
            task, fut, crashes = pending[0]
            try:
                result = fut.result()
            except BrokenProcessPool as exc:
                if not self._any_result and crashes >= 1:
                    raise WorkerStartError(
                        "worker processes die before finishing any task; if this runs from stdin or an "
                        "unimportable __main__ in a threaded program, run it from a file (multiprocessing 'spawn' re-imports __main__) "
                        "or use workers=1"
                    ) from exc
                logger.warning("a worker process died; restarting the pool and retrying %d tasks", len(pending))
                pool = self._new_pool()
                retried: deque[tuple[Any, Future, int]] = deque()
                for i, (t, _f, c) in enumerate(pending):
                    c = c + 1 if i == 0 else c
                    if c >= 2:
                        retried.append((t, _done_future(WorkerCrashed("worker process died twice on this task")), c))
                    else:
                        retried.append((t, pool.submit(fn, t), c))
                pending = retried
                continue
            pending.popleft()
            self._any_result = True
            yield result

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


def _init_worker(parent: int) -> None:
    die_with_parent(parent)
    keep_freed_memory()


_PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int) -> None:
    """Make this pool worker exit when process ``parent`` dies, however it dies (``kill -9``
    included): a worker left behind would decode for minutes into a spool no one reads.

    On Linux the kernel sends SIGKILL (``prctl(PR_SET_PDEATHSIG)``) when the thread that
    started the worker exits; elsewhere a thread checks the parent every second.
    """
    armed = False
    if sys.platform.startswith("linux"):
        try:
            armed = ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0
        except (OSError, AttributeError):
            armed = False
    if os.getppid() != parent:  # the parent died before the signal was armed
        os._exit(1)
    if not armed:
        threading.Thread(target=_watch_parent, args=(parent,), name="clipshards-parent-watch", daemon=True).start()


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(1)


_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_GLIBC_DEFAULT_THRESHOLD = 128 * 1024


def keep_freed_memory() -> Callable[[], None]:
    """Make glibc's ``malloc`` keep freed memory for reuse; returns a function that sets
    glibc's default thresholds again (pool workers never call it: they exit).

    A worker allocates and frees megabytes per clip (RGB frames, the clip). By default glibc
    maps such blocks fresh and returns them on free, so every clip first-touches new pages:
    ~10,000 page faults per 10 s 340x256 video, costlier still on a VM whose balloon takes
    freed pages back. Kept, the same pages serve clip after clip; the process stays at its peak.
    """
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return lambda: None
    mallopt(_M_MMAP_THRESHOLD, 32 << 20)  # glibc's maximum
    mallopt(_M_TRIM_THRESHOLD, 1 << 30)

    def restore() -> None:
        mallopt(_M_MMAP_THRESHOLD, _GLIBC_DEFAULT_THRESHOLD)
        mallopt(_M_TRIM_THRESHOLD, _GLIBC_DEFAULT_THRESHOLD)

    return restore


def _fill(pending: deque, tasks: Iterator[Any], window: int, submit: Callable[[Any], Any]) -> bool:
    """Submit tasks until ``window`` are pending; True once ``tasks`` is exhausted."""
    while len(pending) < window:
        try:
            t = next(tasks)
        except StopIteration:
            return True
        pending.append(submit(t))
    return False


def _done_future(value: Any) -> Future:
    f: Future = Future()
    f.set_result(value)
    return f


class RayEngine(Engine):
    """Tasks on a Ray cluster: ``address=None`` joins the cluster this process is connected to,
    or the one named by ``RAY_ADDRESS``, else starts a local one.

    ``workers=0`` sizes the window of tasks in flight to the cluster's CPUs. A task whose
    worker process dies is run again by Ray up to ``max_retries`` times; a task is a pure
    function of its video, so a retry writes the same spool bytes.
    """

    def __init__(self, workers: int = 0, address: Optional[str] = None, max_retries: int = 3):
        if workers < 0:
            raise ValueError(f"workers must be >= 0 (0: one per cluster CPU), got {workers}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        try:
            import ray
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise RuntimeError("--engine ray needs Ray: pip install 'clipshards[ray]'") from exc
        self._ray = ray
        self._owns = False
        if not ray.is_initialized():
            ray.init(address=address, ignore_reinit_error=True, log_to_driver=False, include_dashboard=False)
            self._owns = True
        self.workers = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        self.max_retries = max_retries
        logger.info("ray engine: %d tasks in flight at most, %d retries per task", 2 * self.workers, max_retries)

    def map_ordered(self, fn, tasks, *, window=None):
        ray = self._ray
        remote = ray.remote(num_cpus=1, max_retries=self.max_retries, retry_exceptions=False)(fn)
        window = window or 2 * self.workers
        crashed = (ray.exceptions.WorkerCrashedError, ray.exceptions.OutOfMemoryError)
        pending: deque = deque()
        it = iter(tasks)
        exhausted = False
        try:
            while True:
                exhausted = exhausted or _fill(pending, it, window, remote.remote)
                if not pending:
                    return
                ref = pending.popleft()
                try:
                    result = ray.get(ref)
                except crashed as exc:
                    result = WorkerCrashed(f"ray worker died {self.max_retries + 1} times: {type(exc).__name__}")
                yield result
        finally:
            for ref in pending:
                ray.cancel(ref, force=True)

    def close(self) -> None:
        if self._owns:
            self._ray.shutdown()


def make_engine(name: str, workers: int, address: Optional[str] = None) -> Engine:
    if name == "local":
        return LocalEngine(workers)
    if name == "ray":
        return RayEngine(workers, address)
    raise ValueError(f"engine={name!r}: must be 'local' or 'ray'")
