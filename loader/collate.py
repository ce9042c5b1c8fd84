"""Batching clips whose audio lengths differ."""

from __future__ import annotations

import math
from typing import Any, NamedTuple, Sequence

import torch
from torch.utils.data import get_worker_info

__all__ = ["ClipBatch", "collate_clips"]


class ClipBatch(NamedTuple):
    """A batch of ``(video, audio, label)`` clips.

    ``video``: the clips' videos stacked, ``[B, T, C, H, W]`` (or ``[B, T, H, W, C]``).
    ``audio``: float32 ``[B, K, L]``, each clip's ``[k, l]`` audio zero-padded to the most
    channels ``K`` and the longest length ``L`` in the batch. ``label``: int64 ``[B]``.
    ``audio_lengths``: int64 ``[B]``, each clip's own ``l`` (0 for a clip without audio), so
    ``audio[i, :, :audio_lengths[i]]`` is its audio. ``audio_channels``: int64 ``[B]``, its ``k``.
    """

    video: torch.Tensor
    audio: torch.Tensor
    label: torch.Tensor
    audio_lengths: torch.Tensor
    audio_channels: torch.Tensor


def collate_clips(samples: Sequence[tuple[Any, torch.Tensor, int]]) -> ClipBatch:
    """``collate_fn`` for DataLoaders over :class:`StreamingKinetics` / :class:`IndexedKinetics`.

    Videos must share one shape (convert with a fixed size, or resize in ``transform``);
    audio may differ in length and channel count, see :class:`ClipBatch`.
    """
    if not samples:
        raise ValueError("collate_clips got an empty batch")
    videos, audios, labels = [], [], []
    for i, s in enumerate(samples):
        if not isinstance(s, (tuple, list)) or len(s) != 3:
            raise ValueError(f"sample {i} of the batch is not a (video, audio, label) triple: {type(s).__name__}")
        v, a, y = s
        if not isinstance(v, torch.Tensor) or not isinstance(a, torch.Tensor) or a.ndim != 2:
            raise ValueError(f"sample {i}: expected video tensor and audio tensor [K, L], got {type(v).__name__}, "
                             f"{getattr(a, 'shape', type(a).__name__)}")
        videos.append(v)
        audios.append(a)
        labels.append(int(y))
    shapes = {tuple(v.shape) for v in videos}
    if len(shapes) > 1:
        raise ValueError(
            f"videos in the batch differ in shape {sorted(shapes)}: convert with video_width/video_height "
            "or resize in transform so that clips can be stacked"
        )
    k = max(a.shape[0] for a in audios)
    length = max(a.shape[1] for a in audios)
    audio = _empty((len(audios), k, length), torch.float32).zero_()
    for i, a in enumerate(audios):
        audio[i, : a.shape[0], : a.shape[1]] = a
    return ClipBatch(
        video=_stack(videos),
        audio=audio,
        label=torch.tensor(labels, dtype=torch.int64),
        audio_lengths=torch.tensor([a.shape[1] for a in audios], dtype=torch.int64),
        audio_channels=torch.tensor([a.shape[0] for a in audios], dtype=torch.int64),
    )


def _stack(videos: list[torch.Tensor]) -> torch.Tensor:
    """``torch.stack(videos)``, stacked in the videos' memory order: a permuted view (TCHW
    over THWC memory, as :func:`~clipshards.loader.reader.to_output` makes) is copied as the
    contiguous tensor beneath it, several times faster than element by element through the
    permutation, and the batch is the same permuted view of the stacked memory."""
    first = videos[0]
    order = sorted(range(first.ndim), key=lambda d: -first.stride(d))
    dense = [v.permute(order) for v in videos]
    if not all(d.is_contiguous() for d in dense):
        return torch.stack(videos, out=_empty((len(videos), *first.shape), first.dtype))
    out = torch.stack(dense, out=_empty((len(dense), *dense[0].shape), first.dtype))
    return out.permute(0, *(1 + order.index(d) for d in range(first.ndim)))


def _empty(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """In a DataLoader worker, a tensor allocated in shared memory (as ``default_collate``
    does), so the batch reaches the main process without another copy."""
    if get_worker_info() is None:
        return torch.empty(shape, dtype=dtype)
    numel = math.prod(shape)
    storage = torch.empty(0, dtype=dtype)._typed_storage()._new_shared(numel)
    return torch.empty(0, dtype=dtype).set_(storage).view(shape)
