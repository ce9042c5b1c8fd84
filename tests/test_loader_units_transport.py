"""The transport's parts on their own, without servers or media: sizes (convert/units.py), options,
retry classification and backoff (loader/retry.py), the block cache's read-through
(loader/cache.py), read-ahead (loader/readahead.py), local reads (loader/local.py) and
offsets paging (loader/offsets.py). The remote paths end to end are tests/test_storage_loader.py."""

from __future__ import annotations

import argparse
import pickle
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from clipshards.convert.cli import _size
from clipshards.convert.report import human_bytes as report_human_bytes
from clipshards.convert.schema import ShardFormatError, encode_npy
from clipshards.convert.units import human_bytes, parse_size
from clipshards.loader import Transport, TransportError, TransportOptions
from clipshards.loader.cache import BlockCache
from clipshards.loader.offsets import OFFSETS_PAGE, ClipOffsets
from clipshards.loader.readahead import ReadaheadReader
from clipshards.loader.retry import http_status, is_transient, retrying

DATA = bytes(np.random.default_rng(0).integers(0, 256, 25_000, dtype=np.uint8))


def test_sizes_parse_and_print():
    assert parse_size("256MB") == parse_size("256mib") == parse_size(" 256M ") == 256 * 1024**2
    assert parse_size("1.5G") == 3 * 1024**3 // 2 and parse_size("500000") == 500_000 and parse_size("2KB") == 2048
    for bad in ("", "lots", "MB", "1.5"):
        with pytest.raises(ValueError, match="is not a size"):
            parse_size(bad)
    assert _size("1GB") == 1024**3
    with pytest.raises(argparse.ArgumentTypeError, match="'x' is not a size"):
        _size("x")
    assert [human_bytes(n) for n in (512, 1536, 3 * 1024**3, 5 * 1024**5)] == ["512 B", "1.5 KB", "3.0 GB", "5120.0 TB"]
    assert report_human_bytes is human_bytes


def test_transport_options_take_sizes_as_text():
    opts = TransportOptions(block_size="1MB", cache_limit="3GB")
    assert (opts.block_size, opts.cache_limit) == (1024**2, 3 * 1024**3)
    with pytest.raises(ValueError, match="block_size='huge': expected a number of bytes"):
        TransportOptions(block_size="huge")
    with pytest.raises(ValueError, match="cache_limit=True"):
        TransportOptions(cache_limit=True)
    with pytest.raises(ValueError, match="CLIPSHARDS_MAP_LOCAL='maybe'"):
        TransportOptions.from_env({"CLIPSHARDS_MAP_LOCAL": "maybe"})
    assert TransportOptions.from_env({"CLIPSHARDS_MAP_LOCAL": "no", "CLIPSHARDS_BACKOFF": "0.25"}, retries=1) == \
        TransportOptions(map_local=False, backoff=0.25, retries=1)


class Status(OSError):
    """An HTTP client's error carrying a status, as aiohttp's and gcsfs's do."""

    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status


def flaky(failures: list[BaseException], result: str = "ok"):
    """A request that raises each of ``failures`` in turn, then returns ``result``."""
    calls = []

    def request():
        calls.append(time.monotonic())
        if len(calls) <= len(failures):
            raise failures[len(calls) - 1]
        return result

    return request, calls


FAST = TransportOptions(retries=3, backoff=0.01, max_backoff=0.02)


def test_transient_failures_are_retried_with_backoff_and_counted():
    request, calls = flaky([ConnectionResetError("reset"), Status(503), Status(429)])
    retries = []
    assert retrying(request, url="s3://b/x.tar", what="read", options=FAST, on_retry=lambda: retries.append(1)) == "ok"
    assert len(calls) == 4 and len(retries) == 3
    gaps = np.diff(calls)
    assert all(g >= 0.004 for g in gaps), "each retry waits at least half its backoff"


def test_retries_run_out_into_an_error_naming_the_url():
    request, calls = flaky([TimeoutError("slow")] * 10)
    with pytest.raises(TransportError, match=r"s3://b/x.tar: read failed after 4 attempts \(last error TimeoutError: slow\)") as info:
        retrying(request, url="s3://b/x.tar", what="read", options=FAST)
    assert len(calls) == 4
    again = pickle.loads(pickle.dumps(info.value))  # DataLoader workers send it to the main process
    assert (again.url, again.attempts, str(again)) == ("s3://b/x.tar", 4, str(info.value))


