"""Shards are data, never code: hostile members are never unpickled or executed."""

from __future__ import annotations

import io
import pickle

import numpy as np
import pytest
import torch

from clipshards.convert.schema import ShardFormatError
from clipshards.loader import IndexedKinetics, ShardReadError, StreamingKinetics
from loader_helpers import NUM_CLIPS, clip_id, copy_out, read_index, rewrite_shard, shard_members, write_index
from loader_helpers import converted  # noqa: F401  (pytest fixtures)


class _CreatesFile:
    """Unpickling this object opens (creates) a file: proof that something was unpickled."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def hostile_pickle(path) -> bytes:
    return pickle.dumps(_CreatesFile(str(path)))


def test_the_payload_is_really_hostile(tmp_path):
    marker = tmp_path / "proof"
    pickle.loads(hostile_pickle(marker)).close()
    assert marker.exists()


def test_pickle_members_are_never_unpickled(converted, tmp_path):
    _, out = converted
    bad = copy_out(out, tmp_path / "hostile")
    marker = tmp_path / "pwned"
    shard = bad / "train" / "train-000000.tar"
    members = shard_members(shard)
    key = members[0][0].partition(".")[0]
    payload = hostile_pickle(marker)
    # extra members inside the first sample, before and after the schema members
    hostile = [(f"{key}.pyd", payload), *members[:2], (f"{key}.pickle", payload), (f"{key}.pth", payload),
               *members[2:4], (f"{key}.npz", payload), *members[4:]]
    rewrite_shard(bad / "train", 0, hostile)
    want = IndexedKinetics(out)
    indexed = IndexedKinetics(bad)
    for g in range(4):
        v, a, y = indexed[g]
        wv, wa, wy = want[g]
        assert torch.equal(v, wv) and torch.equal(a, wa) and y == wy
    streamed = list(StreamingKinetics(bad, shuffle=False))
    assert len(streamed) == NUM_CLIPS
    assert [clip_id(v) for v, _, _ in streamed[:4]] == [clip_id(want[g][0]) for g in range(4)]
    assert not marker.exists(), "a shard member was unpickled"


def test_object_dtype_video_is_refused(converted, tmp_path):
    _, out = converted
    bad = copy_out(out, tmp_path / "objdtype")
    marker = tmp_path / "pwned-npy"
    members = shard_members(bad / "train" / "train-000001.tar")
    buf = io.BytesIO()
    np.save(buf, np.array([_CreatesFile(str(marker))], dtype=object), allow_pickle=True)
    target = next(i for i, (n, _) in enumerate(members) if n.endswith(".video.npy"))
    name = members[target][0]
    members[target] = (name, buf.getvalue())
    rewrite_shard(bad / "train", 1, members)
    g = read_index(bad / "train")["shards"][1]["first_clip"]
    with pytest.raises(ShardReadError, match="object dtype") as info:
        IndexedKinetics(bad)[g]
    assert info.value.member == name and info.value.shard.endswith("train-000001.tar") and info.value.clip == g
    assert name in str(info.value) and "train-000001.tar" in str(info.value)
    with pytest.raises(ShardReadError, match="object dtype"):
        list(StreamingKinetics(bad, shuffle=False))
    skipping = StreamingKinetics(bad, shuffle=False, errors="skip")
    assert len(list(skipping)) == NUM_CLIPS and skipping.skipped == 1
    assert not marker.exists()


def test_members_of_other_samples_in_a_clip_range_are_refused(converted, tmp_path):
    _, out = converted
    bad = copy_out(out, tmp_path / "mixed")
    members = shard_members(bad / "train" / "train-000002.tar")
    key0 = members[0][0].partition(".")[0]
    key1 = next(n for n, _ in members if not n.startswith(key0)).partition(".")[0]
    # the first sample's audio is renamed into the second sample's key: 2 keys in clip 0's range
    members[2] = (members[2][0].replace(key0, key1), members[2][1])
    names = [n for n, _ in members]
    assert names[2].startswith(key1)
    g = read_index(bad / "train")["shards"][2]["first_clip"]
    offsets_before = (bad / "train" / "offsets.npy").read_bytes()
    # keep the byte ranges: write the shard with unchanged offsets
    from clipshards.convert.writer import TAR_END, tar_member

    blob = b"".join(tar_member(n, d) for n, d in members) + TAR_END
    (bad / "train" / "train-000002.tar").write_bytes(blob)
    assert (bad / "train" / "offsets.npy").read_bytes() == offsets_before
    with pytest.raises(ShardReadError, match="two samples"):
        IndexedKinetics(bad)[g]


@pytest.mark.parametrize("change,message", [
    ({"version": 5}, "index format version 5 is not supported"),
    ({"format": "webdataset"}, "not a clipshards index"),
])
def test_unknown_index_format_is_a_clear_error(converted, tmp_path, change, message):
    _, out = converted
    bad = copy_out(out, tmp_path / "version")
    index = read_index(bad / "train")
    index.update(change)
    write_index(bad / "train", index)
    for cls in (IndexedKinetics, StreamingKinetics):
        with pytest.raises(ShardFormatError, match=message) as info:
            cls(bad)
        assert "index.json" in str(info.value)


def test_offsets_that_disagree_with_the_index_are_refused(converted, tmp_path):
    _, out = converted
    bad = copy_out(out, tmp_path / "offsets")
    index = read_index(bad / "train")
    index["counts"]["clips"] += 1
    index["shards"][-1]["clips"] += 1
    write_index(bad / "train", index)
    with pytest.raises(ShardFormatError, match="offsets.npy"):
        IndexedKinetics(bad)[0]
