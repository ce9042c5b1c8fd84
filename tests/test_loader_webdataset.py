"""webdataset_pipeline: a stock webdataset pipeline yielding the loader's tuples; webdataset
handlers as StreamingKinetics(errors=...)."""

from __future__ import annotations

import pickle
import tarfile
from collections import Counter

import numpy as np
import pytest
import torch
import webdataset as wds
from torch.utils.data import DataLoader

from clipshards.convert.schema import ShardFormatError
from clipshards.loader import ClipLoader, IndexedKinetics, ShardReadError, StreamingKinetics, webdataset_pipeline
from loader_helpers import NUM_CLIPS, batch_ids, clip_id, copy_out, make_converted, read_index, rewrite_shard, shard_members, write_index
from loader_helpers import converted, table  # noqa: F401  (pytest fixtures)
from servers import HTTPFileServer


def tuples_equal(a, b) -> bool:
    return (torch.equal(a[0], b[0]) and a[0].shape == b[0].shape and torch.equal(a[1], b[1])
            and type(a[2]) is int and a[2] == b[2])


def ids(items) -> list[str]:
    return [clip_id(v) for v, _, _ in items]


@pytest.fixture(scope="module")
def jpeg_converted(tmp_path_factory, converted):  # noqa: F811
    root, _ = converted
    return make_converted(tmp_path_factory.mktemp("wds-jpeg"), codec="jpeg", shard_size=300_000, root=root)[1]


