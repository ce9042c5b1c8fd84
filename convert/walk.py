"""Walking a dataset's folders in torchvision's order, safely: each file once, no symlink loop
followed, any file name recorded as valid UTF-8.

torchvision lists a class folder with ``sorted(os.walk(folder, followlinks=True))`` and each
folder's file names sorted; :class:`Walker` gives the same order for a normal tree. Where
torchvision goes wrong it differs, and says so in :attr:`Walker.notes`:

- a folder already on the walk's current path (a symlink back to an ancestor) is a loop:
  not descended (``os.walk`` would descend until the path is too long, listing the same
  videos dozens of times);
- a file already met (same ``st_dev``/``st_ino``: reached again through a symlink or a hard
  link) is a duplicate: listed once, where the walk first meets it;
- a name that is not valid UTF-8 is converted; it is recorded with each undecodable byte
  written ``\\xNN`` (:func:`escape_surrogates`), so index, report and logs stay valid UTF-8.
  (A POSIX file name cannot hold a NUL byte; newlines and leading dashes need nothing.)

Each file gets a :attr:`FoundFile.stamp` for the conversion's fingerprint: its modification
time, or a hash of its first and last MiB where the filesystem reports none (mtime 0).
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from typing import Optional, Sequence

logger = logging.getLogger(__name__)

__all__ = ["FoundFile", "DiscoveryNote", "Walker", "escape_surrogates", "file_stamp", "HASHED_BYTES"]

HASHED_BYTES = 1 << 20
"""Bytes hashed at each end of a file whose filesystem reports no modification time."""


def escape_surrogates(text: str) -> str:
    """``text`` with the undecodable bytes of a file name (``os.fsdecode``'s surrogate escapes)
    written as ``\\xNN``: valid UTF-8 for JSON and logs; text without them is returned as is."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return os.fsencode(text).decode("utf-8", "backslashreplace")


def file_stamp(path: str, st: os.stat_result) -> str:
    """What tells a changed file from an unchanged one of the same size: ``m<mtime in ns>``, or
    ``h<hash of the first and last MiB>`` where the filesystem reports no mtime (0)."""
    if st.st_mtime_ns:
        return f"m{st.st_mtime_ns}"
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            digest.update(fh.read(HASHED_BYTES))
            if st.st_size > HASHED_BYTES:
                fh.seek(max(HASHED_BYTES, st.st_size - HASHED_BYTES))
                digest.update(fh.read(HASHED_BYTES))
    except OSError:
        return ""  # unreadable: the probe finds out and reports it
    return "h" + digest.hexdigest()


@dataclass(frozen=True)
class FoundFile:
    """A file the walk keeps: ``path`` opens it; ``relpath`` (to the walk's root, ``/``-separated,
    surrogates escaped) records it; ``size`` is -1 when it cannot be stat'ed (a broken link)."""

    path: str
    relpath: str
    size: int
    stamp: str


@dataclass(frozen=True)
class DiscoveryNote:
    """Something the walk did differently from torchvision, and why.

    ``kind`` is ``loop`` (folder not descended), ``duplicate`` (file listed once),
    ``name`` (not valid UTF-8: converted under its escaped name) or ``unlistable``.
    """

    kind: str
    path: str
    reason: str

    def to_json(self) -> dict[str, str]:
        return {"kind": self.kind, "path": self.path, "reason": self.reason}


def _undecodable(name: str) -> bool:
    return escape_surrogates(name) != name


def _key(st: os.stat_result) -> Optional[tuple[int, int]]:
    """A file's identity; None where the filesystem gives no inode numbers (st_ino 0)."""
    return (st.st_dev, st.st_ino) if st.st_ino else None


class Walker:
    """Lists the files of folders under ``root`` whose lower-cased names end with one of
    ``extensions``, in torchvision's order. One walker per split: a file met in an earlier
    folder (another class) is a duplicate too."""

    def __init__(self, root: str | os.PathLike, extensions: Sequence[str]):
        self.root = os.fspath(root)
        self.extensions = tuple(extensions)
        self.notes: list[DiscoveryNote] = []
        self._seen: dict[tuple[int, int], str] = {}  # file identity -> relpath of its first listing

    def relpath(self, path: str) -> str:
        return escape_surrogates(os.path.relpath(path, self.root).replace(os.sep, "/"))

    def note(self, kind: str, path: str, reason: str) -> None:
        note = DiscoveryNote(kind, self.relpath(path), reason)
        logger.warning("%s: %s", note.path, reason)
        self.notes.append(note)

    def files(self, top: str) -> list[FoundFile]:
        """The matching files under folder ``top``: folders in sorted path order, names sorted in each."""
        found = []
        for dirpath, names in sorted(self._folders(top)):
            where = self.relpath(dirpath)
            for name in sorted(names):
                if name.lower().endswith(self.extensions):
                    f = self._file(os.path.join(dirpath, name), f"{where}/{escape_surrogates(name)}")
                    if f is not None:
                        found.append(f)
        return found

    def _folders(self, top: str) -> list[tuple[str, list[str]]]:
        """``(folder, file names)`` of every folder under ``top`` (symlinks followed, loops not)."""
        try:
            key = _key(os.stat(top))
        except OSError:
            return []
        out = []
        stack: list[tuple[str, dict[tuple[int, int], str]]] = [(top, {key: top} if key else {})]
        while stack:
            folder, ancestors = stack.pop()
            try:
                with os.scandir(folder) as it:
                    entries = list(it)
            except OSError as exc:
                self.note("unlistable", folder, f"folder cannot be listed ({exc.strerror or exc}); its files are not converted")
                continue
            names = []
            for entry in entries:
                sub = self._subfolder(entry, ancestors)
                if sub is None:
                    names.append(entry.name)
                elif sub:
                    stack.append(sub)
            out.append((folder, names))
        return out

    def _subfolder(self, entry: os.DirEntry, ancestors: dict[tuple[int, int], str]) -> Optional[tuple]:
        """None for a file (as ``os.walk`` decides: anything that is not a folder, links
        followed); ``()`` for a folder not to descend; else the folder with its walk path."""
        try:
            if not entry.is_dir():
                return None
        except OSError:
            return None
        try:
            key = _key(entry.stat())
        except OSError:
            return ()  # gone since listed
        if key is not None and key in ancestors:
            self.note("loop", entry.path, f"symlink loop: leads back to {self.relpath(ancestors[key])!r}; not followed")
            return ()
        if _undecodable(entry.name):
            self.note("name", entry.path, "folder name is not valid UTF-8: its files are recorded with each undecodable byte as \\xNN")
        return (entry.path, {**ancestors, key: entry.path} if key else ancestors)

    def _file(self, path: str, relpath: str) -> Optional[FoundFile]:
        try:
            st = os.stat(path)
        except OSError:
            return FoundFile(path, relpath, -1, "")  # the probe reports why it cannot be read
        key = _key(st)
        first = self._seen.get(key) if key else None
        if first is not None:
            self.note("duplicate", path, f"same file as {first!r} (reached again through a link); converted once, there")
            return None
        if key:
            self._seen[key] = relpath
        if _undecodable(os.path.basename(path)):
            self.note("name", path, "file name is not valid UTF-8: converted, recorded with each undecodable byte as \\xNN")
        return FoundFile(path, relpath, st.st_size, file_stamp(path, st))

