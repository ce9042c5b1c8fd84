"""Retries of remote requests: which failures are transient, the backoff between attempts, and the error when they run out.

Transient: connection resets, bodies cut short, HTTP 5xx, 408 and 429, a request slower than
``timeout``. Permanent: a missing file (404, ``FileNotFoundError``), a forbidden one, other 4xx,
and no credentials at all: these fail at once, the error naming the URL and the fix (see
:mod:`clipshards.convert.storage_errors`, which both halves share).
A request is retried only when repeating it returns the same bytes, which every ranged read of
the transport does (it asks for an exact range and checks the length it got).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Callable, Optional, TypeVar

from fsspec.exceptions import FSTimeoutError

from clipshards.convert.storage_errors import CREDENTIALS, DENIED, UNREACHABLE, StorageError, classify, describe, http_status

from .options import TransportOptions

logger = logging.getLogger(__name__)

__all__ = ["TransportError", "ShortRead", "is_transient", "http_status", "retrying"]

_PERMANENT = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)
_BACKENDS = ("aiohttp", "botocore", "aiobotocore", "urllib3", "requests", "gcsfs", "google")
T = TypeVar("T")


class TransportError(StorageError):
    """A remote read that failed after its retries, or at once when retrying cannot help (no
    credentials, access denied); names the URL, the last error and, where known, the fix."""

    def __init__(self, url: str, what: str, attempts: int, last: BaseException, fix: str = "", kind: str = "") -> None:
        _fill(self, url, what, attempts, f"{type(last).__name__}: {last}", fix, kind)

    def __reduce__(self):
        return (_rebuild_transport_error, (self.url, self.what, self.attempts, self.last, self.fix, self.kind))


def _fill(err: TransportError, url: str, what: str, attempts: int, last: str, fix: str, kind: str) -> None:
    err.what, err.attempts, err.last = what, attempts, last
    problem = f"{what} failed after {attempts} attempt{'s' if attempts != 1 else ''} (last error {last})"
    StorageError.__init__(err, url, problem, fix, kind)


def _rebuild_transport_error(url: str, what: str, attempts: int, last: str, fix: str = "", kind: str = "") -> TransportError:
    err = TransportError.__new__(TransportError)
    _fill(err, url, what, attempts, last, fix, kind)
    return err


def _hint(kind: str, url: str, exc: BaseException) -> str:
    """What the error means and the fix, for a TransportError of ``kind``."""
    problem, fix = describe(kind, url, exc, quote=False)
    return f"{problem}: {fix}"


class ShortRead(OSError):
    """A response with fewer bytes than asked for, before the end of the file."""


def is_transient(exc: BaseException) -> bool:
    """Whether a failed request may succeed when repeated (network trouble, 5xx, 408, 429)."""
    if isinstance(exc, _PERMANENT):
        return False
    status = http_status(exc)
    if isinstance(status, int) and 400 <= status < 500:
        return status in (408, 429)
    if isinstance(exc, (OSError, TimeoutError, asyncio.TimeoutError, FSTimeoutError, ConnectionError)):
        return True
    return backend_error(exc)


def backend_error(exc: BaseException) -> bool:
    """Whether ``exc`` comes from a storage backend's library (an HTTP or cloud client)."""
    return type(exc).__module__.split(".")[0] in _BACKENDS


def backoff_delay(options: TransportOptions, attempt: int) -> float:
    """Seconds to wait before retry ``attempt + 1``: doubling from ``backoff`` up to
    ``max_backoff``, times a jitter in [0.5, 1] so that workers do not retry in step."""
    return min(options.max_backoff, options.backoff * 2**attempt) * random.uniform(0.5, 1.0)


def retrying(fn: Callable[[], T], *, url: str, what: str, options: TransportOptions,
             on_retry: Optional[Callable[[], None]] = None) -> T:
    """``fn()``, repeated after transient failures up to ``options.retries`` times.

    A missing file raises ``FileNotFoundError`` naming ``url``; no credentials, a refused
    request (401/403) or another permanent backend failure, or a transient one whose retries
    ran out, raises :class:`TransportError` (a ``PermissionError`` from the store is raised as
    one, naming the URL and the fix); other errors (bugs, bad arguments) pass through
    unchanged. ``on_retry`` is called before each retry.
    """
    for attempt in range(options.retries + 1):
        try:
            return fn()
        except Exception as exc:
            kind = classify(exc)
            if kind in (CREDENTIALS, DENIED):  # waiting will not bring credentials
                if isinstance(exc, PermissionError) and http_status(exc) is None:
                    raise PermissionError(f"{url}: {_hint(kind, url, exc)} ({type(exc).__name__}: {exc})") from None
                raise TransportError(url, what, attempt + 1, exc, _hint(kind, url, exc), kind) from None
            if isinstance(exc, FileNotFoundError):
                # fsspec's HTTP stat reports any failure, a 503 too, as "not found"
                if exc.__cause__ is None or not is_transient(exc.__cause__):
                    raise FileNotFoundError(f"{url} does not exist") from None
                exc = exc.__cause__  # type: ignore[assignment]
            elif http_status(exc) == 404:
                raise FileNotFoundError(f"{url} does not exist") from None
            elif not is_transient(exc):
                if http_status(exc) is not None or backend_error(exc):
                    raise TransportError(url, what, attempt + 1, exc) from exc
                raise
            if attempt == options.retries:
                fix = _hint(kind, url, exc) if kind == UNREACHABLE else ""
                raise TransportError(url, what, attempt + 1, exc, fix, kind) from exc
            delay = backoff_delay(options, attempt)
            if on_retry is not None:
                on_retry()
            logger.warning("%s: %s failed (%s: %s); retry %d of %d in %.2f s", url, what,
                           type(exc).__name__, exc, attempt + 1, options.retries, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover
