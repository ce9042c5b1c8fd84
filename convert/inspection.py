"""``clipshards inspect``: what one split of a conversion holds, from its index alone.

Fast whatever the size of the output: no shard is read. :func:`inspect_output` gives a
JSON-ready dict (for scripts), :func:`format_inspect` the text a person reads.
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from .folds import FOLDS, TEST, TRAIN
from .index import read_json
from .output import Output
from .schema import REPORT_NAME, ShardFormatError
from .units import human_bytes

__all__ = ["inspect_output", "format_inspect", "fold_counts"]


def inspect_output(
    url: str | os.PathLike, split: Optional[str] = None, *, storage_options: Optional[Mapping[str, Any]] = None
) -> dict[str, Any]:
    """What one split of a conversion holds, read from its index alone (fast, reads no shard).

    ``url`` is the conversion's OUT (then ``split`` picks ``OUT/<split>``, default the first of
    train/val/test present) or a split folder. Returns a JSON-ready dict: options, classes with
    clip counts, shards with sizes, byte totals, skipped videos with their reasons.
    """
    out = Output(url, split, storage_options)
    bad = out.bad_names()
    if bad:  # the index names files outside its split: refused, as every reader refuses it
        raise ShardFormatError(bad[0])
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
    offsets_bytes = sum(int((index.get(k) or {}).get("bytes", 0)) for k in ("offsets", "video_table", "extents"))
    report = read_json(out.loc, REPORT_NAME)
    folds = {"folds": fold_counts(out.videos, index.get("annotations"))} if index.get("annotations") else {}
    return {
        "url": out.loc.url,
        "split": out.split,
        "format": index["format"],
        "version": index["version"],
        "layout": out.layout,
        "options": index["options"],
        "counts": index["counts"],
        "classes": per_class,
        "shards": [{"name": s["name"], "clips": s["clips"], "bytes": s["bytes"], "first_clip": s.get("first_clip")}
                   for s in out.shards],  # an appended output's shards hold no single run of the clips: None
        "generation": out.generation,
        "shard_bytes": shard_bytes,
        "total_bytes": shard_bytes + offsets_bytes,
        "skipped": skipped,
        "skipped_by_reason": dict(sorted(by_reason.items(), key=lambda kv: -kv[1])),
        "warnings": warnings,
        "seconds": report.get("seconds") if report else None,
        **folds,
    }


def fold_counts(videos: Sequence[Mapping[str, Any]], annotations: Mapping[str, Any]) -> dict[str, Any]:
    """UCF101/HMDB51: videos (converted ones) and clips of each fold's train and test split, and
    of the videos in neither (a video listed in both counts in both)."""
    rows = []
    for f in FOLDS:
        row: dict[str, Any] = {"fold": f}
        for name, bit in (("train", TRAIN), ("test", TEST), ("neither", 0)):
            kept = [v for v in videos if (v["folds"][f - 1] & bit if bit else not v["folds"][f - 1])]
            ok = [v for v in kept if v["status"] == "ok"]
            row[name] = {"videos": len(kept), "videos_ok": len(ok), "clips": sum(int(v["clips"]) for v in ok)}
        rows.append(row)
    return {"dataset": annotations.get("dataset"), "files": [f["name"] for f in annotations.get("files", [])], "folds": rows}


def format_inspect(info: Mapping[str, Any], *, show_all: bool = False, limit: int = 10) -> str:
    """The human-readable text of :func:`inspect_output`'s dict (long lists cut unless ``show_all``)."""
    c = info["counts"]
    o = info["options"]
    appended = f", generation {info['generation']}: appended to" if info.get("generation", 1) > 1 else ""
    lines = [f"{info['url']}  ({info['format']} v{info['version']}{appended}, split {info['split']})"]
    fr = f"{o['frame_rate']:g} fps" if o.get("frame_rate") else "source fps"
    size = _describe_resize(o)
    codec = f"codec {o['codec']}" + (f" (quality {o['jpeg_quality']})" if o["codec"] == "jpeg" else "")
    if info.get("layout") == "videos":
        lines.append(f"videos layout: {c['clips']} videos stored whole, {size}, {codec}; clips cut when loading "
                     f"(defaults: {o['frames_per_clip']} frames, step {o['step_between_clips']}, {fr})")
    else:
        lines.append(f"clips: {c['clips']} of {o['frames_per_clip']} frames, step {o['step_between_clips']}, {fr}, {size}, {codec}")
    lines.append("options: " + ", ".join(f"{k}={_fmt_value(v)}" for k, v in sorted(o.items())))
    lines.append(
        f"videos: {c['videos']} ({c['videos_ok']} converted, {c['videos_skipped']} skipped)"
        + (f", converted in {info['seconds']:.1f} s" if info.get("seconds") else "")
    )
    lines.append("")
    if info.get("folds"):
        lines += _format_folds(info["folds"]) + [""]
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
        lines.append(f"  {s['name']}  {s['clips']:>6} clips  {human_bytes(s['bytes']):>9}"
                     + (f"  from clip {s['first_clip']}" if s["first_clip"] is not None else ""))
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


def _format_folds(folds: Mapping[str, Any]) -> list[str]:
    files = folds["files"]
    lines = [f"folds of {folds['dataset']} (from {len(files)} annotation files: {', '.join(files[:3])}"
             f"{', ...' if len(files) > 3 else ''}): converted videos / clips"]
    lines.append(f"  {'fold':>4}  {'train':>17}  {'test':>17}  {'in neither':>17}")
    for r in folds["folds"]:
        cells = [f"{r[k]['videos_ok']} / {r[k]['clips']}" for k in ("train", "test", "neither")]
        lines.append(f"  {r['fold']:>4}  " + "  ".join(f"{c:>17}" for c in cells))
    return lines


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
