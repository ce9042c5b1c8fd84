"""Epoch plans: coverage, (seed, epoch) determinism, equal splits over ranks and workers, len()."""

from __future__ import annotations

import numpy as np
import pytest
from torch.utils.data import DataLoader

from clipshards.convert.schema import dumps_json
from clipshards.loader import ClipLoader, EpochPlan, StreamingKinetics
from clipshards.loader.index import INDEX_CHUNK
from clipshards.loader.plan import buffer_order, part_bounds, segments
from loader_helpers import NUM_CLIPS, batch_ids, clip_id, copy_out, flatten, read_index
from loader_helpers import converted, table  # noqa: F401  (pytest fixtures)


def stream_ids(ds, table, workers=0, batch_size=None):
    if batch_size is None:
        return [table[clip_id(v)] for v, _, _ in DataLoader(ds, batch_size=None, num_workers=workers)]
    return [batch_ids(b, table) for b in ClipLoader(ds, batch_size=batch_size, num_workers=workers)]


@pytest.mark.parametrize("workers", [0, 2])
def test_each_epoch_visits_every_clip_once_in_a_new_order(converted, table, workers):
    _, out = converted
    ds = StreamingKinetics(out, seed=7, shuffle_buffer=8, block_size=2)
    orders = []
    for epoch in range(3):
        ds.set_epoch(epoch)
        got = stream_ids(ds, table, workers)
        assert sorted(got) == list(range(NUM_CLIPS)), f"epoch {epoch} is not a permutation"
        orders.append(got)
    assert len({tuple(o) for o in orders}) == 3, "epochs must differ"
    ds.set_epoch(1)
    assert stream_ids(ds, table, workers) == orders[1], "same (seed, epoch) gives the same order"
    other = StreamingKinetics(out, seed=8, shuffle_buffer=8, block_size=2)
    other.set_epoch(1)
    assert stream_ids(other, table, workers) != orders[1], "the seed changes the order"


def test_yields_exactly_the_planned_order(converted, table):
    _, out = converted
    ds = StreamingKinetics(out, seed=3, shuffle_buffer=5, block_size=3)
    ds.set_epoch(4)
    (planned,) = ds.epoch_order()
    assert stream_ids(ds, table) == planned.tolist()
    # with 2 workers and unbatched loading the DataLoader alternates workers sample by sample
    w0, w1 = ds.epoch_order(num_workers=2)
    inter = [int(x) for pair in zip(w0, w1) for x in pair] + [int(x) for x in w0[len(w1):]]
    assert stream_ids(ds, table, workers=2) == inter


@pytest.mark.parametrize("block_size", [None, 1, 4])
def test_block_sizes_and_buffer_off(converted, table, block_size):
    """Without a buffer the epoch is the permuted blocks read in turn: each block is a run of
    consecutive clips of one shard, at most ``block_size`` long (a whole shard for None)."""
    _, out = converted
    ds = StreamingKinetics(out, block_size=block_size, shuffle_buffer=0, seed=1)
    got = stream_ids(ds, table)
    assert sorted(got) == list(range(NUM_CLIPS))
    plan = EpochPlan([s.clips for s in ds.index.shards], epoch=0, shuffle=True, seed=1, block_size=block_size)
    assert got == plan.sequence(0, NUM_CLIPS).tolist()
    pos = 0
    for length in plan.block_lengths:
        block = got[pos: pos + length]
        pos += length
        assert block == list(range(block[0], block[0] + length))
        assert len(set(ds.index.shard_of(np.array(block)).tolist())) == 1
        assert length <= (3 if block_size is None else block_size)
    assert got != list(range(NUM_CLIPS))


@pytest.mark.parametrize("remainder", ["pad", "drop"])
@pytest.mark.parametrize("world", [2, 3, 4, 5])
def test_ranks_get_equal_disjoint_slices(converted, table, world, remainder):
    _, out = converted
    per_rank = []
    for rank in range(world):
        ds = StreamingKinetics(out, seed=2, shuffle_buffer=4, rank=rank, world_size=world, remainder=remainder)
        ds.set_epoch(3)
        got = stream_ids(ds, table, workers=0)
        assert len(got) == len(ds), (rank, len(got), len(ds))
        per_rank.append(got)
    n = NUM_CLIPS // world if remainder == "drop" else -(-NUM_CLIPS // world)
    assert all(len(r) == n for r in per_rank)
    everything = flatten(per_rank)
    if remainder == "drop":
        assert len(set(everything)) == len(everything) == n * world, "drop: disjoint"
    else:
        assert set(everything) == set(range(NUM_CLIPS)), "pad: every clip is covered"
        assert len(everything) - len(set(everything)) == n * world - NUM_CLIPS, "pad: only the padding repeats"


@pytest.mark.filterwarnings("ignore:This DataLoader will create")
@pytest.mark.parametrize("workers,batch_size,drop_last", [(2, 4, False), (3, 5, False), (2, 4, True), (4, 1, False)])
def test_every_rank_makes_the_same_batches(converted, table, workers, batch_size, drop_last):
    """Batches per rank are equal whatever the shard and clip counts: the DDP hang cannot happen."""
    _, out = converted
    world = 3
    counts, clips = [], []
    for rank in range(world):
        ds = StreamingKinetics(out, seed=5, rank=rank, world_size=world)
        loader = ClipLoader(ds, batch_size=batch_size, num_workers=workers, drop_last=drop_last)
        batches = [batch_ids(b, table) for b in loader]
        counts.append((len(batches), [len(b) for b in batches]))
        clips.append(flatten(batches))
        assert len(batches) == len(loader)
    assert all(c == counts[0] for c in counts), counts
    if not drop_last:
        assert set(flatten(clips)) == set(range(NUM_CLIPS))


