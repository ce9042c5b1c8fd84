"""Never return wrong data silently (issue 13): a seeded fuzzer, and the cases it stands for.

The fuzzer damages a tiny converted dataset (4 videos, 24x32 frames, raw and JPEG, one conversion
per codec) in many ways: bit flips, bursts, truncation and growth of shards, offsets.npy and
index.json; swapped, duplicated, symlinked and foreign shards; edited index fields and offsets
rows; members edited in place (labels, keys, shapes, JPEG headers claiming huge frames, nested
JSON, extra and missing members), with the clip checksums left stale or made to match; names
outside the dataset; FIFOs and devices in place of files. Every case is read whole with
:class:`IndexedKinetics` and with :class:`StreamingKinetics` (``errors`` a handler that records
each skip), and every clip returned is compared with what the pristine copy returns for that
index: each must be exactly that clip, or the read must fail with a clear error. A case found
wrong is reported with its seed and what was done.

The tests after it pin single properties: JPEG limits before decoding, held tensors that never
change when a shard is rewritten or cut, special files refused without hanging, names outside
the dataset refused by the loaders and by inspect/verify/preview (whose messages never quote a
file's bytes), ``errors="skip"`` over every per-clip failure, version-1 outputs, and readers
racing a writer that rewrites a shard in place.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import random
import shutil
import signal
import tarfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import numpy as np
import pytest
import torch

from clipshards.convert import convert
from clipshards.convert.output import read_clip
from clipshards.convert.inspection import inspect_output
from clipshards.convert.preview import preview_clip
from clipshards.convert.schema import (
    INDEX_NAME,
    OFFSETS_NAME,
    ShardFormatError,
    checksum_of,
    clip_checksum,
    dumps_json,
    encode_npy,
    entry_checksum,
)
from clipshards.convert.synth import VideoSpec, make_dataset
from clipshards.convert.verify import verify_output
from clipshards.convert.writer import TAR_END, tar_member
from clipshards.loader import IndexedKinetics, ShardReadError, StreamingKinetics, webdataset_pipeline
from loader_helpers import poison_batch_memory

CODECS = ("raw", "jpeg")
CASES_PER_CODEC = int(os.environ.get("CLIPSHARDS_HOSTILE_CASES", "260"))  # 520 in all by default
SEED = int(os.environ.get("CLIPSHARDS_HOSTILE_SEED", "13"))
HANG = 10.0  # seconds any one case may take before it counts as hung
SECRET = b"SECRET-bytes-of-a-file-outside-the-dataset"
OPEN_ERRORS = (ShardFormatError, ShardReadError, OSError)  # clear errors when a dataset is opened

Ident = tuple[str, str, int]


# -- the datasets -----------------------------------------------------------------------------------


@dataclass
class Pristine:
    """A converted split and what each of its clips is (video and audio digests, label)."""

    codec: str
    split: Path
    clips: list[Ident]
    index: dict
    offsets: np.ndarray


def ident(item: tuple[Any, torch.Tensor, int]) -> Ident:
    video, audio, label = item
    v, a = video.contiguous(), audio.contiguous()
    return (hashlib.blake2b(repr(tuple(v.shape)).encode() + v.numpy().tobytes(), digest_size=12).hexdigest(),
            hashlib.blake2b(repr(tuple(a.shape)).encode() + a.numpy().tobytes(), digest_size=12).hexdigest(), int(label))


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> dict[str, Pristine]:
    tmp = tmp_path_factory.mktemp("hostile")
    root = tmp / "dataset"
    make_dataset(root, classes=("a", "b"), videos_per_class=2, spec=VideoSpec(frames=12, width=32, height=24, sample_rate=8000))
    out: dict[str, Pristine] = {}
    for codec in CODECS:
        dest = tmp / f"out-{codec}"
        convert(root, dest, frames_per_clip=4, step_between_clips=4, workers=1, progress=False, codec=codec,
                shard_size=45_000, yes=True)
        split = dest / "train"
        ds = IndexedKinetics(dest, output_format="THWC")
        clips = [ident(ds[g]) for g in range(len(ds))]
        assert len(set(clips)) == len(clips) > 8, "synthetic clips must be distinct"
        index = json.loads((split / INDEX_NAME).read_bytes())
        assert len(index["shards"]) >= 4
        out[codec] = Pristine(codec, split, clips, index, np.load(split / OFFSETS_NAME, allow_pickle=False))
    return out


# -- reading a case ---------------------------------------------------------------------------------


class Hung(Exception):
    pass


@contextlib.contextmanager
def hang_guard(seconds: float = HANG) -> Iterator[None]:
    """Raise :class:`Hung` in this (the main) thread after ``seconds``: a read that waits on a
    FIFO or never ends fails the test instead of stalling it."""
    def on_alarm(signum: int, frame: Any) -> None:
        raise Hung(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def wrong_results(split: Path, want: list[Ident]) -> list[str]:
    """Every clip of ``split`` read every way; what is wrong: a clip that differs from ``want``
    for its index, or an error that is not a clear one. Errors that name the damage are fine."""
    problems: list[str] = []
    with hang_guard():
        try:
            ds = IndexedKinetics(split.parent, split.name, output_format="THWC")
        except OPEN_ERRORS:
            return []  # refused when opened: the streaming dataset opens the same index
        for g in range(len(ds)):
            try:
                got = ident(ds[g])
            except ShardReadError:
                continue
            if g >= len(want) or got != want[g]:
                problems.append(f"IndexedKinetics[{g}]: a clip that is not clip {g}")
        problems += _streaming_problems(split, want)
    return problems


def _streaming_problems(split: Path, want: list[Ident]) -> list[str]:
    skipped: list[int] = []

    def record(err: BaseException) -> bool:
        assert isinstance(err, ShardReadError), f"the handler got {type(err).__name__}: {err}"
        skipped.append(err.clip)
        return True

    try:
        ds = StreamingKinetics(split.parent, split.name, shuffle=False, errors=record, output_format="THWC")
        got = [ident(item) for item in ds]
    except OPEN_ERRORS as exc:
        if isinstance(exc, ShardReadError) or not skipped:
            return []  # no readable clip at all, or refused when opened
        raise
    n = len(ds)
    if len(got) != n:
        return [f"StreamingKinetics yielded {len(got)} clips for {n}"]
    good = [p for p in range(n) if p not in set(skipped)]
    problems = []
    for p in range(n):
        if p in set(skipped):  # the policy repeats the last good clip (the next one before any)
            before = [q for q in good if q < p]
            source = before[-1] if before else good[0]
        else:
            source = p
        if source >= len(want) or got[p] != want[source]:
            problems.append(f"StreamingKinetics position {p}: a clip that is not clip {source}")
    return problems


# -- damage -----------------------------------------------------------------------------------------


class Case:
    """One damaged copy of a pristine split, and the tools to damage it."""

    def __init__(self, base: Pristine, other: Pristine, dest: Path, rng: random.Random) -> None:
        self.base, self.other, self.rng = base, other, rng
        self.split = dest / "train"
        shutil.copytree(base.split, self.split)

    # files
    def shard(self, i: Optional[int] = None) -> Path:
        shards = self.base.index["shards"]
        return self.split / shards[self.rng.randrange(len(shards)) if i is None else i]["name"]

    def index(self) -> dict:
        return json.loads((self.split / INDEX_NAME).read_bytes())

    def write_index(self, index: dict) -> None:
        (self.split / INDEX_NAME).write_bytes(dumps_json(index))

    def offsets(self) -> np.ndarray:
        return np.load(self.split / OFFSETS_NAME, allow_pickle=False).copy()

    def write_offsets(self, rows: np.ndarray, *, record: bool = True) -> None:
        """Write offsets.npy; ``record``: and make the index's entry for it (size, checksum) match."""
        data = encode_npy(rows)
        (self.split / OFFSETS_NAME).write_bytes(data)
        if record:
            index = self.index()
            algo = entry_checksum(index["offsets"])[0]
            index["offsets"].update({"bytes": len(data), algo: checksum_of(algo, data)})
            self.write_index(index)

    def record_shard(self, i: int) -> None:
        """Make the index's entry for shard ``i`` (size, checksum) describe its file as it is."""
        index = self.index()
        entry = index["shards"][i]
        data = (self.split / entry["name"]).read_bytes()
        algo = entry_checksum(entry)[0]
        entry.update({"bytes": len(data), algo: checksum_of(algo, data)})
        self.write_index(index)

    def two_shards(self) -> tuple[int, int]:
        a, b = self.rng.sample(range(len(self.base.index["shards"])), 2)
        return a, b

    # bytes
    def flip(self, path: Path, bits: int) -> str:
        data = bytearray(path.read_bytes())
        if not data:
            return "nothing to flip"
        for _ in range(bits):
            i = self.rng.randrange(len(data))
            data[i] ^= 1 << self.rng.randrange(8)
        path.write_bytes(bytes(data))
        return f"{bits} bits flipped in {path.name}"

    def burst(self, path: Path) -> str:
        data = bytearray(path.read_bytes())
        n = self.rng.randint(1, 600)
        at = self.rng.randrange(max(1, len(data) - n))
        data[at: at + n] = self.rng.randbytes(n)[: len(data) - at]
        path.write_bytes(bytes(data))
        return f"{n} random bytes at {at} of {path.name}"

    def cut(self, path: Path) -> str:
        size = path.stat().st_size
        keep = self.rng.randrange(size) if size else 0
        with open(path, "r+b") as fh:
            fh.truncate(keep)
        return f"{path.name} cut to {keep} of {size} bytes"

    def grow(self, path: Path) -> str:
        extra = self.rng.randbytes(self.rng.randint(1, 3000))
        with open(path, "ab") as fh:
            fh.write(extra)
        return f"{len(extra)} bytes appended to {path.name}"

    # samples (members of one clip)
    def samples(self, i: int) -> list[list[tuple[str, bytes]]]:
        """The samples of shard ``i`` as lists of ``(member name, data)``."""
        with tarfile.open(self.split / self.base.index["shards"][i]["name"], mode="r:") as tf:
            members = [(m.name, tf.extractfile(m).read()) for m in tf]
        out: list[list[tuple[str, bytes]]] = []
        for name, data in members:
            if not out or out[-1][0][0].partition(".")[0] != name.partition(".")[0]:
                out.append([])
            out[-1].append((name, data))
        return out

    def write_samples(self, i: int, samples: list[list[tuple[str, bytes]]], *, refresh: bool) -> None:
        """Shard ``i`` rewritten from ``samples`` (as many as it had); offsets rows, their clip
        checksums (``refresh``: made to match the new bytes, else left stale) and the index follow."""
        entry = self.base.index["shards"][i]
        rows = self.offsets()
        blob = bytearray()
        for j, sample in enumerate(samples):
            data = b"".join(tar_member(n, d) for n, d in sample)
            g = entry["first_clip"] + j
            rows[g, :2] = (len(blob), len(data))
            if refresh:
                rows[g, 4] = clip_checksum(data)
            blob += data
        (self.split / entry["name"]).write_bytes(bytes(blob + TAR_END))
        self.write_offsets(rows)
        self.record_shard(i)


