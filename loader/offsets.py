"""Each clip's row of the split's ``offsets.npy``, read in pages on first use and checked as read.

``offsets.npy`` is an int64 ``[num_clips, columns]`` array, a row per clip in global clip order:
``(offset, length)`` for an index of version 1, :data:`~clipshards.convert.schema.OFFSETS_COLUMNS`
(offset, length, key number, label, checksum) since version 2. Only its header and the pages of
:data:`OFFSETS_PAGE` rows that are asked for are read, so neither start-up nor memory grows with
the number of clips.

Every page is checked before any row of it is used (:class:`PageRules`): the byte ranges of a
shard's clips must tile it from byte 0 in order (a duplicated, overlapping or out-of-order row
breaks the tiling) and end inside it; keys must increase; labels must name a class. A page is
read with the row before it, so the checks hold across page boundaries too. In an output
appended to, the same holds of each extent (a run of clips back to back in one shard, see
:mod:`clipshards.convert.extents`) between the bytes it names, keys increasing within it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from clipshards.convert.schema import OFFSETS_COLUMNS, ShardFormatError, npy_header

from .transport import Transport

__all__ = ["ClipOffsets", "PageRules", "OFFSETS_PAGE", "LEGACY_COLUMNS"]

OFFSETS_PAGE = 8192
LEGACY_COLUMNS = 2  # index version 1: (offset, length)
_ROW_DTYPE = np.dtype("<i8")
_HEADER_BYTES = 4096
_BLOCK = 512  # tar samples are whole blocks
TAR_END_BYTES = 2 * _BLOCK  # the end-of-archive blocks after a shard's last sample


@dataclass(frozen=True)
class PageRules:
    """What the rows must agree with: each shard's first clip, clip count and size (from the
    index), and the number of classes. In an output appended to, the "shards" are its extents
    (runs of clips back to back in one shard file, see :mod:`clipshards.convert.extents`): each
    from byte ``starts[i]`` to ``ends[i]`` of its file, keys increasing within each only."""

    first_clips: np.ndarray  # int64, ascending
    shard_clips: np.ndarray  # int64
    shard_bytes: np.ndarray  # int64
    classes: int
    starts: Optional[np.ndarray] = None  # where each one's first clip starts (None: byte 0)
    ends: Optional[np.ndarray] = None  # where its last clip ends (None: before its file's end-of-archive blocks)
    ordered: bool = True  # keys increase across shards too (False: an appended output's extents)

    def check(self, rows: np.ndarray, first: int, has_previous: bool) -> Optional[str]:
        """Why ``rows`` (global clips ``first ..``, the first of them the row before the page
        when ``has_previous``) cannot be right, or None."""
        g = np.arange(first, first + len(rows))
        shard = np.searchsorted(self.first_clips, g, side="right") - 1
        off, length = rows[:, 0], rows[:, 1]
        end = off + length
        start = self.starts[shard] if self.starts is not None else 0
        stop = self.ends[shard] if self.ends is not None else self.shard_bytes[shard] - TAR_END_BYTES
        bad = (off < 0) | (length <= 0) | (off % _BLOCK != 0) | (length % _BLOCK != 0) | (end > self.shard_bytes[shard])
        bad |= (g == self.first_clips[shard]) & (off != start)  # a shard's first clip at its start,
        last = g == self.first_clips[shard] + self.shard_clips[shard] - 1  # its last one just before the end blocks
        bad |= last & (end != stop)
        if bad.any():
            i = int(np.argmax(bad))
            return f"row {first + i}: bytes [{off[i]}, {end[i]}) are not a clip of its shard ({self.shard_bytes[shard[i]]} bytes)"
        same = shard[1:] == shard[:-1]
        gap = same & (off[1:] != end[:-1])
        if gap.any():
            i = int(np.argmax(gap)) + 1
            return (f"row {first + i}: starts at byte {off[i]}, the clip before it in its shard ends at {end[i - 1]} "
                    "(duplicate, overlapping or out-of-order rows)")
        if rows.shape[1] > LEGACY_COLUMNS:
            key, label = rows[:, 2], rows[:, 3]
            order = (key[1:] <= key[:-1]) & (same | self.ordered)
            if (key < 0).any() or order.any():
                i = int(np.argmax(order)) + 1 if order.any() else int(np.argmax(key < 0))
                return f"row {first + i}: sample key number {key[i]} does not follow {key[i - 1] if i else 'nothing'} (keys must increase)"
            wrong = (label < 0) | (label >= self.classes)
            if wrong.any():
                i = int(np.argmax(wrong))
                return f"row {first + i}: label {label[i]} is outside 0..{self.classes - 1}"
        return None


class ClipOffsets:
    """The rows of ``name`` (an offsets file of ``num_clips`` rows of ``columns``) through ``transport``.

    ``expected_bytes``: the file's size as the index records it (None: not recorded); the
    header must agree with it, and with ``num_clips``. ``rules`` checks each page as it is read.
    """

    def __init__(self, transport: Transport, name: str, num_clips: int, expected_bytes: Optional[Any] = None, *,
                 columns: int = len(OFFSETS_COLUMNS), rules: Optional[PageRules] = None) -> None:
        self.transport = transport
        self.name = name
        self.num_clips = num_clips
        self.columns = columns
        self.rules = rules
        self._expected = expected_bytes
        self._pages: dict[int, np.ndarray] = {}
        self._data_offset: Optional[int] = None

    @property
    def url(self) -> str:
        return self.transport.url_of(self.name)

    @property
    def checked(self) -> bool:
        """Whether rows carry each clip's key, label and checksum (index version 2 on)."""
        return self.columns > LEGACY_COLUMNS

    def _header(self, data: Optional[bytes | bytearray] = None) -> int:
        """Where the rows start in the file, read (or parsed from ``data``, the file's first
        bytes) and checked once."""
        if self._data_offset is not None:
            return self._data_offset
        n, k = self.num_clips, self.columns
        try:
            shape, fortran, dtype, offset = npy_header(data if data is not None else self.transport.read(self.name, 0, _HEADER_BYTES))
        except ShardFormatError as exc:
            raise ShardFormatError(f"{self.url}: not an npy array of clip offsets ({exc})") from exc
        if dtype != _ROW_DTYPE or fortran or tuple(shape) != (n, k):
            raise ShardFormatError(
                f"{self.url}: expected int64 [{n}, {k}] in C order, found {dtype} {tuple(shape)}"
                f"{' (Fortran order)' if fortran else ''}"
            )
        if self._expected is not None and int(self._expected) != offset + 8 * k * n:
            raise ShardFormatError(f"{self.url}: {self._expected} bytes in the index, header says {offset + 8 * k * n}")
        self._data_offset = offset
        return offset

    def _page(self, p: int, first: Optional[bytearray] = None) -> np.ndarray:
        """Page ``p``, read and checked once (``first``: the file's first bytes, already read)."""
        page = self._pages.get(p)
        if page is None:
            base, row = self._header(first), 8 * self.columns
            lo, hi = p * OFFSETS_PAGE, min(self.num_clips, (p + 1) * OFFSETS_PAGE)
            before = 1 if lo > 0 else 0
            if first is not None and p == 0 and len(first) >= base + row * hi:
                raw = first[base: base + row * hi]
            else:
                raw = self.transport.read(self.name, base + row * (lo - before), base + row * hi)
            if len(raw) != row * (hi - lo + before):
                raise ShardFormatError(f"{self.url}: truncated (rows {lo}..{hi - 1} missing)")
            rows = np.frombuffer(raw, dtype=_ROW_DTYPE).reshape(hi - lo + before, self.columns)
            problem = self.rules.check(rows, lo - before, bool(before)) if self.rules is not None else None
            if problem:
                raise ShardFormatError(f"{self.url}: {problem}")
            page = rows[before:]
            self._pages[p] = page
        return page

    def open(self) -> None:
        """Read and check the header and the first page now, in one request (a damaged table is
        refused when the dataset is opened; DataLoader workers get the page with the dataset)."""
        if self.num_clips and 0 not in self._pages:
            first = self.transport.read(self.name, 0, _HEADER_BYTES + 8 * self.columns * min(self.num_clips, OFFSETS_PAGE))
            self._page(0, first)

    def rows(self, start: int, stop: int) -> np.ndarray:
        """``[stop - start, columns]`` int64: the rows of clips ``start..stop-1``."""
        if not 0 <= start <= stop <= self.num_clips:
            raise IndexError(f"clips {start}..{stop - 1} are outside 0..{self.num_clips - 1}")
        parts = []
        g = start
        while g < stop:
            p = g // OFFSETS_PAGE
            page = self._page(p)
            lo = g - p * OFFSETS_PAGE
            hi = min(stop - p * OFFSETS_PAGE, page.shape[0])
            parts.append(page[lo:hi])
            g = p * OFFSETS_PAGE + hi
        return np.concatenate(parts) if parts else np.zeros((0, self.columns), dtype=np.int64)

    def byte_ranges(self, start: int, stop: int) -> np.ndarray:
        """``[stop - start, 2]`` int64: (offset, length) inside its shard of clips ``start..stop-1``."""
        return self.rows(start, stop)[:, :LEGACY_COLUMNS]
