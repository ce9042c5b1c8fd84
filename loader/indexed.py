"""The map-style dataset: :class:`IndexedKinetics`, ``ds[i]`` as ``torchvision.datasets.Kinetics(...)[i]``.

It yields what ``torchvision.datasets.Kinetics`` yields: ``(video, audio, label)`` with video
uint8 ``[T, C, H, W]`` (``output_format="TCHW"``, the default) or ``[T, H, W, C]``, audio
float32 ``[K, L]`` and label a Python ``int``; with ``with_ids=True`` also the clip's
``video_idx`` and ``clip_idx`` (torchvision's ``KineticsWithVideoId`` gives ``video_idx``).
On a ``clips`` layout output each item is one stored clip; on a ``videos`` layout output
clips are cut when loading, for any ``frames_per_clip``, ``step_between_clips`` and
``frame_rate`` (:mod:`.video_reader`).
"""

from __future__ import annotations

import operator
import os
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from clipshards.convert.schema import LAYOUT_VIDEOS, LAYOUTS

from .arguments import Transform, check_flag, check_output
from .index import ClassesFromIndex, DatasetIndex
from .options import TransportOptions
from .reader import SampleReader, decode, to_output
from .samplers import PaddedIndex
from .video_clips import ClipTable, resolve_clip_settings
from .video_reader import VideoClip, VideoClipReader, clip_output, open_table

__all__ = ["IndexedKinetics"]


