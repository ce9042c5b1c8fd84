"""One writer per output: a run holds a lock on ``OUT/<split>/`` from before it reads the
output until it has written its index.

Two runs into one output would interleave their shards (and the second would find the
first's index and call a broken output finished). A second run fails at once, naming the
holder's host and pid.

- **Local folder**: an advisory lock (``flock``) on ``OUT/<split>/_lock``. The kernel releases
  it when the holder exits, however it dies, so a killed run's lock is free at once. The file
  holds the holder's host, pid and start time (for the message) and is removed by the holder
  when it is done; its worker processes do not hold it (closed in forked children).
- **Object storage**: a lease object ``OUT/<split>/_lock.json`` (host, pid, a unique token, an
  expiry) renewed by a heartbeat thread every ``ttl / 4`` while the run lives. It is created
  with a conditional write (S3 ``If-None-Match: *``, GCS ``ifGenerationMatch=0``) and read back
  after a short pause, which also catches a store that ignores the condition. An expired lease
  (its run died, or lost the store for ``ttl``) is taken over, as is one of a process of this
  host that no longer exists. A lease is never renewed once expired: a run that lost it stops
  at its next video (:meth:`Lease.check`). Hosts' clocks must agree to well within ``ttl``.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import socket
import threading
import time
import uuid
from datetime import datetime, timezone
from typing import Any, Optional

from .errors import ConversionError, OutputLocked, OutputUnusable
from .storage import Location, StorageError

logger = logging.getLogger(__name__)

__all__ = ["LOCK_NAME", "LEASE_NAME", "FileLock", "Lease", "lock_output"]

LOCK_NAME = "_lock"
LEASE_NAME = "_lock.json"

_HELD_FDS: set[int] = set()


def _close_in_child() -> None:
    """A forked worker must not keep the parent's lock alive after the parent died."""
    for fd in list(_HELD_FDS):
        try:
            os.close(fd)
        except OSError:
            pass
    _HELD_FDS.clear()


os.register_at_fork(after_in_child=_close_in_child)


def _holder_info(token: str = "") -> dict[str, Any]:
    info: dict[str, Any] = {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if token:
        info["token"] = token
    return info


def _describe(holder: Optional[dict[str, Any]]) -> str:
    if not holder:
        return "another run (its host and pid not yet recorded)"
    return f"another run (host {holder.get('host', '?')}, pid {holder.get('pid', '?')}, started {holder.get('started', '?')})"


def _unusable(url: str, path: str, exc: OSError) -> OutputUnusable:
    """The message for an OUT that cannot hold files, saying why (not "rerun to resume")."""
    if exc.errno in (errno.ENOTDIR, errno.EEXIST):
        blocker = path
        while blocker and not os.path.exists(blocker):
            blocker = os.path.dirname(blocker)
        why = f"{blocker!r} is a file, not a folder"
    elif exc.errno == errno.EROFS:
        why = "the filesystem is read-only"
    elif exc.errno in (errno.EACCES, errno.EPERM):
        why = "permission denied (a read-only folder?)"
    else:
        why = exc.strerror or str(exc)
    return OutputUnusable(f"cannot write the output {url}: {why}; choose another OUT")


class FileLock:
    """The lock on a local output folder (see the module's docstring)."""

    def __init__(self, loc: Location):
        self.url = loc.join_url(LOCK_NAME)
        self.path = loc.path(LOCK_NAME)
        try:
            os.makedirs(loc.root, exist_ok=True)
            self.fd = self._open_locked()
        except OSError as exc:
            raise _unusable(loc.url, loc.root, exc) from exc
        _HELD_FDS.add(self.fd)
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, json.dumps(_holder_info()).encode(), 0)

    def _open_locked(self) -> int:
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd)
                os.close(fd)
                raise OutputLocked(
                    f"{os.path.dirname(self.url)} is being written by {_describe(holder)}; "
                    "wait for it to finish or stop it (two runs into one OUT would mix their shards)"
                ) from None
            except BaseException:
                os.close(fd)
                raise
            try:
                if os.path.samestat(os.fstat(fd), os.stat(self.path)):
                    return fd
            except FileNotFoundError:
                pass
            os.close(fd)  # its holder removed that file while this run waited: lock the new one

    def check(self) -> None:
        """Nothing to check: the kernel holds a local lock until this process exits."""

    def release(self) -> None:
        try:
            os.unlink(self.path)  # still locked: a run that opens it now sees it gone and retries
        except OSError:
            pass
        _HELD_FDS.discard(self.fd)
        os.close(self.fd)

    def __enter__(self) -> "FileLock":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def _read_holder(fd: int) -> Optional[dict[str, Any]]:
    """What the lock's holder wrote (it may be a moment from writing it)."""
    for _ in range(20):
        data = os.pread(fd, 4096, 0)
        if data:
            try:
                return json.loads(data)
            except ValueError:
                pass
        time.sleep(0.01)
    return None


