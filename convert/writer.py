"""Writing: deterministic tar members and size-bounded shards.

Every tar header field that could vary between runs (mtime, owner, mode, format) is fixed,
so the same samples always give the same bytes. A shard is written through
:meth:`Location.open_atomic`: it is visible under its final name only when complete.

A background thread hashes the shard's bytes and writes them (``O_DIRECT`` on a local
disk, so that gigabytes of raw clips neither churn the page cache nor cost kernel copies):
runs of big samples straight from the caller's memory (:meth:`ShardWriter.add_view`, a
mapped spool), anything else through a few reused page-aligned chunks. Hashing and
``write`` release the GIL, so the caller keeps decoding meanwhile.
"""

from __future__ import annotations

import errno
import logging
import mmap
import os
import queue
import re
import tarfile
import threading
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Callable, Iterable, Optional

from .schema import CHECKSUMS, Member, new_checksum, shard_name
from .storage import Location

__all__ = ["tar_member", "encode_members", "write_members", "TAR_END", "ShardInfo", "ChunkPool", "ShardWriter"]

logger = logging.getLogger(__name__)

BLOCK = 512
TAR_END = b"\0" * (2 * BLOCK)
WRITEBACK_CHUNK = 32 << 20
CHUNK = 8 << 20  # a multiple of any disk's logical block size, as O_DIRECT needs
DIRECT_ALIGN = 4096
SECTOR = 512  # tar's block: samples start and end on it, so most disks take them with O_DIRECT as they are
MIN_DIRECT_VIEW = 1 << 20  # smaller runs of samples are copied into a chunk: one small direct write each would be slow
MAX_DIRECT_VIEW = CHUNK  # one direct write, and the spool pages a run maps (and touches) at a time
CHUNKS = 12  # 96 MB: the decoding thread hands a whole video over and goes on (3 chunks: 15% slower at --workers 1)


def tar_member(name: str, data: Member) -> bytes:
    """Header + data + padding of one regular-file member, with fixed metadata."""
    return b"".join(_member_parts(name, data))


def _member_parts(name: str, data: Member) -> list[bytes | memoryview]:
    """The member's header, its data (in the parts it came in) and the padding to a block."""
    parts = list(data) if isinstance(data, tuple) else [data]
    size = sum(len(p) for p in parts)
    return [member_header(name, size), *parts, b"\0" * ((-size) % BLOCK)]


