"""Which clips of a ``videos`` layout output an epoch of :class:`~clipshards.loader.StreamingKinetics` takes.

With ``clips_per_video=k`` each epoch takes ``k`` clips of every video: ``"random"`` draws
``min(k, n)`` distinct clips of a video of ``n`` clips, afresh each epoch from ``(seed, epoch)``
(the SlowFast / PyTorchVideo training recipe, and what torchvision's ``RandomClipSampler``
draws); ``"uniform"`` takes ``k`` equally spaced ones, ``floor(j (n - 1) / (k - 1))``, repeating
clips of a video with fewer (the multi-view test recipe, torchvision's ``UniformClipSampler``
computed exactly). Without ``clips_per_video`` an epoch takes every clip. The epoch's clips
are then shuffled, cut for ranks and workers and resumed exactly as any epoch
(:class:`~clipshards.loader.plan.EpochPlan` over them); their count, and so ``len()``, is the
same every epoch. A clip is read on its own, just its frames and its audio window
(:mod:`.video_reader`, :mod:`.video_ranges`), so blocks of one clip and no shuffle buffer are the defaults.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Optional

import numpy as np

from clipshards.convert.schema import LAYOUT_VIDEOS

from .arguments import check_choice, int_option
from .index import DatasetIndex
from .plan import EpochPlan
from .reader import ShardReadError
from .video_clips import ClipTable, resolve_clip_settings
from .video_reader import VideoClip, VideoClipReader, open_table

__all__ = ["VideoEpochs", "CLIP_SAMPLINGS", "video_epochs", "random_clips", "uniform_clips"]

CLIP_SAMPLINGS = ("random", "uniform")
_CHOICE_STREAM = 2
_SMALL = 4  # a video with fewer than this many times k clips draws its k by a permutation


def random_clips(counts: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """``min(k, n)`` distinct clips of each video of ``counts`` (global clip indices, by video):
    all of a video with at most ``k``; else a uniform draw without replacement (vectorised:
    rows drawn with replacement are drawn again while they repeat a clip)."""
    counts = np.asarray(counts, dtype=np.int64)
    firsts = np.cumsum(counts) - counts
    out = [np.repeat(firsts[counts <= k], counts[counts <= k]) + _within(counts[counts <= k])]
    small = np.flatnonzero((counts > k) & (counts < _SMALL * k))
    for v in small.tolist():
        out.append(np.sort(rng.permutation(int(counts[v]))[:k]) + firsts[v])
    big = np.flatnonzero(counts >= _SMALL * k)
    if big.size:
        n = counts[big][:, None]
        draw = np.sort(rng.integers(0, n, size=(big.size, k)), axis=1)
        while True:
            again = np.flatnonzero((np.diff(draw, axis=1) == 0).any(axis=1))
            if not again.size:
                break
            draw[again] = np.sort(rng.integers(0, n[again], size=(again.size, k)), axis=1)
        out.append((draw + firsts[big][:, None]).ravel())
    return np.sort(np.concatenate(out))


def uniform_clips(counts: np.ndarray, k: int) -> np.ndarray:
    """``k`` equally spaced clips of each video with clips (global clip indices, by video):
    clip ``floor(j (n - 1) / (k - 1))`` for ``j < k`` (the first, for ``k = 1``)."""
    counts = np.asarray(counts, dtype=np.int64)
    firsts = (np.cumsum(counts) - counts)[counts > 0]
    n = counts[counts > 0][:, None]
    j = np.arange(k, dtype=np.int64)[None, :]
    within = (j * (n - 1)) // (k - 1) if k > 1 else np.zeros_like(n)
    return (firsts[:, None] + within).ravel()


def _within(counts: np.ndarray) -> np.ndarray:
    return np.arange(int(counts.sum()), dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)


class VideoEpochs:
    """The clips each epoch takes from a ``videos`` layout output, and reading them."""

    def __init__(self, reader: VideoClipReader, clips_per_video: Optional[int], clip_sampling: str, seed: int) -> None:
        self.reader, self.seed = reader, seed
        self.clips_per_video = int_option("clips_per_video", clips_per_video, 1, allow_none=True)
        self.clip_sampling = check_choice("clip_sampling", clip_sampling, CLIP_SAMPLINGS)
        counts, k = reader.clips.counts, self.clips_per_video
        if k is None:
            self.num_items = reader.clips.num_clips
        elif clip_sampling == "random":
            self.num_items = int(np.minimum(counts, k).sum())
        else:
            self.num_items = int(k * np.count_nonzero(counts))
        self._cached: tuple[int, Optional[np.ndarray]] = (-1, None)

    def identity(self) -> dict[str, Any]:
        """The settings a saved position is valid for."""
        c = self.reader.clips
        return {"frames_per_clip": c.frames_per_clip, "step_between_clips": c.step_between_clips,
                "frame_rate": c.frame_rate, "clips_per_video": self.clips_per_video, "clip_sampling": self.clip_sampling}

    def items(self, epoch: int) -> np.ndarray:
        """Global clips of ``epoch`` (by video, before the shuffle): the same in every process."""
        if self._cached[0] == epoch and self._cached[1] is not None:
            return self._cached[1]
        counts, k = self.reader.clips.counts, self.clips_per_video
        if k is None:
            items = np.arange(self.num_items, dtype=np.int64)
        elif self.clip_sampling == "uniform":
            items = uniform_clips(counts, k)
        else:
            items = random_clips(counts, k, np.random.default_rng([self.seed, epoch, _CHOICE_STREAM]))
        self._cached = (epoch, items)
        return items

    def outputs(self, plan: EpochPlan, rank: int, num_workers: int, worker: int, skip: int,
                make: Callable[[VideoClip, bool], Any], *, defer_jpeg: bool = False) -> tuple[int, Iterator[Any]]:
        """``(count, outputs)`` of one worker of one rank: its clips in order, the first ``skip``
        left out, each ``make(clip, padded)`` (``padded``: a repeat that only evens out the ranks)
        or the :class:`ShardReadError` that made it unreadable (``defer_jpeg``: see
        :meth:`VideoClipReader.fetch_many`)."""
        positions, order = plan.worker_order(rank, num_workers, worker)
        clips = self.items(plan.epoch)[positions]
        padded_from = plan.padded_from(rank, num_workers, worker)
        return len(clips), self._read(clips, order, skip, padded_from, make, defer_jpeg)

    def _read(self, clips: np.ndarray, order: Iterator[int], skip: int, padded_from: int,
              make: Callable[[VideoClip, bool], Any], defer_jpeg: bool) -> Iterator[Any]:
        for t, p in enumerate(order):
            if t < skip:
                continue
            try:
                yield make(self.reader.fetch(int(clips[p]), defer_jpeg=defer_jpeg), p >= padded_from)
            except ShardReadError as exc:
                yield exc


def video_epochs(index: DatasetIndex, *, frames_per_clip: Optional[int], step_between_clips: Optional[int],
                 frame_rate: Optional[float] | str, clips_per_video: Optional[int], clip_sampling: str,
                 seed: int) -> Optional[VideoEpochs]:
    """The :class:`VideoEpochs` of a ``videos`` layout output; None for a ``clips`` layout one,
    whose clip settings are checked (they were fixed when converting) and which takes every clip."""
    settings = resolve_clip_settings(index.options, index.layout, frames_per_clip, step_between_clips, frame_rate)
    if index.layout != LAYOUT_VIDEOS:
        if clips_per_video is not None:
            raise ValueError(f"clips_per_video={clips_per_video!r}: needs a videos layout output (convert with "
                             "--layout videos); a clips layout output yields each stored clip once an epoch")
        check_choice("clip_sampling", clip_sampling, CLIP_SAMPLINGS)
        return None
    reader = VideoClipReader(index, ClipTable(open_table(index), *settings))
    return VideoEpochs(reader, clips_per_video, clip_sampling, seed)
