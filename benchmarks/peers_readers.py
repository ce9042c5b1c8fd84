"""Each peer opened as its documentation recommends, shuffle on, behind one small interface.

``open_reader(spec)`` returns a reader with ``loader(consumer, epoch)``: ``"read"`` yields
the clips one by one as ``(video uint8 [T, C, H, W], audio float32 [K, L], label)``;
``"collate"`` yields batches of ``spec.batch_size`` made by :func:`collate_clips` (every
peer's clips are batched the same way, so the batch a training step receives is the same).
``check_items()`` yields ``(global clip index, tuple)`` for a few clips, unshuffled, to
compare with ``IndexedKinetics``. JPEG frames are decoded with simplejpeg (libjpeg-turbo,
accurate DCT, as the clipshards loader does) in every peer.
"""

from __future__ import annotations

import glob
import io
import logging
import os
from dataclasses import asdict, dataclass
from itertools import islice
from typing import Any, Iterable, Iterator, Mapping, Optional, Sequence

import numpy as np
import simplejpeg
import torch
from torch.utils.data import DataLoader, Dataset

from clipshards.loader import IndexedKinetics, StreamingKinetics, collate_clips

from .peers_registry import import_streaming

logger = logging.getLogger(__name__)

__all__ = ["RunSpec", "CONSUMERS", "open_reader", "clip_tuple", "jpeg_clip", "check_picks"]

CONSUMERS = ("read", "collate")
CHECK_CLIPS = 4
Clip = tuple[torch.Tensor, torch.Tensor, int]


@dataclass(frozen=True)
class RunSpec:
    """One measured configuration: peer ``key`` on ``codec`` (``video``: the source files)."""

    key: str
    codec: str
    workers: int
    batch_size: int
    seed: int
    root: str  # the synthetic dataset (videos)
    out: str  # the clipshards conversion for this codec (raw for the decoders: the reference)
    store: str = ""  # the peer's own copy (MDS, LitData), "" when it reads ``out`` or ``root``
    frames_per_clip: int = 16
    step_between_clips: int = 16
    shuffle_buffer: int = 64  # webdataset's buffer, in clips

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def jpeg_clip(frames: Sequence[bytes | memoryview]) -> np.ndarray:
    """JPEG frames decoded into one uint8 ``[T, H, W, 3]`` array (no per-frame arrays)."""
    h, w = simplejpeg.decode_jpeg_header(frames[0])[:2]
    clip = np.empty((len(frames), h, w, 3), dtype=np.uint8)
    for t, f in enumerate(frames):
        simplejpeg.decode_jpeg(f, colorspace="RGB", buffer=clip[t])
    return clip


def clip_tuple(row: Mapping[str, Any]) -> Clip:
    """A stored row (``label``, ``audio`` array, and ``video`` THWC array or ``fNNNN`` JPEG
    frames) as torchvision's tuple, the video a TCHW view of the THWC array."""
    video = row.get("video")
    if video is None:
        video = jpeg_clip([row[k] for k in sorted(k for k in row if k.startswith("f") and k[1:].isdigit())])
    return torch.from_numpy(video).permute(0, 3, 1, 2), torch.from_numpy(row["audio"]), int(row["label"])


def _first(items: list[Any]) -> Any:
    return items[0]


def check_picks(n: int) -> list[int]:
    """Clips the exactness check compares: spread over the dataset."""
    return sorted({int(round(x)) for x in np.linspace(0, n - 1, min(CHECK_CLIPS, n))})


