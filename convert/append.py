"""``convert --append``: bring a finished conversion up to date with its ROOT, old shards untouched.

1. The finished output's index is the base (:class:`AppendBase`): it must be of format version 3
   or later (its video records hold each source file's size and stamp) and made with the same
   options. Its tables are read and checked against the sizes and checksums it records.
2. :func:`diff_input` compares the new discovery with it, by path: a video recorded with the same
   size and stamp is *kept* (its stored samples are used as they are); one not recorded is
   *added*; one whose size or stamp differs is *changed* (converted again); one recorded but no
   longer found is *removed* (dropped from the index).
3. The added and changed videos are converted by the ordinary conversion loop (resumable by
   its done-markers) into shards of the next *generation*, ``<split>-g<N>-<number>.tar``. Their
   samples' keys carry video numbers above any the output used before, so no key of a new shard
   is one an old shard holds; their labels are those of the new class list.
4. :meth:`Append.finish` merges. The global order is a fresh conversion's of the new ROOT
   (classes sorted, videos sorted within each, clips in order); each clip's offsets row comes
   from where the clip is stored, with its label from the new class list (a class added in the
   middle of the sorted list shifts the labels after it, as in torchvision). It writes the
   generation's tables under new names (``offsets.g<N>.npy``, ``extents.g<N>.npy``, and the
   videos layout's ``videos.g<N>.npy``), then ``report.json``, then ``index.json`` last, in one
   atomic step (a local rename; a single PUT on object storage).
5. Only then are the files the new index does not list removed: shards none of whose clips is
   used any more, and the previous generation's tables (:func:`remove_unreferenced`).

A crash at any step leaves the old index, with every file it lists, or the new one; running the
same append again finishes it (a run that finds the new index in place only removes what is
left over).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import re
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from .errors import ConversionError, ConversionMismatch
from .extents import EXTENTS_NAME, TABLE_FILE, extents_of, generation_name, generation_of, read_extents
from .index import index_document, table_entry, video_row, write_report_and_index
from .layout import DatasetLayout
from .options import ConvertOptions
from .report import ConvertReport, VideoRecord
from .schema import (FORMAT_VERSION, INDEX_NAME, LAYOUT_VIDEOS, OFFSETS_COLUMNS, OFFSETS_NAME, ShardFormatError,
                     check_plain_name, checksum_of, decode_npy, encode_npy, entry_checksum, index_layout)
from .storage import Location
from .video_sample import TABLE_DTYPE, VIDEOS_TABLE_NAME, read_table, table_bytes
from .writer import ShardInfo

logger = logging.getLogger(__name__)

__all__ = ["AppendBase", "InputChange", "Append", "diff_input", "merge_outputs", "Merged", "remove_unreferenced",
           "shard_names"]


def shard_names(split: str) -> re.Pattern[str]:
    """The names of a split's shards, every generation's: ``<split>-<number>.tar``, ``<split>-g<N>-<number>.tar``."""
    return re.compile(rf"{re.escape(split)}-(g[0-9]+-)?[0-9]{{6}}\.tar")


def _read_checked(loc: Location, entry: Mapping[str, Any], default: str, where: str) -> tuple[str, bytes]:
    """A table the index lists: its name and bytes, which must have the size and checksum it records."""
    name = check_plain_name(entry.get("name", default), what="table", where=where)
    try:
        data = loc.read_bytes(name)
    except (FileNotFoundError, OSError) as exc:
        raise ConversionError(f"--append: {loc.join_url(name)}, listed by {where}, cannot be read ({exc}); "
                              "the output is damaged (see clipshards verify)") from exc
    algo, digest = entry_checksum(entry)
    if ("bytes" in entry and len(data) != int(entry["bytes"])) or (algo and checksum_of(algo, data) != digest):
        raise ConversionError(f"--append: {loc.join_url(name)} differs from what {where} records (size or checksum); "
                              "the output is damaged (see clipshards verify)")
    return name, data


@dataclass
class AppendBase:
    """The finished output an append builds on: its index, its clips' offsets rows and the shard
    (position in ``files``) holding each, and the videos layout's table of videos."""

    index: dict[str, Any]
    files: list[dict[str, Any]]
    rows: np.ndarray
    row_shards: np.ndarray
    table: Optional[np.ndarray]
    records: dict[str, dict[str, Any]]  # by path

    @property
    def generation(self) -> int:
        return generation_of(self.index)

    @property
    def next_key(self) -> int:
        """The first video number no sample key of the output has used."""
        return 1 + max((int(v.get("key", v["index"])) for v in self.index["videos"]), default=-1)

    @classmethod
    def load(cls, loc: Location, index: Optional[dict[str, Any]], opts: ConvertOptions) -> "AppendBase":
        """The base in ``loc`` (whose ``index.json`` is ``index``); refused with a
        :class:`ConversionMismatch` when there is none, it is of an older version, or of other options."""
        where = loc.join_url(INDEX_NAME)
        if index is None:
            raise ConversionMismatch(f"--append: {loc.url} holds no finished conversion (no {INDEX_NAME}): convert "
                                     "it first; an interrupted conversion resumes when run again without --append")
        version = index.get("version")
        if isinstance(version, int) and version > FORMAT_VERSION:
            raise ConversionMismatch(f"--append: {where} is of format version {version}, newer than this clipshards "
                                     f"writes ({FORMAT_VERSION}): append with a matching release")
        if version == FORMAT_VERSION - 1 and index_layout(index) == LAYOUT_VIDEOS:
            raise ConversionMismatch(
                f"--append: {where} is a videos layout output of format version {version}, whose samples keep the "
                f"audio apart from the frames (version {FORMAT_VERSION} interleaves them): an append would mix the two; "
                "convert again with --overwrite (overwrite=True), or into another OUT")
        if version not in (FORMAT_VERSION, FORMAT_VERSION - 1):  # version 3's clips layout is version 4's
            raise ConversionMismatch(
                f"--append: {where} is of format version {version!r}, whose video records do not hold the size and "
                f"modification time of each source file an append compares (versions {FORMAT_VERSION - 1} and {FORMAT_VERSION} do): convert "
                "again with --overwrite (overwrite=True), or into another OUT")
        if index.get("options") != opts.output_options():
            raise ConversionMismatch(f"--append: {loc.url} was converted with other options ({index.get('options')}); "
                                     "an append converts with the options of the output it adds to")
        try:
            return cls._read(loc, index, where)
        except (KeyError, TypeError, ValueError) as exc:
            raise ConversionError(f"--append: {where} is malformed or its tables do not match it "
                                  f"({type(exc).__name__}: {exc})") from exc

    @classmethod
    def _read(cls, loc: Location, index: dict[str, Any], where: str) -> "AppendBase":
        files = [dict(s) for s in index["shards"]]
        clips = int(index["counts"]["clips"])
        name, data = _read_checked(loc, index.get("offsets") or {}, OFFSETS_NAME, where)
        rows = decode_npy(data, expect=np.dtype("<i8"))
        if rows.shape != (clips, len(OFFSETS_COLUMNS)):
            raise ShardFormatError(f"{name} has shape {rows.shape}, expected ({clips}, {len(OFFSETS_COLUMNS)})")
        if generation_of(index) > 1:  # appended to before: its extents say where the clips are
            name, data = _read_checked(loc, index["extents"], EXTENTS_NAME, where)
            ext = read_extents(data, clips=clips, shard_bytes=np.array([int(f["bytes"]) for f in files], dtype=np.int64),
                               where=loc.join_url(name))
            row_shards = np.repeat(ext[:, 2], ext[:, 1])
        else:  # a fresh conversion: the shards hold the clips in order
            row_shards = np.repeat(np.arange(len(files), dtype=np.int64), [int(f["clips"]) for f in files])
        table = None
        if index_layout(index) == LAYOUT_VIDEOS:
            name, data = _read_checked(loc, index.get("video_table") or {}, VIDEOS_TABLE_NAME, where)
            table = read_table(data, where=loc.join_url(name))
        records = {str(v["path"]): dict(v) for v in index["videos"]}
        return cls(index, files, rows.copy(), row_shards, table, records)