def _m_shard_bits(c: Case) -> str:
    return c.flip(c.shard(), c.rng.choice((1, 1, 2, 8, 64)))


def _m_shard_burst(c: Case) -> str:
    return c.burst(c.shard())


def _m_shard_cut(c: Case) -> str:
    return c.cut(c.shard())


def _m_shard_grow(c: Case) -> str:
    return c.grow(c.shard())


def _m_shard_gone(c: Case) -> str:
    path = c.shard()
    if c.rng.random() < 0.5:
        path.unlink()
        return f"{path.name} deleted"
    path.write_bytes(b"")
    return f"{path.name} emptied"


def _m_shards_swapped(c: Case) -> str:
    a, b = c.two_shards()
    pa, pb = c.shard(a), c.shard(b)
    da, db = pa.read_bytes(), pb.read_bytes()
    pa.write_bytes(db)
    pb.write_bytes(da)
    if c.rng.random() < 0.5:
        c.record_shard(a)
        c.record_shard(b)
        return f"{pa.name} and {pb.name} swapped, index sizes and checksums to match"
    return f"{pa.name} and {pb.name} swapped"


def _m_shard_copied(c: Case) -> str:
    a, b = c.two_shards()
    shutil.copyfile(c.shard(a), c.shard(b))
    if c.rng.random() < 0.5:
        c.record_shard(b)
    return f"{c.shard(b).name} replaced by a copy of {c.shard(a).name}"


