"""Encoding one video: decode its clips and write them, tar-encoded, to a spool file.

Runs in worker processes (local pool or Ray tasks). The result is a pure function of the
video file and the options, so a task that is retried gives the same bytes.
"""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Iterator, Optional

import av
import xxhash

from .decode import VideoError, VideoInfo, expected_clips, iter_clips
from .layout import VideoEntry
from .options import ConvertOptions
from .prefetch import prefetch, spare_core
from .schema import LAYOUT_VIDEOS, clip_checksum_of, clip_key, encode_sample
from .storage import Location
from .video_encoder import VideoSample, write_video_sample
from .writer import write_members

logger = logging.getLogger(__name__)

__all__ = ["VideoTask", "VideoResult", "convert_video", "clip_key", "spool_name", "slot_name"]

CLIPS_AHEAD = 2  # clips decoded ahead of the one being written (each holds its T frames)


@dataclass(frozen=True)
class VideoTask:
    entry: VideoEntry
    options: ConvertOptions
    spool_url: str
    storage_options: Optional[dict[str, Any]] = field(default=None, repr=False)  # may hold credentials
    skip_clips: int = 0
    slot: int = -1  # >= 0: overwrite the reused local spool file of this slot (see convert_video)


@dataclass
class VideoResult:
    index: int
    ok: bool
    reason: str = ""
    clips: int = 0  # clips of the whole video (including skipped ones)
    sample_sizes: list[int] = field(default_factory=list)  # of the clips written to the spool
    sample_checksums: list[int] = field(default_factory=list)  # schema.clip_checksum of each of them
    spool_name: str = ""
    spool_reused: bool = False  # a slot file: the writer keeps it for later videos
    slot: int = -1  # the slot file's number when spool_reused
    info: Optional[VideoInfo] = None
    sample: Optional[dict[str, Any]] = None  # the videos layout: where frames and audio lie in the sample (VideoRecord.sample)


def spool_name(index: int) -> str:
    return f"{index:08d}.spool"


def slot_name(slot: int) -> str:
    return f"slot-{slot:03d}.spool"


@contextmanager
def _open_spool(spool: Location, task: VideoTask) -> Iterator[BinaryIO]:
    """The file a video's samples go to.

    A local spool with ``task.slot >= 0`` is a file the run reuses for video after video,
    overwritten in place from offset 0: its pages stay in the page cache, so the
    gigabytes of raw clips that pass through cost a copy each way, not fresh pages (a
    page fault each, and a trip to the host on a VM that reclaims freed memory). The
    writer assigns slots so that no slot is rewritten before it has been read. Otherwise
    (object storage, Ray) each video gets its own file, written atomically.
    """
    if task.slot >= 0 and spool.is_local:
        fd = os.open(spool.path(slot_name(task.slot)), os.O_WRONLY | os.O_CREAT, 0o600)
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.truncate()  # a shorter video frees the rest: the spool never holds more than before
    else:
        with spool.open_atomic(spool_name(task.entry.index), durable=False) as fh:
            yield fh


def convert_video(task: VideoTask) -> VideoResult:
    """Decode and encode every clip of one video (the ``videos`` layout: the whole video, one
    sample) into the spool (``spool_url/<index>.spool``, or the task's slot file)."""
    e, o = task.entry, task.options
    info = VideoInfo()
    spool = Location(task.spool_url, task.storage_options)
    reused = task.slot >= 0 and spool.is_local
    name = slot_name(task.slot) if reused else spool_name(e.index)

    def drop() -> None:
        if not reused:
            spool.remove(name)

    sizes: list[int] = []
    checks: list[int] = []
    sample: Optional[VideoSample] = None
    try:
        with _open_spool(spool, task) as fh:
            if o.layout == LAYOUT_VIDEOS:
                hasher = xxhash.xxh3_64()
                sample = write_video_sample(fh, e, o, info, scratch_dir=spool.path("") if spool.is_local else None,
                                            hasher=hasher)
                sizes.append(sample.size)
                checks.append(clip_checksum_of(hasher))
            else:
                _write_clips(fh, task, info, sizes, checks)
    except VideoError as exc:
        drop()
        return VideoResult(e.index, ok=False, reason=exc.reason, info=info)
    except MemoryError:
        drop()
        return VideoResult(e.index, ok=False, reason="out of memory while decoding", info=info)
    except (av.error.FFmpegError, ValueError, RuntimeError, ArithmeticError, IndexError) as exc:
        # a file that trips the decoder in an unforeseen way costs that video, not the run
        logger.warning("%s: unexpected decoder error", e.relpath, exc_info=True)
        drop()
        return VideoResult(e.index, ok=False, reason=f"decoder error: {type(exc).__name__}: {exc}", info=info)
    total = expected_clips(info.num_frames, info.fps, o.frame_rate, o.frames_per_clip, o.step_between_clips)
    if total == 0 and sample is None:  # the videos layout keeps a short video: a shorter T may cut clips from it
        drop()
        return VideoResult(
            e.index,
            ok=False,
            reason=(
                f"too short: {info.num_frames} frames give no clip of {o.frames_per_clip} frames"
                + (f" at {o.frame_rate} fps" if o.frame_rate else "")
            ),
            info=info,
        )
    return VideoResult(e.index, ok=True, clips=total, sample_sizes=sizes, sample_checksums=checks, spool_name=name,
                       spool_reused=reused, slot=task.slot if reused else -1, info=info,
                       sample=sample.placement if sample is not None else None)


def _write_clips(fh: BinaryIO, task: VideoTask, info: VideoInfo, sizes: list[int], checks: list[int]) -> None:
    """Decode the clips of the task's video and write each as a sample to ``fh`` (the clips layout).

    With a core to spare, the clips are decoded ahead in a thread (their audio in another)
    while this one encodes and writes (:mod:`.prefetch`); the samples are the same.
    """
    e, o = task.entry, task.options
    ahead = spare_core(o.resolved_workers)
    clips = iter_clips(
        e.path,
        frames_per_clip=o.frames_per_clip,
        step_between_clips=o.step_between_clips,
        frame_rate=o.frame_rate,
        video_width=o.video_width,
        video_height=o.video_height,
        video_min_dimension=o.video_min_dimension,
        audio_samples=o.audio_samples,
        audio_channels=o.audio_channels,
        skip_clips=task.skip_clips,
        threads=o.decoder_threads,
        info=info,
        audio_ahead=ahead,
    )
    if ahead:
        clips = prefetch(clips, depth=CLIPS_AHEAD)
    for clip in clips:
        meta = {
            "path": e.relpath,
            "class": e.class_name,
            "label": e.label,
            "video_index": e.index,
            "clip_index": clip.clip_index,
            "frame_indices": list(clip.frame_indices),
            "fps": info.fps,
            "frame_rate": o.frame_rate,
            "audio_sample_rate": info.sample_rate if clip.audio.shape[1] or info.sample_rate else None,
        }
        members = encode_sample(
            clip_key(e.index, clip.clip_index),
            video=clip.video,
            audio=clip.audio,
            label=e.label,
            meta=meta,
            codec=o.codec,
            jpeg_quality=o.jpeg_quality,
        )
        hasher = xxhash.xxh3_64()
        sizes.append(write_members(fh, members, hasher=hasher))
        checks.append(clip_checksum_of(hasher))
