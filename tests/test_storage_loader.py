"""Streaming from object storage: S3 (moto), GCS (emulator) and https-style HTTP on 127.0.0.1.

Every test compares the clips loaded from the remote copy with those of the same dataset read
from local disk: same clips, same order, same bytes. A fault proxy between loader and server
resets connections, cuts bodies, answers 5xx and stalls; the loader retries and still yields
exactly the undisturbed run's clips. When retries run out, the error names the URL.
"""

from __future__ import annotations

import shutil

import fsspec
import pytest
from torch.utils.data import DataLoader

from clipshards.convert import convert
from clipshards.loader import IndexedKinetics, ShardReadError, StreamingKinetics
from clipshards.loader.transport import BlockCache, Transport, TransportError, TransportOptions

from servers import (  # noqa: F401  (gcs_server, s3_server: fixtures)
    CONVERT_KW,
    Fault,
    FaultProxy,
    HTTPFileServer,
    gcs_server,
    s3_server,
)

BLOCK = 64 * 1024  # small blocks: a shard stream is many requests, so faults land mid-shard
FAST_RETRIES = {"CLIPSHARDS_RETRIES": "6", "CLIPSHARDS_BACKOFF": "0.01", "CLIPSHARDS_BLOCK_SIZE": str(BLOCK)}


@pytest.fixture(scope="module")
def converted(tiny_dataset, tmp_path_factory):
    """tiny_dataset with ~8 clips per shard (streams of several clips, several shards)."""
    out = tmp_path_factory.mktemp("storage_loader_out")
    convert(tiny_dataset, out, workers=1, **{**CONVERT_KW, "shard_size": 1_000_000})
    return out


def as_bytes(items):
    return [(v.numpy().tobytes(), tuple(v.shape), a.numpy().tobytes(), tuple(a.shape), int(l)) for v, a, l in items]


def stream_clips(url, **kw):
    return as_bytes(StreamingKinetics(url, seed=3, block_size=4, shuffle_buffer=8, **kw))


def indexed_clips(url, **kw):
    ds = IndexedKinetics(url, **kw)
    return as_bytes(ds[i] for i in range(len(ds)))


@pytest.fixture(scope="module")
def local_clips(converted):
    return {"stream": stream_clips(converted), "indexed": indexed_clips(converted)}


class Remote:
    """The converted dataset in one store; ``url(endpoint)`` and ``options(endpoint)`` address
    it directly or through a proxy placed in front of the server."""

    def __init__(self, scheme, server, bucket=None):
        self.scheme, self.server, self.bucket = scheme, server, bucket

    @property
    def endpoint(self) -> str:
        return self.server.endpoint

    def url(self, endpoint=None) -> str:
        if self.scheme == "https":
            return endpoint or self.server.endpoint
        return f"{self.scheme}://{self.bucket}/conv"

    def options(self, endpoint=None, **extra):
        if self.scheme == "https":
            return extra or None
        return self.server.storage_options(endpoint, **extra)


@pytest.fixture(scope="module", params=["s3", "gs", "https"])
def remote(request, converted):
    scheme = request.param
    if scheme == "https":
        with HTTPFileServer(converted) as http:
            yield Remote(scheme, http)
        return
    server = request.getfixturevalue("s3_server" if scheme == "s3" else "gcs_server")
    bucket = server.make_bucket()
    fs = fsspec.filesystem(scheme, **server.storage_options())
    fs.put(str(converted / "train"), f"{bucket}/conv/train", recursive=True)
    yield Remote(scheme, server, bucket)


def test_remote_clips_equal_local(remote, local_clips, monkeypatch):
    monkeypatch.setenv("CLIPSHARDS_BLOCK_SIZE", str(BLOCK))
    assert stream_clips(remote.url(), storage_options=remote.options()) == local_clips["stream"]
    assert indexed_clips(remote.url(), storage_options=remote.options()) == local_clips["indexed"]


def test_remote_with_dataloader_workers(remote, converted, monkeypatch):
    """Forked DataLoader workers make their own connections (fsspec is not fork-safe)."""
    monkeypatch.setenv("CLIPSHARDS_BLOCK_SIZE", str(BLOCK))

    def run(url, **kw):
        ds = StreamingKinetics(url, seed=5, block_size=4, shuffle_buffer=8, **kw)
        return as_bytes(DataLoader(ds, batch_size=None, num_workers=2))

    assert run(remote.url(), storage_options=remote.options()) == run(converted)