@dataclass
class InputChange:
    """What an append finds changed in ROOT: the videos to convert (``delta``: numbered from the
    base's first unused key), and the kept ones (new global index -> old record)."""

    delta: DatasetLayout
    kept: dict[int, dict[str, Any]]
    keys: dict[int, int]  # new global index of each video of ``delta`` -> its key number (its index in ``delta``)
    added: list[str]
    changed: list[str]
    removed: list[str]

    def describe(self) -> str:
        return (f"{len(self.added)} videos added, {len(self.changed)} changed (converted again), "
                f"{len(self.removed)} removed, {len(self.kept)} kept as stored")

    def to_json(self, generation: int) -> dict[str, Any]:
        """What ``report.json`` records of the append (the shard counts are filled in when it finishes)."""
        return {"generation": generation, "added": list(self.added), "changed": list(self.changed),
                "removed": list(self.removed), "kept": len(self.kept), "shards_written": 0, "shards_dropped": []}


def diff_input(base: AppendBase, layout: DatasetLayout) -> InputChange:
    """Compare ROOT's videos now (``layout``) with those ``base`` was converted from (see the module doc)."""
    kept: dict[int, dict[str, Any]] = {}
    todo, added, changed = [], [], []
    for e in layout.videos:
        old = base.records.get(e.relpath)
        if old is not None and old.get("size") == e.size and old.get("stamp") == e.stamp:
            kept[e.index] = old
            continue
        (added if old is None else changed).append(e.relpath)
        todo.append(e)
    now = {e.relpath for e in layout.videos}
    removed = [p for p in base.records if p not in now]
    first = base.next_key
    delta = dataclasses.replace(layout, videos=tuple(dataclasses.replace(e, index=first + k) for k, e in enumerate(todo)))
    return InputChange(delta, kept, {e.index: first + k for k, e in enumerate(todo)}, added, changed, removed)


