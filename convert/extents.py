"""Extents: where each stretch of the global clip order lies, once an output was appended to.

A fresh conversion stores its clips in global clip order: shard after shard, each a run of
consecutive clips from byte 0 (its index entry's ``first_clip``). An output appended to
(``clipshards convert --append``: index version 3, ``generation`` 2 or more) keeps its old
shards byte for byte and adds shards for the new and changed videos, so the global order (that
of a fresh conversion of the new root) runs across shards. Its index then names an extents
table (``extents.g<N>.npy``): an int64 row per *extent*, a maximal run of consecutive global
clips stored back to back in one shard, in global order, with the columns
:data:`EXTENTS_COLUMNS`: the extent's first global clip, its clip count, its shard (position in
the index's shard list) and the bytes ``[start, end)`` its clips fill in that shard.

Both halves use this module: the converter builds the table from the rows it merged
(:func:`extents_of`); the loader and the tools read it back, checked (:func:`read_extents`).
Files written by an append are named per generation (:func:`generation_name`), so a new index
never shares a table file with the one it replaces.
"""

from __future__ import annotations

import re

import numpy as np

from .schema import ShardFormatError, decode_npy

__all__ = ["EXTENTS_NAME", "EXTENTS_COLUMNS", "generation_name", "generation_of", "extents_of", "read_extents",
           "TABLE_FILE"]

EXTENTS_NAME = "extents.npy"
EXTENTS_COLUMNS = ("first_clip", "clips", "shard", "start", "end")
TABLE_FILE = re.compile(r"(offsets|extents|videos)(\.g[0-9]+)?\.npy")
"""The names of an output's tables, every generation's (what an append may remove once unreferenced)."""
_BLOCK = 512
_TAR_END = 2 * _BLOCK  # the end-of-archive blocks after a shard's last sample


def generation_name(name: str, generation: int) -> str:
    """A table's file name in ``generation``: ``offsets.npy`` for 1 (a fresh conversion's),
    ``offsets.g2.npy`` for 2, and so on."""
    if isinstance(generation, bool) or not isinstance(generation, int) or generation < 1:
        raise ValueError(f"generation={generation!r}: must be an integer >= 1")
    stem, dot, ext = name.rpartition(".")
    return name if generation == 1 else f"{stem}.g{generation}{dot}{ext}"


def generation_of(index: dict) -> int:
    """The generation an index records (1 when it records none: a fresh conversion)."""
    value = index.get("generation", 1)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ShardFormatError(f"index generation {value!r} is not an integer >= 1")
    return value


def extents_of(shards: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """The extents (``[E, 5]`` int64, :data:`EXTENTS_COLUMNS`) of clips in global order whose
    shard is ``shards[g]`` and offsets row ``rows[g]`` (byte offset and length first): a new
    extent where the shard changes or a clip does not start where the one before it ends."""
    n = len(shards)
    if n == 0:
        return np.zeros((0, len(EXTENTS_COLUMNS)), dtype=np.int64)
    shards = np.asarray(shards, dtype=np.int64)
    off = np.asarray(rows, dtype=np.int64)[:, 0]
    end = off + np.asarray(rows, dtype=np.int64)[:, 1]
    cuts = np.flatnonzero((shards[1:] != shards[:-1]) | (off[1:] != end[:-1])) + 1
    first = np.concatenate(([0], cuts))
    stop = np.concatenate((cuts, [n]))
    return np.stack([first, stop - first, shards[first], off[first], end[stop - 1]], axis=1).astype(np.int64)


def read_extents(data: bytes | memoryview, *, clips: int, shard_bytes: np.ndarray, where: str) -> np.ndarray:
    """An extents table parsed and checked (no pickle): int64 ``[E, 5]``; the extents tile clips
    ``0 .. clips - 1`` in order, none empty; each names a shard of the index and a byte range of
    whole tar blocks inside it, before its end-of-archive blocks, room for at least a block per
    clip. Raises :class:`ShardFormatError` naming ``where`` and the first bad row."""
    try:
        table = decode_npy(data, expect=np.dtype("<i8"))
    except ShardFormatError as exc:
        raise ShardFormatError(f"{where}: not an extents table ({exc})") from exc
    if table.ndim != 2 or table.shape[1] != len(EXTENTS_COLUMNS) or (table.shape[0] == 0) != (clips == 0):
        raise ShardFormatError(f"{where}: expected int64 [extents, {len(EXTENTS_COLUMNS)}] for {clips} clips, "
                               f"found shape {table.shape}")
    first, count, shard, start, end = (table[:, i] for i in range(len(EXTENTS_COLUMNS)))
    expected = np.concatenate(([0], np.cumsum(count)[:-1]))
    sizes = np.asarray(shard_bytes, dtype=np.int64)
    in_range = (shard >= 0) & (shard < len(sizes))
    limit = (sizes[np.clip(shard, 0, len(sizes) - 1)] if len(sizes) else np.zeros_like(shard)) - _TAR_END
    bad = (count <= 0) | (first != expected) | ~in_range | (start < 0) | (start % _BLOCK != 0) | (end % _BLOCK != 0)
    bad |= (end - start < _BLOCK * count) | (end > limit)
    if bad.any():
        i = int(np.argmax(bad))
        raise ShardFormatError(f"{where}: extent {i} {dict(zip(EXTENTS_COLUMNS, table[i].tolist()))} is not a run "
                               "of the index's clips inside a shard it lists")
    if int(count.sum()) != clips:
        raise ShardFormatError(f"{where}: extents hold {int(count.sum())} clips, the index counts {clips}")
    order = np.lexsort((start, shard))  # no two extents share a byte of a shard: no clip is listed twice
    overlap = (shard[order][1:] == shard[order][:-1]) & (start[order][1:] < end[order][:-1])
    if overlap.any():
        i = int(order[int(np.argmax(overlap)) + 1])
        raise ShardFormatError(f"{where}: extent {i} overlaps another one's bytes of shard {int(shard[i])}")
    return table

