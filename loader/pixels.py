"""Raw clips whose pixels are read straight into their batch: one copy of the megabytes, not two.

A raw clip is megabytes of pixels. Read into a buffer of its own and then stacked into its
batch, it crosses memory twice; a clip that is mapped instead is copied once but can change
under its tensors (or kill the process with SIGBUS when its shard is cut). So under
:class:`~clipshards.loader.ClipLoader` (its collate, no ``transform``, ``errors="raise"``) a local
raw clip of :data:`~clipshards.loader.buffers.MIN_POOLED` bytes or more is read in two parts:
its head (the members before the video and the video's npy header: :func:`scan_head`) when it is
read, and its pixels when :func:`~clipshards.loader.collate.collate_clips` reads them
(:class:`RawPixels`) straight into the batch's memory. Only then is the clip's checksum
checked, over every byte of it: the batch holds exactly what the converter wrote, or it is an error.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import xxhash

from clipshards.convert.schema import VIDEO_MEMBER, ShardFormatError, clip_checksum_of, npy_header

from .transport import Transport

__all__ = ["HEAD_BYTES", "RawPixels", "plain_header", "scan_head"]

HEAD_BYTES = 256 * 1024
"""Bytes read first of a clip whose pixels go straight into the batch; a clip whose members before
the pixels do not fit (long audio) is read whole instead."""
_USTAR = b"ustar\x0000"
_BLOCK = 512


def _octal(field: bytes) -> int:
    return int(field.split(b"\0", 1)[0].strip() or b"0", 8)


def plain_header(hdr: bytes) -> Optional[tuple[str, int]]:
    """``(member name, data size)`` of a 512-byte tar header as the converter writes it (POSIX
    ustar, a regular file, a valid checksum); None for anything else."""
    if hdr[257:265] != _USTAR or hdr[156] not in (0x30, 0) or hdr[345] != 0 or hdr[124] & 0x80:
        return None
    if _octal(hdr[148:156]) != 256 + sum(hdr[:148]) + sum(hdr[156:]):
        return None
    return hdr[:100].split(b"\0", 1)[0].decode("ascii"), _octal(hdr[124:136])


def scan_head(view: memoryview, length: int) -> Optional[tuple[str, dict[str, memoryview], int, int]]:
    """A clip of ``length`` bytes whose first bytes are ``view``, when laid out as the converter
    writes a raw clip (members of one key, the video last): ``(key, the members before the video,
    where the video's data starts in the clip, its size)``, with the video's npy header inside
    ``view``. None for anything else (the clip is then read whole, and checked as any)."""
    n, pos = len(view), 0
    key: Optional[str] = None
    fields: dict[str, memoryview] = {}
    try:
        while pos + _BLOCK <= n:
            member = plain_header(bytes(view[pos: pos + _BLOCK]))
            if member is None:
                return None
            k, dot, field = member[0].partition(".")
            if (key is not None and k != key) or not dot or field in fields:
                return None
            key, start, size = k, pos + _BLOCK, member[1]
            if field == VIDEO_MEMBER:
                last = start + size + (-size) % _BLOCK == length
                return (key, fields, start, size) if last and start + 4096 <= n else None
            if start + size > n:
                return None
            fields[field] = view[start: start + size]
            pos = start + size + (-size) % _BLOCK
    except (ValueError, UnicodeError):
        return None
    return None


class RawPixels:
    """The pixels of one raw clip, not read yet: bytes ``[start, start + T*H*W*3)`` of shard
    ``name``. :meth:`decode_into` reads them into the caller's memory and then checks the clip's
    checksum over ``before`` (its bytes up to the pixels), the pixels and the ``after`` bytes
    that end the clip (the member's padding)."""

    __slots__ = ("transport", "name", "start", "shape", "before", "after", "checksum")

    def __init__(self, transport: Transport, name: str, start: int, shape: tuple[int, int, int, int],
                 before: bytes, after: int, checksum: int) -> None:
        self.transport, self.name, self.start, self.shape = transport, name, start, shape
        self.before, self.after, self.checksum = before, after, checksum

    @classmethod
    def at(cls, transport: Transport, name: str, offset: int, head: memoryview, video: tuple[int, int],
           length: int, checksum: int) -> "RawPixels":
        """The pixels of the clip at byte ``offset`` of shard ``name`` (``length`` bytes, ``head``
        its first bytes, its video member's data at ``video`` = (start, size) in the clip)."""
        start, size = video
        shape, fortran, dtype, header = npy_header(head[start:])
        if dtype != np.uint8 or fortran or len(shape) != 4 or shape[3] != 3 or min(shape) < 1:
            raise ShardFormatError(f"video is {dtype} {tuple(shape)}, expected uint8 [T, H, W, 3] in C order")
        if header + int(np.prod(shape, dtype=np.int64)) != size:
            raise ShardFormatError(f"npy payload is {size - header} bytes, header {tuple(shape)} uint8 needs {int(np.prod(shape))}")
        pixels = start + header
        return cls(transport, name, offset + pixels, tuple(int(x) for x in shape),  # type: ignore[arg-type]
                   bytes(head[:pixels]), length - pixels - (size - header), checksum)

    def decode_into(self, out: np.ndarray) -> np.ndarray:
        """Read the pixels into ``out`` (uint8 ``shape``, C-contiguous) and check the clip."""
        if tuple(out.shape) != self.shape or not out.flags.c_contiguous:
            raise ShardFormatError(f"clip is {self.shape}, the destination {tuple(out.shape)}")
        pixels = memoryview(out.reshape(-1))
        after = bytearray(self.after)
        try:
            got = self.transport.read_into(self.name, self.start, [pixels, after])
        except OSError as exc:
            raise ShardFormatError(f"read of the pixels at byte {self.start} failed: {exc}") from exc
        if got != len(pixels) + len(after):
            raise ShardFormatError(f"truncated: {got} of the {len(pixels) + len(after)} bytes from byte {self.start} present")
        hasher = xxhash.xxh3_64()
        for part in (self.before, pixels, after):
            hasher.update(part)
        if clip_checksum_of(hasher) != self.checksum:
            raise ShardFormatError("its bytes differ from what the converter wrote (xxh3_64 of the clip's byte range): "
                                   "the shard is damaged or was changed")
        return out
