"""The map-style dataset: :class:`IndexedKinetics`, ``ds[i]`` as ``torchvision.datasets.Kinetics(...)[i]``.

It yields what ``torchvision.datasets.Kinetics`` yields: ``(video, audio, label)`` with video
uint8 ``[T, C, H, W]`` (``output_format="TCHW"``, the default) or ``[T, H, W, C]``, audio
float32 ``[K, L]`` and label a Python ``int``.
"""

from __future__ import annotations

import operator
import os
from typing import Any, Mapping, Optional, Sequence

import torch
from torch.utils.data import Dataset

from .arguments import Transform, check_output
from .index import ClassesFromIndex, DatasetIndex
from .options import TransportOptions
from .reader import SampleReader, decode, to_output

__all__ = ["IndexedKinetics"]


class IndexedKinetics(ClassesFromIndex, Dataset):
    """Map-style: ``ds[i]`` is clip ``i`` of the global clip order, the same as
    ``torchvision.datasets.Kinetics(root, frames_per_clip, ...)[i]``.

    Each item is one ranged read of the clip's bytes (located with ``offsets.npy``), so any
    sampler, ``Subset`` or ``DistributedSampler`` works. ``url`` is the converter's OUT (a
    local path or an fsspec URL, with ``storage_options``; ``transport`` sets retries,
    read-ahead and the local cache for remote reads, see :class:`TransportOptions`).
    """

    def __init__(
        self,
        url: str | os.PathLike,
        split: str = "train",
        *,
        output_format: str = "TCHW",
        transform: Optional[Transform] = None,
        storage_options: Optional[Mapping[str, Any]] = None,
        transport: Optional[TransportOptions] = None,
    ) -> None:
        check_output(output_format, transform)
        self.index = DatasetIndex(url, split, storage_options=storage_options, transport=transport)
        self.output_format = output_format
        self.transform = transform
        self._reader = SampleReader(self.index)

    def __len__(self) -> int:
        return self.index.num_clips

    def __repr__(self) -> str:
        return f"IndexedKinetics({self.index.url!r}, clips={len(self)})"

    def _clip(self, i: int) -> int:
        try:
            g = operator.index(i)
        except TypeError:
            raise TypeError(f"IndexedKinetics indices are integers, got {type(i).__name__}") from None
        n = self.index.num_clips
        if g < 0:
            g += n
        if not 0 <= g < n:
            raise IndexError(f"clip {i} out of range for {n} clips")
        return g

    def __getitem__(self, i: int) -> tuple[Any, torch.Tensor, int]:
        return to_output(decode(self._reader.fetch(self._clip(i))), self.output_format, self.transform)

    def __getitems__(self, indices: Sequence[int]) -> list[tuple[Any, torch.Tensor, int]]:
        """``[self[i] for i in indices]``, with the reads issued together: a DataLoader asks
        for its batches this way, so on remote storage a batch costs about one round trip."""
        raws = self._reader.fetch_many([self._clip(i) for i in indices])
        return [to_output(decode(raw), self.output_format, self.transform) for raw in raws]
