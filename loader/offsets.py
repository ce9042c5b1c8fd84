"""Each clip's byte range inside its shard, from the split's ``offsets.npy``, read in pages on first use.

``offsets.npy`` is an int64 ``[num_clips, 2]`` array of (offset, length) rows. Only its
header and the pages of :data:`OFFSETS_PAGE` rows that are asked for are read, so neither
start-up nor memory grows with the number of clips.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from clipshards.convert.schema import ShardFormatError, npy_header

from .transport import Transport

__all__ = ["ClipOffsets", "OFFSETS_PAGE"]

OFFSETS_PAGE = 8192
_ROW_DTYPE = np.dtype("<i8")
_HEADER_BYTES = 4096


class ClipOffsets:
    """The rows of ``name`` (an offsets file of ``num_clips`` rows) through ``transport``.

    ``expected_bytes``: the file's size as the index records it (None: not recorded); the
    header must agree with it, and with ``num_clips``.
    """

    def __init__(self, transport: Transport, name: str, num_clips: int, expected_bytes: Optional[Any] = None) -> None:
        self.transport = transport
        self.name = name
        self.num_clips = num_clips
        self._expected = expected_bytes
        self._pages: dict[int, np.ndarray] = {}
        self._data_offset: Optional[int] = None

    @property
    def url(self) -> str:
        return self.transport.url_of(self.name)

    def _header(self) -> int:
        """Where the rows start in the file, read and checked once."""
        if self._data_offset is not None:
            return self._data_offset
        n = self.num_clips
        try:
            shape, fortran, dtype, offset = npy_header(self.transport.read(self.name, 0, _HEADER_BYTES))
        except ShardFormatError as exc:
            raise ShardFormatError(f"{self.url}: not an npy array of clip offsets ({exc})") from exc
        if dtype != _ROW_DTYPE or fortran or tuple(shape) != (n, 2):
            raise ShardFormatError(
                f"{self.url}: expected int64 [{n}, 2] in C order, found {dtype} {tuple(shape)}"
                f"{' (Fortran order)' if fortran else ''}"
            )
        if self._expected is not None and int(self._expected) != offset + 16 * n:
            raise ShardFormatError(f"{self.url}: {self._expected} bytes in the index, header says {offset + 16 * n}")
        self._data_offset = offset
        return offset

    def _page(self, p: int) -> np.ndarray:
        page = self._pages.get(p)
        if page is None:
            base = self._header()
            lo, hi = p * OFFSETS_PAGE, min(self.num_clips, (p + 1) * OFFSETS_PAGE)
            raw = self.transport.read(self.name, base + 16 * lo, base + 16 * hi)
            if len(raw) != 16 * (hi - lo):
                raise ShardFormatError(f"{self.url}: truncated (rows {lo}..{hi - 1} missing)")
            page = np.frombuffer(raw, dtype=_ROW_DTYPE).reshape(hi - lo, 2)
            self._pages[p] = page
        return page

    def byte_ranges(self, start: int, stop: int) -> np.ndarray:
        """``[stop - start, 2]`` int64: (offset, length) inside its shard of clips ``start..stop-1``."""
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
        return np.concatenate(parts) if parts else np.zeros((0, 2), dtype=np.int64)