def _m_shard_symlink(c: Case) -> str:
    a, b = c.two_shards()
    c.shard(b).unlink()
    os.symlink(c.shard(a).name, c.shard(b))
    return f"{c.shard(b).name} a symlink to {c.shard(a).name}"


def _m_shard_foreign(c: Case) -> str:
    i = c.rng.randrange(len(c.base.index["shards"]))
    foreign = c.other.split / c.rng.choice(c.other.index["shards"])["name"]
    shutil.copyfile(foreign, c.shard(i))
    if c.rng.random() < 0.5:
        c.record_shard(i)
    return f"{c.shard(i).name} replaced by {c.other.codec}'s {foreign.name}"


def _m_samples_moved(c: Case) -> str:
    """Two samples of a shard trade places (raw clips are of one length: the ranges still fit)."""
    i = c.rng.randrange(len(c.base.index["shards"]))
    samples = c.samples(i)
    if len(samples) < 2:
        return "a shard of one sample: unchanged"
    j, k = c.rng.sample(range(len(samples)), 2)
    samples[j], samples[k] = samples[k], samples[j]
    entry = c.base.index["shards"][i]
    blob = b"".join(tar_member(n, d) for s in samples for n, d in s) + TAR_END
    (c.split / entry["name"]).write_bytes(blob)
    return f"samples {j} and {k} of {entry['name']} trade places (offsets unchanged)"


def _m_offsets_bits(c: Case) -> str:
    return c.flip(c.split / OFFSETS_NAME, c.rng.choice((1, 2, 8)))


def _m_offsets_cut(c: Case) -> str:
    return c.cut(c.split / OFFSETS_NAME)


def _m_offsets_rows(c: Case) -> str:
    rows = c.offsets()
    n = len(rows)
    g, h = c.rng.sample(range(n), 2)
    kind = c.rng.choice(("swap", "duplicate", "shift", "length", "key", "label", "checksum", "shard", "reverse"))
    if kind == "swap":
        rows[[g, h]] = rows[[h, g]]
    elif kind == "duplicate":
        rows[h] = rows[g]
    elif kind == "shift":
        rows[g, 0] += c.rng.choice((-1024, -512, 512, 1024, 1))
    elif kind == "length":
        rows[g, 1] += c.rng.choice((-512, 512, -1, 7))
    elif kind == "key":
        rows[g, 2] = rows[h, 2]
    elif kind == "label":
        rows[g, 3] = c.rng.choice((1 - rows[g, 3], -1, 2, 1 << 40))
    elif kind == "checksum":
        rows[g, 4] ^= 1 << c.rng.randrange(63)
    elif kind == "shard":  # the rows of one shard's clips given to another shard's
        a = c.base.index["shards"][c.rng.randrange(len(c.base.index["shards"]))]
        b = c.base.index["shards"][c.rng.randrange(len(c.base.index["shards"]))]
        k = min(a["clips"], b["clips"])
        rows[b["first_clip"]: b["first_clip"] + k] = rows[a["first_clip"]: a["first_clip"] + k].copy()
    else:
        rows[:] = rows[::-1].copy()
    c.write_offsets(rows, record=c.rng.random() < 0.8)
    return f"offsets.npy rows: {kind} ({g}, {h})"


def _m_offsets_foreign(c: Case) -> str:
    shutil.copyfile(c.other.split / OFFSETS_NAME, c.split / OFFSETS_NAME)
    if c.rng.random() < 0.5:
        c.write_offsets(c.offsets())
    return f"offsets.npy of the {c.other.codec} conversion"


def _m_index_bits(c: Case) -> str:
    return c.flip(c.split / INDEX_NAME, c.rng.choice((1, 1, 3)))


def _m_index_cut(c: Case) -> str:
    return c.cut(c.split / INDEX_NAME)


_OUTSIDE_NAMES = ("../outside.tar", "/etc/passwd", "file:///etc/passwd", "s3://bucket/train-000000.tar", "..",
                  ".", "", "sub/train-000000.tar", ".hidden.tar", "train-000000.tar/..", "train-000000.tar\0x", 7, None)


