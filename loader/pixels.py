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

import math
from typing import Optional

import numpy as np
import xxhash

from clipshards.convert.schema import VIDEO_MEMBER, ShardFormatError, clip_checksum_of, npy_header

from .transport import Transport

__all__ = ["HEAD_BYTES", "PIXEL_CHUNK", "RawPixels", "UnreadPixels", "plain_header", "scan_head"]

HEAD_BYTES = 256 * 1024
"""Bytes read first of a clip whose pixels go straight into the batch, until a clip showed where
its pixels start (a reader then reads just that much); a clip whose members before the pixels
do not fit (long audio) is read whole instead."""
PIXEL_CHUNK = 512 * 1024
"""Pixels are read into the batch in pieces of this size, each hashed at once, while it is still
in the core's cache: hashing a clip afterwards, from memory, cost a third of reading it."""
_USTAR = b"ustar\x0000"
_BLOCK = 512


def _octal(field: bytes) -> int:
    return int(field.split(b"\0", 1)[0].strip() or b"0", 8)


def plain_header(hdr: bytes, *, verify: bool = True) -> Optional[tuple[str, int]]:
    """``(member name, data size)`` of a 512-byte tar header as the converter writes it (POSIX
    ustar, a regular file, a valid checksum); None for anything else. ``verify=False`` skips
    the header's own checksum, for a clip whose every byte is checked against its XXH3 anyway."""
    if hdr[257:265] != _USTAR or hdr[156] not in (0x30, 0) or hdr[345] != 0 or hdr[124] & 0x80:
        return None
    if verify and _octal(hdr[148:156]) != 256 + sum(hdr[:148]) + sum(hdr[156:]):
        return None
    return hdr[:100].split(b"\0", 1)[0].decode("ascii"), _octal(hdr[124:136])


def _npy_header_end(view: memoryview, start: int) -> int:
    """Where the npy header that starts at ``start`` of ``view`` ends (past ``len(view)`` when
    ``view`` does not hold it whole, or holds no npy magic there)."""
    if len(view) < start + 12 or view[start:start + 6] != b"\x93NUMPY":
        return len(view) + 1
    if view[start + 6] == 1:
        return start + 10 + int.from_bytes(view[start + 8:start + 10], "little")
    return start + 12 + int.from_bytes(view[start + 8:start + 12], "little")


def scan_head(view: memoryview, length: int, *, verify: bool = True) -> Optional[tuple[str, dict[str, memoryview], int, int]]:
    """A clip of ``length`` bytes whose first bytes are ``view``, when laid out as the converter
    writes a raw clip (members of one key, the video last): ``(key, the members before the video,
    where the video's data starts in the clip, its size)``, with the video's npy header inside
    ``view``. None for anything else (the clip is then read whole, and checked as any).
    ``verify``: see :func:`plain_header`."""
    n, pos = len(view), 0
    key: Optional[str] = None
    fields: dict[str, memoryview] = {}
    try:
        while pos + _BLOCK <= n:
            member = plain_header(bytes(view[pos: pos + _BLOCK]), verify=verify)
            if member is None:
                return None
            k, dot, field = member[0].partition(".")
            if (key is not None and k != key) or not dot or field in fields:
                return None
            key, start, size = k, pos + _BLOCK, member[1]
            if field == VIDEO_MEMBER:
                last = start + size + (-size) % _BLOCK == length
                return (key, fields, start, size) if last and _npy_header_end(view, start) <= min(n, start + size) else None
            if start + size > n:
                return None
            fields[field] = view[start: start + size]
            pos = start + size + (-size) % _BLOCK
    except (ValueError, UnicodeError):
        return None
    return None


class UnreadPixels:
    """A raw clip's pixels, not read yet: ``shape`` ``(T, H, W, 3)``, and :meth:`decode_into`,
    which the collate calls to read them straight into the batch (one copy of the megabytes)."""

    __slots__ = ()
    shape: tuple[int, int, int, int]

    def decode_into(self, out: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class RawPixels(UnreadPixels):
    """The pixels of one raw clip, not read yet: bytes ``[start, start + T*H*W*3)`` of shard
    ``name``. :meth:`decode_into` reads them into the caller's memory and checks the clip's
    checksum over its bytes up to the pixels (hashed when the head was read: ``hashed``), the
    pixels and the ``after`` bytes that end the clip (the member's padding). ``lead``: how many
    bytes of the clip come before its pixels."""

    __slots__ = ("transport", "name", "start", "shape", "lead", "hashed", "after", "checksum")

    def __init__(self, transport: Transport, name: str, start: int, shape: tuple[int, int, int, int], lead: int,
                 hashed: "xxhash.xxh3_64", after: int, checksum: int) -> None:
        self.transport, self.name, self.start, self.shape, self.lead = transport, name, start, shape, lead
        self.hashed, self.after, self.checksum = hashed, after, checksum

    @classmethod
    def at(cls, transport: Transport, name: str, offset: int, head: memoryview, video: tuple[int, int],
           length: int, checksum: int) -> "RawPixels":
        """The pixels of the clip at byte ``offset`` of shard ``name`` (``length`` bytes, ``head``
        its first bytes, its video member's data at ``video`` = (start, size) in the clip)."""
        start, size = video
        shape, fortran, dtype, header = npy_header(head[start:])
        if dtype != np.uint8 or fortran or len(shape) != 4 or shape[3] != 3 or min(shape) < 1:
            raise ShardFormatError(f"video is {dtype} {tuple(shape)}, expected uint8 [T, H, W, 3] in C order")
        if header + math.prod(shape) != size:
            raise ShardFormatError(f"npy payload is {size - header} bytes, header {tuple(shape)} uint8 needs {math.prod(shape)}")
        pixels = start + header
        hashed = xxhash.xxh3_64()
        hashed.update(head[:pixels])  # now, while the head is in cache
        return cls(transport, name, offset + pixels, tuple(int(x) for x in shape), pixels,  # type: ignore[arg-type]
                   hashed, length - pixels - (size - header), checksum)

    def decode_into(self, out: np.ndarray) -> np.ndarray:
        """Read the pixels into ``out`` (uint8 ``shape``, C-contiguous) and check the clip."""
        if tuple(out.shape) != self.shape or not out.flags.c_contiguous:
            raise ShardFormatError(f"clip is {self.shape}, the destination {tuple(out.shape)}")
        pixels = memoryview(out.reshape(-1))
        parts = [pixels[a: a + PIXEL_CHUNK] for a in range(0, len(pixels), PIXEL_CHUNK)]
        parts.append(memoryview(bytearray(self.after)))
        hasher = self.hashed.copy()
        try:
            got = self.transport.read_into(self.name, self.start, parts, each=hasher.update)
        except OSError as exc:
            raise ShardFormatError(f"read of the pixels at byte {self.start} failed: {exc}") from exc
        if got != len(pixels) + self.after:
            raise ShardFormatError(f"truncated: {got} of the {len(pixels) + self.after} bytes from byte {self.start} present")
        if clip_checksum_of(hasher) != self.checksum:
            raise ShardFormatError("its bytes differ from what the converter wrote (xxh3_64 of the clip's byte range): "
                                   "the shard is damaged or was changed")
        return out
