"""Batching clips whose audio lengths differ."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any, Callable, NamedTuple, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import get_worker_info

from .buffers import SharedSlots, carve, itemsize, pool, shared_storage, slots_by_token
from .parallel import batch_threads, each_index
from .reader import DeferredVideo

__all__ = ["ClipBatch", "collate_clips", "place_clip", "SlotCollate", "Slotted"]


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

    Videos must share one shape (convert with a fixed size, or resize or crop in ``transform``,
    see :mod:`clipshards.loader.transforms`); audio may differ in length and channel count, see
    :class:`ClipBatch`.
    """
    videos, audios, labels = _check(samples)
    return _assemble(videos, audios, labels, _private_storage)


def _check(samples: Sequence[tuple[Any, torch.Tensor, int]]) -> tuple[list[torch.Tensor], list[torch.Tensor], list[int]]:
    if not samples:
        raise ValueError("collate_clips got an empty batch")
    videos, audios, labels = [], [], []
    for i, s in enumerate(samples):
        if not isinstance(s, (tuple, list)) or len(s) != 3:
            raise ValueError(f"sample {i} of the batch is not a (video, audio, label) triple: {type(s).__name__}")
        v, a, y = s
        if not isinstance(v, (torch.Tensor, DeferredVideo)) or not isinstance(a, torch.Tensor) or a.ndim != 2:
            raise ValueError(f"sample {i}: expected video tensor and audio tensor [K, L], got {type(v).__name__}, "
                             f"{getattr(a, 'shape', type(a).__name__)}")
        videos.append(v)
        audios.append(a)
        labels.append(int(y))
    shapes = Counter(tuple(v.shape) for v in videos)
    if len(shapes) > 1:
        raise ValueError(f"videos in the batch differ in shape, so they cannot be stacked: {_shapes(shapes)}. "
                         f"{SAME_SIZE_FIX}")
    return videos, audios, labels


SAME_SIZE_FIX = (
    "Give every clip one size: convert with --video-height H --video-width W (video_height=, video_width=), "
    "or pass the dataset a transform such as transform=Compose([Resize(128), CenterCrop(112)]) "
    "(RandomCrop(112) to train; from clipshards.loader)"
)
"""What to do when the clips of a batch differ in size (a conversion that kept each video's aspect ratio)."""


def _shapes(shapes: Counter) -> str:
    """``"[16, 3, 128, 171] x 10, [16, 3, 128, 227] x 6"``: the batch's video shapes, most common first."""
    shown = ", ".join(f"{list(shape)} x {n}" for shape, n in shapes.most_common(4))
    return shown + (f" and {len(shapes) - 4} more" if len(shapes) > 4 else "")


_ALIGN = 64


