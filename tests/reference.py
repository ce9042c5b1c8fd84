"""A deliberately simple reference for the tests: decode everything, then index.

Independent of ``clipshards.convert.decode`` and ``clipshards.convert.clips``: it opens the
file with PyAV, decodes *all* frames of the best video stream and *all* audio of the best
audio stream into memory, and applies the rules of ``kinetics-semantics.md`` (2, 6, 7, 10,
11) with its own few lines of arithmetic. Slow and memory-hungry on purpose: it must be
obviously right, not fast. Shards are read back with ``tarfile`` and
``clipshards.convert.schema.decode_sample`` only (not with the loader).
"""

from __future__ import annotations

import io
import json
import math
import os
import signal
import subprocess
import sys
import tarfile
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Optional

import av
import numpy as np
import xxhash

from clipshards.convert.schema import decode_npy, decode_sample

EMPTY_AUDIO = np.empty((1, 0), dtype=np.float32)


@dataclass
class RefClip:
    label: int
    path: str  # relative to the dataset root, "/"-separated
    clip_index: int
    frame_indices: list[int]
    video: np.ndarray  # uint8 [T, H, W, 3]
    audio: np.ndarray  # float32 [K, L]


@dataclass
class RefVideo:
    fps: float
    num_frames: int
    clips: list[tuple[list[int], np.ndarray, np.ndarray]] = field(default_factory=list)


def _half_up(x: Fraction) -> int:
    return math.floor(x + Fraction(1, 2))


def ref_size(w: int, h: int, width: int, height: int, min_dimension: int) -> tuple[int, int]:
    """video_reader's resize rule: both set -> exact; one set -> keep aspect; else shorter side."""
    if width and height:
        return width, height
    if width:
        return width, _half_up(Fraction(h * width, w))
    if height:
        return _half_up(Fraction(w * height, h)), height
    if min_dimension:
        if w > h:
            return _half_up(Fraction(w * min_dimension, h)), min_dimension
        return min_dimension, _half_up(Fraction(h * min_dimension, w))
    return w, h


def ref_indices(n: int, fps: float, frame_rate: Optional[float]) -> list[int]:
    """Rule 6. The non-integral step is multiplied in float32, as torchvision's
    ``torch.arange(..., dtype=torch.float32) * step`` does."""
    if frame_rate is None:
        return list(range(n))
    step = fps / frame_rate
    if step == int(step):
        return list(range(0, n, int(step)))
    count = math.floor(n * frame_rate / fps)
    return [int(np.floor(np.float32(k) * np.float32(step))) for k in range(count)]


def ref_windows(entries: list[int], T: int, S: int) -> list[list[int]]:
    """Rule 7: full windows of T entries starting every S entries."""
    return [entries[s : s + T] for s in range(0, len(entries) - T + 1, S)]


def decode_all_video(path: str, width: int = 0, height: int = 0, min_dimension: int = 0) -> tuple[float, list[np.ndarray]]:
    with av.open(path) as c:
        stream = c.streams.best("video")
        fps = float(stream.average_rate)
        frames = []
        size = None
        for f in c.decode(stream):
            if size is None:
                size = ref_size(f.width, f.height, width, height, min_dimension)
            if size == (f.width, f.height):
                frames.append(f.to_ndarray(format="rgb24"))
            else:
                frames.append(f.to_ndarray(width=size[0], height=size[1], format="rgb24"))
    return fps, frames


def decode_all_audio(path: str, rate: int = 0, channels: int = 0) -> tuple[np.ndarray, float, int]:
    """The whole best audio stream as float32 planar, its first timestamp and sample rate."""
    with av.open(path) as c:
        if not c.streams.audio:
            return EMPTY_AUDIO, 0.0, 0
        stream = c.streams.best("audio")
        resampler = av.AudioResampler(format="fltp", layout=f"{channels}c" if channels else None, rate=rate or None)
        parts, t_first, sr = [], None, 0
        try:
            for f in c.decode(stream):
                if t_first is None:
                    t_first = float(f.time) if f.time is not None else 0.0
                for o in resampler.resample(f):
                    parts.append(o.to_ndarray())
                    sr = o.sample_rate
            for o in resampler.resample(None):
                parts.append(o.to_ndarray())
                sr = o.sample_rate
        except av.error.FFmpegError:
            return EMPTY_AUDIO, 0.0, 0
    if not parts:
        return EMPTY_AUDIO, 0.0, 0
    return np.concatenate(parts, axis=1).astype(np.float32), t_first or 0.0, sr


