"""Resize and crop transforms for uint8 video clips, so that clips of mixed sizes stack into a batch.

A conversion without a fixed size (``--video-min-dimension``, or none) keeps each video's aspect
ratio, so clips of a 16:9 and a 4:3 video differ in width and cannot be stacked. Either convert
with ``--video-height H --video-width W``, or give a dataset one of these as ``transform``::

    from clipshards.loader import StreamingKinetics, Compose, Resize, RandomCrop, CenterCrop
    train = StreamingKinetics(out, transform=Compose([Resize(128), RandomCrop(112)]))
    val = IndexedKinetics(out, split="val", transform=Compose([Resize(128), CenterCrop(112)]))

Each works on the video tensor as the dataset gives it: uint8 ``[T, C, H, W]``
(``output_format="TCHW"``, the default) or ``[T, H, W, C]`` (pass ``output_format="THWC"`` to
the transform too), and returns a uint8 tensor in the same layout. Every frame of a clip gets
the same resize and the same crop. Sizes follow torchvision: an ``int`` is the shorter side
(:class:`Resize`) or a square (crops), a pair is ``(height, width)``.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F

__all__ = ["Resize", "CenterCrop", "RandomCrop", "Compose", "VIDEO_FORMATS"]

VIDEO_FORMATS = ("TCHW", "THWC")


def _size_pair(size: int | Sequence[int], what: str) -> tuple[int, int]:
    """``(h, w)`` from an int (a square) or a pair; ValueError naming a bad value."""
    if isinstance(size, int) and not isinstance(size, bool):
        pair: tuple = (size, size)
    elif isinstance(size, (tuple, list)) and len(size) == 2:
        pair = tuple(size)
    else:
        raise ValueError(f"{what} size={size!r}: expected an int or a (height, width) pair")
    if not all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 16384 for v in pair):
        raise ValueError(f"{what} size={size!r}: sizes must be integers in 1..16384")
    return pair[0], pair[1]


class _VideoTransform:
    """The layout handling the transforms share: in and out of ``[T, C, H, W]``."""

    def __init__(self, output_format: str) -> None:
        if output_format not in VIDEO_FORMATS:
            raise ValueError(f"output_format={output_format!r}: must be one of {VIDEO_FORMATS} (the dataset's)")
        self.output_format = output_format

    def _tchw(self, video: torch.Tensor) -> torch.Tensor:
        if not isinstance(video, torch.Tensor) or video.ndim != 4:
            raise ValueError(f"{type(self).__name__} expects a video tensor [T, C, H, W] or [T, H, W, C], "
                             f"got {getattr(video, 'shape', type(video).__name__)}")
        channels = video.shape[1] if self.output_format == "TCHW" else video.shape[3]
        if channels not in (1, 3):
            other = "THWC" if self.output_format == "TCHW" else "TCHW"
            raise ValueError(f"{type(self).__name__}: video of shape {tuple(video.shape)} has {channels} channels "
                             f"as {self.output_format}; if the dataset gives {other}, pass output_format={other!r}")
        return video if self.output_format == "TCHW" else video.permute(0, 3, 1, 2)

    def _back(self, video: torch.Tensor) -> torch.Tensor:
        return video if self.output_format == "TCHW" else video.permute(0, 2, 3, 1)


class Resize(_VideoTransform):
    """Resize every frame: ``size`` an int sets the shorter side (aspect ratio kept, as
    torchvision's ``Resize(int)``); ``(height, width)`` sets both. Bilinear, antialiased when
    shrinking (``antialias``), rounded back to uint8."""

    def __init__(self, size: int | Sequence[int], *, output_format: str = "TCHW", antialias: bool = True) -> None:
        super().__init__(output_format)
        self.short = isinstance(size, int) and not isinstance(size, bool)
        self.size = _size_pair(size, "Resize")
        self.antialias = bool(antialias)

    def __repr__(self) -> str:
        return f"Resize({self.size[0] if self.short else self.size}, output_format={self.output_format!r})"

    def target(self, height: int, width: int) -> tuple[int, int]:
        """The output ``(height, width)`` for frames of ``height x width``."""
        if not self.short:
            return self.size
        side = self.size[0]
        if height <= width:
            return side, max(1, int(side * width / height))
        return max(1, int(side * height / width)), side

    def __call__(self, video: torch.Tensor) -> torch.Tensor:
        frames = self._tchw(video)
        h, w = frames.shape[-2:]
        size = self.target(h, w)
        if size == (h, w):
            return video
        out = F.interpolate(frames.float(), size=size, mode="bilinear", align_corners=False,
                            antialias=self.antialias and (size[0] < h or size[1] < w))
        return self._back(out.round_().clamp_(0, 255).to(frames.dtype))


class _Crop(_VideoTransform):
    def __init__(self, size: int | Sequence[int], output_format: str) -> None:
        super().__init__(output_format)
        self.size = _size_pair(size, type(self).__name__)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.size}, output_format={self.output_format!r})"

    def _pad(self, frames: torch.Tensor) -> torch.Tensor:
        """Frames smaller than the crop, padded with black around them (as torchvision's CenterCrop)."""
        (ch, cw), (h, w) = self.size, frames.shape[-2:]
        if h >= ch and w >= cw:
            return frames
        top, left = max(0, ch - h) // 2, max(0, cw - w) // 2
        return F.pad(frames, (left, max(0, cw - w) - left, top, max(0, ch - h) - top))

    def _cut(self, video: torch.Tensor, place: Callable[[int, int], tuple[int, int]]) -> torch.Tensor:
        frames = self._pad(self._tchw(video))
        (ch, cw), (h, w) = self.size, frames.shape[-2:]
        top, left = place(h - ch, w - cw)
        return self._back(frames[..., top : top + ch, left : left + cw])


class CenterCrop(_Crop):
    """The centre ``size`` of every frame (a view, no copy); smaller frames are padded with black."""

    def __init__(self, size: int | Sequence[int], *, output_format: str = "TCHW") -> None:
        super().__init__(size, output_format)

    def __call__(self, video: torch.Tensor) -> torch.Tensor:
        return self._cut(video, lambda dh, dw: (int(round(dh / 2.0)), int(round(dw / 2.0))))


class RandomCrop(_Crop):
    """A ``size`` window at a random place, the same for every frame of the clip (a view, no
    copy); smaller frames are padded with black first.

    ``generator``: a ``torch.Generator`` for reproducible crops; by default torch's global
    generator, which DataLoader seeds differently in each worker (a generator given here is
    copied into each worker as it is, so every worker would draw the same places).
    """

    def __init__(self, size: int | Sequence[int], *, generator: Optional[torch.Generator] = None,
                 output_format: str = "TCHW") -> None:
        super().__init__(size, output_format)
        if generator is not None and not isinstance(generator, torch.Generator):
            raise ValueError(f"generator={generator!r}: expected a torch.Generator or None")
        self.generator = generator

    def _draw(self, room: int) -> int:
        return int(torch.randint(0, room + 1, (1,), generator=self.generator)) if room > 0 else 0

    def __call__(self, video: torch.Tensor) -> torch.Tensor:
        return self._cut(video, lambda dh, dw: (self._draw(dh), self._draw(dw)))


class Compose:
    """Apply ``transforms`` in order (as torchvision's ``Compose``)."""

    def __init__(self, transforms: Sequence[Callable[[torch.Tensor], torch.Tensor]]) -> None:
        self.transforms = list(transforms)
        for t in self.transforms:
            if not callable(t):
                raise ValueError(f"Compose: {t!r} is not callable")

    def __repr__(self) -> str:
        return f"Compose({self.transforms!r})"

    def __call__(self, video: torch.Tensor) -> torch.Tensor:
        for t in self.transforms:
            video = t(video)
        return video
