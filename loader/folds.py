"""Which clips a UCF101 or HMDB51 fold keeps, from a conversion of the whole root (``OUT/all``).

The converter records in each video record of the index the video's membership of folds 1
to 3 (``folds``: ``TRAIN | TEST`` bits, see :mod:`clipshards.convert.folds`). A fold and split
keeps the videos with the wanted bit, in discovery order; on the ``clips`` layout each video's
clips are the run ``first_clip .. first_clip + clips - 1`` of global clips, so the kept clips
are a union of runs and local clip ``i`` is found with a search over the runs' cumulative
counts (torchvision's global clip index over the kept videos, semantics rule 7).

On the ``videos`` layout the clips are cut when loading; the global clip order runs over
the videos in the same way, from each video's clip count for the chosen clip settings.

A given ``annotation_path`` overrides the recorded folds: its files are read with the
converter's rules (:func:`~clipshards.convert.folds.read_fold_lists`) and matched against
the recorded video paths.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from clipshards.convert.folds import FOLDS, FOLDS_SPLIT, check_fold, keeps, read_fold_lists
from clipshards.convert.schema import ShardFormatError

from .index import DatasetIndex

logger = logging.getLogger(__name__)

__all__ = ["FoldSelection", "select_fold", "record_clip_counts", "fold_memberships", "not_converted"]


@dataclass(frozen=True)
class FoldSelection:
    """The kept videos of one fold and split (positions in the index's video records, in
    discovery order) and their clips: ``counts[k]`` clips (maybe none) from global clip ``firsts[k]``."""

    videos: np.ndarray
    firsts: np.ndarray
    counts: np.ndarray
    ends: np.ndarray = field(init=False, repr=False)  # cumulative counts: local clips before each video's end

    def __post_init__(self) -> None:
        object.__setattr__(self, "ends", np.cumsum(self.counts))

    @property
    def num_clips(self) -> int:
        return int(self.ends[-1]) if self.ends.size else 0

    def global_clips(self, local: np.ndarray | int) -> np.ndarray | int:
        """Global clip index of each local clip index (``0 <= local < num_clips``)."""
        ends = self.ends
        k = np.searchsorted(ends, local, side="right")
        out = self.firsts[k] + (np.asarray(local) - (ends[k] - self.counts[k]))
        return int(out) if np.ndim(out) == 0 else out


def record_clip_counts(index: DatasetIndex) -> np.ndarray:
    """Clips of each video record of a ``clips`` layout output (0 for a skipped one), in
    discovery order: the stored clips run over the videos in that order."""
    try:
        return np.array([v["clips"] if v["status"] == "ok" else 0 for v in index.videos], dtype=np.int64)
    except (KeyError, TypeError, ValueError) as exc:
        raise ShardFormatError(f"{index.url}: malformed video records ({exc!r})") from exc


def not_converted(url: str | os.PathLike, dataset: str, exc: BaseException) -> str:
    """What to say when ``url`` holds no ``OUT/all``: how a UCF101/HMDB51 root is converted."""
    return (f"{os.fspath(url)} holds no {dataset} conversion (OUT/{FOLDS_SPLIT}): convert the dataset root with "
            f"`clipshards convert ROOT OUT --dataset {dataset} --annotation-path DIR` ({exc})")


def _records(index: DatasetIndex, dataset: str) -> list[dict[str, Any]]:
    """The index's video records, after checking that it is a ``dataset`` conversion."""
    converted = index.options.get("dataset", "kinetics")
    if converted != dataset:
        raise ValueError(f"{index.url} holds a {converted} conversion, not {dataset}: convert the dataset root with "
                         f"--dataset {dataset} --annotation-path DIR")
    return index.videos


def fold_memberships(index: DatasetIndex, dataset: str, fold: int,
                     annotation_path: Optional[str | os.PathLike] = None) -> np.ndarray:
    """Each video's ``TRAIN | TEST`` bits for ``fold``: as recorded, or read from the files in
    ``annotation_path`` (logged when they differ from those the conversion recorded)."""
    fold = check_fold(fold)
    records = _records(index, dataset)
    where = index.transport.url_of("index.json")
    if annotation_path is None:
        try:
            return np.array([v["folds"][fold - 1] for v in records], dtype=np.int64)
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise ShardFormatError(f"{where}: video records without folds 1..{len(FOLDS)} ({exc!r})") from exc
    lists = read_fold_lists(dataset, annotation_path, folds=(fold,))
    recorded = [f for f in (index.annotations or {}).get("files", []) if f.get("fold") == fold]
    if [dict(f) for f in lists.files] != recorded:
        logger.info("the fold %d files in %s differ from those %s was converted with: using them", fold,
                    os.fspath(annotation_path), index.url)
    return np.array([lists.membership(str(v["path"]))[0] for v in records], dtype=np.int64)


def select_fold(index: DatasetIndex, dataset: str, fold: int, train: bool, clips_per_video: np.ndarray,
                annotation_path: Optional[str | os.PathLike] = None) -> FoldSelection:
    """The videos and clips of ``fold`` (1, 2 or 3), train or test split, of a ``dataset``
    conversion; ``clips_per_video``: each video's clips, in discovery order (the global clip
    order runs over them, whatever the layout)."""
    member = fold_memberships(index, dataset, fold, annotation_path)
    counts = np.zeros(member.size, dtype=np.int64)
    counts[: min(member.size, clips_per_video.size)] = clips_per_video[: member.size]
    firsts = np.cumsum(counts) - counts
    kept = np.flatnonzero(keeps(member, train))
    logger.debug("%s fold %d %s: %d videos, %d clips", index.url, fold, "train" if train else "test",
                 kept.size, int(counts[kept].sum()))
    return FoldSelection(kept, firsts[kept], counts[kept])
