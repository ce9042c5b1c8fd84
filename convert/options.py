"""Conversion options: one typed, validated dataclass, loadable from a ``configs/`` TOML file."""

from __future__ import annotations

import dataclasses
import os
import sys
from dataclasses import dataclass, field, fields
from typing import Any, Mapping, Optional

from .folds import DATASETS, FOLD_DATASETS, FOLD_EXTENSIONS, FOLDS_SPLIT, KINETICS
from .layout import normalize_extensions
from .schema import CHECKSUMS, CODECS, LAYOUT_CLIPS, LAYOUT_VIDEOS, LAYOUTS
from .storage_errors import CONNECT_TIMEOUT, MAX_CONNECT_TIMEOUT, connect_timeout_from_env, connect_timeout_ok

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = [
    "ConvertOptions",
    "load_config",
    "default_layout",
    "SPLITS",
    "GROWTH_LIMIT",
    "CONNECT_TIMEOUT",
    "LAYOUT_AUTO",
    "connect_timeout_from_env",
]

SPLITS = ("train", "val", "test", FOLDS_SPLIT)
"""Output split folders: Kinetics' split folders, and ``all`` for a UCF101/HMDB51 conversion."""
KINETICS_SPLITS = SPLITS[:3]
DEFAULT_EXTENSIONS = ("avi", "mp4")
NUM_CLASSES = ("400", "600", "700")
DEFAULT_SHARD_SIZE = 256 * 1024 * 1024
MAX_FRAME_RATE = 1000.0
GROWTH_LIMIT = 20
"""A planned output over this many times the input (or over the free space) needs ``yes=True`` (``--yes``)."""
LAYOUT_AUTO = "auto"
"""``layout="auto"`` (or None, the default): :func:`default_layout` chooses."""
YES_ENV = "CLIPSHARDS_YES"
"""``CLIPSHARDS_YES=1`` in the environment: ``yes=True`` for every run (batch jobs, CI)."""

INT_RANGES: dict[str, tuple[int, int, str]] = {  # option: (lowest, highest, what a value means)
    "frames_per_clip": (1, 10_000, ""),
    "step_between_clips": (1, 1_000_000, ""),
    "video_width": (0, 16384, " (0 keeps the source value)"),
    "video_height": (0, 16384, " (0 keeps the source value)"),
    "video_min_dimension": (0, 16384, " (0 keeps the source value)"),
    "audio_samples": (0, 768_000, " (Hz; 0 keeps the source rate)"),
    "audio_channels": (0, 8, " (0 keeps the source channels)"),
    "jpeg_quality": (1, 100, ""),
    "shard_size": (1 << 10, 1 << 40, " bytes (1 KiB..1 TiB)"),
    "workers": (0, 1024, " (0 means one per CPU core)"),
    "decoder_threads": (0, 256, " (0 lets FFmpeg choose; default 1: workers give the parallelism)"),
}
"""Accepted ranges of the integer options: a value outside is refused when the options are made,
not found out hours into a run (or never: some made the run hang)."""


def default_layout(frames_per_clip: int, step_between_clips: int) -> tuple[str, str]:
    """The layout a conversion gets when none is given, and why: ``videos`` when clips overlap
    (``step_between_clips < frames_per_clip``: the clips layout would store each frame up to
    T/S times), else ``clips`` (each frame at most once, and the fastest to read)."""
    T, S = frames_per_clip, step_between_clips
    if S < T:
        return LAYOUT_VIDEOS, (f"the default when clips overlap (step {S} < {T} frames per clip): the clips layout "
                               f"would store each frame up to {T / S:.3g}x (--layout clips to have it anyway)")
    return LAYOUT_CLIPS, f"the default when clips do not overlap (step {S} >= {T} frames per clip)"


