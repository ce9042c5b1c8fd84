"""UCF101 and HMDB51 folds: which videos each fold trains and tests on, read from the
datasets' annotation files with torchvision's rules.

- UCF101: ``ANN/trainlist0{fold}.txt`` and ``ANN/testlist0{fold}.txt``; on each line the first
  space-separated token is a path relative to the dataset root with ``/`` separators (train lists
  add the 1-based class number, never used). A video belongs when its root-relative path equals
  the token.
- HMDB51: every ``ANN/*test_split{fold}.txt``; each line is ``<file name> <tag>``, tag 1 train,
  2 test, 0 unused. A video belongs when its *base name* carries the tag in any of those files.

A name listed but absent from the root is silently absent (as in torchvision); a video no list
names is in no split. Labels never come from these files: they are the sorted class folders.

Both halves use this module: the converter records each video's membership of folds 1 to 3
(:meth:`FoldLists.membership`, a ``TRAIN | TEST`` bit set per fold) in the index, and the
loaders read a given ``annotation_path`` with the same rules. A missing file or a line that
cannot mean what torchvision reads it as is an :class:`AnnotationError` naming the file (and
line), where torchvision would silently select nothing or raise an unexplained error.
"""

from __future__ import annotations

import glob
import hashlib
import os
import re
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

from .walk import escape_surrogates

__all__ = [
    "AnnotationError",
    "FoldLists",
    "read_fold_lists",
    "fold_files",
    "keeps",
    "check_fold",
    "parse_ucf101_line",
    "parse_hmdb51_line",
    "FOLDS",
    "FOLDS_SPLIT",
    "TRAIN",
    "TEST",
    "KINETICS",
    "UCF101",
    "HMDB51",
    "DATASETS",
    "FOLD_DATASETS",
    "FOLD_EXTENSIONS",
]

KINETICS, UCF101, HMDB51 = "kinetics", "ucf101", "hmdb51"
DATASETS = (KINETICS, UCF101, HMDB51)
"""Values of the converter's ``dataset`` option: the layout of ROOT and where splits come from."""
FOLD_DATASETS = (UCF101, HMDB51)
"""Datasets laid out as ``ROOT/<class>/<video>.avi`` whose splits come from annotation files."""
FOLDS = (1, 2, 3)
FOLDS_SPLIT = "all"
"""The output folder of a UCF101/HMDB51 conversion (``OUT/all/``): every video of ROOT, once;
the loaders choose a fold and split by filtering videos."""
FOLD_EXTENSIONS = ("avi",)
"""torchvision fixes ``extensions=("avi",)`` for UCF101 and HMDB51: an ``.mp4`` is not one of their videos."""
TRAIN, TEST = 1, 2
"""Bits of a video's membership of one fold (0: in neither list; 3: listed in both)."""
_TAGS = {1: TRAIN, 2: TEST}  # HMDB51's tags; 0 is "unused"
_NUMBER = re.compile(r"\d+")


class AnnotationError(ValueError):
    """A missing or malformed annotation file; the message names the file, and the line."""


def check_fold(fold: Any) -> int:
    """``fold`` checked: 1, 2 or 3 (torchvision raises ``ValueError`` for anything else)."""
    if isinstance(fold, bool) or not isinstance(fold, int) or fold not in FOLDS:
        raise ValueError(f"fold={fold!r}: must be 1, 2 or 3")
    return fold


def keeps(membership: Any, train: bool) -> Any:
    """Whether a video with this membership of a fold is in its train (or test) split (for an
    int, a bool; for an integer array, a boolean array)."""
    return (membership & (TRAIN if train else TEST)) != 0


def fold_files(dataset: str, folder: str | os.PathLike, fold: int) -> list[tuple[str, int]]:
    """``(file name, bit)`` of the files that define ``fold`` of ``dataset`` in ``folder``
    (bit 0: HMDB51's files tag train and test themselves); an :class:`AnnotationError` names
    what is missing."""
    folder = os.fspath(folder)
    if dataset == UCF101:
        names = [(f"trainlist{fold:02d}.txt", TRAIN), (f"testlist{fold:02d}.txt", TEST)]
        for name, _ in names:
            if not os.path.isfile(os.path.join(folder, name)):
                raise AnnotationError(f"{os.path.join(folder, name)}: no such file (UCF101's annotation folder "
                                      "holds trainlist01.txt .. trainlist03.txt and testlist01.txt .. testlist03.txt)")
        return names
    if dataset == HMDB51:
        pattern = os.path.join(glob.escape(folder), f"*test_split{fold}.txt")
        found = sorted(os.path.basename(p) for p in glob.glob(pattern) if os.path.isfile(p))
        if not found:
            raise AnnotationError(f"{os.path.join(folder, f'*test_split{fold}.txt')}: no such file (HMDB51's "
                                  "annotation folder holds <class>_test_split1.txt .. <class>_test_split3.txt)")
        return [(name, 0) for name in found]
    raise ValueError(f"dataset={dataset!r}: annotation files belong to {FOLD_DATASETS}")