def _assemble(videos: list[torch.Tensor], audios: list[torch.Tensor], labels: list[int],
              allocate: Callable[[int], torch.Tensor]) -> ClipBatch:
    """The batch's five tensors carved out of the uint8 memory from ``allocate(nbytes)``: one
    allocation (and, across processes, one shared segment) per batch."""
    b = len(videos)
    first = videos[0]
    k = max(a.shape[0] for a in audios)
    length = max(a.shape[1] for a in audios)
    layout = [((b, *first.shape), first.dtype), ((b, k, length), torch.float32)] + [((b,), torch.int64)] * 3
    offsets, total = [], 0
    for shape, dtype in layout:
        total = -(-total // _ALIGN) * _ALIGN
        offsets.append(total)
        total += math.prod(shape) * itemsize(dtype)
    memory = allocate(total)
    video, audio, label, lengths, channels = (carve(memory, off, shape, dtype) for (shape, dtype), off in zip(layout, offsets))
    stacked = _stack(videos, video)  # first: reading a deferred clip's video fills the rest of its audio too
    _pad_audio(audios, audio)
    label.numpy()[:] = labels
    lengths.numpy()[:] = [a.shape[1] for a in audios]
    channels.numpy()[:] = [a.shape[0] for a in audios]
    return ClipBatch(video=stacked, audio=audio, label=label, audio_lengths=lengths, audio_channels=channels)


def _pad_audio(audios: list[torch.Tensor], out: torch.Tensor) -> None:
    """Each clip's ``[k, l]`` audio into ``out[i, :k, :l]``, the rest zero. Copied in this
    thread (NumPy): torch would split these sub-megabyte copies over its intra-op threads, and
    waiting for a thread the loaded machine has not scheduled cost the collate 40% of its time."""
    target = out.numpy()
    for i, a in enumerate(audios):
        k, n = a.shape
        try:
            np.copyto(target[i, :k, :n], a.numpy(), casting="unsafe")
        except (TypeError, RuntimeError):  # not a plain CPU tensor (a GPU one, bfloat16, requires grad)
            out[i, :k, :n] = a
        target[i, k:] = 0
        target[i, :k, n:] = 0


def _stack(videos: list[torch.Tensor], out: torch.Tensor) -> torch.Tensor:
    """``torch.stack(videos)`` into ``out`` (contiguous), stacked in the videos' memory order:
    a permuted view (TCHW over THWC memory, as :func:`~clipshards.loader.reader.to_output`
    makes) is copied as the contiguous tensor beneath it, several times faster than element
    by element through the permutation, and the batch is the same permuted view of the
    stacked memory."""
    first = videos[0]
    if any(isinstance(v, DeferredVideo) for v in videos):
        return _decode_into(videos, out)
    order = sorted(range(first.ndim), key=lambda d: -first.stride(d))
    dense = [v.permute(order) for v in videos]
    if not all(d.is_contiguous() for d in dense):
        return torch.stack(videos, out=out)
    stacked = torch.stack(dense, out=out.view(len(dense), *dense[0].shape))
    return stacked.permute(0, *(1 + order.index(d) for d in range(first.ndim)))


def _decode_into(videos: list[Any], out: torch.Tensor) -> torch.Tensor:
    """JPEG clips decoded (raw pixels read) straight into the batch's ``[B, T, H, W, 3]`` memory
    (a permuted view for TCHW, as for decoded clips), on the cores this process may use
    (:mod:`.parallel`)."""
    first = videos[0]
    if not all(isinstance(v, DeferredVideo) and v.output_format == first.output_format for v in videos):
        return _stack([v.tensor() if isinstance(v, DeferredVideo) else v for v in videos], out)
    memory = out.view(len(videos), *first.frames.shape)
    target = memory.numpy()
    each_index(len(videos), lambda i: videos[i].decode_into(target[i]), threads=batch_threads())
    return memory.permute(0, 1, 4, 2, 3) if first.output_format == "TCHW" else memory


def place_clip(sample: Any, allocate: Callable[[int], torch.Tensor]) -> Any:
    """One clip of a :class:`~clipshards.loader.ClipLoader` with ``batch_size=None``: a deferred
    video (:class:`~clipshards.loader.reader.DeferredVideo`) read or decoded into memory from
    ``allocate(nbytes)``, its audio copied beside it; the ``(video, audio, label)`` the dataset
    would have yielded (THWC memory, TCHW as a permuted view). Anything else as it is."""
    if not isinstance(sample, (tuple, list)) or len(sample) != 3 or not isinstance(sample[0], DeferredVideo):
        return sample
    video, audio, label = sample
    shape = tuple(video.frames.shape)
    start = -(-math.prod(shape) // _ALIGN) * _ALIGN
    memory = allocate(start + audio.numel() * itemsize(audio.dtype))
    frames = carve(memory, 0, shape, torch.uint8)
    video.decode_into(frames.numpy())
    sound = carve(memory, start, tuple(audio.shape), audio.dtype)
    np.copyto(sound.numpy(), audio.numpy())  # in this thread: see _pad_audio
    return (frames.permute(0, 3, 1, 2) if video.output_format == "TCHW" else frames), sound, label


def _private_storage(nbytes: int) -> torch.Tensor:
    """In the main process, a pooled buffer (no page faults for a batch like the last one);
    in a DataLoader worker, shared memory (as ``default_collate`` does), so the batch reaches
    the main process without another copy."""
    if get_worker_info() is None:
        return pool().take(nbytes)
    return torch.empty(0, dtype=torch.uint8).set_(shared_storage(nbytes))


class Slotted:
    """A batch (or, with ``batch_size=None``, a clip's tuple) made in a DataLoader worker in one
    of its :class:`SharedSlots` (``slot``); :class:`~clipshards.loader.dataloader.ClipLoader`
    unwraps it and releases the slot once it is no longer referenced."""

    def __init__(self, batch: ClipBatch | tuple[Any, ...], slot: int, pinned: bool = False,
                 slots: Optional[SharedSlots] = None) -> None:
        self.batch, self.slot, self.pinned = batch, slot, pinned
        self.slots = slots  # worker side: sent as the slot's token and where each tensor lies in it

    def __reduce__(self) -> tuple[Any, ...]:
        """Sent from a worker: the slot's storage only the first time (:meth:`SharedSlots.wire`),
        then just where each tensor lies in it. Sending the storage with every batch cost a
        file descriptor passed through a socket (the worker's resource sharer thread accepting
        a connection from the main process) for each batch."""
        if self.slots is None:
            return Slotted, (self.batch, self.slot, self.pinned)
        tensors = list(self.batch) if isinstance(self.batch, ClipBatch) else list(self.batch[:2])
        layout = [(t.dtype, t.storage_offset(), tuple(t.shape), tuple(t.stride())) for t in tensors]
        rest = None if isinstance(self.batch, ClipBatch) else tuple(self.batch[2:])
        return _received, (self.slots.token, self.slot, self.slots.wire(self.slot), layout, rest)

    @property
    def storage(self) -> torch.UntypedStorage:
        """The slot's memory, as this process maps it."""
        return (self.batch.video if isinstance(self.batch, ClipBatch) else self.batch[0]).untyped_storage()

    def pin_memory(self, device: Optional[str] = None) -> "Slotted":
        """A pinned copy (DataLoader ``pin_memory=True``): the slot is free once it is made."""
        def pin(t: Any) -> Any:
            return (t.pin_memory(device) if device else t.pin_memory()) if isinstance(t, torch.Tensor) else t

        pinned = ClipBatch(*map(pin, self.batch)) if isinstance(self.batch, ClipBatch) else tuple(map(pin, self.batch))
        return Slotted(pinned, self.slot, pinned=True)


def _received(token: str, slot: int, storage: Optional[torch.UntypedStorage], layout: list[tuple[Any, ...]],
              rest: Optional[tuple[Any, ...]]) -> Slotted:
    """A :class:`Slotted` batch (``rest`` None) or clip tuple as the main process receives it:
    its tensors over the slot's storage, mapped once (:meth:`SharedSlots.mapped`)."""
    memory = slots_by_token(token).mapped(slot, storage)
    tensors = [torch.empty(0, dtype=dtype).set_(memory, offset, shape, stride) for dtype, offset, shape, stride in layout]
    return Slotted(ClipBatch(*tensors) if rest is None else (*tensors, *rest), slot)


class SlotCollate:
    """:func:`collate_clips` that, in a DataLoader worker, builds the batch in a reusable
    shared-memory slot (see :class:`~clipshards.loader.buffers.SharedSlots`). ``single``: the
    ``collate_fn`` of ``batch_size=None``, one clip a call (:func:`place_clip`): a clip in a slot
    too, not in a shared-memory segment made, filled and mapped for it alone."""

    def __init__(self, slots: Optional[SharedSlots] = None, *, single: bool = False) -> None:
        self.slots = slots
        self.single = single

    def __call__(self, samples: Any) -> Any:
        info = get_worker_info()
        if info is None or self.slots is None:
            return place_clip(samples, _private_storage) if self.single else collate_clips(samples)
        got: list[int] = []

        def allocate(nbytes: int) -> torch.Tensor:
            acquired = self.slots.acquire(info.id, nbytes) if self.slots is not None else None
            if acquired is None:
                return _private_storage(nbytes)
            got.append(acquired[0])
            return acquired[1]

        try:
            made = place_clip(samples, allocate) if self.single else _assemble(*_check(samples), allocate)
        except BaseException:
            if got and self.slots is not None:
                self.slots.release(got[0])
            raise
        return Slotted(made, got[0], slots=self.slots) if got else made
