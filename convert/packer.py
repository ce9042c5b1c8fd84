"""Packing: the ordered samples of the run into shards of at most ``shard_size`` bytes.

A shard is closed before the sample that would take it past ``shard_size`` (a shard holds at
least one sample), so shard boundaries depend on the input alone, never on timing or the
number of workers. Runs of consecutive samples bound for one shard go to the shard writer as
one direct write straight from a mapped spool slot where the disk allows, else sample by
sample through the writer's chunks: the bytes are the same either way.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence

from .errors import ConversionError
from .options import ConvertOptions
from .schema import key_number
from .storage import Location
from .writer import MAX_DIRECT_VIEW, MIN_DIRECT_VIEW, TAR_END, ChunkPool, ShardInfo, ShardWriter

if TYPE_CHECKING:  # pragma: no cover
    from .spool import MappedSpool

logger = logging.getLogger(__name__)

__all__ = ["ShardPacker"]

Cursor = tuple[int, int]  # (video index, clip index within it) of a sample


class ShardPacker:
    """The run's shards: the one being written, and those finished (kept ones first).

    ``on_shard_done(info, next_cursor)`` is called after each shard is closed, with the
    cursor of the sample that follows it (a done-marker records both). Shards are named
    ``<names>-<number>.tar`` (:func:`~.schema.shard_name`): ``names`` is the split, or for an
    append the split and its generation, so that its shards never take an existing shard's name.
    """

    def __init__(self, loc: Location, opts: ConvertOptions, *, kept: Sequence[ShardInfo],
                 on_shard_done: Callable[[ShardInfo, Cursor], None], names: Optional[str] = None):
        self.loc, self.opts = loc, opts
        self.names = names if names is not None else str(opts.split)
        self.on_shard_done = on_shard_done
        self.shards: list[ShardInfo] = list(kept)
        self.clips = sum(s.clips for s in self.shards)  # clips in the shards, the open one included
        self.bytes = sum(s.bytes for s in self.shards)  # bytes of the finished shards
        self.writer: Optional[ShardWriter] = None
        self.chunks: Optional[ChunkPool] = None  # made with the first shard: by then the workers are decoding

    @property
    def bytes_written(self) -> int:
        """Bytes so far, the open shard's included (for the progress bar)."""
        return self.bytes + (self.writer.size if self.writer else 0)

    def add_video(self, fh: Any, mapped: Optional["MappedSpool"], sizes: Sequence[int], video: int, skip: int,
                  what: str, *, label: int, checksums: Sequence[int]) -> None:
        """Append the samples of one video, ``sizes`` bytes each, read from ``fh`` (its spool
        file; ``mapped``: that file mapped for direct writes). Its first sample is clip
        ``skip`` of video ``video``; ``what`` names the video in errors. Each sample's offsets
        row also records its key, ``label`` and its ``checksums`` entry (schema.OFFSETS_COLUMNS)."""
        if len(checksums) != len(sizes):
            raise ConversionError(f"spool of {what}: {len(sizes)} samples, {len(checksums)} checksums")
        idents = [(key_number(video, skip + j), label, checksums[j]) for j in range(len(sizes))]
        pos = j = 0
        while j < len(sizes):
            writer = self._shard_for(sizes[j], (video, skip + j))
            k = self._run_end(writer, sizes, j)
            run = sum(sizes[j:k])
            if mapped is not None and run >= MIN_DIRECT_VIEW and writer.takes_views:
                # straight from the spool's pages to the disk: no copy into a chunk
                view, done = mapped.view(pos, run)
                writer.add_view(view, list(sizes[j:k]), done, idents[j:k])
                fh.seek(pos + run)
            else:
                for size, ident in zip(sizes[j:k], idents[j:k]):
                    if writer.add_from(fh.readinto, size, ident) != size:
                        raise ConversionError(f"spool of {what} is short")
            pos += run
            self.clips += k - j
            j = k

    def finish(self, next_cursor: Cursor) -> None:
        """Close the open shard; the next sample (if any) is at ``next_cursor``."""
        assert self.writer is not None
        info = self.writer.close()
        self.writer = None
        self.shards.append(info)
        self.bytes += info.bytes
        self.on_shard_done(info, next_cursor)

    def abort(self) -> None:
        """Discard the open shard (nothing of it is left on the storage)."""
        if self.writer is not None:
            self.writer.abort()

    def _shard_for(self, size: int, cursor: Cursor) -> ShardWriter:
        """The shard the next sample (``size`` bytes) goes to, finishing the current one if full."""
        if self.writer is not None and self.writer.info.clips and self.writer.size + size + len(TAR_END) > self.opts.shard_size:
            self.finish(next_cursor=cursor)
        if self.writer is None:
            if self.chunks is None:
                self.chunks = ChunkPool()
            self.writer = ShardWriter(self.loc, self.names, len(self.shards), pool=self.chunks, checksum=self.opts.checksum)
        return self.writer

    def _run_end(self, writer: ShardWriter, sizes: Sequence[int], j: int) -> int:
        """End of the run of samples from ``j`` that go to ``writer``'s shard (the boundary rule
        of :meth:`_shard_for`), at most ``MAX_DIRECT_VIEW`` bytes (one direct write; pages
        mapped at a time)."""
        k, size, run = j + 1, writer.size + sizes[j], sizes[j]
        while k < len(sizes) and size + sizes[k] + len(TAR_END) <= self.opts.shard_size and run + sizes[k] <= MAX_DIRECT_VIEW:
            size += sizes[k]
            run += sizes[k]
            k += 1
        return k
