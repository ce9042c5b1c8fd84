"""Retries of remote requests: which failures are transient, the backoff between attempts, and the error when they run out.

Transient: connection resets, bodies cut short, HTTP 5xx, 408 and 429, a request slower than
``timeout``. Permanent: a missing file (404, ``FileNotFoundError``), a forbidden one, other 4xx.
A request is retried only when repeating it returns the same bytes, which every ranged read of
the transport does (it asks for an exact range and checks the length it got).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Callable, Mapping, Optional, TypeVar

from fsspec.exceptions import FSTimeoutError

from .options import TransportOptions

logger = logging.getLogger(__name__)

__all__ = ["TransportError", "ShortRead", "is_transient", "http_status", "retrying"]

_PERMANENT = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)
_BACKENDS = ("aiohttp", "botocore", "aiobotocore", "urllib3", "requests", "gcsfs", "google")
T = TypeVar("T")


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


class ShortRead(OSError):
    """A response with fewer bytes than asked for, before the end of the file."""


def http_status(exc: BaseException) -> Optional[int]:
    """The HTTP status an fsspec backend's exception carries (aiohttp, gcsfs, botocore), or None."""
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

    A missing file raises ``FileNotFoundError`` naming ``url``; a permanent backend failure, or
    a transient one whose retries ran out, raises :class:`TransportError`; other errors (bugs,
    bad arguments) pass through unchanged. ``on_retry`` is called before each retry.
    """
    for attempt in range(options.retries + 1):
        try:
            return fn()
        except Exception as exc:
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
                raise TransportError(url, what, attempt + 1, exc) from exc
            delay = backoff_delay(options, attempt)
            if on_retry is not None:
                on_retry()
            logger.warning("%s: %s failed (%s: %s); retry %d of %d in %.2f s", url, what,
                           type(exc).__name__, exc, attempt + 1, options.retries, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover
