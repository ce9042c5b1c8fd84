"""Reading a finished conversion: one split's index, its offsets and single clips.

What ``inspect``, ``verify`` and ``preview`` share. Everything is read through
:class:`~clipshards.convert.storage.Location`, so local folders and fsspec URLs (``s3://``,
``gs://``, ``https://``) work alike. A clip is read as the byte range ``offsets.npy`` gives,
parsed with :mod:`tarfile` (:func:`tar_members`, strict: members only, whole blocks) and
decoded by :func:`~clipshards.convert.schema.decode_sample`: shards are data, nothing in
them is executed.
"""

from __future__ import annotations

import bisect
import io
import json
import logging
import os
import re
import tarfile
from typing import Any, Mapping, Optional

import numpy as np

from .options import SPLITS
from .schema import (
    CLIP_CHECKSUM,
    INDEX_NAME,
    LAYOUT_VIDEOS,
    LAYOUTS,
    OFFSETS_COLUMNS,
    OFFSETS_NAME,
    ShardFormatError,
    check_index_version,
    check_plain_name,
    clip_checksum,
    clip_key,
    key_of_number,
    decode_npy,
    decode_sample,
    frame_member,
    member_field,
    sample_fields,
)
from .extents import generation_of, read_extents
from .storage import Location
from .video_sample import MEDIA_MEMBER, decode_video_sample, video_key
from .writer import BLOCK

logger = logging.getLogger(__name__)

__all__ = ["Output", "split_location", "tar_members", "read_clip", "PREVIEW_FRAMES"]

PREVIEW_FRAMES = 16
VIDEO_FRAME = re.compile(r"f\d{6}\.jpg")