@dataclass(frozen=True)
class ConvertOptions:
    """Every option that shapes the output. Its fields (minus the run-only ones) go into the index.

    ``video_width``, ``video_height``, ``video_min_dimension``, ``audio_samples`` and
    ``audio_channels`` mean what torchvision's ``_video_*``/``_audio_*`` arguments meant for
    its old ``video_reader`` backend: 0 keeps the source value.

    ``decoder_threads`` is 1: each worker decodes in one thread and the workers (one per core)
    give the parallelism. Frame threads cost more CPU in total (decode-only with 2 workers:
    about 5,000 frames/s with FFmpeg's automatic threads, 5,700 with one thread each); 0 lets
    FFmpeg choose, which helps a run with fewer workers than cores.

    ``dataset`` is ROOT's layout: ``kinetics`` (``ROOT/<split>/<class>/...``, the default) or
    ``ucf101``/``hmdb51`` (``ROOT/<class>/<video>.avi``, all converted to ``OUT/all``, the folds
    read from annotation files, see :mod:`.folds`); ``split`` and ``extensions`` default to
    what it needs.
    """

    frames_per_clip: int
    split: Optional[str] = None  # None: "train" (Kinetics), "all" (UCF101/HMDB51)
    step_between_clips: int = 1
    frame_rate: Optional[float] = None
    video_width: int = 0
    video_height: int = 0
    video_min_dimension: int = 0
    audio_samples: int = 0
    audio_channels: int = 0
    extensions: Optional[tuple[str, ...]] = None  # None: ("avi", "mp4"), or ("avi",) for UCF101/HMDB51
    num_classes: str = "400"
    codec: str = "raw"
    jpeg_quality: int = 90
    shard_size: int = DEFAULT_SHARD_SIZE
    checksum: str = CHECKSUMS[0]
    # "clips": one sample per clip (T, S, frame rate fixed now); "videos": one per video, clips cut
    # when loading (T, S, frame rate the loaders' defaults); None/"auto": default_layout's choice, made
    # here. Recorded in the index only for "videos": a clips output's bytes predate the option.
    layout: Optional[str] = None
    dataset: str = field(default=KINETICS, metadata={"recorded_unless": KINETICS})  # ROOT's layout, see .folds
    # run-only options: they change how the work is done, never the bytes written
    decoder_threads: int = field(default=1, metadata={"run_only": True})
    workers: int = field(default=0, metadata={"run_only": True})
    strict: bool = field(default=False, metadata={"run_only": True})
    dry_run: bool = field(default=False, metadata={"run_only": True})
    progress: bool = field(default=True, metadata={"run_only": True})
    # go on although the plan's output is over GROWTH_LIMIT x the input or the free space (--yes)
    yes: bool = field(default=False, metadata={"run_only": True})
    # seconds to keep trying an object store OUT that cannot be reached (None: $CLIPSHARDS_CONNECT_TIMEOUT or 10)
    connect_timeout: Optional[float] = field(default=None, metadata={"run_only": True})
    # why the layout is what it is when it was not given ("" when given): see default_layout
    layout_note: str = field(default="", init=False, repr=False, compare=False, metadata={"run_only": True})

    def __post_init__(self) -> None:
        def bad(name: str, why: str) -> None:
            raise ValueError(f"{name}={getattr(self, name)!r}: {why}")

        for name, (lo, hi, meaning) in INT_RANGES.items():
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                bad(name, f"must be an integer in {lo}..{hi}{meaning}")
        _resolve_dataset(self, bad)
        if self.frame_rate is not None:
            v = self.frame_rate
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v <= MAX_FRAME_RATE:
                bad("frame_rate", f"must be a number of frames per second in (0, {MAX_FRAME_RATE}], or None to keep every frame")
        try:
            object.__setattr__(self, "extensions", normalize_extensions(
                self.extensions if self.extensions is not None
                else FOLD_EXTENSIONS if self.dataset in FOLD_DATASETS else DEFAULT_EXTENSIONS))
        except (ValueError, AttributeError, TypeError) as exc:
            bad("extensions", f"{exc} (give file extensions such as 'avi,mp4')")
        if self.dataset in FOLD_DATASETS and self.extensions != FOLD_EXTENSIONS:
            bad("extensions", f"{self.dataset} takes .avi files only (torchvision fixes extensions=('avi',)); leave it unset")
        object.__setattr__(self, "num_classes", str(self.num_classes))
        if self.num_classes not in NUM_CLASSES:
            bad("num_classes", f"must be one of {NUM_CLASSES}")
        if self.codec not in CODECS:
            bad("codec", f"must be one of {CODECS}")
        if self.checksum not in CHECKSUMS:
            bad("checksum", f"must be one of {CHECKSUMS}")
        _resolve_layout(self, bad)
        if not isinstance(self.yes, bool):
            bad("yes", "must be True or False")
        if self.connect_timeout is not None and not connect_timeout_ok(self.connect_timeout):
            bad("connect_timeout", f"must be a number of seconds in (0, {MAX_CONNECT_TIMEOUT:g}], or None for the default")

    @property
    def layout_auto(self) -> bool:
        """The layout was not given: :func:`default_layout` chose it (or see :meth:`keep_layout`)."""
        return bool(self.layout_note)

    def layout_reason(self) -> str:
        """Why the layout is :attr:`layout`, for the plan: the default's reason, or that it was given."""
        return self.layout_note or "as given (--layout, layout=)"

    def keep_layout(self, layout: str, why: str) -> "ConvertOptions":
        """These options with ``layout``, still counted as not given: the layout an earlier run
        of this same conversion used (an output converted before the default's rule, resumed)."""
        kept = dataclasses.replace(self, layout=layout)
        object.__setattr__(kept, "layout_note", why)
        return kept

    @property
    def resolved_yes(self) -> bool:
        """``yes``, or ``$CLIPSHARDS_YES`` set to 1/true/yes."""
        return self.yes or os.environ.get(YES_ENV, "").strip().lower() in ("1", "true", "yes")

    @property
    def resolved_connect_timeout(self) -> float:
        """``connect_timeout``, else ``$CLIPSHARDS_CONNECT_TIMEOUT``, else :data:`CONNECT_TIMEOUT`."""
        return self.connect_timeout if self.connect_timeout is not None else connect_timeout_from_env()

    @property
    def resolved_workers(self) -> int:
        return self.workers or max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))

    def output_options(self) -> dict[str, Any]:
        """The options that determine the output bytes, as recorded in the index."""
        out = {}
        for f in fields(self):
            if f.metadata.get("run_only") or (f.name == "layout" and self.layout == LAYOUT_CLIPS):
                continue
            if "recorded_unless" in f.metadata and f.metadata["recorded_unless"] == getattr(self, f.name):
                continue  # an option added later, left out at its old behaviour: those indexes keep their bytes
            if f.name == "num_classes" and self.dataset in FOLD_DATASETS:
                continue  # Kinetics' variant: meaningless for UCF101/HMDB51
            v = getattr(self, f.name)
            out[f.name] = list(v) if isinstance(v, tuple) else v
        return out

    def replace(self, **changes: Any) -> "ConvertOptions":
        """A copy with ``changes``; a layout that was not given is chosen again for the new values."""
        if self.layout_auto and "layout" not in changes:
            changes["layout"] = None
        return dataclasses.replace(self, **changes)


