"""Clip arithmetic: which source frames and audio samples make each clip.

Pure functions with no media access, reproducing the index rules of torchvision's
``VideoClips`` (see ``kinetics-semantics.md`` rules 5-10). The decoder asks these
functions which frames to keep; the tests check them without any video.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

__all__ = [
    "ClipSpec",
    "resampled_frame_indices",
    "selected_index",
    "selected_count",
    "clip_windows",
    "clip_count",
    "audio_window",
    "frame_store_counts",
    "selected_counts",
    "selected_indices",
    "clip_counts",
    "audio_sample_at",
    "clip_audio_range",
]


@dataclass(frozen=True)
class ClipSpec:
    """One clip of a video: its position and the source frames it is made of."""

    clip_index: int
    frame_indices: tuple[int, ...]

    @property
    def first_frame(self) -> int:
        return self.frame_indices[0]

    @property
    def last_frame(self) -> int:
        return self.frame_indices[-1]


def resampled_frame_indices(num_frames: int, fps: float, frame_rate: Optional[float]) -> list[int]:
    """Source frame indices kept when a video of ``num_frames`` at ``fps`` is resampled.

    Without ``frame_rate`` every frame is kept. With it, ``step = fps / frame_rate``: an
    integral step keeps ``range(0, n, step)``; otherwise ``floor(k * step)`` for
    ``k < floor(n * frame_rate / fps)``, computed in float32 as torchvision does.
    """
    if num_frames < 0:
        raise ValueError(f"num_frames must be >= 0, got {num_frames}")
    if frame_rate is None:
        return list(range(num_frames))
    if not frame_rate > 0:
        raise ValueError(f"frame_rate must be > 0, got {frame_rate}")
    if not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    step = float(fps) / float(frame_rate)
    if step.is_integer():
        return list(range(0, num_frames, int(step)))
    total = int(math.floor(num_frames * float(frame_rate) / float(fps)))
    idx = np.floor(np.arange(total, dtype=np.float32) * np.float32(step)).astype(np.int64)
    return idx.tolist()


def selected_count(num_frames: int, fps: float, frame_rate: Optional[float]) -> int:
    """How many resampled entries a video of ``num_frames`` frames has (see rule 6)."""
    if frame_rate is None:
        return num_frames
    step = float(fps) / float(frame_rate)
    if step.is_integer():
        return -(-num_frames // int(step))
    return int(math.floor(num_frames * float(frame_rate) / float(fps)))


def selected_index(k: int, fps: float, frame_rate: Optional[float]) -> int:
    """Source frame index of resampled entry ``k`` (independent of the video's length)."""
    if frame_rate is None:
        return k
    step = float(fps) / float(frame_rate)
    if step.is_integer():
        return k * int(step)
    return int(np.floor(np.float32(k) * np.float32(step)))


def clip_count(num_entries: int, frames_per_clip: int, step_between_clips: int) -> int:
    """Number of full windows: ``(N - T) // S + 1`` when ``N >= T``, else 0."""
    _check_window(frames_per_clip, step_between_clips)
    if num_entries < frames_per_clip:
        return 0
    return (num_entries - frames_per_clip) // step_between_clips + 1


def clip_windows(
    frame_indices: Sequence[int], frames_per_clip: int, step_between_clips: int
) -> list[ClipSpec]:
    """The full windows of ``frames_per_clip`` entries, starting every ``step_between_clips``."""
    count = clip_count(len(frame_indices), frames_per_clip, step_between_clips)
    return [
        ClipSpec(c, tuple(frame_indices[c * step_between_clips : c * step_between_clips + frames_per_clip]))
        for c in range(count)
    ]


def audio_window(
    first_frame: int,
    last_frame: int,
    fps: float,
    sample_rate: int,
    first_audio_time: float,
    total_samples: Optional[int] = None,
) -> tuple[int, int]:
    """Half-open sample range ``[a, b)`` of the audio that plays with frames ``first..last``.

    Times count from 0; sample ``j`` plays at ``first_audio_time + j / sample_rate``.
    ``total_samples`` (when known) caps the end; the range may be empty.
    """
    start = first_frame / fps
    stop = (last_frame + 1) / fps
    a = max(0, math.floor((start - first_audio_time) * sample_rate + 0.5))
    b = math.floor((stop - first_audio_time) * sample_rate + 0.5)
    if total_samples is not None:
        b = min(total_samples, b)
    b = max(b, a)
    return a, b


def frame_store_counts(
    num_entries: int, frames_per_clip: int, step_between_clips: int
) -> tuple[int, int]:
    """(distinct frames stored, total frames stored) for one video's clips.

    Overlapping clips (``step < T``) store some frames several times; the ratio of the
    two numbers is the duplication factor printed in the conversion plan.
    """
    count = clip_count(num_entries, frames_per_clip, step_between_clips)
    if count == 0:
        return 0, 0
    last = (count - 1) * step_between_clips + frames_per_clip
    if step_between_clips >= frames_per_clip:
        distinct = count * frames_per_clip
    else:
        distinct = last
    return distinct, count * frames_per_clip


def _check_window(frames_per_clip: int, step_between_clips: int) -> None:
    if frames_per_clip < 1:
        raise ValueError(f"frames_per_clip must be >= 1, got {frames_per_clip}")
    if step_between_clips < 1:
        raise ValueError(f"step_between_clips must be >= 1, got {step_between_clips}")


# -- vectorised twins: the same arithmetic over many videos at once (the loader counts the clips
# of every video of a ``videos`` layout output for any T, S and frame rate this way) ----------


def selected_counts(num_frames: np.ndarray, fps: np.ndarray, frame_rate: Optional[float]) -> np.ndarray:
    """:func:`selected_count` of each video (``num_frames``, ``fps``: arrays of one row a video), int64."""
    n = np.asarray(num_frames, dtype=np.int64)
    if frame_rate is None:
        return n.copy()
    f = np.asarray(fps, dtype=np.float64)
    step = f / float(frame_rate)
    integral = step == np.floor(step)
    whole = np.where(integral, step, 1.0).astype(np.int64)
    by_step = -(-n // np.maximum(whole, 1))
    by_rate = np.floor(n * float(frame_rate) / np.where(f > 0, f, 1.0)).astype(np.int64)
    return np.where(integral, by_step, by_rate)


def selected_indices(k: np.ndarray, fps: float, frame_rate: Optional[float]) -> np.ndarray:
    """:func:`selected_index` of each resampled entry ``k`` of one video, int64."""
    k = np.asarray(k, dtype=np.int64)
    if frame_rate is None:
        return k.copy()
    step = float(fps) / float(frame_rate)
    if step.is_integer():
        return k * int(step)
    return np.floor(k.astype(np.float32) * np.float32(step)).astype(np.int64)


def clip_counts(num_entries: np.ndarray, frames_per_clip: int, step_between_clips: int) -> np.ndarray:
    """:func:`clip_count` of each video, int64."""
    _check_window(frames_per_clip, step_between_clips)
    n = np.asarray(num_entries, dtype=np.int64)
    return np.where(n >= frames_per_clip, (n - frames_per_clip) // step_between_clips + 1, 0)


def audio_sample_at(frame: np.ndarray | int, fps: float, sample_rate: int, first_audio_time: float,
                    total_samples: int) -> np.ndarray:
    """Where the audio of source frame ``frame`` starts (its first sample), within ``[0, total_samples]``.

    The window of :func:`audio_window` for frames ``s..e`` is ``[at(s), at(e + 1))``: both of its
    ends are this function of a frame index, with the same float arithmetic, so a video's whole
    audio track cut at these points gives every clip's audio exactly.
    """
    t = np.asarray(frame, dtype=np.float64) / fps
    at = np.floor((t - first_audio_time) * sample_rate + 0.5)
    return np.clip(at, 0, total_samples).astype(np.int64)


def clip_audio_range(first_frame: int, last_frame: int, fps: float, sample_rate: int, first_audio_time: float,
                     total_samples: int) -> tuple[int, int]:
    """:func:`audio_window` capped at ``total_samples`` and never reversed, the range a decoder
    that read the whole track gives: ``[at(first), at(last + 1))``."""
    a, b = audio_sample_at(np.array([first_frame, last_frame + 1]), fps, sample_rate, first_audio_time, total_samples)
    return int(a), int(max(a, b))
