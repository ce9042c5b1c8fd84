"""What a failed storage request means and what to do about it, in one line naming the URL.

Both halves use it: the converter's :mod:`.storage` (OUT on object storage) and the loader's
retries (:mod:`clipshards.loader.retry`). Failures that waiting cannot cure -- no credentials,
access denied (HTTP 401/403), a bucket that does not exist -- are reported at once and never
retried. An endpoint that cannot be connected to (connection refused, unknown host, connect
timeout) may come back, so it is tried again, but only for ``connect_timeout`` seconds
(:data:`CONNECT_TIMEOUT`, 10 by default; ``CLIPSHARDS_CONNECT_TIMEOUT``). The error message says
what went wrong, with the backend's own words, and the fix; no credential is ever part of it.
"""

from __future__ import annotations

import os
import re
import socket
from typing import Any, Iterator, Mapping, Optional

__all__ = [
    "CONNECT_TIMEOUT",
    "CONNECT_TIMEOUT_ENV",
    "connect_timeout_from_env",
    "connect_timeout_ok",
    "StorageError",
    "CREDENTIALS",
    "DENIED",
    "NO_BUCKET",
    "UNREACHABLE",
    "classify",
    "http_status",
    "permanent_error",
    "unreachable_error",
    "describe",
]

CREDENTIALS = "credentials"  # none found where the client looks (raised before any request)
DENIED = "denied"  # the server refused them: HTTP 401 or 403
NO_BUCKET = "no bucket"
UNREACHABLE = "unreachable"  # no connection to the endpoint at all

CONNECT_TIMEOUT = 10.0
"""Seconds an endpoint that cannot be connected to is tried before giving up (``connect_timeout``)."""
CONNECT_TIMEOUT_ENV = "CLIPSHARDS_CONNECT_TIMEOUT"
MAX_CONNECT_TIMEOUT = 3600.0

_CREDENTIAL_ERRORS = frozenset({
    "NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError", "NoAuthTokenError",
    "UnauthorizedSSOTokenError", "SSOTokenLoadError", "TokenRetrievalError",  # botocore
    "DefaultCredentialsError", "RefreshError",  # google.auth (gcsfs)
})
_CONNECT_ERRORS = frozenset({
    "EndpointConnectionError", "ConnectTimeoutError",  # botocore
    "ClientConnectorError", "ClientConnectorDNSError", "ConnectionTimeoutError",  # aiohttp
    "ConnectTimeout", "NewConnectionError",  # requests / urllib3
})
_NOT_FOUND_CODES = ("NoSuchKey", "NoSuchBucket", "NotFound")
# what a refusal says where the exception carries no status (gcsfs: OSError("Forbidden: <path>"))
_REFUSED = re.compile(r"^(Forbidden|Unauthorized|Access Denied|AccessDenied)\b")


def connect_timeout_ok(value: Any) -> bool:
    """Whether ``value`` is a connect timeout: seconds in (0, 3600]."""
    return not isinstance(value, bool) and isinstance(value, (int, float)) and 0 < value <= MAX_CONNECT_TIMEOUT


def connect_timeout_from_env(environ: Optional[Mapping[str, str]] = None) -> float:
    """``$CLIPSHARDS_CONNECT_TIMEOUT`` (seconds), or :data:`CONNECT_TIMEOUT` when it is unset."""
    raw = (os.environ if environ is None else environ).get(CONNECT_TIMEOUT_ENV, "")
    if not raw:
        return CONNECT_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not connect_timeout_ok(value):
        raise ValueError(f"{CONNECT_TIMEOUT_ENV}={raw!r}: expected a number of seconds in (0, {MAX_CONNECT_TIMEOUT:g}]")
    return value


class StorageError(OSError):
    """A storage failure reported with what went wrong and what to do: ``"<url>: <problem>; <fix>"``.

    ``kind`` is one of :data:`CREDENTIALS`, :data:`DENIED`, :data:`NO_BUCKET`,
    :data:`UNREACHABLE` (or empty for other failures, such as retries that ran out).
    """

    def __init__(self, url: str, problem: str, fix: str = "", kind: str = "") -> None:
        self.url, self.problem, self.fix, self.kind = url, problem, fix, kind
        super().__init__(f"{url}: {problem}" + (f"; {fix}" if fix else ""))

    def __reduce__(self):  # DataLoader workers send it to the main process
        return (StorageError, (self.url, self.problem, self.fix, self.kind))


