"""The index of a converted split: classes, shards, clip count, and each clip's byte range.

Opening reads the head of ``index.json`` only: the converter writes it with sorted keys, so
the per-video records (``"videos"``, the one part that grows with the number of videos)
come last and are left unread until :attr:`DatasetIndex.videos` is asked for. Clip byte
ranges come from ``offsets.npy`` in pages read on first use (:mod:`.offsets`), so neither
start-up nor memory grows with the number of videos or clips. An output appended to
(``convert --append``) also has an extents table, read whole when opened: a row per run of
clips stored back to back in one shard, so it grows with the appends' changes, not the clips.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import posixpath
from dataclasses import dataclass
from typing import Any, Mapping, Optional

import numpy as np

from clipshards.convert.extents import EXTENTS_NAME, generation_of, read_extents
from clipshards.convert.schema import (
    CODECS,
    INDEX_NAME,
    LAYOUT_CLIPS,
    OFFSETS_COLUMNS,
    OFFSETS_NAME,
    ShardFormatError,
    check_index_version,
    check_plain_name,
    checksum_of,
    entry_checksum,
)
from clipshards.convert.storage import Location, reach

from .offsets import LEGACY_COLUMNS, OFFSETS_PAGE, TAR_END_BYTES, ClipOffsets, PageRules
from .transport import Transport, TransportOptions

logger = logging.getLogger(__name__)

__all__ = ["DatasetIndex", "ShardEntry", "ClassesFromIndex", "ClipLimits", "OFFSETS_PAGE", "INDEX_CHUNK",
           "INDEX_HEAD_LIMIT", "split_url", "missing_split"]

INDEX_CHUNK = 64 * 1024
MAX_LISTED = 100  # sub-folders of a url looked into for the splits it holds
INDEX_HEAD_LIMIT = 256 << 20  # index.json before its "videos": options, classes, shards (~150 bytes each)
_VIDEOS_KEY = b',"videos":['


@dataclass(frozen=True)
class ShardEntry:
    """One shard as the index lists it; clips ``first_clip .. first_clip + clips - 1`` live in it.
    In an output appended to, one *extent* (:mod:`clipshards.convert.extents`): those clips lie
    back to back in bytes ``[start, end)`` of shard file ``name`` (``end`` -1: up to the file's
    end-of-archive blocks, as in a shard of a fresh conversion, which starts at byte 0)."""

    name: str
    clips: int
    first_clip: int
    bytes: int
    checksum: str = ""  # "<algorithm>:<hex digest>" as the index records it, "" if it does not
    start: int = 0
    end: int = -1

    @property
    def stop(self) -> int:
        """Where its last clip ends: ``end``, or before the file's two end-of-archive blocks."""
        return self.end if self.end >= 0 else self.bytes - TAR_END_BYTES


def split_url(url: str | os.PathLike, split: str) -> str:
    """``url/split`` for a local path or an fsspec URL."""
    base = os.fspath(url)
    if not base:
        raise ValueError("url is empty: give the folder or URL that was the converter's OUT")
    if not isinstance(split, str) or not split or "/" in split or split in (".", ".."):
        raise ValueError(f"split={split!r}: expected a split name such as 'train'")
    return posixpath.join(base.rstrip("/") or "/", split) if "://" in base else os.path.join(base, split)


@dataclass(frozen=True)
class ClipLimits:
    """What every clip of a split must be, from the index head: its frame count, frames no
    larger than the largest the converter wrote (refused before decoding), a label naming a class."""

    classes: int
    frames: Optional[int] = None  # frames_per_clip
    max_frame: Optional[tuple[int, int]] = None  # (height, width); None: not known yet (version 1)

    @classmethod
    def from_head(cls, head: Mapping[str, Any], options: Mapping[str, Any], classes: int) -> "ClipLimits":
        t = options.get("frames_per_clip")
        size = head.get("max_frame")
        if isinstance(size, Mapping):
            frame: Optional[tuple[int, int]] = (int(size["height"]), int(size["width"]))
        elif options.get("video_width") and options.get("video_height"):  # version 1, a fixed size
            frame = (int(options["video_height"]), int(options["video_width"]))
        else:
            frame = None
        return cls(classes, int(t) if isinstance(t, int) and t > 0 else None, frame)


def _classes(value: Any, where: str) -> tuple[str, ...]:
    """The index's class names: a list of strings, or the index is refused."""
    if not isinstance(value, list) or not all(isinstance(c, str) for c in value):
        raise ShardFormatError(f"{where}: 'classes' must be a list of class names (strings), "
                               f"found {type(value).__name__}")
    return tuple(value)


