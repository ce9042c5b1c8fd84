"""``clipshards verify``: is a conversion intact? Every shard and the offsets file re-read,
checked against the index, and some clips decoded.

Damage is data: :class:`VerifyResult` names each bad shard and what is wrong with it, and
the command exits with :data:`EXIT_DAMAGED`. Only a missing or unreadable index raises.
"""

from __future__ import annotations

import logging
import os
import random
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

import numpy as np
from tqdm.auto import tqdm

from .output import Output
from .schema import OFFSETS_NAME, ShardFormatError, checksum_of, entry_checksum, new_checksum
from .units import human_bytes

logger = logging.getLogger(__name__)

__all__ = ["verify_output", "VerifyResult", "EXIT_DAMAGED"]

EXIT_DAMAGED = 5
"""``clipshards verify`` found a missing, damaged or inconsistent shard or offsets file."""

_HASH_CHUNK = 8 * 1024 * 1024


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
    out = Output(url, split, storage_options)
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


def _verify_index_and_offsets(out: Output, res: VerifyResult) -> Optional[np.ndarray]:
    """Index consistency and the offsets file; returns the offsets when usable."""
    first = 0
    for s in out.shards if out.generation == 1 else ():  # appended to: the extents, checked when read, say where the clips are
        if int(s["first_clip"]) != first:
            res.add(s["name"], f"index says first_clip {s['first_clip']}, the shards before it hold {first} clips")
        first += int(s["clips"])
    if first != out.clips and out.generation == 1:
        res.problems.append(f"{out.index_url}: shards hold {first} clips, counts say {out.clips}")
    extents = out.index.get("extents") if out.generation > 1 else None
    if extents is not None and _checksum_differs(extents, out.loc.read_bytes(out.file_name(extents.get("name"), "extents"))):
        res.problems.append(f"{out.loc.join_url(str(extents.get('name')))}: {_checksum_label(extents)} differs from the index")
    meta = out.index.get("offsets") or {}
    where = out.loc.join_url(str(meta.get("name", OFFSETS_NAME)))
    try:
        data = out.read_offsets_bytes()
    except ShardFormatError as exc:  # a name outside the split: not read
        res.problems.append(f"{exc}; not read")
        return None
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


def _verify_shard_files(out: Output, res: VerifyResult, *, jobs: int, progress: bool) -> None:
    total = sum(int(s["bytes"]) for s in out.shards)
    bar = tqdm(total=total, desc=f"verify {out.split}", unit="B", unit_scale=True, disable=not progress, dynamic_ncols=True)

    def check(shard: dict[str, Any]) -> tuple[str, Optional[str], int]:
        name, want = shard["name"], int(shard["bytes"])
        try:
            out.file_name(name, "shard")
        except ShardFormatError as exc:
            return repr(name), f"{exc}; not read", 0
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
            with out.loc.open_read(name) as fh:
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


def _verify_tiling(out: Output, res: VerifyResult, offsets: np.ndarray) -> None:
    """Each shard's clips must be back to back from byte 0 up to the end-of-archive blocks (an
    appended output: each extent's from its first byte to its last, see :mod:`.extents`)."""
    for a, n, shard, start, stop in out.extents.tolist():
        s = out.shards[shard]
        rows = offsets[a : a + n]
        if n == 0 or len(rows) != n:
            res.add(s["name"], f"index lists {n} clips from {a}, offsets.npy has {len(rows)} rows for them")
            continue
        ends = rows[:, 0] + rows[:, 1]
        starts_ok = rows[0, 0] == start and bool(np.all(rows[1:, 0] == ends[:-1]))
        if not starts_ok or ends[-1] != stop or bool(np.any(rows[:, 1] <= 0)):
            what = f"the shard's {s['bytes']} bytes" if out.generation == 1 else f"bytes {start}..{stop} of the shard"
            res.add(s["name"], f"offsets.npy rows {a}..{a + n - 1} do not tile {what}")
    if offsets.shape[1] > 2 and len(offsets):  # index version 2: keys in clip order, labels naming classes
        same = np.repeat(np.arange(len(out.extents)), out.extents[:, 1])  # an appended output: within each extent
        if bool(np.any((offsets[1:, 2] <= offsets[:-1, 2]) & ((same[1:] == same[:-1]) | (out.generation == 1)))):
            res.problems.append(f"{out.index_url}: offsets.npy's sample keys are not in clip order (duplicate or moved rows)")
        if bool(np.any((offsets[:, 3] < 0) | (offsets[:, 3] >= len(out.classes)))):
            res.problems.append(f"{out.index_url}: offsets.npy has labels outside 0..{len(out.classes) - 1}")
