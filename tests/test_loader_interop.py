"""Interop: stock webdataset reads the shards; the loader reads over HTTP and S3 (real local servers)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import webdataset as wds

from clipshards.loader import IndexedKinetics, StreamingKinetics
from loader_helpers import NUM_CLIPS, clip_id, read_index
from loader_helpers import converted  # noqa: F401  (pytest fixtures)
from servers import HTTPFileServer, s3_server  # noqa: F401  (pytest fixture)


def test_stock_webdataset_reads_the_shards(converted):
    """Keys as documented in loader/README_SECTION.md: __key__, cls, json, audio.npy, video.npy."""
    _, out = converted
    split = out / "train"
    names = [s["name"] for s in read_index(split)["shards"]]
    urls = [str(split / n) for n in names]
    ds = wds.WebDataset(urls, shardshuffle=False, empty_check=False).decode()
    ours = IndexedKinetics(out, output_format="THWC")
    n = 0
    for g, sample in enumerate(ds):
        assert set(sample) - {"__url__", "__local_path__"} == {"__key__", "cls", "json", "audio.npy", "video.npy"}
        video, audio, label = ours[g]
        assert sample["cls"] == label
        assert np.array_equal(sample["video.npy"], video.numpy()) and np.array_equal(sample["audio.npy"], audio.numpy())
        assert sample["__key__"] == f"{sample['json']['video_index']:08d}_{sample['json']['clip_index']:06d}"
        n += 1
    assert n == NUM_CLIPS


def test_reads_over_http(converted):
    _, out = converted
    with HTTPFileServer(out) as server:
        url = f"{server.endpoint}"
        remote = IndexedKinetics(url)
        local = IndexedKinetics(out)
        assert len(remote) == NUM_CLIPS and remote.classes == local.classes
        for g in (0, 17, NUM_CLIPS - 1):
            assert torch.equal(remote[g][0], local[g][0]) and torch.equal(remote[g][1], local[g][1])
        streamed = [clip_id(v) for v, _, _ in StreamingKinetics(url, shuffle=False)]
        assert streamed == [clip_id(local[g][0]) for g in range(NUM_CLIPS)]


def test_reads_from_s3(converted, s3_server):  # noqa: F811
    _, out = converted
    import s3fs

    bucket = s3_server.make_bucket()
    options = s3_server.storage_options()
    fs = s3fs.S3FileSystem(**options, skip_instance_cache=True)
    fs.put(str(out / "train"), f"{bucket}/data/train", recursive=True)
    url = f"s3://{bucket}/data"
    remote = StreamingKinetics(url, shuffle=True, seed=1, storage_options=options)
    local = StreamingKinetics(out, shuffle=True, seed=1)
    assert len(remote) == len(local) == NUM_CLIPS
    assert [clip_id(v) for v, _, _ in remote] == [clip_id(v) for v, _, _ in local]
    indexed = IndexedKinetics(url, storage_options=options)
    assert torch.equal(indexed[30][0], IndexedKinetics(out)[30][0])
    with pytest.raises(FileNotFoundError, match=f"s3://{bucket}/nothing/train/index.json"):
        IndexedKinetics(f"s3://{bucket}/nothing", storage_options=options)
