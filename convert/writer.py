"""Writing: deterministic tar members and size-bounded shards.

Every tar header field that could vary between runs (mtime, owner, mode, format) is fixed,
so the same samples always give the same bytes. A shard is written through
:meth:`Location.open_atomic`: it is visible under its final name only when complete.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Iterable, Optional

from .schema import shard_name
from .storage import Location

__all__ = ["tar_member", "encode_members", "write_members", "TAR_END", "ShardInfo", "ShardWriter"]

BLOCK = 512
TAR_END = b"\0" * (2 * BLOCK)
WRITEBACK_CHUNK = 32 << 20


def tar_member(name: str, data: bytes) -> bytes:
    """Header + data + padding of one regular-file member, with fixed metadata."""
    return b"".join(_member_parts(name, data))


def _member_parts(name: str, data: bytes) -> tuple[bytes, bytes, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.type = tarfile.REGTYPE
    header = info.tobuf(format=tarfile.PAX_FORMAT, encoding="utf-8", errors="strict")
    return header, data, b"\0" * ((-len(data)) % BLOCK)


def write_members(fh: BinaryIO, members: Iterable[tuple[str, bytes]]) -> int:
    """Write the tar bytes of ``members`` to ``fh`` part by part (a raw clip is megabytes: not
    joined first, one copy fewer than :func:`encode_members`); returns the bytes written."""
    written = 0
    for name, data in members:
        for part in _member_parts(name, data):
            fh.write(part)
            written += len(part)
    return written


def encode_members(members: Iterable[tuple[str, bytes]]) -> bytes:
    """The tar bytes of ``members``, joined once (a raw clip is megabytes: no intermediate copies)."""
    return b"".join(part for n, d in members for part in _member_parts(n, d))


@dataclass
class ShardInfo:
    """What the index records of one finished shard."""

    index: int
    name: str
    clips: int = 0
    bytes: int = 0
    sha256: str = ""
    offsets: list[tuple[int, int]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "clips": self.clips, "bytes": self.bytes, "sha256": self.sha256}


class ShardWriter:
    """Appends pre-encoded samples to one shard; records each sample's byte range."""

    def __init__(self, location: Location, split: str, index: int):
        self.info = ShardInfo(index=index, name=shard_name(split, index))
        self._location = location
        self._ctx = location.open_atomic(self.info.name)
        self._fh: Optional[BinaryIO] = self._ctx.__enter__()
        self._sha = hashlib.sha256()
        self._flushed = 0
        self._fd = self._fh.fileno() if location.is_local and hasattr(os, "posix_fadvise") else None

    @property
    def size(self) -> int:
        return self.info.bytes

    def add(self, sample: bytes) -> None:
        """Append one sample (its members, already tar-encoded)."""
        assert self._fh is not None, "shard already closed"
        self.info.offsets.append((self.info.bytes, len(sample)))
        self._fh.write(sample)
        self._sha.update(sample)
        self.info.bytes += len(sample)
        self.info.clips += 1
        if self._fd is not None and self.info.bytes - self._flushed >= WRITEBACK_CHUNK:
            self._start_writeback()

    def _start_writeback(self) -> None:
        """Start writing the shard's dirty pages to disk now, without waiting, so that the
        ``fsync`` at close does not stall for the whole shard (a raw shard is hundreds of MB)."""
        assert self._fh is not None and self._fd is not None
        self._fh.flush()
        os.posix_fadvise(self._fd, self._flushed, self.info.bytes - self._flushed, os.POSIX_FADV_DONTNEED)
        self._flushed = self.info.bytes

    def close(self) -> ShardInfo:
        assert self._fh is not None, "shard already closed"
        self._fh.write(TAR_END)
        self._sha.update(TAR_END)
        self.info.bytes += len(TAR_END)
        self.info.sha256 = self._sha.hexdigest()
        self._fh = None
        self._ctx.__exit__(None, None, None)
        return self.info

    def abort(self) -> None:
        if self._fh is not None:
            self._fh = None
            try:
                self._ctx.__exit__(RuntimeError, RuntimeError("aborted"), None)
            except RuntimeError:
                pass