@pytest.mark.parametrize("failure,raised", [
    (Status(404), FileNotFoundError),
    (FileNotFoundError("gone"), FileNotFoundError),
    (Status(403), TransportError),
    (PermissionError("no"), PermissionError),
    (ValueError("a bug"), ValueError),
])
def test_permanent_failures_are_not_retried(failure, raised):
    request, calls = flaky([failure])
    with pytest.raises(raised) as info:
        retrying(request, url="gs://b/x.tar", what="stat", options=FAST)
    assert len(calls) == 1
    if raised is FileNotFoundError:
        assert str(info.value) == "gs://b/x.tar does not exist"


def test_a_not_found_caused_by_a_server_error_is_retried():
    cause = Status(503)
    hidden = FileNotFoundError("x.tar")  # fsspec's HTTP stat reports a 503 so
    hidden.__cause__ = cause
    request, calls = flaky([hidden])
    assert retrying(request, url="https://h/x.tar", what="stat", options=FAST) == "ok" and len(calls) == 2


def test_transient_or_not():
    assert http_status(Status(500)) == 500 and http_status(ValueError()) is None
    boto_like = Exception()
    boto_like.response = {"Error": {"Code": "NoSuchKey"}}
    assert http_status(boto_like) == 404
    assert is_transient(ConnectionError()) and is_transient(Status(502)) and is_transient(Status(408))
    assert not is_transient(Status(400)) and not is_transient(PermissionError()) and not is_transient(KeyError())
    backend = type("ClientPayloadError", (Exception,), {"__module__": "aiohttp.client_exceptions"})
    assert is_transient(backend("cut short")), "any error of a storage client library that is not a 4xx"


def test_block_cache_reads_through_whole_blocks(tmp_path):
    cache = BlockCache(tmp_path / "cache", limit=10**6)
    fetched, hits = [], []

    def fetch(lo, hi):
        fetched.append((lo, hi))
        return DATA[lo:hi]

    def read(start, end, version="v1"):
        return cache.read("s3://b/x.tar", version, len(DATA), start, end, 1000, fetch, on_hit=lambda: hits.append(1))

    assert read(1500, 4200) == DATA[1500:4200]
    assert fetched == [(1000, 2000), (2000, 3000), (3000, 4000), (4000, 5000)] and not hits
    assert read(1999, 4001) == DATA[1999:4001] and len(fetched) == 4 and len(hits) == 4
    assert read(24_500, None) == DATA[24_500:] and fetched[-1] == (24_000, 25_000), "the last block is short"
    assert read(25_000, 30_000) == b""
    fetched.clear()
    assert read(1500, 2500, version="v2") == DATA[1500:2500] and len(fetched) == 2, "another version: fetched again"


def test_block_cache_keeps_to_its_limit(tmp_path):
    cache = BlockCache(tmp_path, limit=3000)
    for i in range(10):
        cache.read(f"https://h/{i}.tar", "v", len(DATA), 0, 1000, 1000, lambda lo, hi: DATA[lo:hi])
    assert 0 < cache.size() <= 3000
    assert cache.get(BlockCache.key("https://h/9.tar", f"{len(DATA)}|v", 0), 1000) == DATA[:1000], "newest kept"


def readahead(start, end, *, aligned, readahead=2, fail_at=None):
    requested, in_flight, peak = [], [0], [0]
    lock = threading.Lock()
    file = DATA[:20_000]

    def fetch(a, b):
        with lock:
            requested.append((a, b))
            in_flight[0] += 1
            peak[0] = max(peak[0], in_flight[0])
        time.sleep(0.002)
        with lock:
            in_flight[0] -= 1
        if fail_at is not None and a <= fail_at < b:
            raise ConnectionResetError("gone")
        return file[a:b]

    pool = ThreadPoolExecutor(8)
    reader = ReadaheadReader(fetch, pool, url="s3://b/x.tar", start=start, end=end, block_size=1000,
                             readahead=readahead, aligned=aligned)
    return reader, requested, peak


@pytest.mark.parametrize("aligned", [False, True])
def test_readahead_hands_out_the_bytes_in_order(aligned):
    reader, requested, peak = readahead(1500, 9700, aligned=aligned)
    got = bytearray()
    for size in (1, 999, 3333, 7, 10_000):
        buf = bytearray(size)
        n = reader.readinto(buf)
        got += buf[:n]
    assert bytes(got) == DATA[1500:9700] and reader.pos == 9700
    assert reader.readinto(bytearray(10)) == 0
    first = [(1500, 2000), (2000, 3000)] if aligned else [(1500, 2500), (2500, 3500)]
    assert sorted(requested)[:2] == first
    assert 1 < peak[0] <= 3, "up to 1 + readahead blocks in flight"


