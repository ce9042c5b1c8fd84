"""Peers that decode the source videos on the fly: map-style datasets of torchvision's clips
(``frames_per_clip`` frames every ``step_between_clips``), one decoder opened per clip.

Each returns ``(video uint8 [T, C, H, W], audio float32 [K, L], label)`` like torchvision's
``Kinetics``; clip ``g`` is the same clip as ``IndexedKinetics(out)[g]`` (videos in
torchvision's order, clips in frame order), which is how the harness checks their pixels.
"""

from __future__ import annotations

import logging
from typing import Sequence

import torch
from torch.utils.data import Dataset

logger = logging.getLogger(__name__)

__all__ = ["clip_starts", "TorchcodecClips", "DecordClips", "decode_dataset"]

Video = tuple[str, int]  # (path, label)


def clip_starts(frames: int, frames_per_clip: int, step_between_clips: int) -> range:
    """First frames of torchvision's clips of a ``frames``-frame video (``unfold``: full clips only)."""
    return range(0, max(frames - frames_per_clip + 1, 0), step_between_clips)


class _Clips(Dataset):
    """The clip list of ``videos``; ``frame_counts`` gives each video's number of frames."""

    def __init__(self, videos: Sequence[Video], frame_counts: Sequence[int], *, frames_per_clip: int,
                 step_between_clips: int) -> None:
        self.videos = list(videos)
        self.frames_per_clip = frames_per_clip
        self.clips = [(v, s) for v, n in enumerate(frame_counts) for s in clip_starts(n, frames_per_clip, step_between_clips)]

    def __len__(self) -> int:
        return len(self.clips)


class TorchcodecClips(_Clips):
    """torchcodec (CPU): ``VideoDecoder(..., seek_mode="approximate")`` per clip, as its docs
    advise for many short reads of files with trustworthy headers, one FFmpeg thread (the
    DataLoader workers give the parallelism); audio with ``AudioDecoder`` over the clip's span."""

    def __init__(self, videos: Sequence[Video], *, frames_per_clip: int, step_between_clips: int) -> None:
        from torchcodec.decoders import VideoDecoder

        counts = [VideoDecoder(p, seek_mode="approximate").metadata.num_frames for p, _ in videos]
        super().__init__(videos, counts, frames_per_clip=frames_per_clip, step_between_clips=step_between_clips)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        from torchcodec.decoders import AudioDecoder, VideoDecoder

        v, start = self.clips[i]
        path, label = self.videos[v]
        decoder = VideoDecoder(path, dimension_order="NCHW", num_ffmpeg_threads=1, seek_mode="approximate")
        frames = decoder.get_frames_in_range(start, start + self.frames_per_clip)
        begin = float(frames.pts_seconds[0])
        end = float(frames.pts_seconds[-1] + frames.duration_seconds[-1])
        try:
            audio = AudioDecoder(path).get_samples_played_in_range(begin, end).data
        except (ValueError, RuntimeError):  # no audio stream
            audio = torch.zeros((1, 0), dtype=torch.float32)
        return frames.data, audio, label


class DecordClips(_Clips):
    """decord: ``VideoReader(path, num_threads=1).get_batch(indices)`` per clip, through its
    torch bridge (DLPack, no copy). Video only: its ``AudioReader`` decodes the whole track."""

    def __init__(self, videos: Sequence[Video], *, frames_per_clip: int, step_between_clips: int) -> None:
        import decord

        decord.bridge.set_bridge("torch")
        counts = [len(decord.VideoReader(p, num_threads=1)) for p, _ in videos]
        super().__init__(videos, counts, frames_per_clip=frames_per_clip, step_between_clips=step_between_clips)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        import decord

        decord.bridge.set_bridge("torch")  # per process: DataLoader workers may be spawned
        v, start = self.clips[i]
        path, label = self.videos[v]
        frames = decord.VideoReader(path, num_threads=1).get_batch(list(range(start, start + self.frames_per_clip)))
        return frames.permute(0, 3, 1, 2), torch.zeros((1, 0), dtype=torch.float32), label


def decode_dataset(key: str, videos: Sequence[Video], *, frames_per_clip: int, step_between_clips: int) -> Dataset:
    """The map-style dataset of decoding peer ``key`` (built as its first batch is timed: it
    reads every video's header, or scans every packet for PyAV as torchvision does)."""
    if key == "torchcodec":
        return TorchcodecClips(videos, frames_per_clip=frames_per_clip, step_between_clips=step_between_clips)
    if key == "decord":
        return DecordClips(videos, frames_per_clip=frames_per_clip, step_between_clips=step_between_clips)
    if key == "pyav":
        from .baseline import TorchvisionStyleClips

        return TorchvisionStyleClips(videos, frames_per_clip=frames_per_clip, step_between_clips=step_between_clips)
    raise ValueError(f"key={key!r}: not a decoding peer (torchcodec, pyav, decord)")
