"""Dataset discovery: classes, labels and video order exactly as torchvision finds them.

``root/<split>/<class>/**/<file>``: classes are the sorted sub-folder names; videos are
listed per class in ``sorted(os.walk(class_dir, followlinks=True))`` order with each
folder's file names sorted, keeping files whose lower-cased name ends with an extension.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

__all__ = ["VideoEntry", "DatasetLayout", "discover", "normalize_extensions"]


@dataclass(frozen=True)
class VideoEntry:
    """One candidate video: its position in the global order, path and label."""

    index: int
    path: str
    relpath: str
    label: int
    class_name: str
    size: int


@dataclass(frozen=True)
class DatasetLayout:
    root: str
    split: str
    classes: tuple[str, ...]
    videos: tuple[VideoEntry, ...]
    empty_classes: tuple[str, ...]


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
    classes = sorted(e.name for e in os.scandir(split_dir) if e.is_dir())
    if not classes:
        raise FileNotFoundError(f"no class folders under {str(split_dir)!r}")
    videos: list[VideoEntry] = []
    empty: list[str] = []
    for label, cls in enumerate(classes):
        class_dir = os.path.join(split_dir, cls)
        found = 0
        for dirpath, _dirs, files in sorted(os.walk(class_dir, followlinks=True)):
            for name in sorted(files):
                if not name.lower().endswith(exts):
                    continue
                path = os.path.join(dirpath, name)
                try:
                    size = os.path.getsize(path)
                except OSError:
                    size = -1
                videos.append(
                    VideoEntry(
                        index=len(videos),
                        path=path,
                        relpath=os.path.relpath(path, root).replace(os.sep, "/"),
                        label=label,
                        class_name=cls,
                        size=size,
                    )
                )
                found += 1
        if not found:
            empty.append(cls)
    return DatasetLayout(str(root), split, tuple(classes), tuple(videos), tuple(empty))
