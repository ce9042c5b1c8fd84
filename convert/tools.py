"""Looking at a finished conversion: ``inspect`` (what it holds), ``verify`` (is it intact),
``preview`` (a contact sheet of one clip, for a person).

All three read through :class:`~clipshards.convert.storage.Location`, so local folders and
fsspec URLs (``s3://``, ``gs://``, ``https://``) work alike. A clip is read as the byte range
``offsets.npy`` gives, parsed with :mod:`tarfile` and decoded by
:func:`~clipshards.convert.schema.decode_sample`: shards are data, nothing in them is executed.
"""

from __future__ import annotations

import argparse
import bisect
import io
import json
import logging
import math
import os
import random
import tarfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence

import numpy as np
from tqdm.auto import tqdm

from .index import read_json as _read_json
from .options import SPLITS
from .report import human_bytes
from .schema import (
    INDEX_NAME,
    OFFSETS_NAME,
    REPORT_NAME,
    ShardFormatError,
    check_index_version,
    checksum_of,
    decode_npy,
    decode_sample,
    entry_checksum,
    member_field,
    new_checksum,
    sample_fields,
)
from .storage import Location, parse_storage_options
from .schema import clip_key
from .writer import BLOCK, TAR_END

logger = logging.getLogger(__name__)

__all__ = [
    "inspect_output",
    "format_inspect",
    "verify_output",
    "VerifyResult",
    "read_clip",
    "preview_clip",
    "PreviewResult",
    "add_subcommands",
    "EXIT_DAMAGED",
]

EXIT_DAMAGED = 5
"""``clipshards verify`` found a missing, damaged or inconsistent shard or offsets file."""

_HASH_CHUNK = 8 * 1024 * 1024


# -- opening an output ---------------------------------------------------------------------------


class _Output:
    """One split of a conversion: its index, shard lookup and clip reader."""

    def __init__(self, url: str | os.PathLike, split: Optional[str], storage_options: Optional[Mapping[str, Any]]):
        base = Location(url, storage_options)
        base.fs.invalidate_cache()  # fsspec instances are shared: never trust sizes listed before
        self.loc = _split_location(base, split)
        self.index_url = self.loc.join_url(INDEX_NAME)
        try:
            raw = self.loc.read_bytes(INDEX_NAME)
        except (FileNotFoundError, OSError) as exc:
            raise FileNotFoundError(f"{self.index_url}: no clipshards index ({exc})") from exc
        try:
            self.index: dict[str, Any] = json.loads(raw)
        except ValueError as exc:
            raise ShardFormatError(f"{self.index_url}: index is not valid JSON: {exc}") from exc
        check_index_version(self.index, where=self.index_url)
        self.split: str = self.index.get("split", split or "")
        self.shards: list[dict[str, Any]] = list(self.index["shards"])
        self.firsts = [int(s["first_clip"]) for s in self.shards]
        self.clips = int(self.index["counts"]["clips"])
        self.classes: list[str] = list(self.index["classes"])
        self.videos: list[dict[str, Any]] = list(self.index["videos"])
        with_clips = sorted((v for v in self.videos if v["status"] == "ok" and v["clips"] > 0), key=lambda v: v["first_clip"])
        self._video_firsts = [int(v["first_clip"]) for v in with_clips]
        self._video_by_first = with_clips

    def shard_of(self, g: int) -> dict[str, Any]:
        return self.shards[bisect.bisect_right(self.firsts, g) - 1]

    def video_of(self, g: int) -> Optional[dict[str, Any]]:
        i = bisect.bisect_right(self._video_firsts, g) - 1
        if i < 0:
            return None
        v = self._video_by_first[i]
        return v if g < v["first_clip"] + v["clips"] else None

    def read_offsets_bytes(self) -> bytes:
        name = self.index.get("offsets", {}).get("name", OFFSETS_NAME)
        return self.loc.read_bytes(name)

    def parse_offsets(self, data: bytes) -> np.ndarray:
        where = self.loc.join_url(self.index.get("offsets", {}).get("name", OFFSETS_NAME))
        try:
            arr = decode_npy(data, expect=np.dtype(np.int64))
        except ShardFormatError as exc:
            raise ShardFormatError(f"{where}: {exc}") from exc
        if arr.shape != (self.clips, 2):
            raise ShardFormatError(f"{where}: shape {arr.shape}, the index has {self.clips} clips (expected [{self.clips}, 2])")
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
        start, length = (int(x) for x in offsets[g])
        where = f"{self.loc.join_url(shard['name'])} clip {g} (bytes {start}..{start + length})"
        if start < 0 or length <= 0 or start + length > int(shard["bytes"]):
            raise ShardFormatError(f"{where}: byte range outside the shard's {shard['bytes']} bytes")
        try:
            data = self.loc.read_bytes(shard["name"], start, start + length)
        except (FileNotFoundError, OSError) as exc:
            raise ShardFormatError(f"{where}: cannot read: {exc}") from exc
        if len(data) != length:
            raise ShardFormatError(f"{where}: read {len(data)} of {length} bytes (shard truncated?)")
        members = _tar_members(data, where)
        keys = {member_field(n)[0] for n, _ in members}
        if len(keys) != 1:
            raise ShardFormatError(f"{where}: members of {len(keys)} samples {sorted(keys)[:3]} in one clip's range")
        sample = decode_sample(sample_fields(members), where=where)
        sample["key"] = keys.pop()
        video = self.video_of(g)
        if video is None:
            raise ShardFormatError(f"{where}: no converted video of the index owns clip {g}")
        expected_key = clip_key(video["index"], g - video["first_clip"])
        if sample["key"] != expected_key:
            raise ShardFormatError(f"{where}: sample key {sample['key']!r}, the index expects {expected_key!r}")
        if sample["label"] != video["label"]:
            raise ShardFormatError(f"{where}: label {sample['label']}, the index gives {video['path']} label {video['label']}")
        t = self.index["options"].get("frames_per_clip")
        if t is not None and sample["video"].shape[0] != t:
            raise ShardFormatError(f"{where}: {sample['video'].shape[0]} frames, frames_per_clip is {t}")
        sample["video_record"] = video
        sample["shard"] = shard["name"]
        return sample