def _lines(path: str) -> tuple[bytes, list[str]]:
    """The file's bytes and its lines as text (read with universal newlines, as ``open`` does)."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise AnnotationError(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    text = data.decode("utf-8", "surrogateescape").replace("\r\n", "\n").replace("\r", "\n")
    return data, text.split("\n")


def parse_ucf101_line(line: str, where: str) -> Optional[str]:
    """The root-relative video path a UCF101 list line names (None for a blank line)."""
    fields = line.strip().split(" ")
    if not fields[0]:
        return None
    token = fields[0]
    parts = token.split("/")
    rest = line.split()[1:]
    if (len(parts) < 2 or any(p in ("", ".", "..") for p in parts) or any(c.isspace() for c in token)
            or len(rest) > 1 or (rest and not _NUMBER.fullmatch(rest[0]))):
        raise AnnotationError(f"{where}: {line.strip()!r} is not '<class>/<video>.avi' (optionally followed by "
                              "the class number)")
    return escape_surrogates(token)


def parse_hmdb51_line(line: str, where: str) -> Optional[tuple[str, int]]:
    """``(video file name, tag)`` of an HMDB51 split line (None for a blank line)."""
    fields = line.split()
    if not fields:
        return None
    name = fields[0]
    try:
        tag = int(fields[1]) if len(fields) == 2 else -1
    except ValueError:
        tag = -1
    if tag not in (0, 1, 2) or "/" in name:
        raise AnnotationError(f"{where}: {line.strip()!r} is not '<video file name> <tag>' with tag 0 (unused), "
                              "1 (train) or 2 (test)")
    return escape_surrogates(name), tag


@dataclass(frozen=True)
class FoldLists:
    """What a dataset's annotation files say, fold by fold: the names listed as train and as
    test (UCF101: root-relative paths; HMDB51: base names), and each file's SHA-256."""

    dataset: str
    files: tuple[dict[str, Any], ...]  # {"fold", "name", "sha256"} in fold, then name order
    train: Mapping[int, frozenset[str]]
    test: Mapping[int, frozenset[str]]

    @property
    def folds(self) -> tuple[int, ...]:
        return tuple(sorted(self.train))

    def key(self, relpath: str) -> str:
        """What the files name a video by: its root-relative path (UCF101) or base name (HMDB51)."""
        return relpath.rsplit("/", 1)[-1] if self.dataset == HMDB51 else relpath

    def membership(self, relpath: str) -> list[int]:
        """``TRAIN | TEST`` bits of the video at ``relpath`` (``/``-separated) for each fold read."""
        k = self.key(relpath)
        return [(TRAIN if k in self.train[f] else 0) | (TEST if k in self.test[f] else 0) for f in self.folds]

    def to_json(self) -> dict[str, Any]:
        """The index's record of the files: which dataset, and each file's fold, name and checksum."""
        return {"dataset": self.dataset, "files": [dict(f) for f in self.files]}


def read_fold_lists(dataset: str, annotation_path: str | os.PathLike, folds: Sequence[int] = FOLDS) -> FoldLists:
    """Read ``dataset``'s annotation files for ``folds`` from the folder ``annotation_path``."""
    folder = os.fspath(annotation_path)
    if not os.path.isdir(folder):
        raise AnnotationError(f"annotation_path {folder!r} is not a folder (give the folder holding the "
                              f"{dataset} split files)")
    files: list[dict[str, Any]] = []
    train: dict[int, set[str]] = {}
    test: dict[int, set[str]] = {}
    for fold in folds:
        train[fold], test[fold] = set(), set()
        for name, bit in fold_files(dataset, folder, check_fold(fold)):
            path = os.path.join(folder, name)
            data, lines = _lines(path)
            files.append({"fold": fold, "name": escape_surrogates(name), "sha256": hashlib.sha256(data).hexdigest()})
            for n, line in enumerate(lines, 1):
                if dataset == UCF101:
                    token = parse_ucf101_line(line, f"{path}:{n}")
                    if token is not None:
                        (train if bit == TRAIN else test)[fold].add(token)
                else:
                    entry = parse_hmdb51_line(line, f"{path}:{n}")
                    if entry is not None and entry[1]:
                        (train if _TAGS[entry[1]] == TRAIN else test)[fold].add(entry[0])
    return FoldLists(dataset, tuple(files), {f: frozenset(s) for f, s in train.items()},
                     {f: frozenset(s) for f, s in test.items()})
