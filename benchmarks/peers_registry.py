"""The peers ``python -m benchmarks.peers`` compares, what each guarantees, and whether it is installed.

A peer is a way to feed the same Kinetics-like clips to a training loop: decoding the source
videos on the fly (torchcodec, PyAV as torchvision does, decord), storing pre-decoded clips in
another format (MosaicML Streaming's MDS, LitData, plain WebDataset) or clipshards itself.
The guarantees are what each documents (and the harness checks what it can: the tuples).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import sys
import types
from dataclasses import dataclass
from typing import Optional

__all__ = ["Peer", "PEERS", "FAMILIES", "peer", "missing", "version", "import_streaming"]

FAMILIES = ("decode", "stored", "clipshards")


@dataclass(frozen=True)
class Peer:
    """One row family of the table.

    ``modules`` must import for the peer to run; ``dist`` is the distribution whose version is
    shown. ``codecs`` are the stored forms it reads (``video``: the source H.264 files).
    """

    key: str
    label: str
    family: str
    modules: tuple[str, ...]
    dist: str
    codecs: tuple[str, ...]
    equal_ranks: str
    resume: str
    how: str


_DECODE = ("video",)
_STORED = ("raw", "jpeg")
_MAP_RANKS = "yes (map-style: DistributedSampler)"
_NO_RESUME = "no (DataLoader keeps no position)"

PEERS: tuple[Peer, ...] = (
    Peer("torchcodec", "torchcodec VideoDecoder (CPU)", "decode", ("torchcodec.decoders",), "torchcodec", _DECODE,
         _MAP_RANKS, _NO_RESUME,
         "map-style dataset: per clip `VideoDecoder(path, seek_mode='approximate', num_ffmpeg_threads=1)"
         ".get_frames_in_range` and `AudioDecoder.get_samples_played_in_range`"),
    Peer("pyav", "PyAV, torchvision-style seek + decode", "decode", ("av",), "av", _DECODE,
         _MAP_RANKS, _NO_RESUME,
         "the harness's baseline: scan every video's timestamps, then per clip open, seek, decode RGB24 and audio "
         "(torchvision's `read_video`)"),
    Peer("decord", "decord VideoReader (eva-decord)", "decode", ("decord",), "eva-decord", _DECODE,
         _MAP_RANKS, _NO_RESUME,
         "map-style dataset: per clip `VideoReader(path, num_threads=1).get_batch(indices)` with the torch "
         "bridge; video only (decord's AudioReader decodes the whole track)"),
    Peer("mds", "MosaicML Streaming (MDS)", "stored", ("streaming",), "mosaicml-streaming", _STORED,
         "yes (samples split evenly; repeats pad the last)", "yes (StreamingDataLoader.state_dict)",
         "`MDSWriter` (ndarray / bytes columns, 64 MB shards), `StreamingDataset(local=..., shuffle=True, "
         "batch_size=B)` subclass decoding in `__getitem__`, `StreamingDataLoader`"),
    Peer("litdata", "LitData optimize + StreamingDataset", "stored", ("litdata",), "litdata", _STORED,
         "yes with drop_last (its default under DDP: the remainder is dropped)", "yes (StreamingDataLoader.state_dict)",
         "`optimize(fn, inputs, chunk_bytes='64MB')`, `StreamingDataset(dir, shuffle=True, transform=...)`, "
         "`StreamingDataLoader`"),
    Peer("webdataset", "plain wds.WebDataset", "stored", ("webdataset",), "webdataset", _STORED,
         "no (shards split between ranks and workers)", "no",
         "clipshards' own tar shards: `wds.WebDataset(urls, shardshuffle=100).shuffle(n).map(...)`, "
         "`.batched(B)`, `wds.WebLoader`; buffer n = 256 MiB of clips"),
    Peer("clipshards-streaming", "clipshards StreamingKinetics", "clipshards", ("clipshards.loader",), "clipshards",
         _STORED, "yes (len(ds) clips on every rank)", "yes, exact (ClipLoader.state_dict)",
         "`StreamingKinetics(out, shuffle=True)` (auto block and buffer), `ds.loader(batch_size=B, num_workers=W)`"),
    Peer("clipshards-indexed", "clipshards IndexedKinetics", "clipshards", ("clipshards.loader",), "clipshards",
         _STORED, _MAP_RANKS, _NO_RESUME,
         "`IndexedKinetics(out)` in a DataLoader with shuffle=True, `collate_fn=collate_clips`"),
)


def peer(key: str) -> Peer:
    for p in PEERS:
        if p.key == key:
            return p
    raise ValueError(f"peer {key!r}: unknown; choose from {', '.join(p.key for p in PEERS)}")


def missing(p: Peer) -> Optional[str]:
    """Why ``p`` cannot run here (its import error), or None when it can."""
    for name in p.modules:
        try:
            if name == "streaming":
                import_streaming()
            else:
                importlib.import_module(name)
        except Exception as exc:  # an ABI mismatch raises OSError/RuntimeError, not only ImportError
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            return f"{name}: {type(exc).__name__}: {first}"[:240]
    return None


def version(p: Peer) -> str:
    try:
        return importlib.metadata.version(p.dist)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def import_streaming() -> types.ModuleType:
    """``import streaming`` (MosaicML), without its optional vision/text/multimodal datasets
    when torchvision cannot be imported.

    ``streaming/__init__`` imports ``streaming.vision``, which needs torchvision; PyPI's
    torchvision wheels are built against CUDA torch and fail to import beside a CPU torch.
    MDS reading and writing (``streaming.base``) never touch them, so they are replaced by
    empty modules here, in the benchmark's process only.
    """
    if "streaming" in sys.modules:
        return sys.modules["streaming"]
    try:
        importlib.import_module("torchvision")
    except Exception:
        for name in ("streaming.vision", "streaming.text", "streaming.multimodal"):
            sys.modules.setdefault(name, types.ModuleType(name))
    return importlib.import_module("streaming")
