"""The loader benchmark's batch floor (benchmarks/limits.py raw_batch_floor): every clip read once."""

from __future__ import annotations

import os

import numpy as np

from benchmarks.limits import ShardSet, raw_batch_floor


def test_the_batch_floor_reads_each_clip_once_in_pieces(tiny_converted, monkeypatch):
    shards = ShardSet.open(str(tiny_converted))
    reads: list[tuple[int, int]] = []
    preadv = os.preadv

    def counted(fd, buffers, offset, *args):
        got = preadv(fd, buffers, offset, *args)
        reads.append((offset, got))
        return got

    monkeypatch.setattr(os, "preadv", counted)
    clips, nbytes, seconds = raw_batch_floor(shards, batch_size=3)
    assert clips == shards.clips > 3 and seconds > 0
    assert nbytes == int(np.sum(shards.offsets[:, 1])) == sum(n for _, n in reads)
    starts = {int(o) for o in shards.offsets[:, 0]}
    assert starts <= {o for o, _ in reads}, "every clip read from its first byte"
    reads.clear()
    assert raw_batch_floor(shards, limit=2)[0] == 2
