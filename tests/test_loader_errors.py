"""Truncated or corrupt shards: errors name the shard and member; errors="skip" keeps the epoch going."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from clipshards.loader import ClipLoader, IndexedKinetics, ShardReadError, StreamingKinetics
from loader_helpers import NUM_CLIPS, batch_ids, clip_id, copy_out, read_index
from loader_helpers import converted, table  # noqa: F401  (pytest fixtures)


def offsets(split_dir):
    return np.load(split_dir / "offsets.npy", allow_pickle=False)


def member_at(split_dir, shard_name, pos):
    """The tar member whose header or data covers byte ``pos`` of a shard."""
    import tarfile

    with tarfile.open(split_dir / shard_name, mode="r:") as tf:
        for m in tf:
            if m.offset <= pos < m.offset_data + m.size:
                return m.name
    raise AssertionError(pos)


@pytest.fixture()
def truncated(converted, tmp_path):
    """Shard 5 cut in the middle of its second clip's members: clips 16 and 17 are lost."""
    _, out = converted
    bad = copy_out(out, tmp_path / "truncated")
    split = bad / "train"
    shard = read_index(split)["shards"][5]
    assert shard["first_clip"] == 15 and shard["clips"] == 3
    off, length = offsets(split)[16][:2]
    cut = int(off + length // 2)
    member = member_at(split, shard["name"], cut)
    data = (split / shard["name"]).read_bytes()
    (split / shard["name"]).write_bytes(data[:cut])
    return bad, shard["name"], member, [16, 17]


def test_truncated_shard_error_names_shard_and_member(truncated):
    bad, shard_name, member, lost = truncated
    with pytest.raises(ShardReadError) as info:
        IndexedKinetics(bad)[lost[0]]
    err = info.value
    assert err.shard.endswith(f"train/{shard_name}") and err.member == member and err.clip == 16
    assert shard_name in str(err) and member in str(err) and "truncated" in str(err)
    with pytest.raises(ShardReadError, match="truncated") as info2:
        for _ in StreamingKinetics(bad, shuffle=False):
            pass
    assert info2.value.member == member and info2.value.clip == 16
    with pytest.raises(ShardReadError, match=f"{shard_name}.*{member}.*truncated"):
        for _ in ClipLoader(StreamingKinetics(bad, shuffle=False), batch_size=4, num_workers=2):
            pass
    assert IndexedKinetics(bad)[15][2] == IndexedKinetics(bad)[14][2]  # the clip before the cut still reads


@pytest.mark.parametrize("workers", [0, 2])
def test_skip_policy_counts_logs_and_keeps_the_epoch(truncated, table, workers, caplog):
    bad, shard_name, _, lost = truncated
    ds = StreamingKinetics(bad, errors="skip", seed=3, shuffle_buffer=4)
    with caplog.at_level(logging.WARNING, logger="clipshards.loader.datasets"):
        batches = [batch_ids(b, table) for b in ClipLoader(ds, batch_size=4, num_workers=workers)]
    got = [g for b in batches for g in b]
    assert len(got) == len(ds) == NUM_CLIPS, "the bad clips' slots are filled, so every rank keeps its count"
    assert set(got) == set(range(NUM_CLIPS)) - set(lost), "every readable clip comes through"
    assert ds.skipped == len(lost)
    if workers == 0:
        messages = [r.getMessage() for r in caplog.records if "skipping" in r.getMessage()]
        assert len(messages) == len(lost) and all(shard_name in m for m in messages)


def test_corrupt_member_header_costs_only_its_clip(converted, tmp_path, table):
    _, out = converted
    bad = copy_out(out, tmp_path / "corrupt")
    split = bad / "train"
    shard = read_index(split)["shards"][7]
    g = shard["first_clip"] + 1
    off = offsets(split)[g][0]
    import tarfile

    with tarfile.open(split / shard["name"], mode="r:") as tf:
        second = [m for m in tf if m.offset >= off][1]
    data = bytearray((split / shard["name"]).read_bytes())
    data[second.offset: second.offset + 512] = b"\xff" * 512
    (split / shard["name"]).write_bytes(bytes(data))
    with pytest.raises(ShardReadError, match="corrupt tar header") as info:
        IndexedKinetics(bad)[g]
    assert info.value.member.startswith("after ") and shard["name"] in str(info.value)
    ds = StreamingKinetics(bad, shuffle=False, errors="skip")
    got = [table[clip_id(v)] for v, _, _ in ds]
    assert ds.skipped == 1 and len(got) == NUM_CLIPS
    assert got[g] == g - 1 and got[: g] + got[g + 1:] == [x for x in range(NUM_CLIPS) if x != g]


def test_missing_shard_is_named(converted, tmp_path):
    _, out = converted
    bad = copy_out(out, tmp_path / "missing")
    (bad / "train" / "train-000003.tar").unlink()
    with pytest.raises(ShardReadError, match="train-000003.tar"):
        IndexedKinetics(bad)[9]
    with pytest.raises(ShardReadError, match="train-000003.tar"):
        list(StreamingKinetics(bad, shuffle=False))
    ds = StreamingKinetics(bad, errors="skip")
    assert len(list(ds)) == NUM_CLIPS and ds.skipped == 3


def test_no_readable_clip_at_all_raises_even_when_skipping(converted, tmp_path):
    _, out = converted
    bad = copy_out(out, tmp_path / "allgone")
    for shard in read_index(bad / "train")["shards"]:
        (bad / "train" / shard["name"]).unlink()
    with pytest.raises(ShardReadError, match="no readable clip"):
        list(StreamingKinetics(bad, errors="skip"))
