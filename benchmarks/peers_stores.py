"""The same pre-decoded clips in the other stored formats: MosaicML's MDS and LitData's chunks,
written from a clipshards conversion (the very arrays, or the very JPEG bytes, it stores).

Plain WebDataset reads the conversion's own tar shards, so it needs no copy. Each store is
built once and cached beside the conversion (rebuilt when the conversion or the peer's
version changes).
"""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
from typing import Any, Callable, Iterable

import numpy as np

from .limits import ShardSet, iter_tar_members
from .peers_registry import import_streaming, peer, version

logger = logging.getLogger(__name__)

__all__ = ["ClipSource", "flat_row", "write_mds", "write_litdata", "store_desc", "is_built", "build_store", "folder_bytes", "warm_folder", "STORE_MARK"]

STORE_MARK = "peers_store.json"
CHUNK_BYTES = 64 << 20  # MDS's default shard size limit; LitData's docs use chunk_bytes="64MB"


class ClipSource:
    """Clip ``g`` of a conversion as a dict: ``clip`` (g), ``label``, ``audio`` (float32
    ``[K, L]``) and ``video`` (uint8 ``[T, H, W, 3]``, codec raw) or ``frames`` (the JPEG
    bytes of each frame, codec jpeg). Arrays are parsed with ``allow_pickle=False``.

    Picklable, so LitData's ``optimize`` workers can call it.
    """

    def __init__(self, out: str, split: str = "train") -> None:
        self.shards = ShardSet.open(out, split)
        counts = [int(s["clips"]) for s in self.shards.index["shards"]]
        self.first = np.cumsum([0] + counts)
        self.codec = str(self.shards.index["options"]["codec"])

    def __len__(self) -> int:
        return self.shards.clips

    def __call__(self, g: int) -> dict[str, Any]:
        if not 0 <= g < len(self):
            raise ValueError(f"clip {g}: the conversion has {len(self)} clips")
        shard = int(np.searchsorted(self.first, g, side="right")) - 1
        off, size = (int(x) for x in self.shards.offsets[g, :2])
        with open(self.shards.shard_paths()[shard], "rb", buffering=0) as fh:
            fh.seek(off)
            data = fh.read(size)
        fields = {name.split(".", 1)[1]: bytes(body) for name, body in iter_tar_members(data)}
        sample: dict[str, Any] = {"clip": g, "label": int(fields["cls"]), "audio": _npy(fields["audio.npy"])}
        if "video.npy" in fields:
            sample["video"] = _npy(fields["video.npy"])
        else:
            sample["frames"] = [fields[k] for k in sorted(k for k in fields if k.endswith(".jpg"))]
        return sample

    def fingerprint(self) -> dict[str, Any]:
        return {"fingerprint": self.shards.index.get("fingerprint"), "clips": len(self), "codec": self.codec,
                "bytes": self.shards.index["counts"]["bytes"]}


def _npy(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


def _mds_columns(sample: dict[str, Any]) -> dict[str, str]:
    columns = {"clip": "int", "label": "int", "audio": "ndarray:float32"}
    if "video" in sample:
        columns["video"] = "ndarray:uint8"
    else:
        columns.update({f"f{t:04d}": "bytes" for t in range(len(sample["frames"]))})
    return columns


def flat_row(sample: dict[str, Any]) -> dict[str, Any]:
    """``sample`` with one ``fNNNN`` entry per JPEG frame instead of the ``frames`` list (the
    rows MDS and LitData store: MDS columns are fixed, LitData stores a list as one JSON leaf)."""
    row = {k: sample[k] for k in ("clip", "label", "audio")}
    if "video" in sample:
        row["video"] = sample["video"]
    else:
        row.update({f"f{t:04d}": b for t, b in enumerate(sample["frames"])})
    return row


def write_mds(source: ClipSource, folder: str) -> None:
    """``MDSWriter`` with one ndarray column for the video (raw) or one bytes column per JPEG
    frame, uncompressed, 64 MiB shards: the writer's defaults."""
    streaming = import_streaming()
    columns = _mds_columns(source(0))
    with streaming.MDSWriter(out=folder, columns=columns, size_limit=CHUNK_BYTES) as writer:
        for g in range(len(source)):
            writer.write(flat_row(source(g)))


def write_litdata(source: ClipSource, folder: str, *, workers: int = 1) -> None:
    """``litdata.optimize`` over the clip indices, 64 MB chunks, the rows :func:`flat_row` makes."""
    import litdata

    litdata.optimize(fn=_LitdataRow(source), inputs=list(range(len(source))), output_dir=folder, chunk_bytes="64MB",
                     num_workers=workers, mode="overwrite", verbose=False)


class _LitdataRow:
    """``optimize``'s ``fn``: clip ``g`` as a flat row (a picklable callable for its workers)."""

    def __init__(self, source: ClipSource) -> None:
        self.source = source

    def __call__(self, g: int) -> dict[str, Any]:
        return flat_row(self.source(g))


WRITERS: dict[str, Callable[[ClipSource, str], None]] = {"mds": write_mds, "litdata": write_litdata}


def store_desc(key: str, out: str) -> dict[str, Any]:
    """What a copy of conversion ``out`` in peer ``key``'s format is made of (its cache key)."""
    return {"peer": key, "version": version(peer(key)), **ClipSource(out).fingerprint()}


def is_built(folder: str, desc: dict[str, Any]) -> bool:
    try:
        with open(os.path.join(folder, STORE_MARK)) as fh:
            return json.load(fh) == desc
    except (OSError, ValueError):
        return False


def build_store(key: str, out: str, folder: str) -> dict[str, Any]:
    """``folder`` holding the clips of conversion ``out`` in peer ``key``'s format (cached)."""
    desc = store_desc(key, out)
    if is_built(folder, desc):
        return desc
    source = ClipSource(out)
    shutil.rmtree(folder, ignore_errors=True)
    logger.info("writing %d %s clips as %s to %s", len(source), source.codec, key, folder)
    WRITERS[key](source, folder)
    with open(os.path.join(folder, STORE_MARK), "w") as fh:
        json.dump(desc, fh, indent=1)
    return desc


def _files(folder: str) -> Iterable[str]:
    for base, _, names in os.walk(folder):
        for n in names:
            if n != STORE_MARK:
                yield os.path.join(base, n)


def folder_bytes(folder: str, suffix: str = "") -> int:
    """Bytes of the files under ``folder`` (ending in ``suffix``), the cache mark left out."""
    return sum(os.path.getsize(p) for p in _files(folder) if p.endswith(suffix))


def warm_folder(folder: str) -> int:
    """Read every file under ``folder`` once (page cache warm); returns the bytes read."""
    total = 0
    for path in _files(folder):
        with open(path, "rb", buffering=0) as fh:
            while chunk := fh.read(16 << 20):
                total += len(chunk)
    return total