def _process_gone(pid: Any) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except (OSError, ValueError, TypeError):
        return False
    return False


class Lease:
    """The lock on an object-store output (see the module's docstring)."""

    def __init__(self, loc: Location, *, ttl: float = 60.0, settle: float = 0.5):
        if not ttl > 0 or not settle >= 0:
            raise ValueError(f"ttl={ttl!r}, settle={settle!r}: need ttl > 0 and settle >= 0")
        self.loc, self.url = loc, loc.join_url(LEASE_NAME)
        self.ttl, self.settle = ttl, settle
        self.token = uuid.uuid4().hex
        self.info = _holder_info(self.token)
        self.expires = 0.0
        self.lost: Optional[str] = None
        self._stop = threading.Event()
        self._acquire()
        self._thread = threading.Thread(target=self._heartbeat, name="clipshards-lease", daemon=True)
        self._thread.start()

    def _read(self) -> Optional[dict[str, Any]]:
        try:
            data = self.loc.read_bytes(LEASE_NAME)
        except FileNotFoundError:
            return None
        try:
            lease = json.loads(data)
        except ValueError:
            return {}  # damaged: no expiry, so taken over
        return lease if isinstance(lease, dict) else {}

    def _write(self, *, create: bool) -> None:
        expires = time.time() + self.ttl
        body = json.dumps({**self.info, "expires": round(expires, 3), "ttl": self.ttl}).encode()
        self.loc.fs.pipe_file(self.loc.path(LEASE_NAME), body, mode="create" if create else "overwrite")
        self.expires = expires

    def _takeable(self, lease: dict[str, Any]) -> bool:
        """Expired, or held by a process of this host that is gone."""
        expires = lease.get("expires")
        if not isinstance(expires, (int, float)) or expires < time.time():
            return True
        return lease.get("host") == self.info["host"] and _process_gone(lease.get("pid"))

    def _refuse(self, lease: Optional[dict[str, Any]]) -> OutputLocked:
        until = ""
        if lease and isinstance(lease.get("expires"), (int, float)):
            until = datetime.fromtimestamp(lease["expires"], timezone.utc).isoformat(timespec="seconds")
            until = f"; if that run is dead its lease expires at {until} (or delete {self.url})"
        return OutputLocked(
            f"{self.loc.url} is being written by {_describe(lease)}{until}; two runs into one OUT would mix their shards"
        )

    def _acquire(self) -> None:
        current = self._read()
        if current is not None and not self._takeable(current):
            raise self._refuse(current)
        if current is not None:
            logger.warning("taking over the stale lock %s of %s", self.url, _describe(current))
        try:
            self._write(create=current is None)
        except FileExistsError:  # another run created it since: the store honoured the condition
            raise self._refuse(self._read()) from None
        time.sleep(self.settle)
        now = self._read()
        if not now or now.get("token") != self.token:  # another run wrote it after this one
            raise self._refuse(now)

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.ttl / 4):
            try:
                current = self._read()
                if not current or current.get("token") != self.token:
                    self.lost = f"the lock {self.url} was taken over by {_describe(current)}"
                elif time.time() >= self.expires:
                    self.lost = f"the lock {self.url} expired before it could be renewed"
                else:
                    self._write(create=False)
                    continue
                logger.error("%s", self.lost)
                return
            except Exception as exc:  # a store error: the next beat tries again, until the lease expires
                logger.warning("renewing the lock %s failed (%s: %s); retrying", self.url, type(exc).__name__, exc)

    def check(self) -> None:
        """Raise :class:`OutputLocked` if this run no longer holds the lease."""
        if self.lost:
            raise OutputLocked(f"{self.lost}; this run stops (two runs into one OUT would mix their shards)")

    def release(self) -> None:
        self._stop.set()
        self._thread.join()
        if self.lost:
            return
        try:
            current = self._read()
            if current and current.get("token") == self.token:
                self.loc.remove(LEASE_NAME)
        except Exception as exc:  # the lease expires anyway
            logger.warning("removing the lock %s failed (%s: %s)", self.url, type(exc).__name__, exc)

    def __enter__(self) -> "Lease":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def lock_output(loc: Location) -> FileLock | Lease:
    """Take the lock on output ``loc`` (``OUT/<split>``); raises :class:`OutputLocked` naming the
    holder when another run has it, :class:`OutputUnusable` when OUT cannot be written."""
    if loc.is_local:
        return FileLock(loc)
    try:
        return Lease(loc)
    except StorageError:
        raise  # no credentials, access denied ...: its own one-line message
    except OSError as exc:
        raise ConversionError(f"cannot take the lock {loc.join_url(LEASE_NAME)} ({type(exc).__name__}: {exc})") from exc