def _index_edits(c: Case, index: dict) -> str:
    rng = c.rng
    shards = index["shards"]
    i = rng.randrange(len(shards))
    edits: list[tuple[str, Callable[[], None]]] = [
        ("classes not a list", lambda: index.update(classes="ab")),
        ("classes with a number", lambda: index.update(classes=["a", 3])),
        ("one class fewer", lambda: index.update(classes=index["classes"][:1])),
        ("classes renamed", lambda: index.update(classes=["b", "a"])),
        ("a class more", lambda: index.update(classes=index["classes"] + ["c"])),
        ("clip count +1", lambda: index["counts"].update(clips=index["counts"]["clips"] + 1)),
        ("clip count -1", lambda: index["counts"].update(clips=index["counts"]["clips"] - 1)),
        ("a shard's clips +1", lambda: shards[i].update(clips=shards[i]["clips"] + 1)),
        ("a shard's first clip -1", lambda: shards[i].update(first_clip=shards[i]["first_clip"] - 1)),
        ("a shard's bytes +512", lambda: shards[i].update(bytes=shards[i]["bytes"] + 512)),
        ("a shard's bytes -512", lambda: shards[i].update(bytes=shards[i]["bytes"] - 512)),
        ("a shard's name outside", lambda: shards[i].update(name=rng.choice(_OUTSIDE_NAMES))),
        ("offsets' name outside", lambda: index["offsets"].update(name=rng.choice(_OUTSIDE_NAMES))),
        ("offsets named index.json", lambda: index["offsets"].update(name=INDEX_NAME)),
        ("two shards' names swapped", lambda: _swap_names(shards, *c.two_shards())),
        ("a shard listed twice", lambda: shards.__setitem__(i, dict(shards[(i + 1) % len(shards)]))),
        ("frames_per_clip +1", lambda: index["options"].update(frames_per_clip=index["options"]["frames_per_clip"] + 1)),
        ("max_frame smaller", lambda: index["max_frame"].update(height=index["max_frame"]["height"] - 1)),
        ("max_frame larger", lambda: index["max_frame"].update(width=4 * index["max_frame"]["width"])),
        ("no max_frame", lambda: index.pop("max_frame")),
        ("version 1", lambda: index.update(version=1)),
        ("version 5", lambda: index.update(version=5)),
        ("layout videos", lambda: index.update(layout="videos")),
        ("codec swapped", lambda: index["options"].update(codec="jpeg" if c.base.codec == "raw" else "raw")),
        ("format", lambda: index.update(format="webdataset")),
        ("offsets bytes +16", lambda: index["offsets"].update(bytes=index["offsets"]["bytes"] + 16)),
        ("no offsets entry", lambda: index.pop("offsets")),
        ("no shards", lambda: index.pop("shards")),
    ]
    what, edit = rng.choice(edits)
    edit()
    return what


def _swap_names(shards: list[dict], a: int, b: int) -> None:
    shards[a]["name"], shards[b]["name"] = shards[b]["name"], shards[a]["name"]


def _m_index_field(c: Case) -> str:
    index = c.index()
    what = _index_edits(c, index)
    c.write_index(index)
    return f"index.json: {what}"


