"""The harness's own data: a Kinetics-like synthetic dataset (written with ``convert/synth.py``),
its conversions, and a synthetic converted index of many videos for the first-batch test.

Everything is cached under ``BenchConfig.work`` and rebuilt only when the spec changes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from clipshards.convert import ConvertOptions, convert
from clipshards.convert.report import VideoRecord
from clipshards.convert.schema import (
    FORMAT_NAME, FORMAT_VERSION, INDEX_NAME, OFFSETS_COLUMNS, OFFSETS_NAME, clip_checksum, clip_key, dumps_json, encode_npy,
    encode_sample, key_number,
)
from clipshards.convert.storage import Location
from clipshards.convert.synth import VideoSpec, write_video
from clipshards.convert.writer import ShardWriter, encode_members

from .config import BenchConfig

logger = logging.getLogger(__name__)

__all__ = ["video_spec", "build_dataset", "dataset_videos", "converted", "subset_root", "single_video_root", "synthetic_index"]

SPEC_FILE = "spec.json"


def video_spec(cfg: BenchConfig, *, seconds: float | None = None, seed: int = 0) -> VideoSpec:
    return VideoSpec(
        frames=int(round((seconds if seconds is not None else cfg.seconds) * cfg.fps)),
        fps=cfg.fps, width=cfg.width, height=cfg.height, gop=cfg.gop, bframes=cfg.bframes,
        sample_rate=cfg.sample_rate, channels=2, seed=seed,
    )


def _class_name(i: int) -> str:
    return f"class_{i:03d}"


def _write(args: tuple[str, VideoSpec]) -> str:
    return write_video(*args)


def _cached(folder: str, desc: dict[str, Any]) -> bool:
    try:
        with open(os.path.join(folder, SPEC_FILE)) as fh:
            return json.load(fh) == desc
    except (OSError, ValueError):
        return False


def _mark(folder: str, desc: dict[str, Any]) -> None:
    with open(os.path.join(folder, SPEC_FILE), "w") as fh:
        json.dump(desc, fh, indent=1)


def _write_all(jobs: list[tuple[str, VideoSpec]], desc: str) -> None:
    workers = min(len(jobs), os.cpu_count() or 1)
    with ProcessPoolExecutor(workers) as pool:
        list(tqdm(pool.map(_write, jobs), total=len(jobs), desc=desc, unit="video", leave=False))


def build_dataset(cfg: BenchConfig) -> str:
    """``work/dataset/train/class_NNN/video_NNN.mp4``: ``cfg.videos`` videos over ``cfg.classes`` classes."""
    root = os.path.join(cfg.work, "dataset")
    desc = {"videos": cfg.videos, "classes": cfg.classes, "spec": asdict(video_spec(cfg))}
    if _cached(root, desc):
        return root
    shutil.rmtree(root, ignore_errors=True)
    jobs = []
    for i in range(cfg.videos):
        path = os.path.join(root, "train", _class_name(i % cfg.classes), f"video_{i // cfg.classes:04d}.mp4")
        jobs.append((path, video_spec(cfg, seed=i)))
    logger.info("writing %d synthetic videos to %s", len(jobs), root)
    _write_all(jobs, "dataset")
    _mark(root, desc)
    return root


def dataset_videos(root: str) -> list[str]:
    """The dataset's video paths in torchvision order."""
    from clipshards.convert.layout import discover

    return [v.path for v in discover(root, "train", ("mp4",)).videos]


def subset_root(cfg: BenchConfig, root: str, count: int) -> str:
    """A dataset root whose ``train/`` holds symlinks to the first ``count`` videos of ``root``."""
    sub = os.path.join(cfg.work, f"subset_{count}")
    desc = {"root": root, "count": count, "dataset": json.load(open(os.path.join(root, SPEC_FILE)))}
    if _cached(sub, desc):
        return sub
    shutil.rmtree(sub, ignore_errors=True)
    for path in dataset_videos(root)[:count]:
        rel = os.path.relpath(path, root)
        os.makedirs(os.path.dirname(os.path.join(sub, rel)), exist_ok=True)
        os.symlink(path, os.path.join(sub, rel))
    _mark(sub, desc)
    return sub


def single_video_root(cfg: BenchConfig, seconds: float) -> str:
    """A one-video dataset of ``seconds`` seconds (same spec as the main dataset)."""
    root = os.path.join(cfg.work, f"single_{seconds:g}s")
    desc = {"spec": asdict(video_spec(cfg, seconds=seconds))}
    if _cached(root, desc):
        return root
    shutil.rmtree(root, ignore_errors=True)
    write_video(os.path.join(root, "train", _class_name(0), "video_0000.mp4"), video_spec(cfg, seconds=seconds))
    _mark(root, desc)
    return root


