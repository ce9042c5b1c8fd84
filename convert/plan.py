"""Planning: probe every video (demux only) and estimate clips, frame reuse and output bytes.

The plan is printed before anything is written (``--dry-run`` stops there). Frame counts
come from packet counts, so clip numbers are estimates that the decode pass confirms.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from .clips import clip_count, frame_store_counts, selected_count
from .decode import Probe, VideoError, probe, target_size
from .layout import VideoEntry
from .options import GROWTH_LIMIT, ConvertOptions, default_layout
from .schema import LAYOUT_CLIPS, LAYOUT_VIDEOS
from .units import human_bytes

__all__ = ["ProbeResult", "Plan", "probe_entry", "probe_entry_header", "make_plan", "growth_problem", "JPEG_BYTES_PER_PIXEL"]

TAR_HEADER = 512
SAMPLE_OVERHEAD = 4 * 1024 + 512  # cls, json, audio headers and padding, roughly

JPEG_BYTES_PER_PIXEL = {50: 0.08, 75: 0.12, 90: 0.22, 95: 0.32, 100: 0.8}


def jpeg_bytes_per_pixel(quality: int) -> float:
    """A rough JPEG size model (bytes per pixel of an RGB frame) for the plan's estimate."""
    qs = sorted(JPEG_BYTES_PER_PIXEL)
    for lo, hi in zip(qs, qs[1:]):
        if quality <= hi:
            t = max(0.0, (quality - lo) / (hi - lo))
            return JPEG_BYTES_PER_PIXEL[lo] + t * (JPEG_BYTES_PER_PIXEL[hi] - JPEG_BYTES_PER_PIXEL[lo])
    return JPEG_BYTES_PER_PIXEL[qs[-1]]


@dataclass(frozen=True)
class ProbeResult:
    index: int
    probe: Optional[Probe]
    reason: str = ""


def probe_entry(entry: VideoEntry, count_packets: bool = True) -> ProbeResult:
    """Probe one video for the plan, counting its packets (see :func:`~clipshards.convert.decode.probe`)."""
    try:
        return ProbeResult(entry.index, probe(entry.path, count_packets=count_packets))
    except VideoError as exc:
        return ProbeResult(entry.index, None, exc.reason)
    except Exception as exc:  # a probe never stops the run; the decode pass decides
        return ProbeResult(entry.index, None, f"{type(exc).__name__}: {exc}")


def probe_entry_header(entry: VideoEntry) -> ProbeResult:
    """:func:`probe_entry` from the container's header where it declares the frame count."""
    return probe_entry(entry, count_packets=False)


@dataclass
class Plan:
    videos: int = 0
    unreadable: dict[int, str] = field(default_factory=dict)
    too_short: int = 0
    clips: int = 0
    frames_stored: int = 0
    frames_distinct: int = 0
    bytes: int = 0  # estimated output of the layout chosen
    frames_source: int = 0  # every frame of the readable videos: what the videos layout stores
    bytes_clips: int = 0  # estimated output of either layout
    bytes_videos: int = 0
    layout: str = LAYOUT_CLIPS
    layout_reason: str = ""  # why this layout (ConvertOptions.layout_reason)

    @property
    def reuse(self) -> float:
        return self.frames_stored / self.frames_distinct if self.frames_distinct else 0.0

    recommended: str = LAYOUT_CLIPS  # the default's rule (options.default_layout), whatever was chosen

    def to_json(self) -> dict[str, Any]:
        return {
            "videos": self.videos,
            "unreadable": len(self.unreadable),
            "too_short": self.too_short,
            "clips": self.clips,
            "frames_stored": self.frames_stored,
            "frame_reuse": round(self.reuse, 3),
            "estimated_bytes": self.bytes,
            "layouts": {
                LAYOUT_CLIPS: {"estimated_bytes": self.bytes_clips, "frames": round(self._ratio(self.frames_stored), 3)},
                LAYOUT_VIDEOS: {"estimated_bytes": self.bytes_videos, "frames": 1.0 if self.frames_source else 0.0},
                "recommended": self.recommended,
                "chosen": self.layout,
                "why": self.layout_reason,
            },
        }

    def _ratio(self, frames: int) -> float:
        return frames / self.frames_source if self.frames_source else 0.0

    def describe(self, options: ConvertOptions) -> str:
        return (
            f"plan: {self.videos} videos ({len(self.unreadable)} unreadable, {self.too_short} too short), "
            f"~{self.clips} clips of {options.frames_per_clip} frames; "
            f"each stored frame appears {self.reuse:.2f}x on average "
            f"({self.frames_stored} frames stored); "
            f"estimated output ~{human_bytes(self.bytes)} ({options.codec}, {self.layout} layout); "
            f"stored size: clips layout ~{human_bytes(self.bytes_clips)} ({self._ratio(self.frames_stored):.1f}x the source's "
            f"frames), videos layout ~{human_bytes(self.bytes_videos)} (1.0x: each frame once, clips cut when loading); "
            f"recommended: --layout {self.recommended}; layout {self.layout}: {self.layout_reason or options.layout_reason()}"
        )