def _check_shards(shards: tuple[ShardEntry, ...], files: tuple[ShardEntry, ...], num_clips: int, where: str) -> None:
    """Shards (or an appended output's extents) tile the clips in order; each file is listed once."""
    first = 0
    for s in shards:
        if s.first_clip != first or s.clips < 0 or s.bytes < 0:
            raise ShardFormatError(f"{where}: shard entry {s} is inconsistent (expected first_clip {first})")
        first += s.clips
    if first != num_clips:
        raise ShardFormatError(f"{where}: shards hold {first} clips, counts say {num_clips}")
    if len({s.name for s in files}) != len(files):
        raise ShardFormatError(f"{where}: a shard file is listed twice")


def _file(entry: Mapping[str, Any], where: str, *, in_order: bool) -> ShardEntry:
    """A shard file as the index lists it (``first_clip``: only where the shards hold the clips in order)."""
    return ShardEntry(check_plain_name(entry["name"], what="shard", where=where), int(entry["clips"]),
                      int(entry["first_clip"]) if in_order else -1, int(entry["bytes"]), _checksum(entry))


def _extents(transport: Transport, entry: Mapping[str, Any], files: tuple[ShardEntry, ...], num_clips: int,
             where: str) -> tuple[ShardEntry, ...]:
    """An appended output's extents (read whole, checked against the index's size and checksum and
    against its shards), each as the :class:`ShardEntry` of the stretch of a file it is."""
    name = check_plain_name(entry.get("name", EXTENTS_NAME), what="extents", where=where)
    data = transport.read(name)
    algo, digest = entry_checksum(entry)
    if len(data) != int(entry.get("bytes", len(data))) or (algo and checksum_of(algo, data) != digest):
        raise ShardFormatError(f"{transport.url_of(name)}: its size or {algo or 'checksum'} differs from the index's")
    table = read_extents(data, clips=num_clips, shard_bytes=np.array([f.bytes for f in files], dtype=np.int64),
                         where=transport.url_of(name))
    return tuple(dataclasses.replace(files[shard], first_clip=first, clips=count, start=start, end=end)
                 for first, count, shard, start, end in table.tolist())


def _clip_offsets(transport: Transport, head: Mapping[str, Any], shards: tuple[ShardEntry, ...], num_clips: int,
                  classes: int, where: str, *, ordered: bool = True) -> ClipOffsets:
    """The split's offsets table, its header and first page read and checked now."""
    entry = dict(head.get("offsets") or {"name": OFFSETS_NAME})
    name = check_plain_name(entry.get("name", OFFSETS_NAME), what="offsets", where=where)
    columns = LEGACY_COLUMNS if head.get("version") == 1 else len(OFFSETS_COLUMNS)
    rules = PageRules(np.array([s.first_clip for s in shards], dtype=np.int64), np.array([s.clips for s in shards], dtype=np.int64),
                      np.array([s.bytes for s in shards], dtype=np.int64), classes,
                      starts=np.array([s.start for s in shards], dtype=np.int64),
                      ends=np.array([s.stop for s in shards], dtype=np.int64), ordered=ordered)
    offsets = ClipOffsets(transport, name, num_clips, entry.get("bytes"), columns=columns, rules=rules)
    offsets.open()
    return offsets


def missing_split(url: str | os.PathLike, split: str, storage_options: Optional[Mapping[str, Any]] = None) -> str:
    """Why ``url/split/index.json`` cannot be opened, and what to pass instead: the splits that
    ``url`` holds (its sub-folders with an ``index.json``), or that it is a split folder
    itself, or that it holds no clipshards output at all."""
    url = os.fspath(url)
    where = f"{split_url(url, split).rstrip('/')}/{INDEX_NAME}"
    base = Location(url, storage_options)
    names = base.listdir()
    splits = [n for n in names[:MAX_LISTED] if base.exists(f"{n}/{INDEX_NAME}")]
    if splits:
        return (f"{where} does not exist: split {split!r} was not converted to {url}, which holds the "
                f"split{'s' if len(splits) > 1 else ''} {', '.join(map(repr, splits))}; pass split= one of them")
    if INDEX_NAME in names:
        parent, name = posixpath.split(url.rstrip("/")) if "://" in url else os.path.split(url.rstrip(os.sep))
        return (f"{where} does not exist: {url} is itself a converted split (it holds {INDEX_NAME}); "
                f"pass url={parent!r}, split={name!r}")
    if not names and not base.fs.exists(base.root):
        return f"{where} does not exist: there is nothing at {url}; pass the folder or URL the converter wrote to (its OUT)"
    return (f"{where} does not exist, and {url} holds no clipshards output (no <split>/{INDEX_NAME} in it): "
            "pass the folder or URL the converter wrote to (its OUT), or convert first")