def _split_location(base: Location, split: Optional[str]) -> Location:
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


def _tar_members(data: bytes, where: str) -> list[tuple[str, bytes]]:
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


# -- inspect -------------------------------------------------------------------------------------


def inspect_output(
    url: str | os.PathLike, split: Optional[str] = None, *, storage_options: Optional[Mapping[str, Any]] = None
) -> dict[str, Any]:
    """What one split of a conversion holds, read from its index alone (fast, reads no shard).

    ``url`` is the conversion's OUT (then ``split`` picks ``OUT/<split>``, default the first of
    train/val/test present) or a split folder. Returns a JSON-ready dict: options, classes with
    clip counts, shards with sizes, byte totals, skipped videos with their reasons.
    """
    out = _Output(url, split, storage_options)
    index = out.index
    per_class = [{"label": i, "name": c, "clips": 0, "videos": 0, "videos_skipped": 0} for i, c in enumerate(out.classes)]
    skipped, warnings = [], []
    by_reason: dict[str, int] = {}
    for v in out.videos:
        row = per_class[v["label"]]
        if v["status"] == "ok":
            row["videos"] += 1
            row["clips"] += v["clips"]
        else:
            row["videos_skipped"] += 1
            skipped.append({"index": v["index"], "path": v["path"], "label": v["label"], "reason": v["reason"]})
            kind = v["reason"].split(":", 1)[0].strip() or "unknown"
            by_reason[kind] = by_reason.get(kind, 0) + 1
        if v.get("warning"):
            warnings.append({"index": v["index"], "path": v["path"], "warning": v["warning"]})
    shard_bytes = sum(int(s["bytes"]) for s in out.shards)
    offsets_bytes = int(index.get("offsets", {}).get("bytes", 0))
    report = _read_json(out.loc, REPORT_NAME)
    return {
        "url": out.loc.url,
        "split": out.split,
        "format": index["format"],
        "version": index["version"],
        "options": index["options"],
        "counts": index["counts"],
        "classes": per_class,
        "shards": [{"name": s["name"], "clips": s["clips"], "bytes": s["bytes"], "first_clip": s["first_clip"]} for s in out.shards],
        "shard_bytes": shard_bytes,
        "total_bytes": shard_bytes + offsets_bytes,
        "skipped": skipped,
        "skipped_by_reason": dict(sorted(by_reason.items(), key=lambda kv: -kv[1])),
        "warnings": warnings,
        "seconds": report.get("seconds") if report else None,
    }