def _faults(scheme: str) -> list[Fault]:
    """One of each kind, on shard reads: a reset, a body cut mid-way, a 503, a stalled body."""
    reads = "GET"
    return [
        Fault("reset", nth=2, method=reads, path=".tar"),
        Fault("cut", nth=5, method=reads, path=".tar"),
        Fault("status", nth=8, method=reads, path=".tar", status=503),
        Fault("stall", nth=11, method=reads, path=".tar", seconds=4.0),
        Fault("status", nth=14, method=reads, path=".tar", status=500),
    ]


def test_faults_are_retried_and_clips_are_exact(remote, local_clips, monkeypatch):
    for k, v in {**FAST_RETRIES, "CLIPSHARDS_TIMEOUT": "2"}.items():
        monkeypatch.setenv(k, v)
    extra = {}
    if remote.scheme == "s3":  # leave the retrying to clipshards, so that its retries are what is tested
        extra = {"config_kwargs": {"retries": {"max_attempts": 1}}}
    with FaultProxy(remote.endpoint, _faults(remote.scheme)) as proxy:
        ds = StreamingKinetics(remote.url(proxy.endpoint), seed=3, block_size=4, shuffle_buffer=8,
                               storage_options=remote.options(proxy.endpoint, **extra))
        assert as_bytes(ds) == local_clips["stream"]
        assert len(proxy.fired()) == 5, proxy.fired()
        # gcsfs retries 5xx and resets itself, aiohttp a reset on a reused connection, botocore
        # connection errors: clipshards sees the rest
        assert ds.index.transport.stats.retries >= {"gs": 0, "s3": 1, "https": 3}[remote.scheme]

        proxy.clear()
        for f in _faults(remote.scheme):
            proxy.add(f)
        assert indexed_clips(remote.url(proxy.endpoint), storage_options=remote.options(proxy.endpoint, **extra)) == local_clips["indexed"]
        assert len(proxy.fired()) == 5


def test_retries_exhausted_error_names_the_url(converted, monkeypatch):
    monkeypatch.setenv("CLIPSHARDS_RETRIES", "2")
    monkeypatch.setenv("CLIPSHARDS_BACKOFF", "0.01")
    with HTTPFileServer(converted) as http, FaultProxy(http.endpoint) as proxy:
        proxy.add(Fault("status", path="train-000001.tar", times=10**6, status=503))
        shard_url = f"{proxy.endpoint}/train/train-000001.tar"
        with pytest.raises(ShardReadError) as info:
            for _ in StreamingKinetics(proxy.endpoint, shuffle=False):
                pass
        assert shard_url in str(info.value) and "3 attempts" in str(info.value)
        ds = IndexedKinetics(proxy.endpoint)
        first = ds.index.shards[1].first_clip
        with pytest.raises(ShardReadError, match=shard_url):
            ds[first]
        assert as_bytes([ds[first - 1]]) == as_bytes([IndexedKinetics(converted)[first - 1]])  # other shards still read

        proxy.add(Fault("reset", path="index.json", times=10**6))
        with pytest.raises(TransportError, match=f"{proxy.endpoint}/train/index.json"):
            IndexedKinetics(proxy.endpoint)


def test_missing_file_and_forbidden_are_not_retried(converted, monkeypatch):
    monkeypatch.setenv("CLIPSHARDS_RETRIES", "5")
    with HTTPFileServer(converted) as http, FaultProxy(http.endpoint) as proxy:
        t = Transport(f"{proxy.endpoint}/train")
        with pytest.raises(FileNotFoundError, match="no-such.tar"):
            t.read("no-such.tar", 0, 10)
        assert len([r for r in proxy.records if "no-such" in r.target]) == 1 and t.stats.retries == 0
        proxy.add(Fault("status", path="train-000000.tar", status=403))
        with pytest.raises(TransportError, match=f"{proxy.endpoint}/train/train-000000.tar.*after 1 attempt "):
            t.read("train-000000.tar", 0, 10)
        assert t.stats.retries == 0


def test_truncated_remote_shard_reported_like_a_local_one(converted, tmp_path, monkeypatch):
    """A shard shorter than the index says is damage, not a transient fault: no retries, and
    the same error as from local disk (the member cut short), with the shard's URL."""
    monkeypatch.setenv("CLIPSHARDS_BLOCK_SIZE", str(BLOCK))
    damaged = tmp_path / "damaged"
    shutil.copytree(converted, damaged)
    shard = damaged / "train" / "train-000001.tar"
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])

    def first_error(url):
        ds = StreamingKinetics(url, shuffle=False)
        with pytest.raises(ShardReadError) as info:
            for _ in ds:
                pass
        return info.value, ds.index.transport.stats.retries

    local, _ = first_error(damaged)
    with HTTPFileServer(damaged) as http:
        remote, retries = first_error(http.endpoint)
        assert remote.shard == f"{http.endpoint}/train/train-000001.tar"
    assert (remote.clip, remote.member, remote.reason) == (local.clip, local.member, local.reason)
    assert "truncated" in remote.reason and retries == 0