def _jpeg_claiming(data: bytes, height: int, width: int) -> bytes:
    """A JPEG frame whose SOF header claims ``height`` x ``width``."""
    out = bytearray(data)
    at = out.find(b"\xff\xc0")
    out[at + 5: at + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(out)


def _member_edits(c: Case, sample: list[tuple[str, bytes]]) -> tuple[str, list[tuple[str, bytes]]]:
    """One edit of a sample's members (name, data); returns what was done and the new members."""
    rng = c.rng
    key = sample[0][0].partition(".")[0]
    by = {n.partition(".")[2]: k for k, (n, _) in enumerate(sample)}

    def set_field(field: str, data: bytes) -> list[tuple[str, bytes]]:
        out = list(sample)
        out[by[field]] = (f"{key}.{field}", data)
        return out

    label = sample[by["cls"]][1]
    drop = rng.randrange(len(sample))
    edits: list[tuple[str, Callable[[], list[tuple[str, bytes]]]]] = [
        ("another label", lambda: set_field("cls", b"1" if label == b"0" else b"0")),
        ("a label outside the classes", lambda: set_field("cls", b"7")),
        ("a label that is not a number", lambda: set_field("cls", rng.choice((b"x", b"", b"+1", b" 1", b"1_0", SECRET)))),
        ("a huge label", lambda: set_field("cls", b"9" * 5000)),
        ("another key", lambda: [(f"00000099_000000.{n.partition('.')[2]}", d) for n, d in sample]),
        ("a key that is not one", lambda: [(f"{SECRET.decode()}.{n.partition('.')[2]}", d) for n, d in sample]),
        ("metadata nested 100000 deep", lambda: set_field("json", b"[" * 100000 + b"]" * 100000)),
        ("metadata not JSON", lambda: set_field("json", SECRET)),
        ("a pickle member more", lambda: sample[:2] + [(f"{key}.pyd", b"\x80\x04K\x01.")] + sample[2:]),
        ("members in another order", lambda: list(reversed(sample))),
        ("a member dropped", lambda: [m for k, m in enumerate(sample) if k != drop]),
        ("a member twice", lambda: sample + [sample[rng.randrange(len(sample))]]),
        ("audio of another dtype", lambda: set_field("audio.npy", _npy(np.zeros((2, 3), np.float64)))),
        ("audio npy header that is not one", lambda: set_field("audio.npy", SECRET + b"\0" * 64)),
    ]
    if "video.npy" in by:
        video = np.load(io.BytesIO(sample[by["video.npy"]][1]), allow_pickle=False)
        t, h, w, ch = video.shape
        edits += [
            ("video reshaped (same bytes)", lambda: set_field("video.npy", _npy(video.reshape(t, w, h, ch)))),
            ("a frame fewer", lambda: set_field("video.npy", _npy(video[:-1]))),
            ("video larger than any frame", lambda: set_field("video.npy", _npy(np.zeros((t, h, 2 * w, ch), np.uint8)))),
            ("video of an object dtype", lambda: set_field("video.npy", SECRET)),
        ]
    else:
        first = sample[by["f0000.jpg"]][1]
        edits += [
            ("a JPEG header claiming 30000x30000", lambda: set_field("f0000.jpg", _jpeg_claiming(first, 30000, 30000))),
            ("a JPEG header claiming 65000x65000", lambda: set_field("f0000.jpg", _jpeg_claiming(first, 65000, 65000))),
            ("a later JPEG frame claiming 9000x9000", lambda: set_field("f0002.jpg", _jpeg_claiming(first, 9000, 9000))),
            ("a frame missing", lambda: [m for m in sample if not m[0].endswith(".f0001.jpg")]),
            ("a frame more", lambda: sample + [(f"{key}.f0004.jpg", first)]),
            ("a frame that is not JPEG", lambda: set_field("f0003.jpg", SECRET)),
        ]
    what, edit = rng.choice(edits)
    return what, edit()


def _npy(array: np.ndarray) -> bytes:
    return encode_npy(array)


def _m_member(c: Case) -> str:
    i = c.rng.randrange(len(c.base.index["shards"]))
    samples = c.samples(i)
    j = c.rng.randrange(len(samples))
    what, samples[j] = _member_edits(c, samples[j])
    refresh = c.rng.random() < 0.7
    c.write_samples(i, samples, refresh=refresh)
    return f"sample {j} of shard {i}: {what}" + (" (checksum made to match)" if refresh else " (checksum stale)")


def _m_special(c: Case) -> str:
    target = c.rng.choice((INDEX_NAME, OFFSETS_NAME, c.shard().name))
    path = c.split / target
    path.unlink()
    kind = c.rng.choice(("fifo", "zero", "urandom", "folder", "proc"))
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "folder":
        path.mkdir()
    else:
        os.symlink({"zero": "/dev/zero", "urandom": "/dev/urandom", "proc": "/proc/self/status"}[kind], path)
    return f"{target} is a {kind}"


def _m_outside(c: Case) -> str:
    """A shard name that leads outside the split, to a real shard placed there."""
    shutil.copyfile(c.shard(0), c.split.parent / "outside.tar")
    index = c.index()
    index["shards"][0]["name"] = c.rng.choice(("../outside.tar", str(c.split.parent / "outside.tar")))
    c.write_index(index)
    return f"shard 0 named {index['shards'][0]['name']}"


MUTATIONS: list[tuple[Callable[[Case], str], int]] = [
    (_m_shard_bits, 10), (_m_shard_burst, 5), (_m_shard_cut, 5), (_m_shard_grow, 3), (_m_shard_gone, 2),
    (_m_shards_swapped, 5), (_m_shard_copied, 4), (_m_shard_symlink, 3), (_m_shard_foreign, 4), (_m_samples_moved, 4),
    (_m_offsets_bits, 6), (_m_offsets_cut, 2), (_m_offsets_rows, 8), (_m_offsets_foreign, 2),
    (_m_index_bits, 6), (_m_index_cut, 2), (_m_index_field, 10), (_m_member, 14), (_m_special, 3), (_m_outside, 2),
]


def damage(c: Case, used: dict[str, int]) -> str:
    """One to three damages, chosen by the case's seed (counted in ``used``); what was done."""
    fns, weights = zip(*MUTATIONS)
    done = []
    chosen = [c.rng.choices(fns, weights)[0] for _ in range(c.rng.choice((1, 1, 1, 2, 3)))]
    for fn in sorted(chosen, key=lambda f: f is _m_special):  # a FIFO or a device last: nothing reads it here
        used[fn.__name__] = used.get(fn.__name__, 0) + 1
        try:
            done.append(fn(c))
        except Exception as exc:  # noqa: BLE001 - np.load of a damaged file raises SyntaxError, among others
            done.append(f"({fn.__name__} found nothing to damage: {type(exc).__name__})")  # an earlier damage removed it
    return "; ".join(done)


@pytest.mark.parametrize("codec", CODECS)
def test_fuzzed_datasets_give_the_right_clip_or_a_clear_error(pristine, tmp_path, codec):
    base, other = pristine[codec], pristine[CODECS[1 - CODECS.index(codec)]]
    started = time.perf_counter()
    failures: list[str] = []
    used: dict[str, int] = {}
    for n in range(CASES_PER_CODEC):
        seed = SEED * 1_000_003 + CODECS.index(codec) * 10_007 + n
        case = Case(base, other, tmp_path / f"case-{n}", random.Random(seed))
        what = damage(case, used)
        try:
            problems = wrong_results(case.split, base.clips)
        except Exception as exc:  # an error that is not a clear one
            problems = [f"{type(exc).__name__}: {exc}"]
        if problems:
            failures.append(f"seed {seed} ({what}): {problems[:3]}")
        shutil.rmtree(case.split.parent, ignore_errors=True)
    seconds = time.perf_counter() - started
    if failures:
        pytest.fail(f"{len(failures)} of {CASES_PER_CODEC} cases wrong:\n" + "\n".join(failures[:20]), pytrace=False)
    if CASES_PER_CODEC >= 100:
        assert {fn.__name__ for fn, _ in MUTATIONS} <= set(used), f"damages never drawn: {sorted(used)}"
    print(f"{codec}: {CASES_PER_CODEC} cases in {seconds:.1f} s, none wrong")


# -- single properties ------------------------------------------------------------------------------


def copy_split(p: Pristine, dest: Path) -> Path:
    shutil.copytree(p.split, dest / "train")
    return dest / "train"


def edit_sample(p: Pristine, dest: Path, shard: int, sample: int,
                edit: Callable[[list[tuple[str, bytes]]], list[tuple[str, bytes]]], *, refresh: bool = True) -> Case:
    """A copy of ``p`` whose sample ``sample`` of shard ``shard`` is ``edit``-ed, its offsets row (and,
    with ``refresh``, its checksum) made to describe the new bytes."""
    case = Case(p, p, dest, random.Random(0))
    samples = case.samples(shard)
    samples[sample] = edit(samples[sample])
    case.write_samples(shard, samples, refresh=refresh)
    return case


def set_member(field: str, data: bytes) -> Callable[[list[tuple[str, bytes]]], list[tuple[str, bytes]]]:
    def edit(sample: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
        return [(n, data if n.partition(".")[2] == field else d) for n, d in sample]
    return edit


def peak_rss_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.mark.parametrize("size", [30000, 65000])
def test_a_jpeg_header_claiming_a_huge_frame_is_refused_before_decoding(pristine, tmp_path, size):
    p = pristine["jpeg"]
    first = p.index["shards"][1]["first_clip"]

    def bomb(sample: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
        return [(n, _jpeg_claiming(d, size, size) if n.endswith(".f0000.jpg") else d) for n, d in sample]

    case = edit_sample(p, tmp_path, 1, 0, bomb)
    before = peak_rss_mib()
    with pytest.raises(ShardReadError, match=f"{size}x{size}, larger than the index's largest frame 32x24: refused before decoding") as info:
        IndexedKinetics(case.split.parent)[first]
    assert info.value.clip == first and info.value.shard.endswith(p.index["shards"][1]["name"])
    with pytest.raises(ShardReadError, match="refused before decoding"):  # decoded in the batch: the same check
        list(StreamingKinetics(case.split.parent, shuffle=False).loader(batch_size=2))
    with pytest.raises(ShardReadError, match="refused before decoding"):
        list(webdataset_pipeline(case.split.parent, shuffle=False))
    ds = StreamingKinetics(case.split.parent, shuffle=False, errors="skip")
    assert len(list(ds)) == len(p.clips) and ds.skipped == 1
    assert peak_rss_mib() - before < 400, "a frame of that size was allocated"


@pytest.fixture(scope="module")
def big_raw(tmp_path_factory) -> Pristine:
    """Raw clips of 1.2 MB (8 frames of 256x192): what the loader used to map into memory."""
    tmp = tmp_path_factory.mktemp("hostile-big")
    make_dataset(tmp / "dataset", classes=("a", "b"), videos_per_class=1, spec=VideoSpec(frames=24, width=256, height=192),
                 vary_length=False)
    convert(tmp / "dataset", tmp / "out", frames_per_clip=8, step_between_clips=8, workers=1, progress=False,
            shard_size=3_000_000, yes=True)
    split = tmp / "out" / "train"
    ds = IndexedKinetics(tmp / "out", output_format="THWC")
    index = json.loads((split / INDEX_NAME).read_bytes())
    assert len(index["shards"]) >= 2 and ds.index.clip_bytes > (1 << 20)
    return Pristine("raw", split, [ident(ds[g]) for g in range(len(ds))], index, np.load(split / OFFSETS_NAME))


def test_tensors_held_never_change_when_their_shard_is_rewritten_or_cut(big_raw, tmp_path):
    split = copy_split(big_raw, tmp_path)
    held = [IndexedKinetics(split.parent, output_format="THWC")[g] for g in range(len(big_raw.clips))]
    held += list(StreamingKinetics(split.parent, shuffle=False, output_format="THWC"))
    for shard in big_raw.index["shards"]:
        path = split / shard["name"]
        size = path.stat().st_size
        with open(path, "r+b") as fh:  # rewritten in place, then cut: the pages a mapping would see
            fh.write(b"\x5a" * size)
            fh.flush()
            fh.truncate(size // 3)
    assert [ident(x) for x in held] == big_raw.clips * 2
    for g in range(len(big_raw.clips)):
        with pytest.raises(ShardReadError):
            IndexedKinetics(split.parent)[g]


def test_a_shard_cut_while_it_is_read_is_an_error_not_sigbus(big_raw, tmp_path):
    split = copy_split(big_raw, tmp_path)
    shard = split / big_raw.index["shards"][0]["name"]
    for ds in (StreamingKinetics(split.parent, shuffle=False, block_size=None, output_format="THWC"),
               IndexedKinetics(split.parent, output_format="THWC")):
        shutil.copyfile(big_raw.split / shard.name, shard)
        items = iter(ds) if isinstance(ds, StreamingKinetics) else (ds[g] for g in range(len(ds)))
        got = [ident(next(items))]
        with open(shard, "r+b") as fh:
            fh.truncate(shard.stat().st_size // 2)
        with pytest.raises(ShardReadError, match="truncated|short|failed|differ"):
            for item in items:
                got.append(ident(item))
        assert got == big_raw.clips[: len(got)], "a clip read after the cut is not the clip"


def _all_readers(split: Path) -> Iterator[tuple[str, Callable[[], Any]]]:
    out = split.parent
    yield "IndexedKinetics", lambda: [IndexedKinetics(out)[g] for g in range(len(IndexedKinetics(out)))]
    yield "StreamingKinetics", lambda: list(StreamingKinetics(out, shuffle=False, errors="skip"))
    yield "webdataset_pipeline", lambda: list(webdataset_pipeline(out, shuffle=False))
    yield "inspect", lambda: inspect_output(out)
    yield "verify", lambda: _verified(out)
    yield "preview", lambda: preview_clip(out, index=0, out=split.parent / "sheet.png", backend="pillow")
    yield "read_clip", lambda: read_clip(out, index=len(IndexedKinetics(out)) - 1)


def _verified(out: Path) -> Any:
    res = verify_output(out, decode="all")
    if not res.ok:
        raise ShardFormatError(res.summary())
    return res


@pytest.mark.parametrize("kind", ["fifo", "zero", "urandom", "folder"])
@pytest.mark.parametrize("target", [INDEX_NAME, OFFSETS_NAME, "shard"])
def test_special_files_are_refused_without_hanging(pristine, tmp_path, kind, target):
    split = copy_split(pristine["raw"], tmp_path)
    name = pristine["raw"].index["shards"][-1]["name"] if target == "shard" else target
    path = split / name
    path.unlink()
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "folder":
        path.mkdir()
    else:
        os.symlink(f"/dev/{kind}", path)
    for reader, read in _all_readers(split):
        with hang_guard(HANG):  # a reader that opened a FIFO or read a device to its end would hang
            try:
                read()
            except (ShardReadError, ShardFormatError, OSError):
                continue
        # finished without error: only a reader that never needs that file may
        assert (reader == "inspect" and target != INDEX_NAME) or (reader in ("StreamingKinetics", "preview")
                                                                   and target == "shard"), f"{reader} read {name} ({kind})"


@pytest.mark.parametrize("name", ["../outside.tar", "ABSOLUTE", "file://ABSOLUTE", "s3://bucket/outside.tar",
                                  "sub/../../outside.tar", ".outside.tar", ""])
@pytest.mark.parametrize("which", ["shard", "offsets"])
def test_names_outside_the_dataset_are_refused_everywhere(pristine, tmp_path, name, which):
    """The file outside is a FIFO: anything that opened it would hang (and fail by the guard);
    a file with a secret beside it: no message may quote it."""
    split = copy_split(pristine["raw"], tmp_path)
    outside = split.parent / "outside.tar"
    os.mkfifo(outside)
    name = name.replace("ABSOLUTE", str(outside))
    index = json.loads((split / INDEX_NAME).read_bytes())
    if which == "shard":
        index["shards"][0]["name"] = name
    else:
        index["offsets"]["name"] = name
    (split / INDEX_NAME).write_bytes(dumps_json(index))
    for reader, read in _all_readers(split):
        with hang_guard(HANG):
            with pytest.raises((ShardFormatError, ShardReadError)) as info:
                read()
        assert "not a plain file name" in str(info.value), f"{reader}: {info.value}"
    res = verify_output(split.parent, decode="all")
    assert not res.ok and any("not a plain file name" in p for p in res.problems + sum(res.bad_shards.values(), []))


def test_error_messages_never_quote_the_bytes_they_refuse(pristine, tmp_path):
    p = pristine["raw"]
    first = p.index["shards"][1]["first_clip"]
    for n, (field, data) in enumerate([("cls", SECRET), ("audio.npy", SECRET + b"\0" * 64), ("video.npy", b"\x93NUMPY" + SECRET),
                                       ("json", SECRET)]):
        case = edit_sample(p, tmp_path / f"{n}", 1, 0, set_member(field, data))
        with pytest.raises(ShardReadError) as info:
            IndexedKinetics(case.split.parent)[first]
        res = verify_output(case.split.parent, decode="all")
        texts = [str(info.value), res.summary(), json.dumps(res.to_json())]
        assert not any("SECRET" in t for t in texts), f"{field}: {texts}"
        assert not res.ok


def test_skip_covers_every_per_clip_failure(pristine, tmp_path):
    p = pristine["jpeg"]
    shards = p.index["shards"]
    case = edit_sample(p, tmp_path, 1, 0, set_member("json", b"[" * 100000 + b"]" * 100000))  # RecursionError
    samples = case.samples(2)
    samples[0] = [(n, _jpeg_claiming(d, 30000, 30000) if n.endswith(".f0000.jpg") else d) for n, d in samples[0]]
    case.write_samples(2, samples, refresh=True)
    (case.split / shards[3]["name"]).unlink()  # a missing shard: every clip of it
    (case.split / shards[4]["name"]).unlink()
    (case.split / shards[4]["name"]).mkdir()  # a folder in its place
    data = (case.split / shards[5]["name"]).read_bytes()
    (case.split / shards[5]["name"]).write_bytes(data[: int(p.offsets[shards[5]["first_clip"] + 1, 0]) + 100])  # cut
    bad = {shards[1]["first_clip"], shards[2]["first_clip"], shards[5]["first_clip"] + 1}
    bad |= set(range(shards[3]["first_clip"], shards[5]["first_clip"]))
    bad |= set(range(shards[5]["first_clip"] + 1, shards[5]["first_clip"] + shards[5]["clips"]))
    good = [p.clips[g] for g in range(len(p.clips)) if g not in bad]
    for workers in (0, 2):
        ds = StreamingKinetics(case.split.parent, shuffle=False, errors="skip", output_format="THWC")
        got = [ident((v, a, y)) for b in ds.loader(batch_size=1, num_workers=workers)
               for v, a, y in zip(b.video, b.audio[:, :, : int(b.audio_lengths[0])], b.label)]
        assert len(got) == len(p.clips) and ds.skipped == len(bad), (workers, ds.skipped)
        if workers == 0:  # in order: each good clip in its place, each bad one replaced by the one before it
            assert [g for g in range(len(p.clips)) if got[g] == p.clips[g]] == [g for g in range(len(p.clips)) if g not in bad]
        assert set(got) == set(good), "two workers interleave their parts: the same clips, each a good one"
    assert wrong_results(case.split, p.clips) == []


def test_an_index_with_bad_classes_or_offsets_rows_is_refused_when_opened(pristine, tmp_path):
    p = pristine["raw"]
    for n, classes in enumerate(["ab", ["a", 3], {"a": 0}, None, [["a"], "b"]]):
        split = copy_split(p, tmp_path / f"classes-{n}")
        index = dict(p.index, classes=classes)
        (split / INDEX_NAME).write_bytes(dumps_json(index))
        with pytest.raises(ShardFormatError, match="classes"):
            IndexedKinetics(split.parent)
    for n, change in enumerate(["duplicate", "swap", "overlap", "past the end", "key order", "label"]):
        case = Case(p, p, tmp_path / f"rows-{n}", random.Random(0))
        rows = case.offsets()
        if change == "duplicate":
            rows[2] = rows[1]
        elif change == "swap":
            rows[[1, 2]] = rows[[2, 1]]
        elif change == "overlap":
            rows[1, 1] += 512
        elif change == "past the end":
            rows[-1, 1] += 1 << 20
        elif change == "key order":
            rows[[1, 2], 2] = rows[[2, 1], 2]
        else:
            rows[3, 3] = len(p.index["classes"])
        case.write_offsets(rows)
        with pytest.raises(ShardFormatError, match=OFFSETS_NAME):
            IndexedKinetics(case.split.parent)
        with pytest.raises(ShardFormatError, match=OFFSETS_NAME):
            StreamingKinetics(case.split.parent)


def downgrade_to_version_1(split: Path) -> None:
    """Rewrite a split as a release of index version 1 wrote it: offsets rows (offset, length),
    no layout, no largest frame."""
    index = json.loads((split / INDEX_NAME).read_bytes())
    rows = np.load(split / OFFSETS_NAME)[:, :2].copy()
    data = encode_npy(rows)
    (split / OFFSETS_NAME).write_bytes(data)
    algo = entry_checksum(index["offsets"])[0]
    index["offsets"].update({"bytes": len(data), algo: checksum_of(algo, data)})
    index.update(version=1)
    index.pop("layout")
    index.pop("max_frame")
    (split / INDEX_NAME).write_bytes(dumps_json(index))


@pytest.mark.parametrize("codec", CODECS)
def test_version_1_outputs_are_still_read_and_checked(pristine, tmp_path, codec):
    p = pristine[codec]
    split = copy_split(p, tmp_path / "v1")
    downgrade_to_version_1(split)
    ds = IndexedKinetics(split.parent, output_format="THWC")
    assert [ident(ds[g]) for g in range(len(ds))] == p.clips
    assert [ident(x) for x in StreamingKinetics(split.parent, shuffle=False, output_format="THWC")] == p.clips
    assert verify_output(split.parent, decode="all").ok
    a, b = split / p.index["shards"][1]["name"], split / p.index["shards"][2]["name"]
    da, db = a.read_bytes(), b.read_bytes()
    a.write_bytes(db)
    b.write_bytes(da)
    first = p.index["shards"][1]["first_clip"]
    with pytest.raises(ShardReadError, match="holds sample"):  # the key from the per-video records
        IndexedKinetics(split.parent)[first]
    assert wrong_results(split, p.clips) == []


def test_the_webdataset_pipeline_checks_keys_and_labels(pristine, tmp_path):
    p = pristine["raw"]
    case = Case(p, p, tmp_path / "swapped", random.Random(0))
    a, b = case.two_shards()
    pa, pb = case.shard(a), case.shard(b)
    da, db = pa.read_bytes(), pb.read_bytes()
    pa.write_bytes(db)
    pb.write_bytes(da)
    case.record_shard(a)
    case.record_shard(b)
    with pytest.raises(ShardReadError, match="holds sample"):
        list(webdataset_pipeline(case.split.parent, shuffle=False))
    label = edit_sample(p, tmp_path / "label", 1, 0, lambda s: [(n, b"1" if n.endswith(".cls") and d == b"0" else
                                                                 b"0" if n.endswith(".cls") else d) for n, d in s])
    with pytest.raises(ShardReadError, match="offsets.npy records"):
        list(webdataset_pipeline(label.split.parent, shuffle=False))


def test_readers_racing_a_writer_that_rewrites_a_shard_in_place(big_raw, tmp_path):
    """Another process (here a thread) overwrites a shard with other bytes of the same size, cuts
    it and restores it, again and again, while clips are read: each read is the right clip or an
    error, and the tensors read never change afterwards."""
    split = copy_split(big_raw, tmp_path)
    shard = split / big_raw.index["shards"][0]["name"]
    good = shard.read_bytes()
    other = (big_raw.split / big_raw.index["shards"][1]["name"]).read_bytes()
    variants = [good, (other * 2)[: len(good)], good[: len(good) // 2], bytes(len(good)), good]
    stop = threading.Event()

    def writer() -> None:
        k = 0
        while not stop.is_set():
            with open(shard, "r+b") as fh:
                data = variants[k % len(variants)]
                fh.write(data)
                fh.truncate(len(data))
            k += 1
            time.sleep(0.002)

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    held, errors, deadline = [], 0, time.perf_counter() + 3.0
    try:
        while time.perf_counter() < deadline:
            ds = IndexedKinetics(split.parent, output_format="THWC")
            for g in range(len(big_raw.clips)):
                try:
                    item = ds[g]
                except ShardReadError:
                    errors += 1
                    continue
                assert ident(item) == big_raw.clips[g], f"clip {g} read while the shard was rewritten is not clip {g}"
                held.append((g, item))
    finally:
        stop.set()
        thread.join()
    assert held and errors, f"the race was not run: {len(held)} clips, {errors} errors"
    assert all(ident(item) == big_raw.clips[g] for g, item in held), "a tensor changed after it was read"


def _loader_idents(out: Path, workers: int) -> list[Ident]:
    ds = StreamingKinetics(out, shuffle=False, output_format="THWC")
    return [ident((v, a[:, : int(n)], y)) for b in ds.loader(batch_size=2, num_workers=workers)
            for v, a, y, n in zip(b.video, b.audio, b.label, b.audio_lengths)]


@pytest.mark.parametrize("workers,threads", [(0, 1), (0, 4), (2, 1)])
def test_raw_pixels_read_straight_into_the_batch_are_checked(big_raw, tmp_path, workers, threads, monkeypatch):
    """Under ClipLoader a large raw clip's pixels are read into the batch, then its checksum is
    checked: the batches are the clips, and a flipped pixel or a shard cut short is an error;
    the batch's clips read by one thread or spread over four (loader/parallel.py) alike."""
    monkeypatch.setattr("clipshards.loader.collate.batch_threads", lambda: threads)
    poison_batch_memory(monkeypatch)
    from clipshards.loader.pixels import RawPixels
    from clipshards.loader.reader import DeferredVideo

    ds = StreamingKinetics(big_raw.split.parent, shuffle=False)
    with ds.decoding_in_collate(True):
        video = next(iter(ds))[0]
    assert isinstance(video, DeferredVideo) and isinstance(video.frames, RawPixels), "the pixels were read with the head"
    got = _loader_idents(big_raw.split.parent, workers)
    assert sorted(got) == sorted(big_raw.clips) and (workers or got == big_raw.clips)
    split = copy_split(big_raw, tmp_path)
    shard = split / big_raw.index["shards"][0]["name"]
    data = bytearray(shard.read_bytes())
    data[int(big_raw.offsets[1, 0] + big_raw.offsets[1, 1]) - 4096] ^= 0x10  # a pixel of clip 1
    shard.write_bytes(bytes(data))
    with pytest.raises(ShardReadError, match=r"clip 1, member '\d{8}_\d{6}.video.npy': its bytes differ"):
        _loader_idents(split.parent, workers)
    shard.write_bytes(bytes(data[: int(big_raw.offsets[1, 0]) + (1 << 20)]))
    with pytest.raises(ShardReadError, match="truncated"):
        _loader_idents(split.parent, workers)