def format_inspect(info: Mapping[str, Any], *, show_all: bool = False, limit: int = 10) -> str:
    """The human-readable text of :func:`inspect_output`'s dict (long lists cut unless ``show_all``)."""
    c = info["counts"]
    o = info["options"]
    lines = [f"{info['url']}  ({info['format']} v{info['version']}, split {info['split']})"]
    fr = f"{o['frame_rate']:g} fps" if o.get("frame_rate") else "source fps"
    size = _describe_resize(o)
    lines.append(
        f"clips: {c['clips']} of {o['frames_per_clip']} frames, step {o['step_between_clips']}, {fr}, {size}, "
        f"codec {o['codec']}" + (f" (quality {o['jpeg_quality']})" if o["codec"] == "jpeg" else "")
    )
    lines.append("options: " + ", ".join(f"{k}={_fmt_value(v)}" for k, v in sorted(o.items())))
    lines.append(
        f"videos: {c['videos']} ({c['videos_ok']} converted, {c['videos_skipped']} skipped)"
        + (f", converted in {info['seconds']:.1f} s" if info.get("seconds") else "")
    )
    lines.append("")
    classes = info["classes"]
    lines.append(f"classes: {len(classes)}")
    width = max([len(str(r["clips"])) for r in classes] + [5])
    rows = classes if show_all or len(classes) <= 2 * limit else classes[:limit]
    lines.append(f"  {'label':>5}  {'clips':>{width}}  videos  skipped  name")
    for r in rows:
        lines.append(f"  {r['label']:>5}  {r['clips']:>{width}}  {r['videos']:>6}  {r['videos_skipped']:>7}  {r['name']}")
    if len(rows) < len(classes):
        counts = [r["clips"] for r in classes]
        lines.append(f"  ... {len(classes) - len(rows)} more classes (--all lists them); clips per class min {min(counts)}, "
                     f"median {int(np.median(counts))}, max {max(counts)}")
    lines.append("")
    shards = info["shards"]
    sizes = [s["bytes"] for s in shards]
    lines.append(
        f"shards: {len(shards)}, {human_bytes(info['shard_bytes'])}"
        + (f" (each {human_bytes(min(sizes))} .. {human_bytes(max(sizes))})" if sizes else "")
        + f"; total with offsets: {human_bytes(info['total_bytes'])} ({info['total_bytes']} bytes)"
    )
    shown = shards if show_all or len(shards) <= 2 * limit else shards[:limit]
    for s in shown:
        lines.append(f"  {s['name']}  {s['clips']:>6} clips  {human_bytes(s['bytes']):>9}  from clip {s['first_clip']}")
    if len(shown) < len(shards):
        lines.append(f"  ... {len(shards) - len(shown)} more shards (--all lists them)")
    if info["skipped"]:
        lines.append("")
        why = ", ".join(f"{k} x{n}" for k, n in info["skipped_by_reason"].items())
        lines.append(f"skipped videos: {len(info['skipped'])} ({why})")
        shown_s = info["skipped"] if show_all else info["skipped"][: 2 * limit]
        for v in shown_s:
            lines.append(f"  {v['path']}: {v['reason']}")
        if len(shown_s) < len(info["skipped"]):
            lines.append(f"  ... {len(info['skipped']) - len(shown_s)} more (--all lists them)")
    if info["warnings"]:
        lines.append("")
        lines.append(f"videos converted with warnings: {len(info['warnings'])}")
        shown_w = info["warnings"] if show_all else info["warnings"][:limit]
        for v in shown_w:
            lines.append(f"  {v['path']}: {v['warning']}")
        if len(shown_w) < len(info["warnings"]):
            lines.append(f"  ... {len(info['warnings']) - len(shown_w)} more (--all lists them)")
    return "\n".join(lines)


def _describe_resize(o: Mapping[str, Any]) -> str:
    w, h, m = o.get("video_width", 0), o.get("video_height", 0), o.get("video_min_dimension", 0)
    if w and h:
        size = f"resized to {w}x{h}"
    elif w or h:
        size = f"resized to {'width ' + str(w) if w else 'height ' + str(h)}, aspect kept"
    elif m:
        size = f"shorter side {m}"
    else:
        size = "source size"
    if o.get("audio_samples") or o.get("audio_channels"):
        size += f", audio {o.get('audio_samples') or 'source'} Hz x {o.get('audio_channels') or 'source'} ch"
    return size


def _fmt_value(v: Any) -> str:
    if isinstance(v, list):
        return ",".join(str(x) for x in v)
    return str(v)


# -- verify --------------------------------------------------------------------------------------