def reference_video(
    path: str | os.PathLike,
    *,
    frames_per_clip: int,
    step_between_clips: int = 1,
    frame_rate: Optional[float] = None,
    video_width: int = 0,
    video_height: int = 0,
    video_min_dimension: int = 0,
    audio_samples: int = 0,
    audio_channels: int = 0,
) -> RefVideo:
    """Every clip of one video: (source frame indices, frames, audio)."""
    path = os.fspath(path)
    fps, frames = decode_all_video(path, video_width, video_height, video_min_dimension)
    audio, t_first, sr = decode_all_audio(path, audio_samples, audio_channels)
    out = RefVideo(fps=fps, num_frames=len(frames))
    for idx in ref_windows(ref_indices(len(frames), fps, frame_rate), frames_per_clip, step_between_clips):
        video = np.stack([frames[i] for i in idx])
        if sr:
            start, stop = idx[0] / fps, (idx[-1] + 1) / fps
            a = max(0, math.floor((start - t_first) * sr + 0.5))
            b = min(audio.shape[1], math.floor((stop - t_first) * sr + 0.5))
            clip_audio = audio[:, a : max(a, b)]  # b < a (a clip before the audio starts): empty
        else:
            clip_audio = EMPTY_AUDIO
        out.clips.append((idx, video, clip_audio))
    return out


def reference_videos(root: str | os.PathLike, split: str = "train", extensions=("avi", "mp4")) -> list[tuple[str, int]]:
    """Rule 2: ``(relative path, label)`` of every candidate video in torchvision's order."""
    base = Path(root) / split
    classes = sorted(p.name for p in base.iterdir() if p.is_dir())
    found = []
    for label, cls in enumerate(classes):
        for folder, _, names in sorted(os.walk(base / cls, followlinks=True)):
            for name in sorted(names):
                if name.lower().endswith(tuple(extensions)):
                    found.append((os.path.relpath(os.path.join(folder, name), root).replace(os.sep, "/"), label))
    return found


def reference_dataset(root: str | os.PathLike, *, split: str = "train", extensions=("avi", "mp4"), exclude=(), **options) -> list[RefClip]:
    """All clips of a dataset, in global clip order (videos giving no clip contribute none;
    ``exclude`` names unusable videos, relative to ``root``, that the reference must not open)."""
    clips = []
    for rel, label in reference_videos(root, split, extensions):
        if rel in exclude:
            continue
        ref = reference_video(Path(root) / rel, **options)
        for c, (idx, video, audio) in enumerate(ref.clips):
            clips.append(RefClip(label, rel, c, idx, video, audio))
    return clips


def reference_flat_videos(root: str | os.PathLike, extensions=("avi",)) -> list[tuple[str, int]]:
    """UCF101/HMDB51 discovery (semantics 1-3): ``(relative path, label)`` of every video of
    ``root/<class>/...`` in torchvision's order; classes are ``os.scandir`` folders, sorted."""
    root = os.fspath(root)
    classes = sorted(e.name for e in os.scandir(root) if e.is_dir())
    found = []
    for label, cls in enumerate(classes):
        for folder, _, names in sorted(os.walk(os.path.join(root, cls), followlinks=True)):
            for name in sorted(names):
                if name.lower().endswith(tuple(extensions)):
                    found.append((os.path.relpath(os.path.join(folder, name), root).replace(os.sep, "/"), label))
    return found


def reference_fold_videos(root: str | os.PathLike, annotation_path: str | os.PathLike, dataset: str, fold: int,
                          train: bool) -> list[tuple[str, int]]:
    """Semantics 5-8, as torchvision's ``_select_fold`` reads them: the videos of one fold and
    split, ``(relative path, label)`` in discovery order."""
    root, ann = os.fspath(root), os.fspath(annotation_path)
    videos = reference_flat_videos(root)
    full = [os.path.join(root, *rel.split("/")) for rel, _ in videos]
    selected: set[str] = set()
    if dataset == "ucf101":
        with open(os.path.join(ann, f"{'train' if train else 'test'}list{fold:02d}.txt")) as fid:
            for x in fid.readlines():
                selected.add(os.path.join(root, *x.strip().split(" ")[0].split("/")))
        keep = [p in selected for p in full]
    else:
        import glob

        for filepath in glob.glob(os.path.join(ann, f"*test_split{fold}.txt")):
            with open(filepath) as fid:
                for line in fid.readlines():
                    name, tag = line.split()
                    if int(tag) == (1 if train else 2):
                        selected.add(name)
        keep = [os.path.basename(p) in selected for p in full]
    return [v for v, k in zip(videos, keep) if k]