def test_readahead_keeps_several_requests_in_flight(converted, monkeypatch):
    """A sequential stream over slow responses has more than one request open at a time."""
    with HTTPFileServer(converted) as http, FaultProxy(http.endpoint) as proxy:
        proxy.add(Fault("delay", path=".tar", times=10**6, seconds=0.2))
        t = Transport(f"{proxy.endpoint}/train", options=TransportOptions(block_size=BLOCK, readahead=3))
        size = t.size("train-000000.tar")
        buf = bytearray(size)
        with t.open_range("train-000000.tar", 0, size) as reader:
            assert reader.readinto(buf) == size
        assert bytes(buf) == (converted / "train" / "train-000000.tar").read_bytes()
        assert proxy.max_in_flight >= 3
        assert t.stats.requests["train-000000.tar"] == -(-size // BLOCK)


def test_indexed_batches_read_concurrently_and_exactly(converted, local_clips, monkeypatch):
    """A DataLoader batch of IndexedKinetics (``__getitems__``) issues its ranged reads
    together; a reset among them is retried and the batch is still exact."""
    monkeypatch.setenv("CLIPSHARDS_BACKOFF", "0.01")
    with HTTPFileServer(converted) as http, FaultProxy(http.endpoint) as proxy:
        proxy.add(Fault("reset", nth=3, path=".tar"))  # the first fault whose turn it is acts
        proxy.add(Fault("delay", path=".tar", times=10**6, seconds=0.1))
        ds = IndexedKinetics(proxy.endpoint)
        got = [clip for batch in DataLoader(ds, batch_size=5, collate_fn=list) for clip in as_bytes(batch)]
        assert got == local_clips["indexed"]
        assert proxy.max_in_flight >= 3 and len(proxy.fired("reset")) == 1


def test_cache_serves_repeat_epochs_and_respects_its_limit(converted, local_clips, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("CLIPSHARDS_CACHE_DIR", str(cache))
    monkeypatch.setenv("CLIPSHARDS_BLOCK_SIZE", str(BLOCK))
    with HTTPFileServer(converted) as http, FaultProxy(http.endpoint) as proxy:
        assert stream_clips(proxy.endpoint) == local_clips["stream"]
        shard_reads = len([r for r in proxy.records if ".tar" in r.target])
        assert shard_reads > 0
        # the shards are now unreachable: a second epoch comes from the cache alone
        proxy.add(Fault("status", method="GET", path=".tar", times=10**6, status=503))
        ds = StreamingKinetics(proxy.endpoint, seed=3, block_size=4, shuffle_buffer=8)
        assert as_bytes(ds) == local_clips["stream"]
        assert not proxy.fired() and ds.index.transport.stats.cache_hits > 0
        assert indexed_clips(proxy.endpoint) == local_clips["indexed"]

        # a cache smaller than the dataset (given as a keyword this time) stays within its
        # limit and still gives exact clips
        proxy.clear()
        limit = 4 * BLOCK
        small = TransportOptions(cache_dir=str(tmp_path / "small"), cache_limit=limit, block_size=BLOCK)
        assert stream_clips(proxy.endpoint, transport=small) == local_clips["stream"]
        assert indexed_clips(proxy.endpoint, transport=small) == local_clips["indexed"]
        assert 0 < BlockCache(tmp_path / "small", limit).size() <= limit


def test_transport_options_validation_and_env(tmp_path):
    with pytest.raises(ValueError, match="retries=-1"):
        TransportOptions(retries=-1)
    with pytest.raises(ValueError, match="cache_limit"):
        TransportOptions(cache_dir=str(tmp_path), cache_limit=1000)
    with pytest.raises(ValueError, match="CLIPSHARDS_READAHEAD"):
        TransportOptions.from_env({"CLIPSHARDS_READAHEAD": "many"})
    opts = TransportOptions.from_env({"CLIPSHARDS_CACHE_LIMIT": "2GB", "CLIPSHARDS_TIMEOUT": "none", "CLIPSHARDS_RETRIES": "9"})
    assert opts.cache_limit == 2 * 1024**3 and opts.timeout is None and opts.retries == 9
