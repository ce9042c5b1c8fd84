"""UCF101 and HMDB51 as torchvision gives them, from one conversion of the root (``OUT/all``).

:class:`UCF101` and :class:`HMDB51` are map-style: ``ds[i]`` equals torchvision's
``UCF101(root, annotation_path, T, S, R, fold=f, train=t)[i]`` (``HMDB51`` alike), clip ``i``
of the kept videos' clips (:mod:`.folds`), read as :class:`~clipshards.loader.IndexedKinetics`
reads any clip. :class:`StreamingUCF101` and :class:`StreamingHMDB51` are the streaming forms:
:class:`~clipshards.loader.StreamingKinetics` over the kept clips only (the same shuffle,
equal rank counts and resume). The default ``output_format`` is ``"THWC"``, as torchvision's
for these two datasets (Kinetics' is ``"TCHW"``).

``frames_per_clip``, ``step_between_clips`` and ``frame_rate`` keep torchvision's places in
the signature; None means "as converted". On the ``clips`` layout the clips were cut when
converting, so only the converted values are accepted (anything else is a ``ValueError``
saying how to convert for it); the map-style datasets read a ``videos`` layout conversion
too, for any values (clips cut when loading). The streaming forms read the ``clips`` layout.
"""

from __future__ import annotations

import os
from typing import Any, ClassVar, Optional

import numpy as np

from clipshards.convert.folds import FOLDS_SPLIT, HMDB51 as HMDB51_NAME, UCF101 as UCF101_NAME, check_fold

from .arguments import Transform, check_flag, int_option
from .datasets import StreamingKinetics
from .folds import FoldSelection, not_converted, record_clip_counts, select_fold
from .indexed import IndexedKinetics
from .plan import EpochPlan, runs_in_shards

__all__ = ["UCF101", "HMDB51", "StreamingUCF101", "StreamingHMDB51"]


class _FoldDataset(IndexedKinetics):
    """Map-style over the clips of one fold and split of a UCF101/HMDB51 conversion."""

    dataset: ClassVar[str]

    def __init__(
        self,
        url: str | os.PathLike,
        annotation_path: Optional[str | os.PathLike] = None,
        frames_per_clip: Optional[int] = None,
        step_between_clips: Optional[int] = None,
        frame_rate: Optional[float] | str = None,
        fold: int = 1,
        train: bool = True,
        transform: Optional[Transform] = None,
        *,
        output_format: str = "THWC",
        **options: Any,
    ) -> None:
        self.fold, self.train = check_fold(fold), check_flag("train", train)
        try:
            super().__init__(url, FOLDS_SPLIT, frames_per_clip=frames_per_clip, step_between_clips=step_between_clips,
                             frame_rate=frame_rate, output_format=output_format, transform=transform, **options)
        except FileNotFoundError as exc:
            raise FileNotFoundError(not_converted(url, self.dataset, exc)) from exc
        self.selection: FoldSelection = select_fold(self.index, self.dataset, self.fold, self.train,
                                                    super().clips_per_video, annotation_path)

    def __len__(self) -> int:
        return self.selection.num_clips

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.index.url!r}, fold={self.fold}, train={self.train}, "
                f"videos={self.selection.videos.size}, clips={len(self)})")

    @property
    def clips_per_video(self) -> np.ndarray:
        """Clips of each video of the fold and split, in discovery order (torchvision's
        ``video_clips``, a subset of the root's videos): what the clip samplers use."""
        return self.selection.counts

    def get_clip_location(self, i: int) -> tuple[int, int]:
        """``(video_idx, clip_idx)`` of item ``i``, ``video_idx`` counting the fold and split's
        videos (as torchvision's subset does; ``with_ids`` items carry the root-wide index)."""
        local = self._position(i)
        k = int(np.searchsorted(self.selection.ends, local, side="right"))
        return k, local - int(self.selection.ends[k] - self.selection.counts[k])

    def _clip(self, i: int) -> int:
        return int(self.selection.global_clips(self._position(i)))