def converted(cfg: BenchConfig, root: str, codec: str) -> str:
    """Convert ``root`` once per codec (the converter itself skips an identical conversion)."""
    out = os.path.join(cfg.work, f"converted_{codec}")
    report = convert(
        root, out, frames_per_clip=cfg.frames_per_clip, step_between_clips=cfg.step_between_clips, layout="clips",
        codec=codec, progress=False, overwrite=True, yes=True,  # raw clips of synthetic video: far over 20x the input
    )
    if report.skipped:
        shutil.rmtree(out, ignore_errors=True)
        first = report.skipped[0]
        raise RuntimeError(f"converting {root} skipped {len(report.skipped)} videos (first: {first.path}: {first.reason})")
    return out


def synthetic_index(cfg: BenchConfig, videos: int, *, codec: str = "raw", clips_per_shard: int = 1000) -> str:
    """A converted dataset of ``videos`` videos with one small clip each, written without decoding.

    Used to time the first batch against index size: shards are real (written by the
    converter's ``ShardWriter``), frames are tiny, and ``index.json`` follows the converter's layout.
    """
    out = os.path.join(cfg.work, f"index_{videos}_{codec}")
    desc = {"videos": videos, "codec": codec, "clips_per_shard": clips_per_shard, "T": cfg.frames_per_clip, "v": 3}
    loc = Location(out).child("train")
    if _cached(out, desc):
        return out
    shutil.rmtree(out, ignore_errors=True)
    loc.makedirs()
    classes = [_class_name(i) for i in range(min(400, videos))]
    T = cfg.frames_per_clip
    rng = np.random.default_rng(0)
    video = rng.integers(0, 256, size=(T, 8, 8, 3), dtype=np.uint8)
    audio = np.zeros((2, 64), dtype=np.float32)
    shards: list[dict[str, Any]] = []
    offsets = np.zeros((videos, len(OFFSETS_COLUMNS)), dtype=np.int64)
    records = []
    writer = None
    for i in tqdm(range(videos), desc=f"index {videos}", unit="video", leave=False):
        if writer is None or writer.info.clips == clips_per_shard:
            if writer is not None:
                shards.append({**writer.close().to_json(), "first_clip": i - clips_per_shard})
            writer = ShardWriter(loc, "train", len(shards))
        label = i % len(classes)
        rel = f"train/{classes[label]}/video_{i:07d}.mp4"
        meta = {"path": rel, "class": classes[label], "label": label, "video_index": i, "clip_index": 0,
                "frame_indices": list(range(T)), "fps": float(cfg.fps), "frame_rate": None,
                "audio_sample_rate": cfg.sample_rate}
        data = encode_members(encode_sample(clip_key(i, 0), video=video, audio=audio, label=label, meta=meta, codec=codec))
        offsets[i] = (writer.size, len(data), key_number(i, 0), label, clip_checksum(data))
        writer.add(data)
        records.append(VideoRecord(index=i, path=rel, label=label, status="ok", clips=1, first_clip=i, frames=T,
                                   fps=float(cfg.fps), width=8, height=8, sample_rate=cfg.sample_rate).to_json())
    assert writer is not None
    info = writer.close()
    shards.append({**info.to_json(), "first_clip": videos - info.clips})
    offsets_bytes = encode_npy(offsets)
    loc.write_bytes_atomic(OFFSETS_NAME, offsets_bytes)
    index = {
        "format": FORMAT_NAME, "version": FORMAT_VERSION, "layout": "clips", "split": "train", "fingerprint": f"synthetic-{videos}",
        "max_frame": {"height": 8, "width": 8},
        "options": ConvertOptions(frames_per_clip=T, step_between_clips=T, codec=codec, extensions=("mp4",)).output_options(),
        "classes": classes,
        "counts": {"videos": videos, "videos_ok": videos, "videos_skipped": 0, "clips": videos,
                   "shards": len(shards), "bytes": sum(s["bytes"] for s in shards)},
        "offsets": {"name": OFFSETS_NAME, "bytes": len(offsets_bytes), "sha256": hashlib.sha256(offsets_bytes).hexdigest()},
        "shards": shards,
        "videos": records,
    }
    loc.write_bytes_atomic(INDEX_NAME, dumps_json(index))
    _mark(out, desc)
    return out