@dataclass
class VerifyResult:
    """Outcome of :func:`verify_output`. ``ok`` is true when nothing is damaged."""

    url: str
    split: str
    shards: int = 0
    clips: int = 0
    bytes_checked: int = 0
    clips_decoded: int = 0
    bad_shards: dict[str, list[str]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.bad_shards and not self.problems

    def add(self, shard: str, problem: str) -> None:
        self.bad_shards.setdefault(shard, []).append(problem)

    def to_json(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "split": self.split,
            "ok": self.ok,
            "shards": self.shards,
            "clips": self.clips,
            "bytes_checked": self.bytes_checked,
            "clips_decoded": self.clips_decoded,
            "bad_shards": {k: list(v) for k, v in sorted(self.bad_shards.items())},
            "problems": list(self.problems),
            "warnings": list(self.warnings),
        }

    def summary(self) -> str:
        head = (
            f"{self.url}: {self.shards} shards ({human_bytes(self.bytes_checked)} hashed), "
            f"{self.clips_decoded} of {self.clips} clips decoded: "
        )
        notes = [f"  note: {w}" for w in self.warnings]
        if self.ok:
            return "\n".join([head + "OK"] + notes)
        n = len(self.bad_shards)
        lines = [head + f"DAMAGED ({n} bad shard{'s' if n != 1 else ''}" + (f", {len(self.problems)} other problems)" if self.problems else ")")]
        lines += [f"  {p}" for p in self.problems] + notes
        for name, problems in sorted(self.bad_shards.items()):
            lines.append(f"  BAD {name}: {problems[0]}")
            lines += [f"      {p}" for p in problems[1:]]
        return "\n".join(lines)


def verify_output(
    url: str | os.PathLike,
    split: Optional[str] = None,
    *,
    decode: int | str = 16,
    seed: int = 0,
    jobs: int = 4,
    storage_options: Optional[Mapping[str, Any]] = None,
    progress: bool = False,
) -> VerifyResult:
    """Re-read every shard of a conversion and check it against the index.

    Checks each shard's presence, size and SHA-256, the offsets file's size, SHA-256 and
    shape, that the offsets of each shard tile it exactly, and decodes ``decode`` clips
    picked at random with ``seed`` (``"all"``: every clip), checking keys, labels and frame
    counts. ``jobs`` shards are hashed at once (object stores serve parallel reads faster).
    Damage is reported in the result, never raised; a missing or unreadable index raises.
    """
    n_decode = _parse_decode(decode)
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs={jobs!r}: must be an integer >= 1")
    out = _Output(url, split, storage_options)
    res = VerifyResult(url=out.loc.url, split=out.split, shards=len(out.shards), clips=out.clips)
    offsets = _verify_index_and_offsets(out, res)
    _verify_shard_files(out, res, jobs=jobs, progress=progress)
    if offsets is not None:
        _verify_tiling(out, res, offsets)
        total = out.clips if n_decode is None else min(n_decode, out.clips)
        picks = range(out.clips) if total == out.clips else sorted(random.Random(seed).sample(range(out.clips), total))
        for g in tqdm(picks, total=total, desc="decode", unit="clip", disable=not progress, leave=False):
            try:
                out.read_sample(g, offsets)
            except ShardFormatError as exc:
                res.add(out.shard_of(g)["name"], f"clip {g} does not decode: {exc}")
            res.clips_decoded += 1
    for name, problems in sorted(res.bad_shards.items()):
        logger.error("bad shard %s: %s", out.loc.join_url(name), "; ".join(problems))
    for p in res.problems:
        logger.error("%s", p)
    return res


def _parse_decode(decode: int | str) -> Optional[int]:
    """``None`` for every clip, else the count."""
    if isinstance(decode, str):
        if decode.strip().lower() == "all":
            return None
        try:
            decode = int(decode)
        except ValueError:
            raise ValueError(f"decode={decode!r}: must be a number of clips >= 0 or 'all'") from None
    if isinstance(decode, bool) or not isinstance(decode, int) or decode < 0:
        raise ValueError(f"decode={decode!r}: must be a number of clips >= 0 or 'all'")
    return decode


def _verify_index_and_offsets(out: _Output, res: VerifyResult) -> Optional[np.ndarray]:
    """Index consistency and the offsets file; returns the offsets when usable."""
    first = 0
    for s in out.shards:
        if int(s["first_clip"]) != first:
            res.add(s["name"], f"index says first_clip {s['first_clip']}, the shards before it hold {first} clips")
        first += int(s["clips"])
    if first != out.clips:
        res.problems.append(f"{out.index_url}: shards hold {first} clips, counts say {out.clips}")
    meta = out.index.get("offsets") or {}
    where = out.loc.join_url(meta.get("name", OFFSETS_NAME))
    try:
        data = out.read_offsets_bytes()
    except (FileNotFoundError, OSError) as exc:
        res.problems.append(f"{where}: missing or unreadable ({exc})")
        return None
    res.bytes_checked += len(data)
    bad = False
    if "bytes" in meta and len(data) != int(meta["bytes"]):
        res.problems.append(f"{where}: {len(data)} bytes, index says {meta['bytes']}")
        bad = True
    elif _checksum_differs(meta, data):
        res.problems.append(f"{where}: {_checksum_label(meta)} differs from the index (file changed or damaged)")
        bad = True
    try:
        arr = out.parse_offsets(data)
    except ShardFormatError as exc:
        res.problems.append(str(exc))
        return None
    if bad:
        res.warnings.append(f"{where}: damaged; the clips it locates were not decoded")
        return None
    return arr


def _checksum_differs(entry: dict[str, Any], data: bytes) -> bool:
    algo, expected = entry_checksum(entry)
    return bool(algo) and checksum_of(algo, data) != expected


def _checksum_label(entry: dict[str, Any]) -> str:
    return {"sha256": "SHA-256", "xxh3_128": "XXH3-128"}.get(entry_checksum(entry)[0], "checksum")


def _verify_shard_files(out: _Output, res: VerifyResult, *, jobs: int, progress: bool) -> None:
    total = sum(int(s["bytes"]) for s in out.shards)
    bar = tqdm(total=total, desc=f"verify {out.split}", unit="B", unit_scale=True, disable=not progress, dynamic_ncols=True)

    def check(shard: dict[str, Any]) -> tuple[str, Optional[str], int]:
        name, want = shard["name"], int(shard["bytes"])
        size = out.loc.size(name)
        if size is None:
            return name, "missing", 0
        if size != want:
            how = "truncated" if size < want else "too long"
            return name, f"{how}: {size} bytes, index says {want}", 0
        algo, expected = entry_checksum(shard)
        if not algo:
            return name, "the index records no checksum for it", 0
        digest = new_checksum(algo)
        read = 0
        try:
            with out.loc.fs.open(out.loc.path(name), "rb") as fh:
                while chunk := fh.read(_HASH_CHUNK):
                    digest.update(chunk)
                    read += len(chunk)
                    bar.update(len(chunk))
        except (FileNotFoundError, OSError) as exc:
            return name, f"unreadable after {read} bytes: {exc}", read
        if read != want:
            return name, f"read {read} bytes, index says {want}", read
        if digest.hexdigest() != expected:
            return name, f"{_checksum_label(shard)} differs from the index (content changed or damaged)", read
        return name, None, read

    try:
        with ThreadPoolExecutor(max_workers=min(jobs, max(1, len(out.shards)))) as pool:
            for name, problem, read in pool.map(check, out.shards):
                res.bytes_checked += read
                if problem:
                    res.add(name, problem)
    finally:
        bar.close()
    listed = {s["name"] for s in out.shards}
    extra = [n for n in out.loc.listdir() if n.endswith(".tar") and n not in listed]
    if extra:
        res.warnings.append(f"{out.loc.url}: {len(extra)} .tar files not in the index (e.g. {extra[0]}); loaders ignore them")


def _verify_tiling(out: _Output, res: VerifyResult, offsets: np.ndarray) -> None:
    """Each shard's clips must be back to back from byte 0 up to the end-of-archive blocks."""
    for s in out.shards:
        a, n = int(s["first_clip"]), int(s["clips"])
        rows = offsets[a : a + n]
        if n == 0 or len(rows) != n:
            res.add(s["name"], f"index lists {n} clips from {a}, offsets.npy has {len(rows)} rows for them")
            continue
        ends = rows[:, 0] + rows[:, 1]
        starts_ok = rows[0, 0] == 0 and bool(np.all(rows[1:, 0] == ends[:-1]))
        if not starts_ok or ends[-1] + len(TAR_END) != int(s["bytes"]) or bool(np.any(rows[:, 1] <= 0)):
            res.add(s["name"], f"offsets.npy rows {a}..{a + n - 1} do not tile the shard's {s['bytes']} bytes")


# -- read one clip ------------------------------------------------------------------------------


def read_clip(
    url: str | os.PathLike, split: Optional[str] = None, *, index: int, storage_options: Optional[Mapping[str, Any]] = None
) -> dict[str, Any]:
    """Clip ``index`` (global clip order) of a conversion, decoded.

    Returns ``decode_sample``'s dict (``video`` uint8 [T,H,W,3], ``audio`` float32 [K,L],
    ``label``, ``meta``) plus ``key``, ``shard``, ``class_name``, ``path`` and ``url``.
    """
    out = _Output(url, split, storage_options)
    g = out.check_clip_index(index)
    sample = out.read_sample(g, out.offsets())
    sample["class_name"] = out.classes[sample["label"]]
    sample["path"] = sample["video_record"]["path"]
    sample["url"] = out.loc.url
    sample["clips"] = out.clips
    return sample


# -- preview -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PreviewResult:
    """Where :func:`preview_clip` wrote the sheet, its pixel size and which renderer drew the waveform."""

    path: str
    width: int
    height: int
    backend: str


@dataclass(frozen=True)
class _Layout:
    width: int
    columns: int
    rows: int
    tile_w: int
    tile_h: int
    margin: int = 16
    gap: int = 8
    label_h: int = 20
    title_h: int = 64
    wave_h: int = 180

    @property
    def grid_top(self) -> int:
        return self.title_h

    def tile_xy(self, t: int) -> tuple[int, int]:
        r, c = divmod(t, self.columns)
        return self.margin + c * (self.tile_w + self.gap), self.grid_top + r * (self.tile_h + self.label_h + self.gap)

    @property
    def wave_top(self) -> int:
        return self.grid_top + self.rows * (self.tile_h + self.label_h + self.gap) + self.gap

    @property
    def height(self) -> int:
        return self.wave_top + self.wave_h + self.margin


def _layout(frames: int, frame_h: int, frame_w: int, *, width: int, columns: int, channels: int, samples: int) -> _Layout:
    """Pixel layout of a sheet: title, ``columns`` frames per row, waveform lanes below."""
    cols = max(1, min(columns, frames))
    rows = math.ceil(frames / cols)
    wave_h = 56 if samples == 0 else 64 + 84 * min(channels, 4)
    base = _Layout(width=width, columns=cols, rows=rows, tile_w=1, tile_h=1, wave_h=wave_h)
    tile_w = (width - 2 * base.margin - (cols - 1) * base.gap) // cols
    if tile_w < 16:
        raise ValueError(f"width={width}: too narrow for {cols} columns of frames (tiles would be {tile_w} px)")
    tile_h = max(1, round(tile_w * frame_h / frame_w))
    return _Layout(width=width, columns=cols, rows=rows, tile_w=tile_w, tile_h=tile_h, wave_h=wave_h)


def preview_clip(
    url: str | os.PathLike,
    split: Optional[str] = None,
    *,
    index: int,
    out: str | os.PathLike,
    width: int = 1280,
    columns: int = 8,
    backend: str = "auto",
    storage_options: Optional[Mapping[str, Any]] = None,
) -> PreviewResult:
    """Write a PNG contact sheet of clip ``index``: its frames in a grid (``columns`` per row)
    with their clip and source frame numbers, class, label and path in the title, and the audio
    waveform below, for a person to check a conversion by eye.

    The sheet is ``width`` pixels wide; its height follows from the frame count and aspect.
    ``backend``: ``"matplotlib"`` (axes with seconds, the plot extra), ``"pillow"`` (no extra
    dependency) or ``"auto"`` (matplotlib when installed).
    """
    if backend not in ("auto", "matplotlib", "pillow"):
        raise ValueError(f"backend={backend!r}: must be 'auto', 'matplotlib' or 'pillow'")
    if isinstance(width, bool) or not isinstance(width, int) or width < 200:
        raise ValueError(f"width={width!r}: must be an integer >= 200 pixels")
    if isinstance(columns, bool) or not isinstance(columns, int) or columns < 1:
        raise ValueError(f"columns={columns!r}: must be an integer >= 1")
    if backend == "auto":
        try:
            import matplotlib  # noqa: F401

            backend = "matplotlib"
        except ImportError:
            backend = "pillow"
    elif backend == "matplotlib":
        try:
            import matplotlib  # noqa: F401
        except ImportError as exc:
            raise ValueError("backend='matplotlib' needs matplotlib: pip install 'clipshards[plot]'") from exc
    sample = read_clip(url, split, index=index, storage_options=storage_options)
    image = _render_sheet(sample, width=width, columns=columns, backend=backend)
    path = os.fspath(out)
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)
    image.save(path, format="PNG", optimize=True)
    logger.info("wrote %s (%dx%d) for clip %d of %s", path, image.width, image.height, index, sample["url"])
    return PreviewResult(path=path, width=image.width, height=image.height, backend=backend)