@pytest.fixture()
def truncated(converted, tmp_path):  # noqa: F811
    """Shard 5 (clips 15..17) cut in the middle of clip 16: clips 16 and 17 are lost."""
    bad = copy_out(converted[1], tmp_path / "truncated")
    split = bad / "train"
    shard = read_index(split)["shards"][5]
    assert shard["first_clip"] == 15 and shard["clips"] == 3
    off, length = np.load(split / "offsets.npy", allow_pickle=False)[16][:2]
    data = (split / shard["name"]).read_bytes()
    (split / shard["name"]).write_bytes(data[: int(off + length // 2)])
    return bad, shard["name"], {16, 17}


@pytest.mark.parametrize("output_format", ["TCHW", "THWC"])
def test_unshuffled_equals_indexed_in_global_order(tiny_converted, output_format):
    pipeline = webdataset_pipeline(tiny_converted, shuffle=False, output_format=output_format)
    assert isinstance(pipeline, wds.DataPipeline)
    indexed = IndexedKinetics(tiny_converted, output_format=output_format)
    got = list(pipeline)
    assert len(got) == len(indexed) > 0
    for g, item in enumerate(got):
        assert tuples_equal(item, indexed[g]), f"clip {g}"


def test_jpeg_conversion_equals_indexed(jpeg_converted):
    indexed = IndexedKinetics(jpeg_converted)
    assert indexed.index.codec == "jpeg" and len(indexed.index.shards) > 1
    got = list(webdataset_pipeline(jpeg_converted, shuffle=False))
    assert len(got) == NUM_CLIPS
    for g, item in enumerate(got):
        assert tuples_equal(item, indexed[g]), f"clip {g}"


def test_shuffled_is_a_permutation_and_composes_with_wds_stages(tiny_converted):
    indexed = IndexedKinetics(tiny_converted)
    reference = Counter(clip_id(indexed[g][0]) for g in range(len(indexed)))
    ordered = ids(webdataset_pipeline(tiny_converted, shuffle=False))
    first = ids(webdataset_pipeline(tiny_converted, seed=0))
    assert Counter(first) == reference and first != ordered
    assert ids(webdataset_pipeline(tiny_converted, seed=0)) == first, "seeded: the same order again"
    assert ids(webdataset_pipeline(tiny_converted, seed=1)) != first
    unbuffered = ids(webdataset_pipeline(tiny_converted, shuffle_buffer=0))
    assert Counter(unbuffered) == reference and unbuffered != ordered

    def collate(samples):
        return torch.stack([v for v, _, _ in samples]), [label for _, _, label in samples]

    batches = list(webdataset_pipeline(tiny_converted, seed=2, transform=lambda v: v.float() / 255)
                   .batched(8, collation_fn=collate))
    assert [len(labels) for _, labels in batches] == [8] * (len(indexed) // 8) + [len(indexed) % 8]
    assert batches[0][0].dtype == torch.float32 and batches[0][0].shape[1:] == indexed[0][0].shape
    assert sorted(label for _, labels in batches for label in labels) == sorted(indexed[g][2] for g in range(len(indexed)))


def test_split_by_worker_gives_every_clip_once(tiny_converted):
    indexed = IndexedKinetics(tiny_converted)
    pipeline = webdataset_pipeline(tiny_converted, seed=4, workersplitter=wds.split_by_worker)
    loader = DataLoader(pipeline, batch_size=None, num_workers=2)
    got = Counter(ids(loader))
    assert got == Counter(clip_id(indexed[g][0]) for g in range(len(indexed)))
    assert max(got.values()) == 1


def test_corrupt_shard_raises_naming_it_and_is_skipped_with_warn_and_continue(truncated, table):  # noqa: F811
    bad, shard_name, lost = truncated
    with pytest.raises(ShardReadError, match=f"train/{shard_name}: clip 16, member 'after ") as info:
        list(webdataset_pipeline(bad, shuffle=False))
    assert info.value.clip == 16 and info.value.shard.endswith(f"train/{shard_name}")
    with pytest.warns(UserWarning, match=shard_name):
        got = [table[i] for i in ids(webdataset_pipeline(bad, shuffle=False, handler=wds.warn_and_continue))]
    assert got == [g for g in range(NUM_CLIPS) if g not in lost]
    shuffled = [table[i] for i in ids(webdataset_pipeline(bad, seed=5, handler=wds.ignore_and_continue))]
    assert sorted(shuffled) == got
    stopped = [table[i] for i in ids(webdataset_pipeline(bad, shuffle=False, handler=wds.ignore_and_stop))]
    assert stopped == list(range(16)), "False from the handler ends the stream after the last good clip"


def test_corrupt_header_is_not_a_silent_end_of_shard(converted, tmp_path, table):  # noqa: F811
    """tarfile ends a stream quietly at a bad header (stock webdataset then loses the rest of
    the shard unnoticed); the index's clip count turns it into an error."""
    bad = copy_out(converted[1], tmp_path / "header")
    split = bad / "train"
    shard = read_index(split)["shards"][7]
    g = shard["first_clip"] + 1
    off = int(np.load(split / "offsets.npy", allow_pickle=False)[g][0])
    with tarfile.open(split / shard["name"], mode="r:") as tf:
        second = [m for m in tf if m.offset >= off][1]
    data = bytearray((split / shard["name"]).read_bytes())
    data[second.offset: second.offset + 512] = b"\xff" * 512
    (split / shard["name"]).write_bytes(bytes(data))
    with pytest.raises(ShardReadError, match=f"{shard['name']}: clip {g}, .*ends after 1 of the 3 clips") as info:
        list(webdataset_pipeline(bad, shuffle=False))
    assert info.value.member.startswith("after ")
    got = [table[i] for i in ids(webdataset_pipeline(bad, shuffle=False, handler=wds.ignore_and_continue))]
    assert got == [x for x in range(NUM_CLIPS) if x not in (g, g + 1)]


def test_missing_shard_is_named(converted, tmp_path, table):  # noqa: F811
    bad = copy_out(converted[1], tmp_path / "missing")
    (bad / "train" / "train-000003.tar").unlink()
    with pytest.raises(ShardReadError, match="train-000003.tar: clip 9, .*FileNotFoundError"):
        list(webdataset_pipeline(bad, shuffle=False))
    got = [table[i] for i in ids(webdataset_pipeline(bad, shuffle=False, handler=wds.ignore_and_continue))]
    assert got == [x for x in range(NUM_CLIPS) if x not in (9, 10, 11)]


def test_bad_member_names_the_clip_and_member(converted, tmp_path, table):  # noqa: F811
    bad = copy_out(converted[1], tmp_path / "member")
    split = bad / "train"
    members = shard_members(split / "train-000002.tar")
    members = [(n, b"not an npy array" if n.endswith(".audio.npy") and n.startswith(members[4][0][:15]) else d)
               for n, d in members]
    rewrite_shard(split, 2, members)
    with pytest.raises(ShardReadError, match=r"train-000002.tar: clip 7, member '\d+_\d+\.audio\.npy'"):
        list(webdataset_pipeline(bad, shuffle=False))
    got = [table[i] for i in ids(webdataset_pipeline(bad, shuffle=False, handler=wds.ignore_and_continue))]
    assert got == [x for x in range(NUM_CLIPS) if x != 7]


class _Boom:
    def __reduce__(self):
        return (pytest.fail, ("a shard member was unpickled",))


def test_members_outside_the_schema_are_never_unpickled(converted, tmp_path):  # noqa: F811
    bad = copy_out(converted[1], tmp_path / "pickle")
    split = bad / "train"
    members = shard_members(split / "train-000000.tar")
    key = members[0][0].partition(".")[0]
    rewrite_shard(split, 0, [members[0], (f"{key}.pyd", pickle.dumps(_Boom())), *members[1:]])
    got = list(webdataset_pipeline(bad, shuffle=False))
    indexed = IndexedKinetics(converted[1])
    assert len(got) == NUM_CLIPS and all(tuples_equal(item, indexed[g]) for g, item in enumerate(got))


def test_index_of_another_version_is_refused(converted, tmp_path):  # noqa: F811
    bad = copy_out(converted[1], tmp_path / "version")
    index = read_index(bad / "train")
    index["version"] = 5
    write_index(bad / "train", index)
    with pytest.raises(ShardFormatError, match="index format version 5"):
        webdataset_pipeline(bad)


def test_bad_arguments_are_named(converted):  # noqa: F811
    _, out = converted
    cases = [
        (dict(shuffle="yes"), "shuffle='yes'"),
        (dict(shuffle_buffer=-1), "shuffle_buffer=-1"),
        (dict(seed=-3), "seed=-3"),
        (dict(output_format="CTHW"), "output_format='CTHW'"),
        (dict(transform="resize"), "transform='resize'"),
        (dict(handler="skip"), "handler='skip'"),
        (dict(nodesplitter=3), "nodesplitter=3"),
        (dict(workersplitter="each"), "workersplitter='each'"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            webdataset_pipeline(out, **kwargs)
    with pytest.raises(FileNotFoundError, match="nowhere/train/index.json"):
        webdataset_pipeline(out.parent / "nowhere")


def test_reads_over_http_as_local(converted):  # noqa: F811
    _, out = converted
    with HTTPFileServer(out) as server:
        remote = ids(webdataset_pipeline(server.endpoint, seed=6))
    assert remote == ids(webdataset_pipeline(out, seed=6)) and len(remote) == NUM_CLIPS


# -- StreamingKinetics(errors=<webdataset handler>) ------------------------------------------

def test_streaming_accepts_webdataset_handlers(truncated, table, recwarn):  # noqa: F811
    bad, shard_name, lost = truncated
    ds = StreamingKinetics(bad, shuffle=False, errors=wds.warn_and_continue)
    got = [table[i] for i in ids(ds)]
    assert ds.skipped == len(lost) and len(got) == NUM_CLIPS
    assert set(got) == set(range(NUM_CLIPS)) - lost
    warned = [str(w.message) for w in recwarn if shard_name in str(w.message)]
    assert len(warned) == len(lost)
    quiet = StreamingKinetics(bad, seed=2, errors=wds.ignore_and_continue, shuffle_buffer=4)
    batches = [batch_ids(b, table) for b in ClipLoader(quiet, batch_size=4, num_workers=2)]
    assert sum(map(len, batches)) == NUM_CLIPS and quiet.skipped == len(lost)
    for handler in (wds.reraise_exception, wds.ignore_and_stop):
        with pytest.raises(ShardReadError, match=f"{shard_name}: clip 16"):
            list(StreamingKinetics(bad, shuffle=False, errors=handler))
    seen = []
    ds = StreamingKinetics(bad, shuffle=False, errors=lambda exc: seen.append(exc) or True)
    assert len(list(ds)) == NUM_CLIPS and [e.clip for e in seen] == [16, 17]
    assert all(isinstance(e, ShardReadError) for e in seen)


def test_streaming_errors_argument_is_checked(converted):  # noqa: F811
    for bad in ("ignore", 3, None):
        with pytest.raises(ValueError, match=f"errors={bad!r}: must be one of .* or a webdataset handler"):
            StreamingKinetics(converted[1], errors=bad)


def test_benchmark_readers_yield_the_same_clips(tiny_converted):
    from benchmarks.wds_vs_index import measure, readers

    n, nbytes, makers = readers(str(tiny_converted))
    assert len(makers) == 4 and nbytes > 0
    yielded = {name: ids(make()) for name, make in makers.items()}
    first = next(iter(yielded.values()))
    assert len(first) == n and all(v == first for v in yielded.values())
    stats = measure(str(tiny_converted), repeats=1)
    assert set(stats) == set(makers) and all(s.median > 0 for s in stats.values())