@dataclass
class Merged:
    """The new index's content: its shard files (the ``kept_files`` old ones still used, in their
    order, then the new ones), each clip's offsets row and shard in global order, the video
    records, the videos layout's table rows, and the old shards it no longer lists."""

    files: list[dict[str, Any]]
    kept_files: int
    rows: np.ndarray
    row_shards: np.ndarray
    videos: list[VideoRecord]
    table_rows: list[dict[str, Any]]
    dropped: list[str]


def _stored(record: Mapping[str, Any], per_sample: bool) -> int:
    """Samples a video record has in the shards: its clips, one whole video (the videos layout), or none."""
    if record.get("status") != "ok":
        return 0
    return 1 if per_sample else int(record["clips"])


_NO_ROWS = np.zeros((0, len(OFFSETS_COLUMNS)), dtype=np.int64)


class _Merge:
    """Where each video's samples are stored: the base's rows for a kept video (its shard
    renumbered among the old shards still used), the new shards' rows, in order, for a converted one."""

    def __init__(self, base: AppendBase, change: InputChange, shards: Sequence[ShardInfo],
                 records: Mapping[int, VideoRecord], per_sample: bool):
        self.base, self.change, self.records, self.per_sample = base, change, records, per_sample
        self.spans = {i: (int(old["first_clip"]), int(old["first_clip"]) + _stored(old, per_sample))
                      for i, old in change.kept.items()}
        taken = [base.row_shards[a:b] for a, b in self.spans.values()]
        self.used = np.unique(np.concatenate(taken)) if taken else np.zeros(0, dtype=np.int64)
        self.renumber = np.full(len(base.files), -1, dtype=np.int64)
        self.renumber[self.used] = np.arange(len(self.used))
        rows = [np.asarray(s.offsets, dtype=np.int64).reshape(-1, len(OFFSETS_COLUMNS)) for s in shards]
        self.new_rows = np.concatenate(rows) if rows else _NO_ROWS
        self.new_shards = np.repeat(np.arange(len(shards), dtype=np.int64) + len(self.used), [s.clips for s in shards])
        self.pos = 0  # the new shards' samples taken so far

    def kept(self, i: int) -> tuple[VideoRecord, np.ndarray, np.ndarray, Optional[dict[str, Any]]]:
        """``(record, rows, shards, table row)`` of kept video ``i`` (new global index), as stored."""
        old, (a, b) = self.change.kept[i], self.spans[i]
        rec = VideoRecord.from_json(copy.deepcopy(old))
        rec.key = rec.key_video
        shards = self.renumber[self.base.row_shards[a:b]]
        row = ({n: self.base.table[a][n].item() for n in TABLE_DTYPE.names} if self.per_sample and b > a else None)
        return rec, self.base.rows[a:b].copy(), shards, row

    def converted(self, i: int) -> tuple[VideoRecord, np.ndarray, np.ndarray, Optional[dict[str, Any]]]:
        """The same of converted video ``i``: its record from the run, its samples the next in the new shards."""
        rec = copy.deepcopy(self.records[self.change.keys[i]])
        rec.key = self.change.keys[i]
        n = _stored(rec.to_json(), self.per_sample)
        rows, shards = self.new_rows[self.pos:self.pos + n].copy(), self.new_shards[self.pos:self.pos + n]
        self.pos += n
        row = video_row(rec, int(shards[0]), rows[0].tolist()) if self.per_sample and n else None
        return rec, rows, shards, row