def growth_problem(plan: Plan, options: ConvertOptions, input_bytes: int, free_bytes: Optional[int]) -> str:
    """Why the planned output needs a confirmation before anything is written, or ``""``.

    It does when it is over :data:`~clipshards.convert.options.GROWTH_LIMIT` times the input
    (the sum of the video files' sizes) or over ``free_bytes`` (the free space of OUT's
    filesystem; None where unknown, as on object storage). The text gives the sizes, the
    ratio, and what stores less.
    """
    over_input = input_bytes > 0 and plan.bytes > GROWTH_LIMIT * input_bytes
    over_free = free_bytes is not None and plan.bytes > free_bytes
    if not (over_input or over_free):
        return ""
    ratio = f"{plan.bytes / input_bytes:,.0f}x" if input_bytes else "more than"
    free = human_bytes(free_bytes) if free_bytes is not None else "unknown (object storage)"
    fixes = []
    overlap = plan.reuse > 1.05 and options.layout == LAYOUT_CLIPS  # the videos layout stores each frame once anyway
    if overlap:
        fixes.append(f"--step-between-clips {options.frames_per_clip} (each frame stored once; "
                     f"now {plan.reuse:.1f}x with a step of {options.step_between_clips})")
    if options.codec == "raw":
        fixes.append("--codec jpeg (about 10x smaller)")
    fixes.append("a smaller --video-height/--video-width or --frame-rate")
    if overlap:
        fixes.append("the videos layout (--layout videos: every frame stored once, clips cut when loading)")
    return (f"the planned output, ~{human_bytes(plan.bytes)}, is {ratio} the input ({human_bytes(input_bytes)} of video)"
            f"{f', more than {GROWTH_LIMIT}x' if over_input else ''}; free space on OUT: {free}"
            f"{' (not enough)' if over_free else ''}. To store less: {'; '.join(fixes)}. "
            "To write it anyway pass --yes (yes=True)")


def make_plan(probes: list[ProbeResult], options: ConvertOptions) -> Plan:
    plan = Plan(videos=len(probes), layout=options.layout, layout_reason=options.layout_reason(),
                recommended=default_layout(options.frames_per_clip, options.step_between_clips)[0])
    for r in probes:
        if r.probe is None:
            plan.unreadable[r.index] = r.reason
        else:
            _plan_video(plan, r.probe, options)
    plan.bytes = plan.bytes_videos if options.layout == LAYOUT_VIDEOS else plan.bytes_clips
    return plan


def _plan_video(plan: Plan, p: Probe, options: ConvertOptions) -> None:
    """Add one readable video to both layouts' estimates."""
    T, S = options.frames_per_clip, options.step_between_clips
    w, h = target_size(p.width or 1, p.height or 1, options.video_width, options.video_height, options.video_min_dimension)
    pixels = w * h * 3 if options.codec == "raw" else jpeg_bytes_per_pixel(options.jpeg_quality) * w * h
    per_frame = pixels if options.codec == "raw" else pixels + TAR_HEADER  # the clips layout: a member a JPEG frame
    rate = options.audio_samples or p.sample_rate
    channels = options.audio_channels or p.channels
    audio_per_second = 4 * channels * rate if p.audio_stream is not None else 0
    plan.frames_source += p.packets
    plan.bytes_videos += int(p.packets * pixels + audio_per_second * p.packets / p.fps + SAMPLE_OVERHEAD
                             + (16 * p.packets if options.codec == "jpeg" else 0))
    entries = selected_count(p.packets, p.fps, options.frame_rate)
    clips = clip_count(entries, T, S)
    if clips == 0:
        plan.too_short += 1
        return
    distinct, stored = frame_store_counts(entries, T, S)
    plan.clips += clips
    plan.frames_stored += stored
    plan.frames_distinct += distinct
    audio = int(audio_per_second * T / (options.frame_rate or p.fps))
    plan.bytes_clips += int(clips * (T * per_frame + audio + SAMPLE_OVERHEAD))