def _resolve_dataset(opts: ConvertOptions, bad: Any) -> None:
    """``dataset`` checked; ``split`` and ``extensions`` defaulted for it (a UCF101/HMDB51
    root has no split folder: all of it goes to ``OUT/all``, its splits are folds)."""
    if opts.dataset not in DATASETS:
        bad("dataset", f"must be one of {DATASETS}")
    folds = opts.dataset in FOLD_DATASETS
    if opts.split is None:
        object.__setattr__(opts, "split", FOLDS_SPLIT if folds else "train")
    if folds and opts.split != FOLDS_SPLIT:
        bad("split", f"{opts.dataset} has no split folder: its splits are folds, read from the annotation files, "
                     f"and the whole root is converted to OUT/{FOLDS_SPLIT}; leave split unset")
    if not folds and opts.split not in KINETICS_SPLITS:
        bad("split", f"must be one of {KINETICS_SPLITS}" + (f" ({FOLDS_SPLIT!r} is the output of dataset="
                                                             f"{FOLD_DATASETS[0]!r} or {FOLD_DATASETS[1]!r})"
                                                             if opts.split == FOLDS_SPLIT else ""))
    if folds and str(opts.num_classes) != "400":
        bad("num_classes", f"is Kinetics' variant; {opts.dataset}'s classes are its folders: leave it unset")


def _resolve_layout(opts: ConvertOptions, bad: Any) -> None:
    """``layout`` checked; when not given (None, ``"auto"``), :func:`default_layout`'s choice and why."""
    if opts.layout is None or opts.layout == LAYOUT_AUTO:
        layout, note = default_layout(opts.frames_per_clip, opts.step_between_clips)
        object.__setattr__(opts, "layout", layout)
        object.__setattr__(opts, "layout_note", note)
    elif opts.layout not in LAYOUTS:
        bad("layout", f"must be one of {LAYOUTS}, or {LAYOUT_AUTO!r}/None for the default (clips: one sample per "
                      "clip; videos: clips cut when loading; the default: videos when step_between_clips < "
                      "frames_per_clip)")


def load_config(path: str | os.PathLike) -> dict[str, Any]:
    """Read a TOML preset from ``configs/`` into ``ConvertOptions`` keyword arguments.

    Unknown keys are an error naming the key, so a typo never silently falls back to a default.
    """
    with open(path, "rb") as fh:
        try:
            data = tomllib.load(fh)
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"config {os.fspath(path)!r} is not valid TOML: {exc}") from exc
    return check_config_keys(data, where=os.fspath(path))


def check_config_keys(data: Mapping[str, Any], *, where: str) -> dict[str, Any]:
    known = {f.name for f in fields(ConvertOptions) if f.init}
    out = {}
    for key, value in data.items():
        name = key.replace("-", "_")
        if name not in known:
            raise ValueError(f"config {where!r}: unknown option {key!r} (known: {', '.join(sorted(known))})")
        out[name] = tuple(value) if isinstance(value, list) else value
    return out