def merge_outputs(base: AppendBase, change: InputChange, layout: DatasetLayout, shards: Sequence[ShardInfo],
                  records: Mapping[int, VideoRecord], *, per_sample: bool) -> Merged:
    """The global order of ``layout`` (the new ROOT) over the base's stored samples and the new
    ``shards`` (the append's, with its ``records`` by key number): each video's record, rows and
    table row get its new index and label (the label column too), and its place in the order."""
    m = _Merge(base, change, shards, records, per_sample)
    rows, where, videos, table_rows = [], [], [], []
    first = 0
    for e in layout.videos:
        rec, r, s, table_row = m.kept(e.index) if e.index in change.kept else m.converted(e.index)
        rec.index, rec.label, rec.first_clip = e.index, e.label, first
        rec.key = rec.key if rec.key != e.index else None
        rec.folds, rec.size, rec.stamp = (list(e.folds) if e.folds else None), e.size, e.stamp
        r[:, 3] = e.label
        if table_row is not None:
            table_rows.append({**table_row, "video_index": e.index, "label": e.label, "shard": int(s[0])})
        rows.append(r)
        where.append(s)
        videos.append(rec)
        first += len(r)
    if m.pos != len(m.new_rows):
        raise ConversionError(f"append: the new shards hold {len(m.new_rows)} samples, its converted videos {m.pos}")
    files = [{k: v for k, v in base.files[i].items() if k != "first_clip"} for i in m.used.tolist()]
    return Merged(files + [s.to_json() for s in shards], len(files), np.concatenate(rows) if rows else _NO_ROWS,
                  np.concatenate(where) if where else np.zeros(0, np.int64), videos, table_rows,
                  [f["name"] for i, f in enumerate(base.files) if m.renumber[i] < 0])