def _tarfile_header(name: str, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = 0
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.type = tarfile.REGTYPE
    return info.tobuf(format=tarfile.PAX_FORMAT, encoding="utf-8", errors="strict")


_PLAIN_NAME = re.compile(rb"[A-Za-z0-9._-]{1,100}")
_TEMPLATE = _tarfile_header("x", 0)
_MAX_PLAIN_SIZE = 8**11  # the ustar size field's limit; beyond it tarfile writes a PAX header


def member_header(name: str, size: int) -> bytes:
    """The tar header of a regular file with fixed metadata: the bytes ``tarfile`` writes
    (PAX format, which is a plain ustar header for a short ASCII name), made here without
    ``tarfile`` for the names samples have (about 10x faster: four members a clip)."""
    raw = name.encode("ascii", "replace")
    if not _PLAIN_NAME.fullmatch(raw) or not 0 <= size < _MAX_PLAIN_SIZE:
        return _tarfile_header(name, size)
    h = bytearray(_TEMPLATE)
    h[0:100] = raw.ljust(100, b"\0")
    h[124:136] = b"%011o\0" % size
    h[148:156] = b" " * 8
    h[148:155] = b"%06o\0" % sum(h)
    return bytes(h)


def write_members(fh: BinaryIO, members: Iterable[tuple[str, Member]], *,
                  hasher: Optional[Any] = None) -> int:
    """Write the tar bytes of ``members`` to ``fh`` part by part (a raw clip is megabytes: never
    joined, one copy fewer than :func:`encode_members`); returns the bytes written. ``hasher``
    (``update``) sees the same bytes: a sample's checksum without reading it back."""
    written = 0
    for name, data in members:
        for part in _member_parts(name, data):
            if len(part):
                fh.write(part)
                if hasher is not None:
                    hasher.update(part)
                written += len(part)
    return written


def encode_members(members: Iterable[tuple[str, Member]]) -> bytes:
    """The tar bytes of ``members``, joined once (a raw clip is megabytes: no intermediate copies)."""
    return b"".join(part for n, d in members for part in _member_parts(n, d))


@dataclass
class ShardInfo:
    """What the index records of one finished shard."""

    index: int
    name: str
    clips: int = 0
    bytes: int = 0
    checksum: str = ""  # hex digest of the whole shard file
    algo: str = CHECKSUMS[0]  # the checksum's algorithm, one of schema.CHECKSUMS
    # a row per sample: (offset, length) in the shard, then what add_* was given as its
    # identity (the converter: key number, label, clip checksum; see schema.OFFSETS_COLUMNS)
    offsets: list[tuple[int, ...]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "clips": self.clips, "bytes": self.bytes, self.algo: self.checksum}


class ChunkPool:
    """Up to ``count`` page-aligned buffers of ``CHUNK`` bytes, shared by the shards of a run.

    Reused rather than reallocated: fresh pages cost a page fault each (and on a VM whose
    balloon reclaims freed memory, a trip to the host). A chunk is made (and touched) only
    when none is free: raw samples mostly go to the disk straight from the spool, so a raw
    run makes one or two, not ``count``.
    """

    def __init__(self, count: int = CHUNKS):
        if count < 2:
            raise ValueError(f"count must be >= 2 (one filling, one writing), got {count}")
        self.count = count
        self.made = 0
        self.free: queue.Queue[mmap.mmap] = queue.Queue()
        self._lock = threading.Lock()

    def get(self) -> mmap.mmap:
        """A free chunk: a reused one, a new one while fewer than ``count`` exist, else the
        next one the writer thread gives back."""
        try:
            return self.free.get_nowait()
        except queue.Empty:
            pass
        with self._lock:
            if self.made < self.count:
                self.made += 1
                chunk = mmap.mmap(-1, CHUNK)
                chunk[:: mmap.PAGESIZE] = bytes(CHUNK // mmap.PAGESIZE)
                return chunk
        return self.free.get()

    def put(self, chunk: mmap.mmap) -> None:
        self.free.put(chunk)


class _ShardFile:
    """The shard's file as the writer thread writes it.

    On a local disk, ``O_DIRECT`` where the filesystem takes it (sector-aligned writes, or
    whole 4 KiB units on a disk that refuses those), falling back to the page cache with
    early write-back for the unaligned tail or a refusal; to an object store, the upload
    stream (which gets a copy: the caller's buffer is reused).
    """

    def __init__(self, fh: BinaryIO, local: bool):
        self._fh = fh
        self._fd = fh.fileno() if local else None
        self.direct = self._fd is not None and _set_direct(self._fd, True)
        self.align = SECTOR if _sector_direct_ok else DIRECT_ALIGN  # the direct write unit this disk takes
        self._written = 0
        self._flushed = 0

    @property
    def takes_views(self) -> bool:
        """Whether a sector-aligned view of the caller's memory can be written as it is."""
        return self.direct and self.align == SECTOR and _sector_direct_ok

    def write(self, view: memoryview) -> None:
        """Write all of ``view`` (direct while the stream so far is aligned; the rest buffered)."""
        if self._fd is None:
            self._fh.write(bytes(view))  # the chunk is reused: the upload buffer gets its own copy
            return
        if self.direct:
            aligned = len(view) - len(view) % self.align
            try:
                self._write_all(view[:aligned])
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
                if self.align == SECTOR and self._written % DIRECT_ALIGN == 0:
                    # this disk wants bigger units: whole chunks from now on, in this run
                    _refuse_sector_direct()
                    self.align = DIRECT_ALIGN
                    self.write(view)
                    return
                logger.debug("O_DIRECT write refused (%s); writing through the page cache", exc)
                self._buffered()
                self.write(view)
                return
            view = view[aligned:]
            if view:  # the tail of the shard: not a whole block
                self._buffered()
        self._write_all(view)
        if not self.direct and self._written - self._flushed >= WRITEBACK_CHUNK:
            # start writing the dirty pages now, so that the fsync at close does not stall
            # for the whole shard (a raw shard is hundreds of MB)
            os.posix_fadvise(self._fd, self._flushed, self._written - self._flushed, os.POSIX_FADV_DONTNEED)
            self._flushed = self._written

    def _buffered(self) -> None:
        assert self._fd is not None
        _set_direct(self._fd, False)
        self.direct = False

    def _write_all(self, view: memoryview) -> None:
        assert self._fd is not None
        while view:
            n = os.write(self._fd, view)
            self._written += n
            view = view[n:]
            if view and self.direct and n % self.align:
                self._buffered()  # a short write left the offset unaligned


class _ShardSink:
    """The byte stream of one shard: filled chunk by chunk here (or handed over as views of
    the caller's memory), hashed and written to a :class:`_ShardFile` by a thread."""

    def __init__(self, fh: BinaryIO, local: bool, pool: ChunkPool, algo: str):
        self._file = _ShardFile(fh, local)
        self._pool = pool
        self._hash = new_checksum(algo)
        self._full: queue.Queue[Optional[tuple[Any, int, Optional[Callable[[], None]]]]] = queue.Queue()
        self._chunk: Optional[mmap.mmap] = None
        self._pos = 0
        self._error: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._run, name="clipshards-shard-writer", daemon=True)
        self._thread.start()

    def _space(self) -> memoryview:
        if self._chunk is None:
            if self._error is not None:
                raise self._error
            self._chunk = self._pool.get()
            self._pos = 0
        return memoryview(self._chunk)[self._pos :]

    def _advance(self, n: int) -> None:
        self._pos += n
        if self._pos == CHUNK:
            self._hand_off()

    def _hand_off(self) -> None:
        assert self._chunk is not None
        self._full.put((self._chunk, self._pos, None))
        self._chunk = None

    @property
    def takes_views(self) -> bool:
        """Whether :meth:`write_view` writes straight from the caller's memory (``O_DIRECT``
        on a local disk that takes sector-aligned writes)."""
        return self._file.takes_views and self._error is None

    def write_view(self, view: memoryview, done: Callable[[], None]) -> None:
        """Append ``view`` (a whole number of sectors, at a sector-aligned address) without
        copying it: the thread hashes it and writes it straight from that memory, then calls
        ``done()``, after which the caller may reuse the memory. ``done`` is called on every
        path, failures included."""
        try:
            if self._error is not None:
                raise self._error
            if self._chunk is not None and self._pos:
                self._hand_off()  # the stream so far, a whole number of sectors
        except BaseException:
            done()
            raise
        self._full.put((view, len(view), done))

    def write(self, data: bytes | memoryview) -> None:
        src = memoryview(data).cast("B")
        while src:
            dst = self._space()
            n = min(len(dst), len(src))
            dst[:n] = src[:n]
            src = src[n:]
            self._advance(n)

    def fill(self, readinto: Callable[[memoryview], Optional[int]], size: int) -> int:
        """Read ``size`` bytes straight into the chunks with ``readinto``; the bytes read
        (fewer at end of file)."""
        got = 0
        while got < size:
            dst = self._space()[: size - got]
            n = readinto(dst) or 0
            if n == 0:
                break
            got += n
            self._advance(n)
        return got

    def close(self) -> str:
        """Write what is left, wait for the thread; the checksum (hex) of all bytes."""
        if self._chunk is not None:
            self._hand_off()
        self._full.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._hash.hexdigest()

    def abort(self) -> None:
        """Stop without writing what is still queued (the shard is discarded)."""
        if self._chunk is not None:
            self._pool.put(self._chunk)
            self._chunk = None
        if self._error is None:
            self._error = RuntimeError("shard aborted")
        self._full.put(None)
        self._thread.join()

    def _run(self) -> None:
        while True:
            item = self._full.get()
            if item is None:
                return
            buf, n, done = item
            try:
                if self._error is None:
                    with memoryview(buf)[:n] as view:
                        self._hash.update(view)
                        self._file.write(view)
            except BaseException as exc:  # handed to the caller at its next write or at close
                self._error = exc
            finally:
                if done is None:
                    self._pool.put(buf)
                else:
                    buf.release()
                    done()


_sector_direct_ok = True  # until a disk refuses a sector-aligned O_DIRECT write


def _refuse_sector_direct() -> None:
    global _sector_direct_ok
    _sector_direct_ok = False
    logger.debug("sector-aligned O_DIRECT writes refused; copying samples into whole chunks")


def _set_direct(fd: int, on: bool) -> bool:
    """Turn ``O_DIRECT`` on or off for ``fd``; False where the platform or filesystem refuses."""
    flag = getattr(os, "O_DIRECT", 0)
    if not flag:
        return False
    try:
        import fcntl

        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        fcntl.fcntl(fd, fcntl.F_SETFL, flags | flag if on else flags & ~flag)
    except OSError:
        return False
    return True


class ShardWriter:
    """Appends pre-encoded samples to one shard; records each sample's byte range."""

    def __init__(self, location: Location, split: str, index: int, *, pool: Optional[ChunkPool] = None,
                 checksum: str = CHECKSUMS[0]):
        new_checksum(checksum)  # a bad name fails here, before any file is opened
        self.info = ShardInfo(index=index, name=shard_name(split, index), algo=checksum)
        self._ctx = location.open_atomic(self.info.name)
        fh = self._ctx.__enter__()
        try:
            self._sink: Optional[_ShardSink] = _ShardSink(fh, location.is_local, pool or ChunkPool(), checksum)
        except BaseException:
            self._ctx.__exit__(RuntimeError, RuntimeError("aborted"), None)
            raise

    @property
    def size(self) -> int:
        return self.info.bytes

    def add(self, sample: bytes | memoryview, ident: tuple[int, ...] = ()) -> None:
        """Append one sample (its members, already tar-encoded); ``ident`` ends its offsets row."""
        self.add_from(_reader(sample), len(sample), ident)

    def add_from(self, readinto: Callable[[memoryview], Optional[int]], size: int, ident: tuple[int, ...] = ()) -> int:
        """Append one sample of ``size`` bytes read with ``readinto`` (e.g. a spool file's),
        straight into the shard's buffers; returns the bytes read (fewer: the source was short,
        and the shard must be aborted). ``ident`` ends the sample's row in :attr:`ShardInfo.offsets`."""
        if self._sink is None:
            raise RuntimeError(f"shard {self.info.name} is already closed")
        got = self._sink.fill(readinto, size)
        self.info.offsets.append((self.info.bytes, size, *ident))
        self.info.bytes += got
        self.info.clips += 1
        return got

    @property
    def takes_views(self) -> bool:
        """Whether :meth:`add_view` is available: samples written straight from the caller's memory."""
        return self._sink is not None and self._sink.takes_views

    def add_view(self, view: memoryview, sizes: list[int], done: Callable[[], None],
                 idents: Optional[list[tuple[int, ...]]] = None) -> None:
        """Append consecutive samples of ``sizes`` bytes from ``view`` without copying them (see
        :attr:`takes_views`): ``view`` must stay unchanged until ``done()`` is called, from the
        writing thread (on every path, failures included). ``idents``: see :meth:`add_from`."""
        if self._sink is None:
            done()
            raise RuntimeError(f"shard {self.info.name} is already closed")
        if sum(sizes) != len(view) or any(n % SECTOR for n in sizes):
            done()
            raise ValueError(f"samples are whole {SECTOR}-byte tar blocks filling the view; got {sizes} for {len(view)} bytes")
        self._sink.write_view(view, done)
        for n, ident in zip(sizes, idents or [()] * len(sizes)):
            self.info.offsets.append((self.info.bytes, n, *ident))
            self.info.bytes += n
            self.info.clips += 1

    def close(self) -> ShardInfo:
        if self._sink is None:
            raise RuntimeError(f"shard {self.info.name} is already closed")
        self._sink.write(TAR_END)
        self.info.bytes += len(TAR_END)
        sink, self._sink = self._sink, None
        try:
            self.info.checksum = sink.close()
        except BaseException as exc:
            self._ctx.__exit__(type(exc), exc, None)
            raise
        self._ctx.__exit__(None, None, None)
        return self.info

    def abort(self) -> None:
        if self._sink is not None:
            sink, self._sink = self._sink, None
            sink.abort()
            try:
                self._ctx.__exit__(RuntimeError, RuntimeError("aborted"), None)
            except RuntimeError:
                pass


def _reader(data: bytes | memoryview) -> Callable[[memoryview], int]:
    """A ``readinto`` over ``data``."""
    src = memoryview(data).cast("B")
    pos = 0

    def readinto(dst: memoryview) -> int:
        nonlocal pos
        n = min(len(dst), len(src) - pos)
        dst[:n] = src[pos : pos + n]
        pos += n
        return n

    return readinto