class Output:
    """One split of a conversion: its index, shard lookup and clip reader."""

    def __init__(self, url: str | os.PathLike, split: Optional[str], storage_options: Optional[Mapping[str, Any]]):
        base = Location(url, storage_options)
        base.fs.invalidate_cache()  # fsspec instances are shared: never trust sizes listed before
        self.loc = split_location(base, split)
        self.index_url = self.loc.join_url(INDEX_NAME)
        try:
            raw = self.loc.read_bytes(INDEX_NAME)
        except (FileNotFoundError, OSError) as exc:
            raise FileNotFoundError(f"{self.index_url}: no clipshards index ({exc})") from exc
        try:
            self.index: dict[str, Any] = json.loads(raw)
        except (ValueError, RecursionError) as exc:
            raise ShardFormatError(f"{self.index_url}: index is not valid JSON: {exc}") from exc
        if not isinstance(self.index, dict):
            raise ShardFormatError(f"{self.index_url}: not a clipshards index (a JSON {type(self.index).__name__})")
        self.layout = check_index_version(self.index, where=self.index_url, layouts=LAYOUTS)
        self.split: str = self.index.get("split", split or "")
        try:
            self.shards: list[dict[str, Any]] = [dict(s) for s in self.index["shards"]]
            self.clips = int(self.index["counts"]["clips"])
            self.generation = generation_of(self.index)  # >= 2: appended to, its extents say where the clips are
            self.extents = _extents(self)
            self.firsts = self.extents[:, 0].tolist()
            self.classes: list[str] = list(self.index["classes"])
            self.videos: list[dict[str, Any]] = list(self.index["videos"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ShardFormatError(f"{self.index_url}: malformed index ({type(exc).__name__}: {exc})") from exc
        if not all(isinstance(c, str) for c in self.classes):
            raise ShardFormatError(f"{self.index_url}: 'classes' must be a list of class names (strings)")
        # a sample is a clip, or in the videos layout a whole video (kept however few clips it gives)
        self.per_sample = {v["index"]: 1 for v in self.videos} if self.layout == LAYOUT_VIDEOS else {}
        with_clips = sorted((v for v in self.videos if v["status"] == "ok" and (v["clips"] > 0 or self.per_sample)),
                            key=lambda v: v["first_clip"])
        self._video_firsts = [int(v["first_clip"]) for v in with_clips]
        self._video_by_first = with_clips

    def shard_of(self, g: int) -> dict[str, Any]:
        return self.shards[int(self.extents[bisect.bisect_right(self.firsts, g) - 1, 2])]

    def video_of(self, g: int) -> Optional[dict[str, Any]]:
        i = bisect.bisect_right(self._video_firsts, g) - 1
        if i < 0:
            return None
        v = self._video_by_first[i]
        return v if g < v["first_clip"] + self.per_sample.get(v["index"], v["clips"]) else None

    def file_name(self, name: Any, what: str) -> str:
        """``name`` (a shard's or the offsets file's, as the index gives it) when it is a plain
        file name inside the split, else :class:`ShardFormatError`: nothing outside is ever read."""
        return check_plain_name(name, what=what, where=self.index_url)

    def bad_names(self) -> list[str]:
        """Why each file name of the index that is not a plain name inside the split is refused."""
        names = [(s.get("name"), "shard") for s in self.shards] + [(self.offsets_name, "offsets")]
        names += [((self.index.get("extents") or {}).get("name"), "extents")] if self.generation > 1 else []
        problems = []
        for name, what in names:
            try:
                self.file_name(name, what)
            except ShardFormatError as exc:
                problems.append(str(exc))
        return problems

    @property
    def offsets_name(self) -> Any:
        return (self.index.get("offsets") or {}).get("name", OFFSETS_NAME)

    def read_offsets_bytes(self) -> bytes:
        return self.loc.read_bytes(self.file_name(self.offsets_name, "offsets"))

    def parse_offsets(self, data: bytes) -> np.ndarray:
        """offsets.npy's rows: (offset, length) for index version 1, else OFFSETS_COLUMNS."""
        where = self.loc.join_url(str(self.offsets_name))
        try:
            arr = decode_npy(data, expect=np.dtype(np.int64))
        except ShardFormatError as exc:
            raise ShardFormatError(f"{where}: {exc}") from exc
        columns = 2 if self.index.get("version") == 1 else len(OFFSETS_COLUMNS)
        if arr.shape != (self.clips, columns):
            raise ShardFormatError(f"{where}: shape {arr.shape}, the index has {self.clips} clips (expected [{self.clips}, {columns}])")
        return arr

    def offsets(self) -> np.ndarray:
        return self.parse_offsets(self.read_offsets_bytes())

    def check_clip_index(self, g: int) -> int:
        if isinstance(g, bool) or not isinstance(g, (int, np.integer)) or not 0 <= g < self.clips:
            raise ValueError(f"clip index {g!r}: must be an integer in 0..{self.clips - 1} ({self.loc.url} holds {self.clips} clips)")
        return int(g)

    def read_sample(self, g: int, offsets: np.ndarray) -> dict[str, Any]:
        """Read, parse and decode clip ``g``; checks its key and label against the index."""
        shard = self.shard_of(g)
        name = self.file_name(shard["name"], "shard")
        row = offsets[g]
        start, length = int(row[0]), int(row[1])
        where = f"{self.loc.join_url(name)} clip {g} (bytes {start}..{start + length})"
        if start < 0 or length <= 0 or start + length > int(shard["bytes"]):
            raise ShardFormatError(f"{where}: byte range outside the shard's {shard['bytes']} bytes")
        try:
            data = self.loc.read_bytes(name, start, start + length)
        except (FileNotFoundError, OSError) as exc:
            raise ShardFormatError(f"{where}: cannot read: {exc}") from exc
        if len(data) != length:
            raise ShardFormatError(f"{where}: read {len(data)} of {length} bytes (shard truncated?)")
        members = tar_members(data, where)
        keys = {member_field(n)[0] for n, _ in members}
        if len(keys) != 1:
            raise ShardFormatError(f"{where}: members of {len(keys)} samples {sorted(keys)[:3]} in one clip's range")
        if len(row) > 2:  # index version 2: the row says which sample this is and what its bytes hash to
            if not self.per_sample and next(iter(keys)) != key_of_number(int(row[2])):
                raise ShardFormatError(f"{where}: sample key {next(iter(keys))!r}, offsets.npy expects {key_of_number(int(row[2]))!r}")
            if clip_checksum(data) != int(row[4]):
                raise ShardFormatError(f"{where}: its bytes differ from what the converter wrote ({CLIP_CHECKSUM} in offsets.npy)")
        fields = sample_fields(members)
        if self.per_sample and MEDIA_MEMBER in fields:  # version 4: frames and audio interleaved
            sample = decode_video_sample(fields, where=where)
        else:
            if self.per_sample:  # versions 2-3: a whole video's JPEG frames are f000000.jpg ...: the names decode_sample reads
                fields = {frame_member(int(k[1:-4])) if VIDEO_FRAME.fullmatch(k) else k: v for k, v in fields.items()}
            sample = decode_sample(fields, where=where)
        sample["key"] = keys.pop()
        video = self.video_of(g)
        if video is None:
            raise ShardFormatError(f"{where}: no converted video of the index owns clip {g}")
        number = int(video.get("key", video["index"]))  # an appended output's samples keep the numbers they were written with
        expected_key = video_key(number) if self.per_sample else clip_key(number, g - video["first_clip"])
        if sample["key"] != expected_key:
            raise ShardFormatError(f"{where}: sample key {sample['key']!r}, the index expects {expected_key!r}")
        if self.generation > 1:  # appended to: an old shard's label may predate a class inserted before it
            if sample["meta"].get("class") != self.classes[video["label"]]:
                raise ShardFormatError(f"{where}: its class is not {self.classes[video['label']]!r}, the index's "
                                       f"class of {video['path']}")
            sample["label"] = video["label"]
        elif sample["label"] != video["label"]:
            raise ShardFormatError(f"{where}: label {sample['label']}, the index gives {video['path']} label {video['label']}")
        t = video["frames"] if self.per_sample else self.index["options"].get("frames_per_clip")
        if t is not None and sample["video"].shape[0] != t:
            raise ShardFormatError(f"{where}: {sample['video'].shape[0]} frames, the index says {t}")
        sample["video_record"] = video
        sample["shard"] = shard["name"]
        return sample


def _extents(out: Output) -> np.ndarray:
    """``[E, 5]`` (:data:`~.extents.EXTENTS_COLUMNS`): the runs of clips stored back to back in
    one shard of ``out``; for a fresh conversion, the shards themselves."""
    if out.generation == 1:
        return np.array([[int(s["first_clip"]), int(s["clips"]), i, 0, int(s["bytes"]) - 2 * BLOCK]
                         for i, s in enumerate(out.shards)], dtype=np.int64).reshape(-1, 5)
    name = out.file_name(out.index["extents"].get("name"), "extents")
    return read_extents(out.loc.read_bytes(name), clips=out.clips, where=out.loc.join_url(name),
                        shard_bytes=np.array([int(s["bytes"]) for s in out.shards], dtype=np.int64))


def split_location(base: Location, split: Optional[str]) -> Location:
    """``base/<split>`` for a conversion root, or ``base`` itself when it is a split folder."""
    if split is not None:
        if split not in SPLITS:
            raise ValueError(f"split {split!r}: must be one of {SPLITS}")
        if base.exists(f"{split}/{INDEX_NAME}"):
            return base.child(split)
        if base.exists(INDEX_NAME) and base.url.rstrip("/").rsplit("/", 1)[-1] == split:
            return base
        raise FileNotFoundError(f"{base.join_url(split)}/{INDEX_NAME}: no clipshards index (was split {split!r} converted?)")
    if base.exists(INDEX_NAME):
        return base
    for s in SPLITS:
        if base.exists(f"{s}/{INDEX_NAME}"):
            logger.debug("no --split given: using %s", base.join_url(s))
            return base.child(s)
    raise FileNotFoundError(f"{base.url}: no clipshards index in it or in {'/, '.join(SPLITS)}/")


def tar_members(data: bytes, where: str) -> list[tuple[str, bytes]]:
    """Regular-file members of one sample's byte range; the range must hold members only."""
    members = []
    end = 0
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tf:
            for info in tf:
                if not info.isfile():
                    raise ShardFormatError(f"{where}: member {info.name!r} is not a regular file")
                fh = tf.extractfile(info)
                payload = fh.read() if fh is not None else b""
                if len(payload) != info.size:
                    raise ShardFormatError(f"{where}: member {info.name!r} is short ({len(payload)} of {info.size} bytes)")
                members.append((info.name, payload))
                end = info.offset_data + -(-info.size // BLOCK) * BLOCK
    except tarfile.TarError as exc:
        raise ShardFormatError(f"{where}: not a tar sample: {exc}") from exc
    if not members:
        raise ShardFormatError(f"{where}: no tar member in the clip's byte range")
    if end != len(data):
        raise ShardFormatError(f"{where}: tar members end at byte {end} of {len(data)} (damaged header?)")
    return members


def read_clip(
    url: str | os.PathLike, split: Optional[str] = None, *, index: int, storage_options: Optional[Mapping[str, Any]] = None
) -> dict[str, Any]:
    """Clip ``index`` (global clip order) of a conversion, decoded.

    In the videos layout ``index`` is a video (its sample) and ``video`` up to :data:`PREVIEW_FRAMES`
    of its frames, spread over it (``meta["frame_indices"]``), with its whole audio track.
    Returns ``decode_sample``'s dict (``video`` uint8 [T,H,W,3], ``audio`` float32 [K,L],
    ``label``, ``meta``) plus ``key``, ``shard``, ``class_name``, ``path`` and ``url``.
    """
    out = Output(url, split, storage_options)
    g = out.check_clip_index(index)
    sample = out.read_sample(g, out.offsets())
    if out.per_sample:  # the videos layout: sample ``index`` is a whole video; keep frames spread over it
        keep = np.unique(np.linspace(0, sample["video"].shape[0] - 1, num=min(PREVIEW_FRAMES, sample["video"].shape[0])).astype(int))
        sample["video"] = sample["video"][keep]
        sample["meta"].update(frame_indices=keep.tolist(), clip_index=0)
    sample["class_name"] = out.classes[sample["label"]]
    sample["path"] = sample["video_record"]["path"]
    sample["url"] = out.loc.url
    sample["clips"] = out.clips
    return sample