class Append:
    """One append's last step (:meth:`finish`, once its new shards are written) and its undoing
    (:meth:`discard`, when a strict run refuses)."""

    def __init__(self, loc: Location, opts: ConvertOptions, base: AppendBase, change: InputChange, layout: DatasetLayout,
                 fingerprint: str, report: ConvertReport):
        self.loc, self.opts, self.base, self.change, self.layout = loc, opts, base, change, layout
        self.fingerprint, self.report = fingerprint, report
        self.generation = base.generation + 1
        self.names = f"{opts.split}-g{self.generation}"  # the new shards' names: never an existing shard's
        report.append = change.to_json(self.generation)

    def finish(self, shards: Sequence[ShardInfo], records: Mapping[int, VideoRecord]) -> None:
        """Merge, write the generation's tables, ``report.json`` and (last, atomically) ``index.json``;
        then remove what the new index no longer lists."""
        opts, loc = self.opts, self.loc
        merged = merge_outputs(self.base, self.change, self.layout, shards, records, per_sample=opts.layout == LAYOUT_VIDEOS)
        self._check_kept(merged)
        offsets = self._write(OFFSETS_NAME, encode_npy(merged.rows))
        total = sum(int(f["bytes"]) for f in merged.files)
        index = index_document(opts, classes=self.layout.classes, fingerprint=self.fingerprint, shard_rows=merged.files,
                               videos=merged.videos, clips=len(merged.rows), total_bytes=total, offsets=offsets,
                               annotations=self.layout.annotations)
        index["generation"] = self.generation
        index["extents"] = self._write(EXTENTS_NAME, encode_npy(extents_of(merged.row_shards, merged.rows)))
        if opts.layout == LAYOUT_VIDEOS:
            index.update(layout=LAYOUT_VIDEOS, video_table=self._write(VIDEOS_TABLE_NAME, table_bytes(merged.table_rows)))
        self.report.append = {**self.change.to_json(self.generation), "shards_written": len(shards),
                              "shards_dropped": merged.dropped}
        write_report_and_index(loc, self.report, index, videos=merged.videos, shard_rows=merged.files,
                               clips=len(merged.rows), total_bytes=total)
        removed = remove_unreferenced(loc, index, str(opts.split))
        logger.info("append: generation %d in place (%d clips in %d shards, %d new); removed %d files no longer listed",
                    self.generation, len(merged.rows), len(merged.files), len(shards), len(removed))

    def _write(self, name: str, data: bytes) -> dict[str, Any]:
        """Write this generation's table ``name`` (its generation's file name); returns its index entry."""
        final = generation_name(name, self.generation)
        self.loc.write_bytes_atomic(final, data)
        return table_entry(self.opts, final, data)

    def _check_kept(self, merged: Merged) -> None:
        """Every old shard the new index keeps is still there, at the size its index records."""
        for f in merged.files[:merged.kept_files]:
            size = self.loc.size(f["name"])
            if size is not None and size != int(f["bytes"]):
                raise ConversionError(f"--append: {self.loc.join_url(f['name'])} is {size} bytes, the index says "
                                      f"{f['bytes']}: the output is damaged (see clipshards verify)")
            if size is None:
                raise ConversionError(f"--append: {self.loc.join_url(f['name'])}, a shard the output lists, is missing")

    def discard(self) -> None:
        """Remove this append's shards (a strict run refused): the output is left as it was."""
        for name in self.loc.listdir():
            if name.startswith(f"{self.names}-") and shard_names(str(self.opts.split)).fullmatch(name):
                self.loc.remove(name)


def remove_unreferenced(loc: Location, index: Mapping[str, Any], split: str) -> list[str]:
    """Remove the split's shards and tables (any generation's) that ``index`` does not list:
    what an append leaves behind once its index is in place. Returns their names."""
    listed = {str(s.get("name")) for s in index.get("shards", [])}
    listed.add(str((index.get("offsets") or {}).get("name", OFFSETS_NAME)))
    listed |= {str(index[k]["name"]) for k in ("extents", "video_table") if isinstance(index.get(k), Mapping)}
    if index_layout(index) == LAYOUT_VIDEOS and not isinstance(index.get("video_table"), Mapping):
        listed.add(VIDEOS_TABLE_NAME)
    pattern = shard_names(split)
    removed = [n for n in loc.listdir() if n not in listed and (pattern.fullmatch(n) or TABLE_FILE.fullmatch(n))]
    for name in removed:
        loc.remove(name)
    return removed
