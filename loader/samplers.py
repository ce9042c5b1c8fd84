"""torchvision's clip samplers, for clipshards' datasets: the same semantics and the same random draws.

``torchvision.datasets.samplers`` (``RandomClipSampler``, ``UniformClipSampler``,
``DistributedSampler``) type-check for a ``VideoClips``, which clipshards' datasets do not
have. These take what the samplers need, each video's clip count, from
:class:`~clipshards.loader.IndexedKinetics` (``clips_per_video``), a torchvision dataset or
its ``video_clips``, and make the same torch RNG calls in the same order: under the same
``torch.manual_seed`` they yield the same indices as torchvision's over the same videos.

:class:`EvalDistributedSampler` is ``DistributedSampler(sampler, shuffle=False)`` for evaluation:
the indices added to even out the ranks come as :class:`PaddedIndex`, for which a dataset with
``with_ids=True`` returns ``video_idx = -1``: masked out, no view counted twice.
"""

from __future__ import annotations

import math
from typing import Any, Iterator, Optional, Sized

import torch
from torch.utils.data import Sampler

__all__ = ["RandomClipSampler", "UniformClipSampler", "DistributedSampler", "EvalDistributedSampler",
           "PaddedIndex", "clip_counts_of"]


class PaddedIndex(int):
    """A dataset index a distributed sampler repeated only to give every rank as many items:
    :class:`~clipshards.loader.IndexedKinetics` with ``with_ids=True`` returns its clip with
    ``video_idx = -1``, so an evaluation masks it out."""

    def __repr__(self) -> str:
        return f"PaddedIndex({int(self)})"


def clip_counts_of(source: Any) -> list[int]:
    """Each video's clip count: ``source.clips_per_video`` (clipshards' datasets), or the clip
    lists of a torchvision ``VideoClips`` (``source.clips``, or ``source.video_clips.clips``)."""
    if hasattr(source, "clips_per_video"):
        return [int(c) for c in source.clips_per_video]
    clips = getattr(source, "clips", None)
    if clips is None and hasattr(source, "video_clips"):
        clips = getattr(source.video_clips, "clips", None)
    if clips is None:
        raise TypeError(f"expected a dataset with clips_per_video (IndexedKinetics) or a VideoClips, got {type(source).__name__}")
    return [len(c) for c in clips]


def _check_count(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}={value!r}: must be an integer >= 1")
    return value


class RandomClipSampler(Sampler[int]):
    """At most ``max_clips_per_video`` random clips of each video, all of them shuffled
    (torchvision's ``RandomClipSampler``: ``randperm`` per video, then one over the result)."""

    def __init__(self, video_clips: Any, max_clips_per_video: int) -> None:
        self.counts = clip_counts_of(video_clips)
        self.max_clips_per_video = _check_count("max_clips_per_video", max_clips_per_video)

    def __iter__(self) -> Iterator[int]:
        idxs = []
        s = 0
        for length in self.counts:
            size = min(length, self.max_clips_per_video)
            idxs.append(torch.randperm(length)[:size] + s)
            s += length
        idxs_ = torch.cat(idxs) if idxs else torch.zeros(0, dtype=torch.int64)
        perm = torch.randperm(len(idxs_))
        return iter(idxs_[perm].tolist())

    def __len__(self) -> int:
        return sum(min(length, self.max_clips_per_video) for length in self.counts)


class UniformClipSampler(Sampler[int]):
    """``num_clips_per_video`` equally spaced clips of each video with clips, repeating clips
    when a video has fewer (torchvision's ``UniformClipSampler``: ``linspace`` then ``floor``)."""

    def __init__(self, video_clips: Any, num_clips_per_video: int) -> None:
        self.counts = clip_counts_of(video_clips)
        self.num_clips_per_video = _check_count("num_clips_per_video", num_clips_per_video)

    def __iter__(self) -> Iterator[int]:
        idxs = []
        s = 0
        for length in self.counts:
            if length == 0:
                continue
            idxs.append(torch.linspace(s, s + length - 1, steps=self.num_clips_per_video).floor().to(torch.int64))
            s += length
        return iter(torch.cat(idxs).tolist() if idxs else [])

    def __len__(self) -> int:
        return sum(self.num_clips_per_video for length in self.counts if length > 0)


class DistributedSampler(Sampler[int]):
    """torchvision's ``DistributedSampler``: each rank takes every ``num_replicas``-th group of
    ``group_size`` indices of ``dataset`` (a sampler: the indices it yields), padded by repeating
    the first ones so every rank gets as many; ``shuffle`` permutes with a generator seeded by
    the epoch (:meth:`set_epoch`)."""

    def __init__(self, dataset: Sized, num_replicas: Optional[int] = None, rank: Optional[int] = None,
                 shuffle: bool = False, group_size: int = 1) -> None:
        if num_replicas is None or rank is None:
            import torch.distributed as dist

            if not dist.is_available() or not dist.is_initialized():
                raise RuntimeError("give num_replicas and rank, or initialise torch.distributed first")
            num_replicas = dist.get_world_size() if num_replicas is None else num_replicas
            rank = dist.get_rank() if rank is None else rank
        _check_count("num_replicas", num_replicas)
        _check_count("group_size", group_size)
        if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < num_replicas:
            raise ValueError(f"rank={rank!r}: must be an integer in 0..{num_replicas - 1}")
        if len(dataset) % group_size != 0:
            raise ValueError(f"dataset length must be a multiple of group_size: {len(dataset)} and {group_size}")
        self.dataset, self.group_size, self.num_replicas, self.rank = dataset, group_size, num_replicas, rank
        self.epoch = 0
        self.num_group_samples = int(math.ceil(len(dataset) // group_size * 1.0 / num_replicas))
        self.num_samples = self.num_group_samples * group_size
        self.total_size = self.num_samples * num_replicas
        self.shuffle = shuffle

    def _positions(self) -> list[int]:
        """Positions in ``dataset``'s order this rank takes."""
        g = torch.Generator()
        g.manual_seed(self.epoch)
        n = len(self.dataset)
        indices = torch.randperm(n, generator=g).tolist() if self.shuffle else list(range(n))
        indices += indices[: self.total_size - len(indices)]
        groups = torch.reshape(torch.LongTensor(indices), (self.total_size // self.group_size, self.group_size))
        return torch.reshape(groups[self.rank: self.total_size // self.group_size: self.num_replicas, :], (-1,)).tolist()

    def __iter__(self) -> Iterator[int]:
        positions = self._positions()
        if isinstance(self.dataset, Sampler):
            order = list(iter(self.dataset))
            return iter([order[i] for i in positions])
        return iter(positions)

    def __len__(self) -> int:
        return self.num_samples

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch


class EvalDistributedSampler(DistributedSampler):
    """:class:`DistributedSampler` without shuffle, for evaluation: this rank's share of
    ``dataset``'s indices (a sampler, e.g. :class:`UniformClipSampler`), and where it is padded
    to the common length, :class:`PaddedIndex` values (``with_ids`` datasets mark them
    ``video_idx = -1``), so that every view is counted exactly once over all ranks."""

    def __init__(self, dataset: Sized, num_replicas: Optional[int] = None, rank: Optional[int] = None) -> None:
        super().__init__(dataset, num_replicas, rank, shuffle=False)

    def __iter__(self) -> Iterator[int]:
        n = len(self.dataset)
        order = list(iter(self.dataset)) if isinstance(self.dataset, Sampler) else list(range(n))
        starts = range(self.rank, self.total_size, self.num_replicas)
        return iter([order[p] if p < n else PaddedIndex(order[p % n]) for p in starts])