def reference_fold_dataset(root: str | os.PathLike, annotation_path: str | os.PathLike, dataset: str, fold: int,
                           train: bool, cache: Optional[dict] = None, **options) -> list[RefClip]:
    """All clips of one fold and split, in torchvision's global clip order (rule 7); ``cache``
    (a dict) keeps each video's reference between calls with the same options."""
    clips = []
    cache = {} if cache is None else cache
    for rel, label in reference_fold_videos(root, annotation_path, dataset, fold, train):
        if rel not in cache:
            cache[rel] = reference_video(Path(root) / rel, **options)
        ref = cache[rel]
        for c, (idx, video, audio) in enumerate(ref.clips):
            clips.append(RefClip(label, rel, c, idx, video, audio))
    return clips


@dataclass
class ShardClip:
    key: str
    shard: str
    label: int
    video: np.ndarray
    audio: np.ndarray
    meta: dict
    members: list[str]


def read_shards(split_dir: str | os.PathLike) -> list[ShardClip]:
    """Every sample of a converted split, read with ``tarfile`` in index shard order.

    Also checks that ``offsets.npy`` points at each sample's exact bytes (and, from index
    version 2, records its key as digits, its label and the XXH3-64 of its bytes) and that the
    index's shard sizes, clip counts and first_clip agree with what the tars contain.
    """
    split_dir = Path(split_dir)
    index = json.loads((split_dir / "index.json").read_bytes())
    offsets = decode_npy((split_dir / "offsets.npy").read_bytes(), expect=np.dtype(np.int64))
    columns = 2 if index["version"] == 1 else 5  # (offset, length[, key digits, label, xxh3_64 as int64])
    assert offsets.shape == (index["counts"]["clips"], columns), offsets.shape
    out: list[ShardClip] = []
    for shard in index["shards"]:
        data = (split_dir / shard["name"]).read_bytes()
        assert len(data) == shard["bytes"], shard
        assert shard["first_clip"] == len(out), shard
        samples: list[tuple[str, list[tuple[str, bytes]]]] = []
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tf:
            for m in tf:
                assert m.isfile(), m.name
                key, _, fieldname = m.name.partition(".")
                if not samples or samples[-1][0] != key:
                    samples.append((key, []))
                samples[-1][1].append((fieldname, tf.extractfile(m).read()))
        assert len(samples) == shard["clips"], (shard, len(samples))
        for key, members in samples:
            g = len(out)
            off, length = (int(x) for x in offsets[g, :2])
            with tarfile.open(fileobj=io.BytesIO(data[off : off + length]), mode="r:") as one:
                names = one.getnames()
            assert [n.partition(".")[0] for n in names] == [key] * len(members), (g, names)
            s = decode_sample(dict(members), where=f"{shard['name']}:{key}")
            if columns == 5:
                digest = int(offsets[g, 4]) % (1 << 64)
                assert (int(offsets[g, 2]), int(offsets[g, 3])) == (int(key.replace("_", "")), s["label"]), (g, key)
                assert xxhash.xxh3_64_intdigest(data[off : off + length]) == digest, g
            out.append(ShardClip(key, shard["name"], s["label"], np.array(s["video"]), np.array(s["audio"]), s["meta"],
                                 [f for f, _ in members]))
    assert len(out) == index["counts"]["clips"]
    return out


def assert_same_clips(got: list[ShardClip], want: list[RefClip], *, exact_video: bool = True, jpeg_tolerance: float = 0.0) -> None:
    """Same count, order, labels, source frame indices, frames (bit-exact or close) and audio."""
    assert len(got) == len(want), f"{len(got)} clips written, the reference gives {len(want)}"
    for g, (s, r) in enumerate(zip(got, want)):
        where = f"clip {g} ({r.path} #{r.clip_index})"
        assert s.label == r.label, where
        assert s.meta["path"] == r.path and s.meta["clip_index"] == r.clip_index, (where, s.meta)
        assert s.meta["frame_indices"] == r.frame_indices, where
        assert s.video.shape == r.video.shape, (where, s.video.shape, r.video.shape)
        if exact_video:
            assert np.array_equal(s.video, r.video), where
        else:
            diff = np.abs(s.video.astype(np.int16) - r.video.astype(np.int16)).mean()
            assert diff <= jpeg_tolerance, (where, diff)
        assert s.audio.dtype == np.float32 and s.audio.shape == r.audio.shape, (where, s.audio.shape, r.audio.shape)
        assert np.array_equal(s.audio, r.audio), where


