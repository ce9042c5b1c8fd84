"""Decoding ahead: a generator run in a thread of its own, its items handed over in order.

A worker that has a core to spare (fewer workers than cores, e.g. ``--workers 1``) decodes
the next frames while its caller encodes and writes the previous ones: PyAV's decoding and
scaling, Pillow's JPEG encoding, NumPy's copies, ``write`` and xxHash all release the GIL,
so the two threads run on two cores. The items and their order are those of the generator,
so the output bytes do not depend on it.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from typing import Iterable, Iterator, TypeVar

logger = logging.getLogger(__name__)

__all__ = ["prefetch", "usable_cores", "spare_core"]

T = TypeVar("T")

_ITEM, _END, _ERROR = 0, 1, 2


def usable_cores() -> int:
    """The cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def spare_core(workers: int) -> bool:
    """Whether ``workers`` decoding processes leave this machine a core each could decode ahead on."""
    return workers < usable_cores()


def prefetch(items: Iterable[T], *, depth: int, name: str = "clipshards-decode") -> Iterator[T]:
    """The items of ``items`` in order, computed in a thread at most ``depth`` items ahead.

    An exception raised by ``items`` is raised here, at the item where it happened. When
    the consumer stops early (an error, ``close()``), the thread stops after its current
    item and closes ``items`` itself (a generator's ``finally`` runs in the thread it runs
    in), before this generator returns.
    """
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    handoff: queue.Queue[tuple[int, object]] = queue.Queue(maxsize=depth)
    stop = threading.Event()
    thread = threading.Thread(target=_produce, args=(iter(items), handoff, stop), name=name, daemon=True)
    thread.start()
    try:
        while True:
            kind, value = handoff.get()
            if kind == _ITEM:
                yield value  # type: ignore[misc]
            elif kind == _END:
                return
            else:
                raise value  # type: ignore[misc]
    finally:
        stop.set()
        while thread.is_alive():  # make room for the item it may be handing over, then wait for it
            try:
                handoff.get(timeout=0.05)
            except queue.Empty:
                pass
        thread.join()


def _produce(it: Iterator[T], handoff: queue.Queue, stop: threading.Event) -> None:
    try:
        for item in it:
            handoff.put((_ITEM, item))
            if stop.is_set():
                return
        handoff.put((_END, None))
    except BaseException as exc:  # handed to the consumer, which raises it
        handoff.put((_ERROR, exc))
    finally:
        close = getattr(it, "close", None)
        if close is not None:
            close()
