"""The reference: clips read the way torchvision's ``Kinetics`` (PyAV backend) reads them.

The dataset is built by scanning every video (open, demux all video packets, keep their
timestamps, as ``VideoClips`` does); each ``__getitem__`` then opens the file, seeks to
the clip's first timestamp (minus torchvision's small buffer), decodes video until the
clip's last frame, converts the clip's frames to RGB, seeks and decodes the audio of the
same interval, and returns ``(video TCHW uint8, audio [K, L] float32, label)``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Sequence

import av
import numpy as np
import torch

from clipshards.convert.clips import clip_windows

logger = logging.getLogger(__name__)

__all__ = ["VideoScan", "scan_video", "TorchvisionStyleClips"]

SEEK_BUFFER = 5  # torchvision's _read_from_stream: seek this many pts earlier and decode a few past the end


@dataclass(frozen=True)
class VideoScan:
    """What torchvision's scan keeps of one video: sorted frame timestamps and the frame rate."""

    path: str
    pts: tuple[int, ...]
    fps: float


def scan_video(path: str) -> VideoScan:
    """Open ``path`` and read the timestamp of every video packet (no decoding)."""
    with av.open(path, metadata_errors="ignore") as container:
        stream = container.streams.video[0]
        pts = sorted(p.pts for p in container.demux(stream) if p.pts is not None)
        fps = float(stream.average_rate or stream.guessed_rate or 0)
    return VideoScan(path, tuple(pts), fps)


def _read_from_stream(container, start: int, end: int, stream) -> list:
    """Frames of ``stream`` with ``start <= pts <= end``: seek back to a keyframe and decode forward."""
    seek = max(start - 1 - SEEK_BUFFER, 0)
    container.seek(seek, any_frame=False, backward=True, stream=stream)
    frames = {}
    extra = 0
    kind = {"video": 0} if stream.type == "video" else {"audio": 0}
    for frame in container.decode(**kind):
        frames[frame.pts] = frame
        if frame.pts >= end:
            if extra < SEEK_BUFFER:
                extra += 1
                continue
            break
    return [frames[p] for p in sorted(frames) if start <= p <= end]


def _to_pts(seconds: float, time_base: Fraction) -> int:
    return int(math.floor(seconds / time_base))


class TorchvisionStyleClips(torch.utils.data.Dataset):
    """Map-style dataset of the clips of ``videos`` (with labels), decoded per clip from the files."""

    def __init__(self, videos: Sequence[tuple[str, int]], *, frames_per_clip: int, step_between_clips: int):
        self.scans = [scan_video(p) for p, _ in videos]
        self.labels = [label for _, label in videos]
        self.clips: list[tuple[int, int]] = []
        for v, scan in enumerate(self.scans):
            for c in clip_windows(range(len(scan.pts)), frames_per_clip, step_between_clips):
                self.clips.append((v, c.first_frame))
        self.frames_per_clip = frames_per_clip

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, idx: int):
        v, first = self.clips[idx]
        scan = self.scans[v]
        last = first + self.frames_per_clip - 1
        with av.open(scan.path, metadata_errors="ignore") as container:
            vstream = container.streams.video[0]
            frames = _read_from_stream(container, scan.pts[first], scan.pts[last], vstream)
            video = np.stack([f.to_ndarray(format="rgb24") for f in frames[: self.frames_per_clip]])
            audio = np.empty((1, 0), dtype=np.float32)
            if container.streams.audio:
                astream = container.streams.audio[0]
                tb = vstream.time_base
                start_s, stop_s = float(scan.pts[first] * tb), float(scan.pts[last] * tb) + 1.0 / scan.fps
                aframes = _read_from_stream(container, _to_pts(start_s, astream.time_base), _to_pts(stop_s, astream.time_base), astream)
                if aframes:
                    audio = np.concatenate([f.to_ndarray() for f in aframes], axis=1)
                    rate = astream.rate
                    a0 = float(aframes[0].pts * astream.time_base)
                    lo = max(0, int(round((start_s - a0) * rate)))
                    hi = max(lo, int(round((stop_s - a0) * rate)))
                    audio = np.ascontiguousarray(audio[:, lo:hi], dtype=np.float32)
        return torch.from_numpy(video).permute(0, 3, 1, 2), torch.from_numpy(audio), self.labels[v]