class UCF101(_FoldDataset):
    """``ds[i]`` is torchvision's ``UCF101(root, annotation_path, frames_per_clip, ...,
    fold=fold, train=train)[i]``, from ``url``, the OUT of ``clipshards convert ROOT OUT
    --dataset ucf101 --annotation-path ANN``. The folds are in the index: ``annotation_path``
    is optional, and a given one is read instead (``trainlist0{fold}.txt``,
    ``testlist0{fold}.txt``). Keyword options as :class:`~clipshards.loader.IndexedKinetics`
    (``storage_options``, ``transport``); labels are the sorted class folders' positions."""

    dataset = UCF101_NAME


class HMDB51(_FoldDataset):
    """``ds[i]`` is torchvision's ``HMDB51(root, annotation_path, frames_per_clip, ...,
    fold=fold, train=train)[i]``, from the OUT of ``clipshards convert ROOT OUT --dataset
    hmdb51 --annotation-path ANN`` (a given ``annotation_path`` is read instead of the
    recorded folds: every ``*test_split{fold}.txt``, videos matched by base name, tag 1 train,
    2 test). Otherwise as :class:`UCF101`."""

    dataset = HMDB51_NAME


class _FoldStreaming(StreamingKinetics):
    """Streaming over the clips of one fold and split: blocks are cut from the kept runs."""

    dataset: ClassVar[str]

    def __init__(
        self,
        url: str | os.PathLike,
        annotation_path: Optional[str | os.PathLike] = None,
        frames_per_clip: Optional[int] = None,
        step_between_clips: Optional[int] = None,
        frame_rate: Optional[float] | str = None,
        fold: int = 1,
        train: bool = True,
        transform: Optional[Transform] = None,
        *,
        output_format: str = "THWC",
        **options: Any,
    ) -> None:
        self.fold, self.train = check_fold(fold), check_flag("train", train)
        try:
            super().__init__(url, FOLDS_SPLIT, frames_per_clip=frames_per_clip, step_between_clips=step_between_clips,
                             frame_rate=frame_rate, output_format=output_format, transform=transform, **options)
        except FileNotFoundError as exc:
            raise FileNotFoundError(not_converted(url, self.dataset, exc)) from exc
        if self.videos is not None:
            raise ValueError(f"{self.index.url} is a videos layout conversion: {type(self).__name__} streams the clips "
                             f"layout; read it with {type(self).__name__.replace('Streaming', '')}(...) (map-style, any "
                             "sampler), or convert without --layout videos")
        self.selection: FoldSelection = select_fold(self.index, self.dataset, self.fold, self.train,
                                                    record_clip_counts(self.index), annotation_path)
        self._runs = runs_in_shards(self.selection.firsts, self.selection.counts, self.index.first_clips,
                                    self.index.num_clips)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.index.url!r}, fold={self.fold}, train={self.train}, "
                f"clips={self.selection.num_clips}, shuffle={self.shuffle}, epoch={self.epoch})")

    def _items(self) -> int:
        """Clips an epoch holds: those of the fold and split (``len`` and saved states count these)."""
        return self.selection.num_clips

    def state_identity(self) -> dict[str, Any]:
        return {**super().state_identity(), "dataset": self.dataset, "fold": self.fold, "train": self.train}

    def _plan(self, epoch: int) -> EpochPlan:
        return EpochPlan(
            runs=self._runs, epoch=int_option("epoch", epoch, 0), shuffle=self.shuffle, seed=self.seed,
            block_size=self.block_size, world_size=self.rank_and_world()[1], remainder=self.remainder,
            shuffle_buffer=self.shuffle_buffer,
        )


class StreamingUCF101(_FoldStreaming):
    """The clips of :class:`UCF101` (same arguments) streamed for training: shuffled by blocks
    and a buffer, equal clip counts on every rank, resumable, as
    :class:`~clipshards.loader.StreamingKinetics` (its keyword options: ``shuffle``, ``seed``,
    ``block_size``, ``errors``, ``rank``, ``world_size`` ...). Each epoch yields every clip of
    the fold and split once (``remainder="pad"`` may repeat a few to fill the last rank)."""

    dataset = UCF101_NAME


class StreamingHMDB51(_FoldStreaming):
    """The clips of :class:`HMDB51` streamed for training, as :class:`StreamingUCF101`."""

    dataset = HMDB51_NAME