class MapStyleReader:
    """A map-style dataset (IndexedKinetics, the decoders) in a DataLoader with shuffle=True."""

    def __init__(self, dataset: Dataset, spec: RunSpec) -> None:
        self.dataset, self.spec = dataset, spec

    def loader(self, consumer: str, epoch: int) -> Iterable[Any]:
        g = torch.Generator().manual_seed(1000 * self.spec.seed + epoch)
        if consumer == "read":
            return DataLoader(self.dataset, batch_size=None, shuffle=True, num_workers=self.spec.workers, generator=g)
        return DataLoader(self.dataset, batch_size=self.spec.batch_size, shuffle=True, num_workers=self.spec.workers,
                          collate_fn=collate_clips, generator=g)

    def check_items(self) -> Iterator[tuple[int, Clip]]:
        for g in check_picks(len(self.dataset)):  # type: ignore[arg-type]
            yield g, self.dataset[g]


class StreamingReader:
    """clipshards ``StreamingKinetics`` (auto block size and buffer) and its ``ClipLoader``."""

    def __init__(self, spec: RunSpec) -> None:
        self.spec = spec
        self.dataset = StreamingKinetics(spec.out, "train", shuffle=True, seed=spec.seed)

    def loader(self, consumer: str, epoch: int) -> Iterable[Any]:
        self.dataset.set_epoch(epoch)
        if consumer == "read" and self.spec.workers == 0:
            return self.dataset
        return self.dataset.loader(batch_size=None if consumer == "read" else self.spec.batch_size,
                                   num_workers=self.spec.workers)

    def check_items(self) -> Iterator[tuple[int, Clip]]:
        return enumerate(islice(StreamingKinetics(self.spec.out, "train", shuffle=False), CHECK_CLIPS))


def _mds_dataset(spec: RunSpec, *, shuffle: bool) -> Any:
    streaming = import_streaming()

    class ClipMDS(streaming.StreamingDataset):
        """MDS rows decoded in ``__getitem__``, as MosaicML's docs do for transforms."""

        def __getitem__(self, idx: int) -> Clip:
            return clip_tuple(super().__getitem__(idx))

        def row(self, idx: int) -> dict[str, Any]:
            return super().__getitem__(idx)

    return ClipMDS(local=spec.store, shuffle=shuffle, shuffle_seed=spec.seed, batch_size=spec.batch_size)


class MdsReader:
    """MosaicML Streaming: a ``StreamingDataset`` subclass over the local MDS copy and its
    ``StreamingDataLoader`` (the one that can checkpoint)."""

    def __init__(self, spec: RunSpec) -> None:
        import_streaming()  # before any ``streaming.*`` import
        from streaming.base.util import clean_stale_shared_memory

        self.spec = spec
        clean_stale_shared_memory()
        self.dataset = _mds_dataset(spec, shuffle=True)

    def loader(self, consumer: str, epoch: int) -> Iterable[Any]:
        from streaming import StreamingDataLoader

        if consumer == "read" and self.spec.workers == 0:
            return self.dataset
        if consumer == "read":
            return StreamingDataLoader(self.dataset, batch_size=None, num_workers=self.spec.workers)
        return StreamingDataLoader(self.dataset, batch_size=self.spec.batch_size, num_workers=self.spec.workers,
                                   collate_fn=collate_clips)

    def check_items(self) -> Iterator[tuple[int, Clip]]:
        for i in check_picks(len(self.dataset)):
            row = self.dataset.row(i)
            yield int(row["clip"]), clip_tuple(row)


class LitdataReader:
    """LitData: ``StreamingDataset(dir, shuffle=True, transform=clip_tuple)`` and its
    ``StreamingDataLoader`` (one clip a batch for the read consumer: it needs a batch size)."""

    def __init__(self, spec: RunSpec) -> None:
        import litdata

        self.spec = spec
        self.dataset = litdata.StreamingDataset(spec.store, shuffle=True, seed=spec.seed, transform=clip_tuple)

    def loader(self, consumer: str, epoch: int) -> Iterable[Any]:
        import litdata

        if consumer == "read" and self.spec.workers == 0:
            self.dataset.set_epoch(epoch + 1)
            return self.dataset
        if consumer == "read":
            return litdata.StreamingDataLoader(self.dataset, batch_size=1, num_workers=self.spec.workers, collate_fn=_first)
        return litdata.StreamingDataLoader(self.dataset, batch_size=self.spec.batch_size, num_workers=self.spec.workers,
                                           collate_fn=collate_clips)

    def check_items(self) -> Iterator[tuple[int, Clip]]:
        import litdata

        plain = litdata.StreamingDataset(self.spec.store, shuffle=False)
        for i in check_picks(len(plain)):
            row = plain[i]
            yield int(row["clip"]), clip_tuple(row)