def test_len_and_plan_read_no_shard(converted):
    _, out = converted
    ds = StreamingKinetics(out, rank=1, world_size=4)
    assert len(ds) == -(-NUM_CLIPS // 4)
    assert len(StreamingKinetics(out, rank=1, world_size=4, remainder="drop")) == NUM_CLIPS // 4
    ds.epoch_order(num_workers=3)
    assert ds.batches_per_epoch(3, 4) == sum(-(-(b - a) // 4) for a, b in (part_bounds(len(ds), 3, w) for w in range(3)))
    stats = ds.index.transport.stats
    assert not [n for n in stats.requests if n.endswith(".tar")], stats.requests
    assert set(stats.requests) == {"index.json", "offsets.npy"}  # offsets.npy: its header and first page, checked
    assert stats.requests["offsets.npy"] == 1


def test_start_up_reads_do_not_grow_with_the_number_of_videos(converted, tmp_path):
    """The index head (without per-video records) and one shard: the same reads for 9 videos as for 9000."""
    _, out = converted
    big = copy_out(out, tmp_path / "big")
    index = read_index(big / "train")
    index["videos"] = [dict(index["videos"][i % len(index["videos"])], index=i) for i in range(9000)]
    (big / "train" / "index.json").write_bytes(dumps_json(index))
    reads = []
    for where in (out, big):
        ds = StreamingKinetics(where, shuffle=False)
        next(iter(ds))
        stats = ds.index.transport.stats
        reads.append((dict(stats.requests), dict(stats.bytes)))
    (small_req, small_bytes), (big_req, big_bytes) = reads
    assert small_req == big_req
    assert {k: v for k, v in small_bytes.items() if k != "index.json"} == {k: v for k, v in big_bytes.items() if k != "index.json"}
    assert big_bytes["index.json"] <= INDEX_CHUNK < (big / "train" / "index.json").stat().st_size // 20
    requests = small_req
    assert requests["index.json"] == 1 and requests["offsets.npy"] == 1 and requests["train-000000.tar"] == 1
    assert sum(n.endswith(".tar") for n in requests) == 1
    # the per-video records are still there on demand
    assert len(StreamingKinetics(big).index.videos) == 9000


def test_set_epoch_reaches_persistent_workers(converted, table):
    _, out = converted
    ds = StreamingKinetics(out, seed=4)
    loader = DataLoader(ds, batch_size=None, num_workers=2, persistent_workers=True)
    seen = []
    for epoch in range(2):
        ds.set_epoch(epoch)
        seen.append([table[clip_id(v)] for v, _, _ in loader])
        expect = ds.epoch_order(num_workers=2)
        inter = [int(x) for pair in zip(*expect) for x in pair] + [int(x) for x in expect[0][len(expect[1]):]]
        assert seen[-1] == inter
    assert seen[0] != seen[1]


def test_bad_arguments_are_named(converted):
    _, out = converted
    cases = [
        (dict(shuffle_buffer=-1), "shuffle_buffer=-1"),
        (dict(block_size=0), "block_size=0"),
        (dict(seed=-3), "seed=-3"),
        (dict(output_format="CTHW"), "output_format='CTHW'"),
        (dict(errors="ignore"), "errors='ignore'"),
        (dict(remainder="wrap"), "remainder='wrap'"),
        (dict(rank=2, world_size=2), "rank=2"),
        (dict(world_size=0), "world_size=0"),
        (dict(transform="resize"), "transform='resize'"),
        (dict(shuffle="yes"), "shuffle='yes'"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("[", r"\[")):
            StreamingKinetics(out, **kwargs)
    with pytest.raises(ValueError, match="split='a/b'"):
        StreamingKinetics(out, split="a/b")
    with pytest.raises(FileNotFoundError, match="val/index.json"):
        StreamingKinetics(out, split="val")
    with pytest.raises(ValueError, match="epoch=-1"):
        StreamingKinetics(out).set_epoch(-1)


def test_plan_arithmetic():
    """Pure plan properties on sizes no test dataset has: many shards, uneven counts."""
    counts = [7, 0, 13, 1, 29, 5]
    n = sum(counts)
    for world in (1, 2, 7):
        for remainder in ("pad", "drop"):
            plan = EpochPlan(counts, epoch=2, shuffle=True, seed=9, block_size=4, world_size=world, remainder=remainder)
            seq = plan.sequence(0, n)
            assert sorted(seq.tolist()) == list(range(n))
            for workers in (1, 3, 8):
                lengths = {(r, w): len(plan.part(r, workers, w)) for r in range(world) for w in range(workers)}
                for w in range(workers):
                    assert len({lengths[(r, w)] for r in range(world)}) == 1
                total = [plan.part(r, workers, w) for r in range(world) for w in range(workers)]
                flat = np.concatenate(total)
                assert len(flat) == plan.per_rank * world
    rng = np.random.default_rng(0)
    for n, size in [(0, 4), (1, 4), (3, 10), (50, 8), (200, 1)]:
        order = buffer_order(n, size, rng)
        assert sorted(order.tolist()) == list(range(n))
        for t in range(n):
            assert order[: t + 1].max() < max(size, 1) + t + 1
    firsts = np.array([0, 7, 7, 20, 21, 50])
    clips = np.array([3, 4, 5, 6, 7, 8, 30, 31, 0])
    segs = segments(clips, np.searchsorted(firsts, clips, side="right") - 1)
    assert [(s.shard, s.first, s.count, s.pos) for s in segs] == [(0, 3, 4, 0), (2, 7, 2, 4), (4, 30, 2, 6), (0, 0, 1, 8)]
