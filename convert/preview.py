"""``clipshards preview``: a contact sheet of one clip, for a person to check a conversion by eye.

The clip's frames in a grid with their clip and source frame numbers, class, label and path
in the title, and its audio waveform below, drawn by matplotlib when installed, else by
Pillow alone. The sheet is a PNG.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from .output import read_clip

logger = logging.getLogger(__name__)

__all__ = ["preview_clip", "PreviewResult"]


@dataclass(frozen=True)
class PreviewResult:
    """Where :func:`preview_clip` wrote the sheet, its pixel size and which renderer drew the waveform."""

    path: str
    width: int
    height: int
    backend: str


@dataclass(frozen=True)
class _Layout:
    width: int
    columns: int
    rows: int
    tile_w: int
    tile_h: int
    margin: int = 16
    gap: int = 8
    label_h: int = 20
    title_h: int = 64
    wave_h: int = 180

    @property
    def grid_top(self) -> int:
        return self.title_h

    def tile_xy(self, t: int) -> tuple[int, int]:
        r, c = divmod(t, self.columns)
        return self.margin + c * (self.tile_w + self.gap), self.grid_top + r * (self.tile_h + self.label_h + self.gap)

    @property
    def wave_top(self) -> int:
        return self.grid_top + self.rows * (self.tile_h + self.label_h + self.gap) + self.gap

    @property
    def height(self) -> int:
        return self.wave_top + self.wave_h + self.margin


def _layout(frames: int, frame_h: int, frame_w: int, *, width: int, columns: int, channels: int, samples: int) -> _Layout:
    """Pixel layout of a sheet: title, ``columns`` frames per row, waveform lanes below."""
    cols = max(1, min(columns, frames))
    rows = math.ceil(frames / cols)
    wave_h = 56 if samples == 0 else 64 + 84 * min(channels, 4)
    base = _Layout(width=width, columns=cols, rows=rows, tile_w=1, tile_h=1, wave_h=wave_h)
    tile_w = (width - 2 * base.margin - (cols - 1) * base.gap) // cols
    if tile_w < 16:
        raise ValueError(f"width={width}: too narrow for {cols} columns of frames (tiles would be {tile_w} px)")
    tile_h = max(1, round(tile_w * frame_h / frame_w))
    return _Layout(width=width, columns=cols, rows=rows, tile_w=tile_w, tile_h=tile_h, wave_h=wave_h)


def preview_clip(
    url: str | os.PathLike,
    split: Optional[str] = None,
    *,
    index: int,
    out: str | os.PathLike,
    width: int = 1280,
    columns: int = 8,
    backend: str = "auto",
    storage_options: Optional[Mapping[str, Any]] = None,
) -> PreviewResult:
    """Write a PNG contact sheet of clip ``index``: its frames in a grid (``columns`` per row)
    with their clip and source frame numbers, class, label and path in the title, and the audio
    waveform below, for a person to check a conversion by eye.

    The sheet is ``width`` pixels wide; its height follows from the frame count and aspect.
    ``backend``: ``"matplotlib"`` (axes with seconds, the plot extra), ``"pillow"`` (no extra
    dependency) or ``"auto"`` (matplotlib when installed).
    """
    if backend not in ("auto", "matplotlib", "pillow"):
        raise ValueError(f"backend={backend!r}: must be 'auto', 'matplotlib' or 'pillow'")
    if isinstance(width, bool) or not isinstance(width, int) or width < 200:
        raise ValueError(f"width={width!r}: must be an integer >= 200 pixels")
    if isinstance(columns, bool) or not isinstance(columns, int) or columns < 1:
        raise ValueError(f"columns={columns!r}: must be an integer >= 1")
    if backend == "auto":
        try:
            import matplotlib  # noqa: F401

            backend = "matplotlib"
        except ImportError:
            backend = "pillow"
    elif backend == "matplotlib":
        try:
            import matplotlib  # noqa: F401
        except ImportError as exc:
            raise ValueError("backend='matplotlib' needs matplotlib: pip install 'clipshards[plot]'") from exc
    sample = read_clip(url, split, index=index, storage_options=storage_options)
    image = _render_sheet(sample, width=width, columns=columns, backend=backend)
    path = os.fspath(out)
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)
    image.save(path, format="PNG", optimize=True)
    logger.info("wrote %s (%dx%d) for clip %d of %s", path, image.width, image.height, index, sample["url"])
    return PreviewResult(path=path, width=image.width, height=image.height, backend=backend)


_BG = (250, 250, 250)
_FG = (25, 25, 25)
_MUTED = (110, 110, 110)
_WAVE_COLORS = ((31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14), (23, 190, 207), (140, 86, 75), (127, 127, 127))


def _render_sheet(sample: Mapping[str, Any], *, width: int, columns: int, backend: str):
    from PIL import Image, ImageDraw

    video: np.ndarray = sample["video"]
    audio: np.ndarray = sample["audio"]
    meta = sample["meta"]
    t_count, fh, fw = video.shape[:3]
    lay = _layout(t_count, fh, fw, width=width, columns=columns, channels=audio.shape[0], samples=audio.shape[1])
    sheet = Image.new("RGB", (lay.width, lay.height), _BG)
    draw = ImageDraw.Draw(sheet)
    title_font, text_font, small_font = _font(20, bold=True), _font(14), _font(12)

    title = f"{sample['class_name']}  (label {sample['label']})  \u2014  {sample['path']}"
    draw.text((lay.margin, 10), _fit(title, title_font, lay.width - 2 * lay.margin), font=title_font, fill=_FG)
    src = meta.get("frame_indices") or []
    fps = meta.get("fps") or 0
    parts = [
        f"clip {_sample_index(sample)} of {sample['clips']}",
        f"video {meta.get('video_index')} clip {meta.get('clip_index')}",
        f"{t_count} frames {fw}x{fh}",
    ]
    if src:
        parts.append(f"source frames {src[0]}\u2013{src[-1]}" + (f" at {fps:.4g} fps" if fps else ""))
    if meta.get("frame_rate"):
        parts.append(f"resampled to {meta['frame_rate']:g} fps")
    parts.append(f"shard {sample['shard']}")
    draw.text((lay.margin, 38), _fit("  \u00b7  ".join(parts), text_font, lay.width - 2 * lay.margin), font=text_font, fill=_MUTED)

    scale = lay.tile_w / fw
    resample = Image.Resampling.NEAREST if scale >= 2 else Image.Resampling.LANCZOS
    for t in range(t_count):
        x, y = lay.tile_xy(t)
        tile = Image.fromarray(np.ascontiguousarray(video[t])).resize((lay.tile_w, lay.tile_h), resample)
        sheet.paste(tile, (x, y))
        label = f"#{t}" + (f"  src {src[t]}" if t < len(src) else "")
        if fps and t < len(src):
            label += f"  {src[t] / fps:.2f}s"
        draw.text((x, y + lay.tile_h + 3), _fit(label, small_font, lay.tile_w), font=small_font, fill=_FG)

    box = (lay.margin, lay.wave_top, lay.width - lay.margin, lay.wave_top + lay.wave_h)
    rate = meta.get("audio_sample_rate") or 0
    start = src[0] / fps if src and fps else 0.0
    marks = [i / fps for i in src] if src and fps else []
    if audio.shape[1] == 0:
        draw.rectangle(box, outline=(205, 205, 205), fill=(255, 255, 255))
        draw.text((box[0] + 10, box[1] + lay.wave_h // 2 - 8), "no audio in this clip (audio is [1, 0])", font=text_font, fill=_MUTED)
    elif backend == "matplotlib":
        panel = _waveform_matplotlib(audio, rate, start, marks, box[2] - box[0], box[3] - box[1])
        sheet.paste(panel, box[:2])
    else:
        _waveform_pillow(draw, audio, rate, start, marks, box, small_font)
    return sheet


def _sample_index(sample: Mapping[str, Any]) -> int:
    v = sample["video_record"]
    return int(v["first_clip"]) + int(sample["meta"].get("clip_index", 0))


def _envelope(channel: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Min and max of ``channel`` over ``bins`` equal spans (a waveform that stays honest when
    thousands of samples share one pixel)."""
    n = len(channel)
    edges = np.linspace(0, n, bins + 1).astype(np.int64)
    edges[1:] = np.maximum(edges[1:], edges[:-1] + 1)
    edges = np.minimum(edges, n)
    idx = np.minimum(edges[:-1], n - 1)
    lo = np.minimum.reduceat(channel, idx)
    hi = np.maximum.reduceat(channel, idx)
    # reach back to the previous span's last sample so that steep stretches stay connected
    last = channel[np.maximum(idx[1:] - 1, 0)]
    lo[1:] = np.minimum(lo[1:], last)
    hi[1:] = np.maximum(hi[1:], last)
    return lo, hi