_BG = (250, 250, 250)
_FG = (25, 25, 25)
_MUTED = (110, 110, 110)
_WAVE_COLORS = ((31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14), (23, 190, 207), (140, 86, 75), (127, 127, 127))


def _render_sheet(sample: Mapping[str, Any], *, width: int, columns: int, backend: str):
    from PIL import Image, ImageDraw

    video: np.ndarray = sample["video"]
    audio: np.ndarray = sample["audio"]
    meta = sample["meta"]
    t_count, fh, fw = video.shape[:3]
    lay = _layout(t_count, fh, fw, width=width, columns=columns, channels=audio.shape[0], samples=audio.shape[1])
    sheet = Image.new("RGB", (lay.width, lay.height), _BG)
    draw = ImageDraw.Draw(sheet)
    title_font, text_font, small_font = _font(20, bold=True), _font(14), _font(12)

    title = f"{sample['class_name']}  (label {sample['label']})  \u2014  {sample['path']}"
    draw.text((lay.margin, 10), _fit(title, title_font, lay.width - 2 * lay.margin), font=title_font, fill=_FG)
    src = meta.get("frame_indices") or []
    fps = meta.get("fps") or 0
    parts = [
        f"clip {_sample_index(sample)} of {sample['clips']}",
        f"video {meta.get('video_index')} clip {meta.get('clip_index')}",
        f"{t_count} frames {fw}x{fh}",
    ]
    if src:
        parts.append(f"source frames {src[0]}\u2013{src[-1]}" + (f" at {fps:.4g} fps" if fps else ""))
    if meta.get("frame_rate"):
        parts.append(f"resampled to {meta['frame_rate']:g} fps")
    parts.append(f"shard {sample['shard']}")
    draw.text((lay.margin, 38), _fit("  \u00b7  ".join(parts), text_font, lay.width - 2 * lay.margin), font=text_font, fill=_MUTED)

    scale = lay.tile_w / fw
    resample = Image.Resampling.NEAREST if scale >= 2 else Image.Resampling.LANCZOS
    for t in range(t_count):
        x, y = lay.tile_xy(t)
        tile = Image.fromarray(np.ascontiguousarray(video[t])).resize((lay.tile_w, lay.tile_h), resample)
        sheet.paste(tile, (x, y))
        label = f"#{t}" + (f"  src {src[t]}" if t < len(src) else "")
        if fps and t < len(src):
            label += f"  {src[t] / fps:.2f}s"
        draw.text((x, y + lay.tile_h + 3), _fit(label, small_font, lay.tile_w), font=small_font, fill=_FG)

    box = (lay.margin, lay.wave_top, lay.width - lay.margin, lay.wave_top + lay.wave_h)
    rate = meta.get("audio_sample_rate") or 0
    start = src[0] / fps if src and fps else 0.0
    marks = [i / fps for i in src] if src and fps else []
    if audio.shape[1] == 0:
        draw.rectangle(box, outline=(205, 205, 205), fill=(255, 255, 255))
        draw.text((box[0] + 10, box[1] + lay.wave_h // 2 - 8), "no audio in this clip (audio is [1, 0])", font=text_font, fill=_MUTED)
    elif backend == "matplotlib":
        panel = _waveform_matplotlib(audio, rate, start, marks, box[2] - box[0], box[3] - box[1])
        sheet.paste(panel, box[:2])
    else:
        _waveform_pillow(draw, audio, rate, start, marks, box, small_font)
    return sheet


def _sample_index(sample: Mapping[str, Any]) -> int:
    v = sample["video_record"]
    return int(v["first_clip"]) + int(sample["meta"].get("clip_index", 0))


def _envelope(channel: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Min and max of ``channel`` over ``bins`` equal spans (a waveform that stays honest when
    thousands of samples share one pixel)."""
    n = len(channel)
    edges = np.linspace(0, n, bins + 1).astype(np.int64)
    edges[1:] = np.maximum(edges[1:], edges[:-1] + 1)
    edges = np.minimum(edges, n)
    idx = np.minimum(edges[:-1], n - 1)
    lo = np.minimum.reduceat(channel, idx)
    hi = np.maximum.reduceat(channel, idx)
    # reach back to the previous span's last sample so that steep stretches stay connected
    last = channel[np.maximum(idx[1:] - 1, 0)]
    lo[1:] = np.minimum(lo[1:], last)
    hi[1:] = np.maximum(hi[1:], last)
    return lo, hi


def _wave_geometry(k: int, h: int, *, top: int, bottom: int, gap: int = 6) -> list[tuple[float, float]]:
    """``(y, height)`` in pixels from the panel top of each channel's lane."""
    lane = (h - top - bottom - gap * (k - 1)) / k
    return [(top + c * (lane + gap), lane) for c in range(k)]


def _waveform_matplotlib(audio: np.ndarray, rate: int, start: float, marks: Sequence[float], w: int, h: int):
    """The waveform panel drawn by matplotlib: one lane per channel, seconds below, frame
    numbers above at the times their frames start."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from PIL import Image

    dpi = 100
    fig = Figure(figsize=(w / dpi, h / dpi), dpi=dpi, facecolor=tuple(c / 255 for c in _BG))
    canvas = FigureCanvasAgg(fig)
    k, n = audio.shape
    left, right = 48, 12
    bins = min(n, 2 * w)
    if rate:
        x = start + (np.arange(bins) + 0.5) * (n / bins) / rate
        xlim = (start, start + n / rate)
    else:
        x = (np.arange(bins) + 0.5) * (n / bins)
        xlim = (0, n)
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    lim = max(peak * 1.1, 1e-3)
    axes = []
    for c, (y, lane) in enumerate(_wave_geometry(k, h, top=24, bottom=40)):
        ax = fig.add_axes((left / w, 1 - (y + lane) / h, (w - left - right) / w, lane / h))
        lo, hi = _envelope(audio[c], bins)
        color = tuple(v / 255 for v in _WAVE_COLORS[c % len(_WAVE_COLORS)])
        ax.fill_between(x, lo, hi, color=color, linewidth=0.5)
        for m in marks:
            ax.axvline(m, color="0.55", linewidth=0.7, linestyle=":", zorder=0)
        ax.axhline(0, color="0.85", linewidth=0.6, zorder=0)
        ax.set_xlim(*xlim)
        ax.set_ylim(-lim, lim)
        ax.set_yticks([-round(peak, 2), 0, round(peak, 2)] if peak >= 0.01 else [0])
        ax.text(0.004, 0.96, f"ch {c}", transform=ax.transAxes, fontsize=8, va="top", color="0.35")
        ax.tick_params(labelsize=7, length=2)
        if c < k - 1:
            ax.tick_params(labelbottom=False)
        axes.append(ax)
    if marks and len(marks) <= 64:
        step = max(1, math.ceil(len(marks) / 32))
        top = axes[0].secondary_xaxis("top")
        top.set_xticks(list(marks)[::step], labels=[f"#{t}" for t in range(0, len(marks), step)])
        top.tick_params(labelsize=7, length=2)
    unit = "seconds" if rate else "samples"
    detail = f"{k} ch, {n} samples" + (f" at {rate} Hz, peak {peak:.3f}" if rate else f", peak {peak:.3f}")
    axes[-1].set_xlabel(f"{unit}   ({detail}; dotted lines: frame start times)", fontsize=8, labelpad=2)
    canvas.draw()
    rgba = np.asarray(canvas.buffer_rgba())
    img = Image.fromarray(np.ascontiguousarray(rgba[..., :3]))
    return img if img.size == (w, h) else img.resize((w, h))


def _waveform_pillow(draw, audio: np.ndarray, rate: int, start: float, marks: Sequence[float], box, font) -> None:
    """The waveform panel drawn with Pillow alone: min/max envelope per pixel column, one lane
    per channel, dotted frame start times."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    k, n = audio.shape
    left, right = 44, 10
    pw = w - left - right
    draw.rectangle(box, outline=(205, 205, 205), fill=(255, 255, 255))
    peak = max(float(np.max(np.abs(audio))), 1e-3)
    duration = n / rate if rate else 0.0
    for m in marks:
        if duration and start <= m <= start + duration:
            px = x0 + left + (m - start) / duration * pw
            for yy in range(y0 + 4, y1 - 22, 4):
                draw.point((px, yy), fill=(150, 150, 150))
    bins = min(n, pw)
    for c, (y, lane) in enumerate(_wave_geometry(k, h, top=6, bottom=24)):
        mid = y0 + y + lane / 2
        half = lane / 2 - 1
        draw.line([(x0 + left, mid), (x1 - right, mid)], fill=(220, 220, 220))
        draw.text((x0 + 6, mid - 7), f"ch {c}", font=font, fill=_MUTED)
        lo, hi = _envelope(audio[c], bins)
        color = _WAVE_COLORS[c % len(_WAVE_COLORS)]
        for i in range(bins):
            px = x0 + left + i * pw / bins
            draw.line([(px, mid - hi[i] / peak * half), (px, mid - lo[i] / peak * half)], fill=color)
    caption = f"audio: {k} ch, {n} samples" + (
        f" at {rate} Hz, {start:.3f}–{start + duration:.3f} s" if rate else ""
    ) + f", peak {peak:.3f}; dotted lines: frame start times"
    draw.text((x0 + left, y1 - 19), caption, font=font, fill=_MUTED)


def _font(size: int, *, bold: bool = False):
    from PIL import ImageFont

    names = ["DejaVuSans-Bold.ttf", "DejaVuSans.ttf"] if bold else ["DejaVuSans.ttf"]
    candidates = []
    try:
        from matplotlib import get_data_path

        candidates += [os.path.join(get_data_path(), "fonts", "ttf", n) for n in names]
    except ImportError:
        pass
    candidates += names
    for c in candidates:
        try:
            return ImageFont.truetype(c, size)
        except OSError:
            continue
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # pragma: no cover - Pillow without FreeType
        return ImageFont.load_default()


def _fit(text: str, font, width: int) -> str:
    """``text`` shortened in the middle with an ellipsis so it fits ``width`` pixels."""
    if font.getlength(text) <= width:
        return text
    keep = len(text)
    while keep > 4:
        keep -= max(1, keep // 20)
        cut = text[: keep // 2] + "\u2026" + text[len(text) - keep // 2 :]
        if font.getlength(cut) <= width:
            return cut
    return text[:1] + "\u2026"


# -- command line -------------------------------------------------------------------------------


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("url", help="conversion OUT (local folder or fsspec URL) or one of its split folders")
    p.add_argument("--split", choices=SPLITS, default=None, help="split to read (default: the first of train/val/test present)")
    p.add_argument(
        "--storage-option", action="append", default=[], metavar="KEY=VALUE",
        help="fsspec storage option, repeatable (e.g. client_kwargs.endpoint_url=http://127.0.0.1:9000)",
    )
    p.add_argument("--quiet", "-q", action="store_true", help="only warnings and errors")


def add_subcommands(subparsers: Any) -> None:
    """Register ``inspect``, ``verify`` and ``preview`` on the ``clipshards`` command."""
    p = subparsers.add_parser(
        "inspect", help="show what a conversion holds",
        description="Options, classes with clip counts, shards with sizes, total bytes and skipped videos "
        "of a conversion, from its index (no shard is read).",
    )
    _add_common(p)
    p.add_argument("--json", action="store_true", help="print JSON for scripts instead of text")
    p.add_argument("--all", action="store_true", help="list every class, shard and skipped video")
    p.set_defaults(func=_run_inspect)

    p = subparsers.add_parser(
        "verify", help="check every shard against the index",
        description="Re-read every shard and the offsets file, check sizes and SHA-256 against the index, "
        "and decode some clips.",
        epilog=f"exit status: 0 intact; {EXIT_DAMAGED} damage found (each bad shard named); 2 bad arguments "
        "or no index; 1 other error.",
    )
    _add_common(p)
    p.add_argument("--decode", default="16", metavar="N|all", help="decode N random clips, or every clip with 'all' (default 16)")
    p.add_argument("--seed", type=int, default=0, help="seed for picking the clips to decode (default 0)")
    p.add_argument("--jobs", type=int, default=4, help="shards hashed in parallel (default 4)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_run_verify)

    p = subparsers.add_parser(
        "preview", help="draw one clip's frames and waveform into a PNG",
        description="A contact sheet of one clip: frames in a grid with their numbers, class and path in the "
        "title, audio waveform below (matplotlib when installed, else Pillow).",
    )
    _add_common(p)
    p.add_argument("--index", "-i", type=int, required=True, help="global clip index (0 .. clips-1)")
    p.add_argument("--out", "-o", required=True, help="PNG file to write")
    p.add_argument("--width", type=int, default=1280, help="sheet width in pixels (default 1280)")
    p.add_argument("--columns", type=int, default=8, help="frames per row (default 8)")
    p.add_argument("--backend", choices=("auto", "matplotlib", "pillow"), default="auto", help="waveform renderer (default auto)")
    p.set_defaults(func=_run_preview)


def _run_inspect(args: argparse.Namespace) -> int:
    info = inspect_output(args.url, args.split, storage_options=parse_storage_options(args.storage_option))
    print(json.dumps(info, indent=1, ensure_ascii=False) if args.json else format_inspect(info, show_all=args.all))
    return 0


def _run_verify(args: argparse.Namespace) -> int:
    res = verify_output(
        args.url, args.split, decode=args.decode, seed=args.seed, jobs=args.jobs,
        storage_options=parse_storage_options(args.storage_option), progress=not args.no_progress and not args.json,
    )
    print(json.dumps(res.to_json(), indent=1) if args.json else res.summary())
    return 0 if res.ok else EXIT_DAMAGED


def _run_preview(args: argparse.Namespace) -> int:
    res = preview_clip(
        args.url, args.split, index=args.index, out=args.out, width=args.width, columns=args.columns,
        backend=args.backend, storage_options=parse_storage_options(args.storage_option),
    )
    print(f"{res.path}: {res.width}x{res.height} PNG")
    return 0
