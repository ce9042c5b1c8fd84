"""Dataset discovery: classes, labels and video order exactly as torchvision finds them.

``root/<split>/<class>/**/<file>`` (:func:`discover`; UCF101 and HMDB51 have no split folder:
``root/<class>/**/<file>``, :func:`discover_classes`): classes are the sorted sub-folder names; videos are
listed per class in ``sorted(os.walk(class_dir, followlinks=True))`` order with each
folder's file names sorted, keeping files whose lower-cased name ends with an extension.
The walk is :class:`~clipshards.convert.walk.Walker`'s: symlink loops are not followed, a file
reached twice is listed once, and names that are not UTF-8 are recorded escaped; each such
case is a note in :attr:`DatasetLayout.notes`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from .walk import DiscoveryNote, Walker, escape_surrogates

__all__ = ["VideoEntry", "DatasetLayout", "discover", "discover_classes", "normalize_extensions"]


@dataclass(frozen=True)
class VideoEntry:
    """One candidate video: its position in the global order, path and label.

    ``path`` opens the file; ``relpath`` and ``class_name`` are valid UTF-8 (see
    :func:`~clipshards.convert.walk.escape_surrogates`); ``stamp`` tells a changed file from
    an unchanged one of the same size (:func:`~clipshards.convert.walk.file_stamp`).
    """

    index: int
    path: str
    relpath: str
    label: int
    class_name: str
    size: int
    stamp: str = ""
    folds: tuple[int, ...] = ()  # UCF101/HMDB51: TRAIN|TEST bits for folds 1..3 (see .folds); () for Kinetics


@dataclass(frozen=True)
class DatasetLayout:
    root: str
    split: str
    classes: tuple[str, ...]
    videos: tuple[VideoEntry, ...]
    empty_classes: tuple[str, ...]
    notes: tuple[DiscoveryNote, ...] = ()  # loops, duplicates, odd names: what the walk did and why
    annotations: Optional[Mapping[str, Any]] = None  # UCF101/HMDB51: the annotation files read (FoldLists.to_json)


def normalize_extensions(extensions: Sequence[str] | str) -> tuple[str, ...]:
    """Extensions as torchvision takes them (no dot), lower-cased; a leading dot is dropped."""
    if isinstance(extensions, str):
        extensions = [e for e in extensions.split(",")]
    out = []
    for ext in extensions:
        e = ext.strip().lower().lstrip(".")
        if not e:
            raise ValueError(f"empty extension in {list(extensions)!r}")
        out.append(e)
    if not out:
        raise ValueError("extensions must name at least one extension, e.g. ('avi', 'mp4')")
    return tuple(out)


def discover(root: str | os.PathLike, split: str, extensions: Sequence[str]) -> DatasetLayout:
    """List classes and videos of ``root/split`` in torchvision's order.

    A class folder without a matching file is kept in the class list (labels must not shift)
    and reported in ``empty_classes``; torchvision raises there, losing the whole dataset.
    """
    exts = normalize_extensions(extensions)
    split_dir = Path(root) / split
    if not split_dir.is_dir():
        raise FileNotFoundError(f"no split folder {str(split_dir)!r}: expected ROOT/{split}/<class>/<video>")
    return _discover_in(root, split_dir, split, exts)


def discover_classes(root: str | os.PathLike, extensions: Sequence[str], *, split: str) -> DatasetLayout:
    """List classes and videos of ``root/<class>/...`` (UCF101, HMDB51: no split folder, the
    splits come from annotation files) in torchvision's order, recorded as split ``split``."""
    if not Path(root).is_dir():
        raise FileNotFoundError(f"no dataset folder {os.fspath(root)!r}: expected ROOT/<class>/<video>.avi")
    return _discover_in(root, Path(root), split, normalize_extensions(extensions))


def _discover_in(root: str | os.PathLike, split_dir: Path, split: str, exts: tuple[str, ...]) -> DatasetLayout:
    """Classes (the sorted sub-folders of ``split_dir``) and their videos, paths relative to ``root``."""
    folders = sorted(e.name for e in os.scandir(split_dir) if e.is_dir())
    if not folders:
        raise FileNotFoundError(f"no class folders under {str(split_dir)!r}")
    walker = Walker(root, exts)
    classes = [escape_surrogates(name) for name in folders]
    videos: list[VideoEntry] = []
    empty: list[str] = []
    for label, (folder, cls) in enumerate(zip(folders, classes)):
        if cls != folder:
            walker.note("name", os.path.join(split_dir, folder), "class folder name is not valid UTF-8: recorded escaped")
        found = walker.files(os.path.join(split_dir, folder))
        for f in found:
            videos.append(VideoEntry(len(videos), f.path, f.relpath, label, cls, f.size, f.stamp))
        if not found:
            empty.append(cls)
    return DatasetLayout(str(root), split, tuple(classes), tuple(videos), tuple(empty), tuple(walker.notes))