def test_readahead_stops_at_the_files_end_and_passes_errors_on():
    reader, _, _ = readahead(18_500, 30_000, aligned=False)  # the file has 20,000 bytes
    buf = bytearray(20_000)
    assert reader.readinto(buf) == 1500 and bytes(buf[:1500]) == DATA[18_500:20_000]
    reader, _, _ = readahead(0, 9000, aligned=True, fail_at=3500)
    buf = bytearray(9000)
    with pytest.raises(ConnectionResetError):
        reader.readinto(buf)
    reader.close()


def test_local_reads_copies_and_missing_files(tmp_path):
    big = np.random.default_rng(1).integers(0, 256, 3 << 20, dtype=np.uint8).tobytes()
    (tmp_path / "a.bin").write_bytes(big)
    t = Transport(tmp_path)
    assert t.size("a.bin") == len(big) and t.read("a.bin", 10, 20) == big[10:20]
    assert bytes(t.read_buffer("a.bin", len(big) - 5)) == big[-5:]
    assert not t.maps and t.cache is None
    view = t.map_buffer("a.bin", 4096 + 7, 4096 + 7 + (2 << 20))  # a copy now, whatever its size
    assert bytes(view) == big[4103:4103 + (2 << 20)]
    (tmp_path / "a.bin").write_bytes(bytes(len(big)))  # the file rewritten: what was read stays
    assert bytes(view) == big[4103:4103 + (2 << 20)]
    np.frombuffer(view, dtype=np.uint8)[:] = 0
    (tmp_path / "a.bin").write_bytes(big)
    assert t.read_many([("a.bin", 0, 3), ("a.bin", 5, 9)]) == [big[:3], big[5:9]]
    with t.open_range("a.bin", 100, 130) as r:
        buf = bytearray(50)
        assert r.readinto(buf) == 30 and bytes(buf[:30]) == big[100:130]
    assert t.stats.requests["a.bin"] >= 5
    with pytest.raises(FileNotFoundError, match="nope.bin does not exist"):
        t.read("nope.bin")
    with pytest.raises(ValueError, match=r"byte range \[5, 2\)"):
        t.read("a.bin", 5, 2)
    copy = pickle.loads(pickle.dumps(t))
    assert copy.read("a.bin", 0, 4) == big[:4] and copy.stats.requests["a.bin"] == 1, "a copy counts afresh"


def write_offsets(folder, rows: int) -> np.ndarray:
    table = np.stack([np.arange(rows) * 100, np.full(rows, 100)], axis=1).astype("<i8")
    (folder / "offsets.npy").write_bytes(encode_npy(table))
    return table


def test_offsets_are_read_in_pages(tmp_path):
    rows = 2 * OFFSETS_PAGE + 10
    table = write_offsets(tmp_path, rows)
    t = Transport(tmp_path)
    offsets = ClipOffsets(t, "offsets.npy", rows, expected_bytes=(tmp_path / "offsets.npy").stat().st_size, columns=2)
    assert np.array_equal(offsets.byte_ranges(5, 9), table[5:9])
    assert t.stats.requests["offsets.npy"] == 2, "the header, then one page"
    across = offsets.byte_ranges(OFFSETS_PAGE - 3, rows)
    assert np.array_equal(across, table[OFFSETS_PAGE - 3:]) and t.stats.requests["offsets.npy"] == 4
    assert offsets.byte_ranges(7, 7).shape == (0, 2)
    with pytest.raises(IndexError, match="outside"):
        offsets.byte_ranges(0, rows + 1)


def test_bad_offsets_files_are_named(tmp_path):
    write_offsets(tmp_path, 50)
    t = Transport(tmp_path)
    with pytest.raises(ShardFormatError, match=r"offsets.npy: expected int64 \[60, 2\]"):
        ClipOffsets(t, "offsets.npy", 60, columns=2).byte_ranges(0, 1)
    with pytest.raises(ShardFormatError, match="123 bytes in the index"):
        ClipOffsets(t, "offsets.npy", 50, expected_bytes=123, columns=2).byte_ranges(0, 1)
    data = (tmp_path / "offsets.npy").read_bytes()
    (tmp_path / "offsets.npy").write_bytes(data[:-16])
    with pytest.raises(ShardFormatError, match=r"truncated \(rows 0..49 missing\)"):
        ClipOffsets(t, "offsets.npy", 50, columns=2).byte_ranges(0, 1)
