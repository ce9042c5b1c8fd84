"""Which clips a ``videos`` layout output gives for a frames per clip, step and frame rate. Pure arithmetic.

The output stores each video once (see :mod:`clipshards.convert.video_sample`); its table of
videos gives every video's frame count, fps and audio. :class:`ClipTable` counts every video's
clips for any ``(T, S, R)`` with the converter's own rules (:mod:`clipshards.convert.clips`,
vectorised: one pass over the table, whatever the number of videos), and says which source
frames and audio samples clip ``g`` of the global order is made of: the clip
``torchvision.datasets.Kinetics(root, T, step_between_clips=S, frame_rate=R)[g]`` is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np

from clipshards.convert.clips import clip_counts, selected_counts, selected_indices

__all__ = ["ClipTable", "ClipSpan", "check_clip_arguments"]

_NO_CAP = 1 << 62


def check_clip_arguments(frames_per_clip: object, step_between_clips: object, frame_rate: object) -> None:
    """``ValueError`` naming a bad ``frames_per_clip`` / ``step_between_clips`` (integers >= 1)
    or ``frame_rate`` (a positive number, or None)."""
    for name, value in (("frames_per_clip", frames_per_clip), ("step_between_clips", step_between_clips)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name}={value!r}: must be an integer >= 1")
    if frame_rate is not None and (isinstance(frame_rate, bool) or not isinstance(frame_rate, (int, float, np.number))
                                   or not np.isfinite(frame_rate) or not frame_rate > 0):
        raise ValueError(f"frame_rate={frame_rate!r}: must be a positive number of frames per second, or None")


@dataclass(frozen=True)
class ClipSpan:
    """Clip ``clip`` of table row ``row`` (``fields``: that row as a tuple of Python scalars, in
    :data:`~clipshards.convert.video_sample.TABLE_DTYPE`'s order): its source frames (``frames``,
    in clip order: a frame repeated where the frame rate is above the source's, frames skipped
    where it is below; :mod:`.video_ranges` reads each distinct frame once) and its audio
    samples ``[a, b)`` (``audio`` False: the clip gets empty ``[1, 0]`` audio, as the converter
    gives it)."""

    row: int
    clip: int
    fields: tuple
    frames: np.ndarray
    a: int
    b: int
    audio: bool


class ClipTable:
    """The clips of every video of a table of videos for ``(T, S, R)``, in global clip order."""

    def __init__(self, table: np.ndarray, frames_per_clip: int, step_between_clips: int,
                 frame_rate: Optional[float]) -> None:
        check_clip_arguments(frames_per_clip, step_between_clips, frame_rate)
        self.table = table
        self.frames_per_clip, self.step_between_clips = int(frames_per_clip), int(step_between_clips)
        self.frame_rate = None if frame_rate is None else float(frame_rate)
        entries = selected_counts(table["num_frames"], table["fps"], self.frame_rate)
        self.counts = clip_counts(entries, self.frames_per_clip, self.step_between_clips)
        self.ends = np.cumsum(self.counts)
        self.firsts = self.ends - self.counts
        self.num_clips = int(self.ends[-1]) if self.ends.size else 0

    def __len__(self) -> int:
        return self.num_clips

    def location(self, g: int | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(row, clip within the video)`` of global clip(s) ``g`` (``VideoClips.get_clip_location``)."""
        g = np.asarray(g, dtype=np.int64)
        if g.size and (int(g.min()) < 0 or int(g.max()) >= self.num_clips):
            raise IndexError(f"clip index outside 0..{self.num_clips - 1}")
        row = np.searchsorted(self.ends, g, side="right")
        return row, g - self.firsts[row]

    def span(self, g: int) -> ClipSpan:
        """Frames and audio of global clip ``g`` (Python scalars where numpy would cost more)."""
        if not 0 <= g < self.num_clips:
            raise IndexError(f"clip {g} is outside 0..{self.num_clips - 1}")
        row = int(np.searchsorted(self.ends, g, side="right"))
        clip = g - int(self.firsts[row])
        fields = self.table[row].tolist()
        r = dict(zip(self.table.dtype.names, fields))
        k = clip * self.step_between_clips + np.arange(self.frames_per_clip)
        frames = selected_indices(k, r["fps"], self.frame_rate)
        rate, total = r["sample_rate"], r["audio_samples"]
        if not rate:
            return ClipSpan(row, clip, fields, frames, 0, 0, False)
        first, end = int(frames[0]), int(frames[-1]) + 1
        a, b = (_sample_at(f, r["fps"], rate, r["t_first"], total) for f in (first, end))
        if r["audio_partial"] and _sample_at(end, r["fps"], rate, r["t_first"], _NO_CAP) > total:
            # decoding stopped after ``total`` samples: a clip whose window ends later got empty audio
            return ClipSpan(row, clip, fields, frames, 0, 0, False)
        return ClipSpan(row, clip, fields, frames, a, max(a, b), True)


def _sample_at(frame: int, fps: float, rate: int, t_first: float, total: int) -> int:
    """:func:`~clipshards.convert.clips.audio_sample_at` of one frame, in Python floats (the same
    IEEE arithmetic as NumPy's float64, without an array per call)."""
    return min(total, max(0, math.floor((frame / fps - t_first) * rate + 0.5)))

SOURCE_RATE = "source"
"""``frame_rate=SOURCE_RATE``: every source frame (torchvision's ``frame_rate=None``), whatever the
conversion recorded as the default."""


def resolve_clip_settings(options: dict, layout: str, frames_per_clip: Optional[int], step_between_clips: Optional[int],
                          frame_rate: Optional[float] | str) -> tuple[int, int, Optional[float]]:
    """``(T, S, R)`` a dataset over an output cuts: each as given, else (None) as recorded when
    converting. The ``videos`` layout takes any values; on the ``clips`` layout the clips were
    cut when converting, so only the recorded values are accepted (a ``ValueError`` says to use
    the videos layout otherwise). ``frame_rate=SOURCE_RATE`` keeps every source frame."""
    recorded = (options.get("frames_per_clip"), options.get("step_between_clips", 1), options.get("frame_rate"))
    if layout != "videos" and frames_per_clip is None and step_between_clips is None and frame_rate is None:
        return recorded  # type: ignore[return-value]  # as converted (whatever an older index records)
    rate = None if frame_rate == SOURCE_RATE else (recorded[2] if frame_rate is None else frame_rate)
    given = (recorded[0] if frames_per_clip is None else frames_per_clip,
             recorded[1] if step_between_clips is None else step_between_clips, rate)
    check_clip_arguments(*given)
    if layout != "videos":
        for name, want, have in zip(("frames_per_clip", "step_between_clips", "frame_rate"), given, recorded):
            if (want is None) != (have is None) or (want is not None and float(want) != float(have)):
                raise ValueError(
                    f"{name}={want!r}: this output was converted with {name}={have!r} in the clips layout, which cuts "
                    "clips when converting; pass None (as converted), or convert again with --layout videos to choose "
                    "frames per clip, step and frame rate when loading"
                )
    return int(given[0]), int(given[1]), None if given[2] is None else float(given[2])
