"""Shared by the tests/test_loader_*.py modules: small converted datasets and clip identities."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pytest
import torch

from clipshards.convert.schema import INDEX_NAME, OFFSETS_NAME, checksum_of, clip_checksum, dumps_json, encode_npy, entry_checksum
from clipshards.convert.synth import VideoSpec, make_dataset
from clipshards.convert.writer import TAR_END, tar_member

FRAMES_PER_CLIP = 8
STEP = 5
# 3 classes x 3 videos of 30/37/44 frames -> 5 + 6 + 8 = 19 clips per class, 57 in all (odd on purpose)
NUM_CLIPS = 57


def make_converted(tmp: Path, *, codec: str = "raw", shard_size: int = 500_000, root: Path | None = None) -> tuple[Path, Path]:
    """A tiny dataset (``root``) and its conversion (``out``): raw clips are ~125 kB, so the
    default shard size puts 3 clips in a shard (19 shards)."""
    from clipshards.convert import convert

    if root is None:
        root = tmp / "dataset"
        make_dataset(root, videos_per_class=3, spec=VideoSpec(frames=30))
    out = tmp / f"out-{codec}-{shard_size}"
    convert(root, out, frames_per_clip=FRAMES_PER_CLIP, step_between_clips=STEP, layout="clips", workers=1,
            progress=False, shard_size=shard_size, codec=codec)
    return root, out


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """``(root, out)`` of the tiny dataset, converted raw (import this fixture by name)."""
    return make_converted(tmp_path_factory.mktemp("loader"))


@pytest.fixture(scope="module")
def table(converted):
    """Clip identity -> global clip index for ``converted``."""
    return id_table(converted[1])


def clip_id(video: torch.Tensor) -> str:
    """A content identity of a clip's video (any layout, contiguous or not)."""
    return hashlib.blake2b(video.contiguous().numpy().tobytes(), digest_size=12).hexdigest()


def id_table(out: Path, **kwargs) -> dict[str, int]:
    """Clip identity -> global clip index, from the indexed dataset."""
    from clipshards.loader import IndexedKinetics

    ds = IndexedKinetics(out, **kwargs)
    table = {clip_id(ds[g][0]): g for g in range(len(ds))}
    assert len(table) == len(ds), "synthetic clips must be distinct"
    return table


def batch_ids(batch, table: dict[str, int]) -> list[int]:
    return [table[clip_id(v)] for v in batch.video]


def copy_out(out: Path, dest: Path) -> Path:
    shutil.copytree(out, dest)
    return dest


def read_index(split_dir: Path) -> dict:
    return json.loads((split_dir / INDEX_NAME).read_bytes())


def write_index(split_dir: Path, index: dict) -> None:
    (split_dir / INDEX_NAME).write_bytes(dumps_json(index))


def shard_members(path: Path) -> list[tuple[str, bytes]]:
    with tarfile.open(path, mode="r:") as tf:
        return [(m.name, tf.extractfile(m).read()) for m in tf]


def rewrite_shard(split_dir: Path, shard_index: int, members: Sequence[tuple[str, bytes]]) -> None:
    """Replace one shard by ``members`` (grouped into samples by key, in order) and fix
    offsets.npy (byte ranges and clip checksums) and the index so that they describe the new
    bytes: a consistent dataset whose shard holds what the test put there."""
    index = read_index(split_dir)
    shard = index["shards"][shard_index]
    samples: list[list[tuple[str, bytes]]] = []
    for name, data in members:
        key = name.partition(".")[0]
        if not samples or samples[-1][0][0].partition(".")[0] != key:
            samples.append([])
        samples[-1].append((name, data))
    if len(samples) != shard["clips"]:
        raise ValueError(f"rewrite_shard keeps the clip count: {len(samples)} samples for {shard['clips']} clips")
    offsets = np.load(io.BytesIO((split_dir / OFFSETS_NAME).read_bytes()), allow_pickle=False).copy()
    blob = bytearray()
    for j, sample in enumerate(samples):
        data = b"".join(tar_member(n, d) for n, d in sample)
        offsets[shard["first_clip"] + j, :2] = (len(blob), len(data))
        if offsets.shape[1] > 2:  # index version 2: the clip's checksum describes its new bytes too
            offsets[shard["first_clip"] + j, 4] = clip_checksum(data)
        blob += data
    blob += TAR_END
    (split_dir / shard["name"]).write_bytes(bytes(blob))
    shard["bytes"] = len(blob)
    algo = entry_checksum(shard)[0] or "sha256"
    shard[algo] = checksum_of(algo, bytes(blob))
    offsets_bytes = encode_npy(offsets)
    (split_dir / OFFSETS_NAME).write_bytes(offsets_bytes)
    index["offsets"] = {"name": OFFSETS_NAME, "bytes": len(offsets_bytes), algo: checksum_of(algo, offsets_bytes)}
    write_index(split_dir, index)


def refresh_checksums(split_dir: Path) -> None:
    """Make offsets.npy's clip checksums (and the index's entry for offsets.npy) describe the
    shards as they are now: a damaged dataset that is consistent, whose damage only decoding finds."""
    index = read_index(split_dir)
    offsets = np.load(io.BytesIO((split_dir / OFFSETS_NAME).read_bytes()), allow_pickle=False).copy()
    for shard in index["shards"]:
        data = (split_dir / shard["name"]).read_bytes()
        for g in range(shard["first_clip"], shard["first_clip"] + shard["clips"]):
            off, length = (int(x) for x in offsets[g, :2])
            offsets[g, 4] = clip_checksum(data[off: off + length])
    offsets_bytes = encode_npy(offsets)
    (split_dir / OFFSETS_NAME).write_bytes(offsets_bytes)
    algo = entry_checksum(index["offsets"])[0] or "sha256"
    index["offsets"] = {"name": OFFSETS_NAME, "bytes": len(offsets_bytes), algo: checksum_of(algo, offsets_bytes)}
    write_index(split_dir, index)


def flatten(batches: Iterable[Sequence[int]]) -> list[int]:
    return [x for b in batches for x in b]


def poison_batch_memory(monkeypatch) -> None:
    """Batch memory of the main process handed out filled with 0xA5 (pooled memory may still hold
    an earlier test's identical batch, which would hide a clip never written)."""
    import clipshards.loader.collate as collate

    plain = collate._private_storage

    def poisoned(nbytes: int):
        memory = plain(nbytes)
        memory.fill_(0xA5)
        return memory

    monkeypatch.setattr(collate, "_private_storage", poisoned)