def _wave_geometry(k: int, h: int, *, top: int, bottom: int, gap: int = 6) -> list[tuple[float, float]]:
    """``(y, height)`` in pixels from the panel top of each channel's lane."""
    lane = (h - top - bottom - gap * (k - 1)) / k
    return [(top + c * (lane + gap), lane) for c in range(k)]


def _waveform_matplotlib(audio: np.ndarray, rate: int, start: float, marks: Sequence[float], w: int, h: int):
    """The waveform panel drawn by matplotlib: one lane per channel, seconds below, frame
    numbers above at the times their frames start."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from PIL import Image

    dpi = 100
    fig = Figure(figsize=(w / dpi, h / dpi), dpi=dpi, facecolor=tuple(c / 255 for c in _BG))
    canvas = FigureCanvasAgg(fig)
    k, n = audio.shape
    left, right = 48, 12
    bins = min(n, 2 * w)
    if rate:
        x = start + (np.arange(bins) + 0.5) * (n / bins) / rate
        xlim = (start, start + n / rate)
    else:
        x = (np.arange(bins) + 0.5) * (n / bins)
        xlim = (0, n)
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    lim = max(peak * 1.1, 1e-3)
    axes = []
    for c, (y, lane) in enumerate(_wave_geometry(k, h, top=24, bottom=40)):
        ax = fig.add_axes((left / w, 1 - (y + lane) / h, (w - left - right) / w, lane / h))
        lo, hi = _envelope(audio[c], bins)
        color = tuple(v / 255 for v in _WAVE_COLORS[c % len(_WAVE_COLORS)])
        ax.fill_between(x, lo, hi, color=color, linewidth=0.5)
        for m in marks:
            ax.axvline(m, color="0.55", linewidth=0.7, linestyle=":", zorder=0)
        ax.axhline(0, color="0.85", linewidth=0.6, zorder=0)
        ax.set_xlim(*xlim)
        ax.set_ylim(-lim, lim)
        ax.set_yticks([-round(peak, 2), 0, round(peak, 2)] if peak >= 0.01 else [0])
        ax.text(0.004, 0.96, f"ch {c}", transform=ax.transAxes, fontsize=8, va="top", color="0.35")
        ax.tick_params(labelsize=7, length=2)
        if c < k - 1:
            ax.tick_params(labelbottom=False)
        axes.append(ax)
    if marks and len(marks) <= 64:
        step = max(1, math.ceil(len(marks) / 32))
        top = axes[0].secondary_xaxis("top")
        top.set_xticks(list(marks)[::step], labels=[f"#{t}" for t in range(0, len(marks), step)])
        top.tick_params(labelsize=7, length=2)
    unit = "seconds" if rate else "samples"
    detail = f"{k} ch, {n} samples" + (f" at {rate} Hz, peak {peak:.3f}" if rate else f", peak {peak:.3f}")
    axes[-1].set_xlabel(f"{unit}   ({detail}; dotted lines: frame start times)", fontsize=8, labelpad=2)
    canvas.draw()
    rgba = np.asarray(canvas.buffer_rgba())
    img = Image.fromarray(np.ascontiguousarray(rgba[..., :3]))
    return img if img.size == (w, h) else img.resize((w, h))


def _waveform_pillow(draw, audio: np.ndarray, rate: int, start: float, marks: Sequence[float], box, font) -> None:
    """The waveform panel drawn with Pillow alone: min/max envelope per pixel column, one lane
    per channel, dotted frame start times."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    k, n = audio.shape
    left, right = 44, 10
    pw = w - left - right
    draw.rectangle(box, outline=(205, 205, 205), fill=(255, 255, 255))
    peak = max(float(np.max(np.abs(audio))), 1e-3)
    duration = n / rate if rate else 0.0
    for m in marks:
        if duration and start <= m <= start + duration:
            px = x0 + left + (m - start) / duration * pw
            for yy in range(y0 + 4, y1 - 22, 4):
                draw.point((px, yy), fill=(150, 150, 150))
    bins = min(n, pw)
    for c, (y, lane) in enumerate(_wave_geometry(k, h, top=6, bottom=24)):
        mid = y0 + y + lane / 2
        half = lane / 2 - 1
        draw.line([(x0 + left, mid), (x1 - right, mid)], fill=(220, 220, 220))
        draw.text((x0 + 6, mid - 7), f"ch {c}", font=font, fill=_MUTED)
        lo, hi = _envelope(audio[c], bins)
        color = _WAVE_COLORS[c % len(_WAVE_COLORS)]
        for i in range(bins):
            px = x0 + left + i * pw / bins
            draw.line([(px, mid - hi[i] / peak * half), (px, mid - lo[i] / peak * half)], fill=color)
    caption = f"audio: {k} ch, {n} samples" + (
        f" at {rate} Hz, {start:.3f}–{start + duration:.3f} s" if rate else ""
    ) + f", peak {peak:.3f}; dotted lines: frame start times"
    draw.text((x0 + left, y1 - 19), caption, font=font, fill=_MUTED)


def _font(size: int, *, bold: bool = False):
    from PIL import ImageFont

    names = ["DejaVuSans-Bold.ttf", "DejaVuSans.ttf"] if bold else ["DejaVuSans.ttf"]
    candidates = []
    try:
        from matplotlib import get_data_path

        candidates += [os.path.join(get_data_path(), "fonts", "ttf", n) for n in names]
    except ImportError:
        pass
    candidates += names
    for c in candidates:
        try:
            return ImageFont.truetype(c, size)
        except OSError:
            continue
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # pragma: no cover - Pillow without FreeType
        return ImageFont.load_default()


def _fit(text: str, font, width: int) -> str:
    """``text`` shortened in the middle with an ellipsis so it fits ``width`` pixels."""
    if font.getlength(text) <= width:
        return text
    keep = len(text)
    while keep > 4:
        keep -= max(1, keep // 20)
        cut = text[: keep // 2] + "\u2026" + text[len(text) - keep // 2 :]
        if font.getlength(cut) <= width:
            return cut
    return text[:1] + "\u2026"