# -- test data: built from clipshards.convert.synth, or remuxed from its files -------------


MIXED = {
    "train/archery/h264_aac.mp4": dict(frames=30, seed=1),
    "train/archery/mpeg4_mp3.avi": dict(frames=25, fps=25, codec="mpeg4", audio_codec="mp3", sample_rate=44100, seed=2),
    "train/bowling/no_audio.mp4": dict(frames=20, audio_codec=None, seed=3),
    "train/bowling/ntsc_odd_size.mp4": dict(frames=33, fps=Fraction(30000, 1001), width=63, height=47, channels=1,
                                            sample_rate=16000, seed=4),
    "train/bowling/portrait.mp4": dict(frames=16, width=36, height=64, audio_codec=None, seed=9),
    "train/juggling balls/pcm.avi": dict(frames=24, codec="mpeg4", audio_codec="pcm_s16le", sample_rate=8000, seed=5),
    "train/juggling balls/nested/bframes.mp4": dict(frames=28, bframes=2, seed=6),
    "val/archery/v.mp4": dict(frames=18, seed=7),
    "val/bowling/w.avi": dict(frames=21, codec="mpeg4", audio_codec="mp3", sample_rate=22050, seed=8),
}
"""Small videos covering the issue's cases: H.264+AAC, MPEG-4+MP3 in AVI, no audio,
29.97 fps at an odd size with mono audio, portrait, PCM in AVI, B-frames, a nested folder, two splits."""


def make_mixed_dataset(root: str | os.PathLike, videos: Optional[dict] = None) -> Path:
    from clipshards.convert.synth import VideoSpec, write_video

    for rel, spec in (MIXED if videos is None else videos).items():
        write_video(Path(root) / rel, VideoSpec(**spec))
    return Path(root)


def remux(src: str | os.PathLike, dst: str | os.PathLike, *, video: bool = True, audio: bool = True,
          garble: bool = False, options: Optional[dict] = None, keep=None) -> Path:
    """Copy ``src``'s packets into ``dst``: dropping streams, or packets for which
    ``keep(packet)`` is false, or with the video payload replaced by random bytes (a
    well-formed container whose video cannot be decoded)."""
    rng = np.random.default_rng(0)
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    with av.open(os.fspath(src)) as i, av.open(os.fspath(dst), "w", options=options or {}) as o:
        streams = {s.index: o.add_stream_from_template(s) for s in i.streams
                   if (s.type == "video" and video) or (s.type == "audio" and audio)}
        for p in i.demux():
            idx = p.stream.index
            if idx not in streams or p.dts is None or (keep is not None and not keep(p)):
                continue
            if garble and p.stream.type == "video":
                q = av.Packet(rng.integers(0, 256, p.size, dtype=np.uint8).tobytes())
                q.pts, q.dts, q.time_base, q.is_keyframe = p.pts, p.dts, p.time_base, p.is_keyframe
                p = q
            p.stream = streams[idx]
            o.mux(p)
    return Path(dst)


def tree_bytes(folder: str | os.PathLike, skip: tuple[str, ...] = ("report.json",)) -> dict[str, bytes]:
    """Every file under ``folder`` (relative name -> bytes), except the run-dependent report."""
    folder = Path(folder)
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name not in skip}


def run_cli(*args: Any) -> int:
    """``clipshards convert ARGS`` in this process; returns the exit status."""
    from clipshards.convert.cli import main

    try:
        return main(["convert", *(str(a) for a in args)])
    except SystemExit as exc:
        return int(exc.code or 0)