def _wds_row(sample: Mapping[str, Any]) -> Clip:
    row: dict[str, Any] = {"label": int(sample["cls"]), "audio": np.load(io.BytesIO(sample["audio.npy"]), allow_pickle=False)}
    if "video.npy" in sample:
        row["video"] = np.load(io.BytesIO(sample["video.npy"]), allow_pickle=False)
    else:
        row.update({k[:-4]: v for k, v in sample.items() if k.endswith(".jpg")})
    return clip_tuple(row)


class WdsReader:
    """Plain ``wds.WebDataset`` over clipshards' own tar shards: shard shuffle, a sample
    shuffle buffer, ``.batched`` with the same collate, ``wds.WebLoader``."""

    def __init__(self, spec: RunSpec) -> None:
        self.spec = spec
        self.urls = sorted(glob.glob(os.path.join(spec.out, "train", "*.tar")))
        if not self.urls:
            raise ValueError(f"out={spec.out!r}: no tar shards under train/")

    def _pipeline(self, *, shuffle: bool, epoch: int = 0) -> Any:
        import webdataset as wds

        ds = wds.WebDataset(self.urls, shardshuffle=100 if shuffle else False, seed=1000 * self.spec.seed + epoch,
                            empty_check=False)
        if shuffle:
            ds = ds.shuffle(self.spec.shuffle_buffer)
        return ds.map(_wds_row)

    def loader(self, consumer: str, epoch: int) -> Iterable[Any]:
        import webdataset as wds

        ds = self._pipeline(shuffle=True, epoch=epoch)
        if consumer == "read" and self.spec.workers == 0:
            return ds
        if consumer == "collate":
            ds = ds.batched(self.spec.batch_size, collation_fn=collate_clips, partial=True)
        return wds.WebLoader(ds, batch_size=None, num_workers=self.spec.workers)

    def check_items(self) -> Iterator[tuple[int, Clip]]:
        return enumerate(islice(self._pipeline(shuffle=False), CHECK_CLIPS))


def _videos(root: str) -> list[tuple[str, int]]:
    from .data import dataset_videos

    paths = dataset_videos(root)
    classes = sorted({os.path.basename(os.path.dirname(p)) for p in paths})
    return [(p, classes.index(os.path.basename(os.path.dirname(p)))) for p in paths]


def open_reader(spec: RunSpec) -> Any:
    """The reader of ``spec.key``; building it is part of the time to the first batch."""
    if spec.key in ("torchcodec", "pyav", "decord"):
        from .peers_decode import decode_dataset

        ds = decode_dataset(spec.key, _videos(spec.root), frames_per_clip=spec.frames_per_clip,
                            step_between_clips=spec.step_between_clips)
        return MapStyleReader(ds, spec)
    if spec.key == "clipshards-indexed":
        return MapStyleReader(IndexedKinetics(spec.out, "train"), spec)
    readers = {"clipshards-streaming": StreamingReader, "mds": MdsReader, "litdata": LitdataReader, "webdataset": WdsReader}
    if spec.key not in readers:
        raise ValueError(f"key={spec.key!r}: no reader for this peer")
    return readers[spec.key](spec)


def reference(spec: RunSpec) -> Optional[IndexedKinetics]:
    """What the peer's clips should equal: ``IndexedKinetics`` on the conversion it mirrors."""
    return IndexedKinetics(spec.out, "train") if spec.out else None
