"""Failures are data: per-video records, per-shard stats and the run summary."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Optional

from .units import human_bytes
from .walk import escape_surrogates

__all__ = ["VideoRecord", "ConvertReport", "EXIT_OK", "EXIT_SKIPPED", "EXIT_STRICT", "human_bytes", "append_summary"]

EXIT_OK = 0
"""Every video found was converted."""
EXIT_SKIPPED = 3
"""The conversion finished, but some videos were skipped (listed in the report)."""
EXIT_STRICT = 4
"""``--strict`` and at least one video was unusable: nothing final was written."""


_OPTIONAL = ("folds", "sample", "size", "stamp", "key")  # record fields left out of JSON when unset


@dataclass
class VideoRecord:
    """What became of one video: ``status`` is ``ok``, ``no_clips`` or ``skipped``."""

    index: int
    path: str
    label: int
    status: str = "pending"
    reason: str = ""
    clips: int = 0
    first_clip: int = 0
    frames: int = 0
    fps: float = 0.0
    width: int = 0
    height: int = 0
    sample_rate: int = 0
    warning: str = ""
    folds: Optional[list[int]] = None  # UCF101/HMDB51: TRAIN|TEST bits for folds 1..3 (see .folds)
    sample: Optional[dict[str, Any]] = None  # the videos layout: where its frames and audio lie in its sample
    # the source file as converted (its size and walk.file_stamp): what `convert --append` compares (index version 3)
    size: Optional[int] = None
    stamp: Optional[str] = None
    key: Optional[int] = None  # the video number in its samples' keys, where it is not ``index`` (an appended output)

    def to_json(self) -> dict[str, Any]:
        """As JSON; texts valid UTF-8 (a decoder's message may quote an undecodable file name);
        ``folds`` only where there are folds, ``sample`` only in the videos layout, ``size``,
        ``stamp`` and ``key`` only where known (older records have none)."""
        return {k: escape_surrogates(v) if isinstance(v, str) else v for k, v in asdict(self).items()
                if not (k in _OPTIONAL and v is None)}

    @property
    def key_video(self) -> int:
        """The video number its samples' keys carry (:func:`~clipshards.convert.schema.clip_key`)."""
        return self.index if self.key is None else self.key

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "VideoRecord":
        return cls(**data)


@dataclass
class ConvertReport:
    """Returned by :func:`clipshards.convert.convert` and written as ``report.json``."""

    out: str
    split: str
    videos: list[VideoRecord] = field(default_factory=list)
    shards: list[dict[str, Any]] = field(default_factory=list)
    clips: int = 0
    bytes: int = 0
    seconds: float = 0.0
    resumed_shards: int = 0
    dry_run: bool = False
    plan: Optional[dict[str, Any]] = None
    discovery: list[dict[str, str]] = field(default_factory=list)  # DiscoveryNote.to_json(): loops, duplicates, odd names
    append: Optional[dict[str, Any]] = None  # `convert --append`: its generation, the videos added, changed, removed

    @property
    def skipped(self) -> list[VideoRecord]:
        return [v for v in self.videos if v.status != "ok"]

    @property
    def converted(self) -> list[VideoRecord]:
        return [v for v in self.videos if v.status == "ok"]

    @property
    def exit_code(self) -> int:
        return EXIT_SKIPPED if self.skipped else EXIT_OK

    def summary(self) -> str:
        lines = [
            f"{self.split}: {len(self.converted)}/{len(self.videos)} videos converted, "
            f"{self.clips} clips in {len(self.shards)} shards, {human_bytes(self.bytes)}, {self.seconds:.1f} s"
            + (f" ({self.resumed_shards} shards kept from an earlier run)" if self.resumed_shards else "")
        ]
        if self.append is not None:
            lines.append(append_summary(self.append))
        if self.skipped:
            lines.append(f"{len(self.skipped)} videos skipped:")
            for v in self.skipped[:20]:
                lines.append(f"  {v.path}: {v.reason}")
            if len(self.skipped) > 20:
                lines.append(f"  ... and {len(self.skipped) - 20} more (see report.json)")
        if self.discovery:
            lines.append(f"{len(self.discovery)} notes from discovery (see report.json):")
            lines += [f"  {n['path']}: {n['reason']}" for n in self.discovery[:20]]
        return escape_surrogates("\n".join(lines))

    def to_json(self) -> dict[str, Any]:
        return {
            "out": self.out,
            "split": self.split,
            "counts": {
                "videos": len(self.videos),
                "videos_ok": len(self.converted),
                "videos_skipped": len(self.skipped),
                "clips": self.clips,
                "shards": len(self.shards),
                "bytes": self.bytes,
            },
            "seconds": round(self.seconds, 3),
            "resumed_shards": self.resumed_shards,
            "plan": self.plan,
            "shards": self.shards,
            "skipped": [{k: r[k] for k in ("path", "status", "reason")} for r in map(VideoRecord.to_json, self.skipped)],
            "discovery": self.discovery,
            **({"append": self.append} if self.append is not None else {}),
            "videos": [v.to_json() for v in self.videos],
        }


def append_summary(append: dict[str, Any]) -> str:
    """The one line an append adds to the summary: what changed in the input, what was written."""
    def n(count: int, word: str) -> str:
        return f"{count} {word}{'' if count == 1 else 's'}"

    return (f"append (generation {append['generation']}): {n(len(append['added']), 'video')} added, "
            f"{len(append['changed'])} changed (converted again), {len(append['removed'])} removed; "
            f"{n(append['shards_written'], 'new shard')}, {n(len(append['shards_dropped']), 'old shard')} deleted "
            "(no clip of it used any more)")