def http_status(exc: BaseException) -> Optional[int]:
    """The HTTP status an fsspec backend's exception carries (aiohttp, gcsfs, botocore), or None."""
    for attr in ("status", "code"):
        v = getattr(exc, attr, None)
        if isinstance(v, int) and not isinstance(v, bool):
            return v
    response = getattr(exc, "response", None)
    if isinstance(response, Mapping):
        code = str(response.get("Error", {}).get("Code", ""))
        if code in _NOT_FOUND_CODES:
            return 404
        v = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if isinstance(v, int):
            return v
    return None


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and the exceptions it was raised from (``__cause__``), a few levels deep."""
    seen: set[int] = set()
    e: Optional[BaseException] = exc
    while e is not None and id(e) not in seen and len(seen) < 8:
        seen.add(id(e))
        yield e
        e = e.__cause__


def _is_connect_error(e: BaseException) -> bool:
    return (type(e).__name__ in _CONNECT_ERRORS or isinstance(e, (ConnectionRefusedError, socket.gaierror))
            or (isinstance(e, OSError) and "cannot connect to host" in str(e).lower()))


def classify(exc: BaseException, *, remote: bool = True) -> str:
    """What a failed request says about the store (one of the kinds above), or ``""``: anything
    else, which may be transient. ``remote``: a ``PermissionError`` is the server's 403."""
    for e in _chain(exc):
        text = str(e)
        if type(e).__name__ in _CREDENTIAL_ERRORS or "Unable to locate credentials" in text:
            return CREDENTIALS
        status = http_status(e)
        if status in (401, 403) or (remote and isinstance(e, PermissionError)) or _REFUSED.search(text.split("\n")[0]):
            return DENIED
        code = str((getattr(e, "response", None) or {}).get("Error", {}).get("Code", "")) \
            if isinstance(getattr(e, "response", None), Mapping) else ""
        if code == "NoSuchBucket" or "bucket does not exist" in text.lower():
            return NO_BUCKET
        if _is_connect_error(e):
            return UNREACHABLE
    return ""


def _protocol(url: str) -> str:
    return url.split("://", 1)[0].lower() if "://" in url else "file"


def _credentials_fix(protocol: str) -> str:
    if protocol in ("s3", "s3a"):
        return ("set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE), or pass the storage options "
                "key and secret (storage_options= in Python, --storage-option on the command line); "
                "anon=true reads a public bucket")
    if protocol in ("gs", "gcs"):
        return ("set GOOGLE_APPLICATION_CREDENTIALS to a service-account key file or run "
                "'gcloud auth application-default login', or pass the storage option token=<key file> "
                "(storage_options= in Python, --storage-option on the command line); token=anon reads a public bucket")
    return ("pass the credentials the server expects in the storage options, e.g. "
            "client_kwargs.headers.Authorization (storage_options= in Python, --storage-option on the command line)")


def describe(kind: str, url: str, exc: BaseException, *, quote: bool = True) -> tuple[str, str]:
    """``(problem, fix)`` for a failure of ``kind`` at ``url``; ``quote``: the problem quotes the
    backend's error (leave it out where the caller shows it already)."""
    said = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".rstrip(": ")
    protocol = _protocol(url)
    if kind == CREDENTIALS:
        problem, fix = "no credentials found", _credentials_fix(protocol)
    elif kind == DENIED:
        status = next((s for s in map(http_status, _chain(exc)) if s in (401, 403)), 403)
        if status == 401:
            problem, fix = "the store refused the request as unauthenticated (HTTP 401)", _credentials_fix(protocol)
        else:
            problem = "access denied (HTTP 403)"
            fix = ("the credentials in use may not read or write it: check the bucket's permissions and which "
                   "credentials are picked up (environment, profile, storage options)")
    elif kind == NO_BUCKET:
        problem, fix = "the bucket does not exist", "check the bucket name in the URL, or create the bucket first"
    elif kind == UNREACHABLE:
        problem = "cannot connect to the storage endpoint"
        fix = ("check the endpoint (AWS_ENDPOINT_URL or the storage option client_kwargs.endpoint_url for S3, "
               "endpoint_url for GCS, the host of an https:// URL) and the network; to wait longer raise "
               "connect_timeout (CLIPSHARDS_CONNECT_TIMEOUT, --connect-timeout)")
    else:
        return said, ""
    return (f"{problem} ({said})" if quote else problem), fix


def permanent_error(url: str, exc: BaseException, *, remote: bool = True) -> Optional[StorageError]:
    """A :class:`StorageError` for a failure that retrying cannot cure (no credentials, access
    denied, no such bucket), or None for any other."""
    kind = classify(exc, remote=remote)
    if kind not in (CREDENTIALS, DENIED, NO_BUCKET):
        return None
    return StorageError(url, *describe(kind, url, exc), kind=kind)


def unreachable_error(url: str, exc: BaseException, seconds: float) -> StorageError:
    """The endpoint could not be connected to for ``seconds``."""
    problem, fix = describe(UNREACHABLE, url, exc)
    return StorageError(url, f"{problem}, tried for {seconds:.0f} s", fix, kind=UNREACHABLE)
