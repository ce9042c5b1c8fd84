"""Resuming: a done-marker after each finished shard, read back when a run starts again.

The marker ``OUT/<split>/_progress/<shard>.json`` holds the run's fingerprint, the shard's
entry and offsets, the records of the videos finished since the previous marker and the
cursor ``(video, clip)`` of the next sample. A run with the same input and options keeps
every shard whose marker and size check out and continues from the last cursor.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Iterable

from .index import read_json
from .report import VideoRecord
from .schema import OFFSETS_COLUMNS, dumps_json, entry_checksum, shard_name
from .storage import Location
from .writer import ShardInfo

logger = logging.getLogger(__name__)

__all__ = ["PROGRESS_DIR", "Resumed", "DoneMarkers"]

PROGRESS_DIR = "_progress"


@dataclass
class Resumed:
    """What an earlier run left: its complete shards, their videos' records and the cursor."""

    shards: list[ShardInfo] = field(default_factory=list)
    records: dict[int, VideoRecord] = field(default_factory=dict)
    cursor: tuple[int, int] = (0, 0)  # (video index, clip index within it) of the next sample


class DoneMarkers:
    """The done-markers of one split's output, for runs of one ``fingerprint``; ``split``: the
    prefix of the run's shard names (the split, or for an append the split and its generation)."""

    def __init__(self, loc: Location, split: str, fingerprint: str):
        self.loc, self.split, self.fingerprint = loc, split, fingerprint

    def load(self) -> Resumed:
        """The shards complete in order from the first, as their markers say; stale markers
        (another fingerprint, a shard whose size differs, after a gap) are removed."""
        names = [n for n in self.loc.listdir(PROGRESS_DIR) if n.endswith(".json")]
        done = Resumed()
        for i in range(len(names)):
            marker = read_json(self.loc, f"{PROGRESS_DIR}/{shard_name(self.split, i)}.json")
            if marker is None or marker.get("fingerprint") != self.fingerprint:
                break
            info = marker["shard"]
            if self.loc.size(info["name"]) != info["bytes"]:
                break
            if any(len(row) != len(OFFSETS_COLUMNS) for row in marker["offsets"]):
                break  # written by a release whose offsets rows were (offset, length) only
            algo, checksum = entry_checksum(info)
            shard = ShardInfo(index=i, name=info["name"], clips=info["clips"], bytes=info["bytes"], checksum=checksum, algo=algo)
            shard.offsets = [tuple(o) for o in marker["offsets"]]
            done.shards.append(shard)
            for rec in marker["videos"]:
                r = VideoRecord.from_json(rec)
                done.records[r.index] = r
            done.cursor = tuple(marker["next"])  # type: ignore[assignment]
        kept = {f"{s.name}.json" for s in done.shards}
        for n in names:
            if n not in kept:
                self.loc.remove(f"{PROGRESS_DIR}/{n}")
        if done.shards:
            logger.info("resuming: %d complete shards kept, continuing at video %d clip %d", len(done.shards), *done.cursor)
        return done

    def write(self, info: ShardInfo, next_cursor: tuple[int, int], videos: Iterable[VideoRecord]) -> None:
        """Mark shard ``info`` complete: ``videos`` finished with it, the next sample at ``next_cursor``."""
        marker = {
            "fingerprint": self.fingerprint,
            "shard": info.to_json(),
            "offsets": info.offsets,
            "next": list(next_cursor),
            "videos": [r.to_json() for r in videos],
        }
        self.loc.write_bytes_atomic(f"{PROGRESS_DIR}/{info.name}.json", dumps_json(marker))

    def clear(self) -> None:
        self.loc.remove_tree(PROGRESS_DIR)