class IndexedKinetics(ClassesFromIndex, Dataset):
    """Map-style: ``ds[i]`` is clip ``i`` of the global clip order, the same as
    ``torchvision.datasets.Kinetics(root, frames_per_clip, step_between_clips=..., frame_rate=...)[i]``.

    ``frames_per_clip``, ``step_between_clips`` and ``frame_rate``: None takes the value recorded
    when converting. A ``videos`` layout output takes any values (``frame_rate="source"``: every
    source frame, torchvision's ``None``); a ``clips`` layout output only its own. ``with_ids``:
    items are ``(video, audio, label, video_idx, clip_idx)``, ``video_idx`` -1 for a
    :class:`~clipshards.loader.samplers.PaddedIndex` (an evaluation's padding, to mask out).
    ``clips_per_video`` and :meth:`get_clip_location` are what torchvision's clip samplers use
    (:mod:`clipshards.loader.samplers` takes this dataset).

    Each item is one ranged read of the clip's bytes (located with ``offsets.npy``; in a
    ``videos`` layout output, its frames and audio window located with the table of videos, one
    range when its frames are consecutive), so any sampler, ``Subset`` or ``DistributedSampler`` works. ``url`` is the converter's OUT (a
    local path or an fsspec URL, with ``storage_options``; ``transport`` sets retries,
    read-ahead and the local cache for remote reads, see :class:`TransportOptions`).
    """

    def __init__(
        self,
        url: str | os.PathLike,
        split: str = "train",
        *,
        frames_per_clip: Optional[int] = None,
        step_between_clips: Optional[int] = None,
        frame_rate: Optional[float] | str = None,
        with_ids: bool = False,
        output_format: str = "TCHW",
        transform: Optional[Transform] = None,
        storage_options: Optional[Mapping[str, Any]] = None,
        transport: Optional[TransportOptions] = None,
    ) -> None:
        check_output(output_format, transform)
        self.with_ids = check_flag("with_ids", with_ids)
        self.index = DatasetIndex(url, split, storage_options=storage_options, transport=transport, layouts=LAYOUTS)
        self.frames_per_clip, self.step_between_clips, self.frame_rate = resolve_clip_settings(
            self.index.options, self.index.layout, frames_per_clip, step_between_clips, frame_rate)
        self.output_format = output_format
        self.transform = transform
        self._reader = SampleReader(self.index)
        self._videos: Optional[VideoClipReader] = None
        if self.index.layout == LAYOUT_VIDEOS:
            table = ClipTable(open_table(self.index), self.frames_per_clip, self.step_between_clips, self.frame_rate)
            self._videos = VideoClipReader(self.index, table)
        self._counts: Optional[np.ndarray] = None
        self._ends: Optional[np.ndarray] = None  # cumulative clips of the root's videos (see _ids)

    def __len__(self) -> int:
        return self._videos.clips.num_clips if self._videos is not None else self.index.num_clips

    def __repr__(self) -> str:
        return f"IndexedKinetics({self.index.url!r}, clips={len(self)})"

    # -- what samplers need: clips per video, and the video of a clip -------------------------
    @property
    def clips_per_video(self) -> np.ndarray:
        """int64, one entry per video the converter found (discovery order; a skipped or too
        short video has 0): what ``VideoClips.clips`` holds, as the clip samplers use it."""
        if self._counts is None:
            if self._videos is not None:
                t = self._videos.clips
                counts = np.zeros(max(self.index.num_videos, int(t.table["video_index"].max(initial=-1)) + 1), np.int64)
                counts[t.table["video_index"]] = t.counts
            else:
                counts = np.array([int(v.get("clips", 0)) if v.get("status") == "ok" else 0 for v in self.index.videos],
                                  dtype=np.int64)
            self._counts = counts
        return self._counts

    def get_clip_location(self, i: int) -> tuple[int, int]:
        """``(video_idx, clip_idx)`` of item ``i`` (``VideoClips.get_clip_location``)."""
        g = self._clip(i)
        if self._videos is not None:
            row, clip = self._videos.clips.location(g)
            return int(self._videos.table["video_index"][row]), int(clip)
        ends = np.cumsum(self.clips_per_video)
        video = int(np.searchsorted(ends, g, side="right"))
        return video, g - int(ends[video] - self.clips_per_video[video])

    # -- items ----------------------------------------------------------------------------------
    def _position(self, i: int) -> int:
        """Item ``i`` as a position in ``0 .. len(self) - 1`` (negative counts from the end)."""
        try:
            k = operator.index(i)
        except TypeError:
            raise TypeError(f"{type(self).__name__} indices are integers, got {type(i).__name__}") from None
        n = len(self)
        if k < 0:
            k += n
        if not 0 <= k < n:
            raise IndexError(f"clip {i} out of range for {n} clips")
        return k

    def _clip(self, i: int) -> int:
        """The global clip of item ``i`` (subsets such as a fold map positions to clips)."""
        return self._position(i)

    def __getitem__(self, i: int) -> tuple[Any, ...]:
        return self.__getitems__([i])[0] if self._videos is not None else self._output(self._reader.fetch(self._clip(i)), i)

    def __getitems__(self, indices: Sequence[int]) -> list[tuple[Any, ...]]:
        """``[self[i] for i in indices]``, with the reads issued together: a DataLoader asks
        for its batches this way, so on remote storage a batch costs about one round trip."""
        gs = [self._clip(i) for i in indices]
        if self._videos is not None:
            return [self._video_output(c, i) for c, i in zip(self._videos.fetch_many(gs), indices)]
        return [self._output(raw, i) for raw, i in zip(self._reader.fetch_many(gs), indices)]

    def _output(self, raw: Any, i: int) -> tuple[Any, ...]:
        sample = decode(raw)
        out = to_output(sample, self.output_format, self.transform)
        if not self.with_ids:
            return out
        meta = sample["meta"]
        video, clip = self._ids(raw.clip) if self.index.appended else (int(meta["video_index"]), int(meta["clip_index"]))
        return (*out, -1 if isinstance(i, PaddedIndex) else video, clip)

    def _ids(self, g: int) -> tuple[int, int]:
        """``(video_idx, clip_idx)`` of global clip ``g`` over all the root's videos, from the index's
        records: the samples of an output appended to keep the video numbers they were written with."""
        if self._ends is None:
            self._ends = np.cumsum(IndexedKinetics.clips_per_video.fget(self))  # type: ignore[attr-defined]
        video = int(np.searchsorted(self._ends, g, side="right"))
        return video, g - int(self._ends[video - 1] if video else 0)

    def _video_output(self, clip: VideoClip, i: int) -> tuple[Any, ...]:
        return clip_output(clip, self.output_format, self.transform, with_ids=self.with_ids, padded=isinstance(i, PaddedIndex))