def _checksum(entry: dict[str, Any]) -> str:
    algo, value = entry_checksum(entry)
    return f"{algo}:{value}" if algo else ""


class DatasetIndex:
    """The index of ``url/split``: what the loader needs to plan epochs and find clips."""

    def __init__(self, url: str | os.PathLike, split: str = "train", *,
                 storage_options: Optional[Mapping[str, Any]] = None,
                 transport: Optional[TransportOptions] = None, layouts: tuple[str, ...] = (LAYOUT_CLIPS,)) -> None:
        """``layouts``: the output layouts the caller reads (another one is refused, naming what reads it)."""
        self.split = split
        self.transport = Transport(split_url(url, split), storage_options=storage_options, options=transport)
        # no credentials, access denied, no endpoint: one line naming the URL and the fix, within connect_timeout
        reach(self.transport.location, INDEX_NAME, timeout=self.transport.options.connect_timeout)
        try:
            head = self._read_head()
        except FileNotFoundError:
            raise FileNotFoundError(missing_split(url, split, storage_options)) from None
        where = self.transport.url_of(INDEX_NAME)
        self.layout = check_index_version(head, where=where, layouts=layouts)
        self.version = int(head["version"])
        # the videos layout: the table of videos beside the index, and how many videos were found
        self.video_table: Optional[dict[str, Any]] = head.get("video_table")
        self.num_videos = int((head.get("counts") or {}).get("videos", 0) or 0)
        try:
            self.classes: tuple[str, ...] = _classes(head["classes"], where)
            self.options: dict[str, Any] = dict(head.get("options") or {})
            # UCF101/HMDB51: which annotation files the folds in the video records come from
            self.annotations: Optional[dict[str, Any]] = dict(head["annotations"]) if head.get("annotations") else None
            self.num_clips = int(head["counts"]["clips"])
            # the shard files; and the runs of clips the epoch plans and reads go by: the shards
            # themselves, or in an output appended to (generation >= 2) its extents
            self.generation = generation_of(head)
            appended = self.generation > 1  # an appended output names its extents table
            self.files: tuple[ShardEntry, ...] = tuple(_file(s, where, in_order=not appended) for s in head["shards"])
            self.shards: tuple[ShardEntry, ...] = (
                _extents(self.transport, head["extents"], self.files, self.num_clips, where) if appended else self.files)
            self.limits = ClipLimits.from_head(head, self.options, len(self.classes))
        except ShardFormatError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise ShardFormatError(f"{where}: malformed index ({type(exc).__name__}: {exc})") from exc
        self.codec = str(self.options.get("codec", "raw"))
        if self.codec not in CODECS:
            raise ShardFormatError(f"{where}: unknown codec {self.codec!r} (known: {CODECS})")
        _check_shards(self.shards, self.files, self.num_clips, where)
        self.first_clips = np.array([s.first_clip for s in self.shards], dtype=np.int64)
        for s in self.files:
            self.transport.known(s.name, size=s.bytes, version=s.checksum)
        self.offsets = _clip_offsets(self.transport, head, self.shards, self.num_clips, len(self.classes), where,
                                     ordered=not self.appended)
        self._videos: Optional[list[dict[str, Any]]] = None
        logger.debug("opened %s: %d classes, %d clips in %d shards (%s)", where, len(self.classes),
                     self.num_clips, len(self.shards), self.codec)

    @property
    def appended(self) -> bool:
        """Whether the output was appended to (``convert --append``): its shards do not hold the
        clips in global order, and the labels its old shards store may be out of date (the
        index's are used, each clip's stored class name checked against it)."""
        return self.generation > 1

    @property
    def clip_bytes(self) -> float:
        """Mean bytes of a clip in the shards (0 for an empty split)."""
        stored = sum(s.bytes if s.end < 0 else s.end - s.start for s in self.shards)
        return stored / self.num_clips if self.num_clips else 0.0

    @property
    def url(self) -> str:
        return self.transport.url

    def __len__(self) -> int:
        return self.num_clips

    def __repr__(self) -> str:
        return f"DatasetIndex({self.url!r}, clips={self.num_clips}, shards={len(self.shards)}, codec={self.codec!r})"

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_videos"] = None
        return state

    # -- index.json -------------------------------------------------------------------------
    def _read_head(self) -> dict[str, Any]:
        """index.json without its trailing ``videos`` list, read in chunks until that key."""
        buf = bytearray()
        while True:
            chunk = self.transport.read(INDEX_NAME, len(buf), len(buf) + INDEX_CHUNK)
            searched = max(0, len(buf) - len(_VIDEOS_KEY))
            buf += chunk
            pos = buf.find(_VIDEOS_KEY, searched)
            if pos >= 0:
                try:
                    head = json.loads(bytes(buf[:pos]) + b"}")
                    if isinstance(head, dict):
                        return head
                except (ValueError, RecursionError):
                    pass
                return self._parse_whole(buf + self.transport.read(INDEX_NAME, len(buf)))
            if len(chunk) < INDEX_CHUNK:
                return self._parse_whole(buf)
            if len(buf) >= INDEX_HEAD_LIMIT:
                raise ShardFormatError(f"{self.transport.url_of(INDEX_NAME)}: no \"videos\" key in its first "
                                       f"{INDEX_HEAD_LIMIT >> 20} MiB: not a clipshards index")

    def _parse_whole(self, data: bytes | bytearray) -> dict[str, Any]:
        try:
            obj = json.loads(bytes(data))
        except (ValueError, RecursionError) as exc:
            raise ShardFormatError(f"{self.transport.url_of(INDEX_NAME)}: not valid JSON ({exc})") from exc
        if not isinstance(obj, dict):
            raise ShardFormatError(f"{self.transport.url_of(INDEX_NAME)}: not a clipshards index (a JSON {type(obj).__name__})")
        return obj

    @property
    def videos(self) -> list[dict[str, Any]]:
        """The per-video records of the index (path, label, status, clips, first_clip, ...).
        Reads the whole index.json on first use."""
        if self._videos is None:
            self._videos = list(self._parse_whole(self.transport.read(INDEX_NAME)).get("videos", []))
        return self._videos

    # -- clips ------------------------------------------------------------------------------
    def byte_ranges(self, start: int, stop: int) -> np.ndarray:
        """``[stop - start, 2]`` int64: (offset, length) inside its shard of clips ``start..stop-1``."""
        return self.offsets.byte_ranges(start, stop)

    def shard_of(self, clips: np.ndarray | int) -> np.ndarray | int:
        """Index of the shard holding each global clip."""
        return np.searchsorted(self.first_clips, clips, side="right") - 1

    def rows(self, start: int, stop: int) -> np.ndarray:
        """The offsets rows of clips ``start..stop-1`` (see :mod:`.offsets`: byte range, then,
        from index version 2, key number, label and checksum), checked when their page was read."""
        return self.offsets.rows(start, stop)

    def locate(self, g: int) -> tuple[ShardEntry, np.ndarray]:
        """``(shard, row)`` of global clip ``g``: its offsets row, whose byte range lies inside
        the shard's size (checked with its page)."""
        if not 0 <= g < self.num_clips:
            raise IndexError(f"clip {g} is outside 0..{self.num_clips - 1}")
        return self.shards[int(self.shard_of(g))], self.rows(g, g + 1)[0]

    def clip_limits(self) -> ClipLimits:
        """:attr:`limits`, the largest frame taken from the video records where the index does not
        say it (version 1 without a fixed size: index.json is then read whole, once)."""
        if self.limits.max_frame is None and self.num_clips:
            ok = [v for v in self.videos if v.get("status") == "ok"]
            frame = (max(int(v.get("height", 0)) for v in ok), max(int(v.get("width", 0)) for v in ok)) if ok else (0, 0)
            self.limits = ClipLimits(self.limits.classes, self.limits.frames, frame)
        return self.limits


class ClassesFromIndex:
    """torchvision's ``classes`` and ``class_to_idx``, for a dataset over a :class:`DatasetIndex` (``self.index``)."""

    index: DatasetIndex

    @property
    def classes(self) -> list[str]:
        """Class names in label order (label ``i`` is ``classes[i]``)."""
        return list(self.index.classes)

    @property
    def class_to_idx(self) -> dict[str, int]:
        return {c: i for i, c in enumerate(self.index.classes)}
