"""The files a finished conversion is read by: ``index.json``, ``offsets.npy``, ``report.json``.

They are written last, after every shard (the index last of all: its presence marks a
complete conversion). :func:`read_json` reads any JSON file of an output (index, report,
done-markers) and treats a missing or damaged one as absent.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Iterable, Mapping, Optional, Sequence

import numpy as np

from .layout import DatasetLayout
from .options import ConvertOptions
from .report import ConvertReport, VideoRecord
from .schema import (FORMAT_NAME, FORMAT_VERSION, INDEX_NAME, LAYOUT_CLIPS, LAYOUT_VIDEOS, OFFSETS_COLUMNS, OFFSETS_NAME,
                     REPORT_NAME, checksum_of, dumps_json, encode_npy)
from .storage import Location
from .video_sample import VIDEOS_TABLE_NAME, table_bytes
from .writer import ShardInfo

logger = logging.getLogger(__name__)

__all__ = ["read_json", "write_index", "report_from_index", "offsets_array", "max_frame", "table_entry", "index_document",
           "write_report_and_index", "video_row", "video_rows"]


def read_json(loc: Location, name: str) -> Optional[dict[str, Any]]:
    """``loc/name`` parsed, or None when it is missing, unreadable or not JSON (logged)."""
    try:
        return json.loads(loc.read_bytes(name))
    except (FileNotFoundError, OSError):
        return None
    except ValueError:
        logger.warning("%s is not valid JSON; ignoring it", loc.join_url(name))
        return None


def offsets_array(shards: Iterable[ShardInfo], clips: int) -> np.ndarray:
    """``[clips, len(OFFSETS_COLUMNS)]`` int64: each clip's row (byte offset in its shard, length,
    key number, label, checksum), in global clip order."""
    offsets = np.zeros((clips, len(OFFSETS_COLUMNS)), dtype=np.int64)
    g = 0
    for s in shards:
        if s.offsets:
            offsets[g : g + s.clips] = np.asarray(s.offsets, dtype=np.int64)
        g += s.clips
    return offsets


def max_frame(videos: Iterable[VideoRecord]) -> dict[str, int]:
    """The largest frame height and width of the converted videos' clips: a loader refuses a
    clip whose frames claim more before decoding it."""
    ok = [v for v in videos if v.status == "ok"]
    return {"height": max((v.height for v in ok), default=0), "width": max((v.width for v in ok), default=0)}


def write_index(
    loc: Location,
    *,
    opts: ConvertOptions,
    layout: DatasetLayout,
    fingerprint: str,
    shards: Sequence[ShardInfo],
    records: Mapping[int, VideoRecord],
    clips: int,
    total_bytes: int,
    report: ConvertReport,
) -> None:
    """Write ``offsets.npy``, ``report.json`` (``report`` filled in) and ``index.json``, in that order."""
    offsets_bytes = encode_npy(offsets_array(shards, clips))
    loc.write_bytes_atomic(OFFSETS_NAME, offsets_bytes)
    videos = [records[e.index] for e in layout.videos]
    shard_rows = []
    first = 0
    for s in shards:
        shard_rows.append({**s.to_json(), "first_clip": first})
        first += s.clips
    index = index_document(opts, classes=layout.classes, fingerprint=fingerprint, shard_rows=shard_rows, videos=videos,
                           clips=clips, total_bytes=total_bytes, offsets=table_entry(opts, OFFSETS_NAME, offsets_bytes),
                           annotations=layout.annotations)
    if opts.layout == LAYOUT_VIDEOS:
        data = table_bytes(video_rows(shards, videos))
        loc.write_bytes_atomic(VIDEOS_TABLE_NAME, data)
        index.update(layout=LAYOUT_VIDEOS, video_table=table_entry(opts, VIDEOS_TABLE_NAME, data))
    write_report_and_index(loc, report, index, videos=videos, shard_rows=shard_rows, clips=clips, total_bytes=total_bytes)


def table_entry(opts: ConvertOptions, name: str, data: bytes) -> dict[str, Any]:
    """What an index records of one of its tables: its name, size and checksum."""
    return {"name": name, "bytes": len(data), opts.checksum: checksum_of(opts.checksum, data)}


def index_document(opts: ConvertOptions, *, classes: Sequence[str], fingerprint: str, shard_rows: list[dict[str, Any]],
                   videos: Sequence[VideoRecord], clips: int, total_bytes: int, offsets: dict[str, Any],
                   annotations: Optional[Mapping[str, Any]]) -> dict[str, Any]:
    """The content of ``index.json`` (the videos layout adds its table; an append its generation and extents)."""
    counts = {
        "videos": len(videos),
        "videos_ok": sum(v.status == "ok" for v in videos),
        "videos_skipped": sum(v.status != "ok" for v in videos),
        "clips": clips,
        "shards": len(shard_rows),
        "bytes": total_bytes,
    }
    index = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "split": opts.split,
        "fingerprint": fingerprint,
        "layout": LAYOUT_CLIPS,
        "max_frame": max_frame(videos),
        "options": opts.output_options(),
        "classes": list(classes),
        "counts": counts,
        "offsets": offsets,
        "shards": shard_rows,
        "videos": [v.to_json() for v in videos],
    }
    if annotations is not None:
        index["annotations"] = annotations  # UCF101/HMDB51: the files the folds were read from
    return index


def write_report_and_index(loc: Location, report: ConvertReport, index: Mapping[str, Any], *, videos: Sequence[VideoRecord],
                           shard_rows: list[dict[str, Any]], clips: int, total_bytes: int) -> None:
    """``report.json`` (``report`` filled in), then ``index.json``: its replacement, in one atomic
    step, is what makes the conversion (or the append) complete."""
    report.videos, report.shards, report.clips, report.bytes = list(videos), shard_rows, clips, total_bytes
    loc.write_bytes_atomic(REPORT_NAME, json.dumps(report.to_json(), indent=1, ensure_ascii=False).encode("utf-8"))
    loc.write_bytes_atomic(INDEX_NAME, dumps_json(index))


def video_row(v: VideoRecord, shard: int, row: Sequence[int]) -> dict[str, Any]:
    """The videos layout: the table row of stored video ``v``, its sample at offsets row ``row`` of shard ``shard``."""
    return {"video_index": v.index, "label": v.label, "num_frames": v.frames, "width": v.width, "height": v.height,
            "fps": v.fps, "shard": shard, "sample_offset": row[0], "sample_bytes": row[1], **(v.sample or {})}


def video_rows(shards: Sequence[ShardInfo], videos: Sequence[VideoRecord]) -> list[dict[str, Any]]:
    """The videos layout: a table row per stored video (``videos.npy``, see :mod:`.video_sample`):
    its sample's shard and byte range, and where its frames and audio lie in it."""
    stored = iter([v for v in videos if v.status == "ok"])
    return [video_row(next(stored), i, row) for i, s in enumerate(shards) for row in s.offsets]


def report_from_index(index: Mapping[str, Any], report_json: Mapping[str, Any], url: str, split: str) -> ConvertReport:
    """The report of a finished conversion, rebuilt from its index (and ``report.json``'s plan)."""
    report = ConvertReport(out=url, split=split, plan=report_json.get("plan"), discovery=list(report_json.get("discovery") or []))
    report.videos = [VideoRecord.from_json(v) for v in index["videos"]]
    report.shards = list(index["shards"])
    report.clips = int(index["counts"]["clips"])
    report.bytes = int(index["counts"]["bytes"])
    report.resumed_shards = len(report.shards)
    return report