def run_command(args: list, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -m clipshards.convert ARGS`` in its own process group, killed whole on timeout
    (so a hung worker pool cannot outlive the test)."""
    proc = subprocess.Popen([sys.executable, "-m", "clipshards.convert", *(str(a) for a in args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


# -- the videos layout: one sample per video ------------------------------------------------


@dataclass
class VideoSampleRead:
    """One sample of a ``videos`` layout output, read with ``tarfile`` and plain NumPy."""

    key: str
    label: int
    meta: dict
    frames: np.ndarray  # uint8 [n, H, W, 3] (JPEG frames decoded)
    audio: np.ndarray  # float32 [K, N]
    members: list[str]


def read_video_samples(split_dir: str | os.PathLike) -> list[VideoSampleRead]:
    """Every sample of a ``videos`` layout split, in index shard order, read with ``tarfile``
    (``np.load`` for the arrays, Pillow for JPEG frames): what a stock reader of the shards sees.
    Also checks each sample's byte range in ``offsets.npy`` starts at its first member."""
    from PIL import Image

    split_dir = Path(split_dir)
    index = json.loads((split_dir / "index.json").read_bytes())
    assert index["layout"] == "videos", index.get("layout")
    offsets = np.load(split_dir / "offsets.npy", allow_pickle=False)
    out: list[VideoSampleRead] = []
    for shard in index["shards"]:
        data = (split_dir / shard["name"]).read_bytes()
        assert len(data) == shard["bytes"]
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tf:
            grouped: dict[str, dict[str, bytes]] = {}
            firsts: dict[str, int] = {}
            for m in tf:
                key, _, field_name = m.name.partition(".")
                grouped.setdefault(key, {})[field_name] = tf.extractfile(m).read()
                firsts.setdefault(key, m.offset)
        for key, members in grouped.items():
            assert int(offsets[len(out), 0]) == firsts[key], key
            meta = json.loads(members["json"])
            if "media.bin" in members:
                frames, audio = _split_media(members, meta)
            else:  # index versions 2-3
                audio = np.load(io.BytesIO(members["audio.npy"]), allow_pickle=False)
                if "video.npy" in members:
                    frames = np.load(io.BytesIO(members["video.npy"]), allow_pickle=False)
                else:
                    names = sorted(n for n in members if n.startswith("f") and n.endswith(".jpg"))
                    frames = np.stack([np.asarray(Image.open(io.BytesIO(members[n])).convert("RGB")) for n in names])
            out.append(VideoSampleRead(key, int(members["cls"]), meta, frames, np.ascontiguousarray(audio), sorted(members)))
    return out


def ref_audio_point(i: int, fps: float, sr: int, t_first: float, total: int) -> int:
    """Where the audio of frame ``i`` starts, by rule 10 of the semantics (``floor(x + 0.5)``, in ``[0, total]``)."""
    return min(total, max(0, math.floor((i / fps - t_first) * sr + 0.5)))


def _split_media(members: dict[str, bytes], meta: dict) -> tuple[np.ndarray, np.ndarray]:
    """Index version 4: ``media.bin`` is the audio track, float32 ``[N, K]`` rows, with frame
    ``i`` inserted before sample ``p(i)``; JPEG frames' lengths (and places) in ``frames.npy``."""
    from PIL import Image

    data, n = members["media.bin"], meta["num_frames"]
    sr = meta["audio_sample_rate"] or 0
    k, total = (meta["audio_channels"], meta["audio_samples"]) if sr else (1, 0)
    points = [ref_audio_point(i, meta["fps"], sr, meta["audio_t_first"], total) if sr else 0 for i in range(n)]
    if "frames.npy" in members:
        table = np.load(io.BytesIO(members["frames.npy"]), allow_pickle=False)
        lengths = [int(x) for x in table[:, 1]]
    else:
        lengths = [meta["width"] * meta["height"] * 3] * n
    frames, audio, pos, done = [], bytearray(), 0, 0
    for i in range(n):
        audio += data[pos: pos + 4 * k * (points[i] - done)]
        pos += 4 * k * (points[i] - done)
        done = points[i]
        if "frames.npy" in members:
            assert int(table[i, 0]) == pos, (i, int(table[i, 0]), pos)
            frames.append(np.asarray(Image.open(io.BytesIO(data[pos: pos + lengths[i]])).convert("RGB")))
        else:
            frames.append(np.frombuffer(data[pos: pos + lengths[i]], dtype=np.uint8).reshape(meta["height"], meta["width"], 3))
        pos += lengths[i]
    audio += data[pos:]
    assert len(audio) == 4 * k * total, (len(audio), k, total)
    track = np.frombuffer(bytes(audio), dtype="<f4").reshape(total, k).T if total else np.empty((1, 0), dtype=np.float32)
    return np.stack(frames), track


def reference_whole_video(path: str | os.PathLike, *, video_width: int = 0, video_height: int = 0,
                          video_min_dimension: int = 0, audio_samples: int = 0, audio_channels: int = 0) -> tuple[float, np.ndarray, np.ndarray, float, int]:
    """``(fps, every frame [n, H, W, 3], the whole audio [K, N], its first timestamp, its rate)``."""
    fps, frames = decode_all_video(os.fspath(path), video_width, video_height, video_min_dimension)
    audio, t_first, sr = decode_all_audio(os.fspath(path), audio_samples, audio_channels)
    return fps, np.stack(frames), audio, t_first, sr
