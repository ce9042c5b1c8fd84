"""The ``videos`` layout's format: one sample per video, and the per-split table ``videos.npy``.

Both the converter (which writes it) and the loader (which cuts clips out of it) use this
module. A sample holds a whole video, stored once; clips are cut when loading, for any frames
per clip, step and frame rate (the rules of :mod:`clipshards.convert.clips`).

From index version 4 (:data:`INTERLEAVED_VERSION`) a sample's frames and audio are one member,
interleaved, so that a clip (its frames and the audio that plays with them) is one byte range.
Its members, in this order (``key`` = the video's index in discovery order, 8 digits,
:func:`video_key`):

=======================  ===================================================================
member                   content
=======================  ===================================================================
``<key>.cls``            label, decimal ASCII
``<key>.json``           metadata: path, class, label, video index, frames, fps, size, audio
``<key>.frames.npy``     codec ``jpeg`` only: int64 ``[n, 2]``: each frame's (offset from the
                         first byte of ``media.bin``'s data, length)
``<key>.media.bin``      the whole audio track, float32 samples interleaved (``[N, K]`` rows),
                         with frame ``i`` (raw uint8 ``[H, W, 3]``, or one JPEG) inserted just
                         before audio sample ``p[i]`` (:func:`audio_points`: where the audio of
                         frame ``i`` starts, by the rule that cuts every clip's audio window)
=======================  ===================================================================

So frame ``i`` starts at ``i * H * W * 3 + 4 * K * p[i]`` (raw; JPEG: the sum of the frames
before it plus ``4 * K * p[i]``), its audio ``[p[i], p[i + 1])`` follows it, and the frames
``s..e`` of a clip with their audio window ``[p[s], p[e + 1])`` are the bytes from frame ``s`` to
where sample ``p[e + 1]`` lies: one read. A video without audio stores its frames only (K = 1,
N = 0). Versions 2 and 3 (read, no longer written) stored ``<key>.audio.npy`` (the whole track,
Fortran order) before the frames: ``<key>.video.npy`` (raw) or one ``<key>.fNNNNNN.jpg`` member a
frame after ``frames.npy``, whose offsets counted from the sample's first byte.

``videos.npy`` (beside ``index.json``) is a structured array, one row per stored video in
global order (:data:`TABLE_DTYPE`): what the loader needs to count every video's clips and to
find a clip's bytes without reading the sample's headers: label, frame count, fps, frame
size, the sample's shard and byte range, where its frames and audio start inside it, and the
audio's channels, samples, rate and first timestamp. It is read without pickle, and its
dtype must be exactly :data:`TABLE_DTYPE`.
"""

from __future__ import annotations

import io
import json
from typing import Any, Iterable, Mapping

import numpy as np

from .clips import audio_sample_at
from .schema import ShardFormatError, decode_jpeg_frames, decode_npy, encode_npy, parse_label

__all__ = [
    "VIDEOS_TABLE_NAME",
    "FRAMES_MEMBER",
    "MEDIA_MEMBER",
    "INTERLEAVED_VERSION",
    "audio_points",
    "frame_points",
    "frame_starts",
    "split_media",
    "decode_video_sample",
    "TABLE_DTYPE",
    "video_key",
    "video_frame_member",
    "npy_header_for",
    "table_bytes",
    "read_table",
    "frame_table",
]

VIDEOS_TABLE_NAME = "videos.npy"
FRAMES_MEMBER = "frames.npy"
MEDIA_MEMBER = "media.bin"
INTERLEAVED_VERSION = 4
"""The first index version whose ``videos`` layout samples interleave frames and audio (``media.bin``)."""

TABLE_DTYPE = np.dtype([
    ("video_index", "<i4"),     # the video's index in discovery order (its sample key)
    ("label", "<i4"),
    ("num_frames", "<i4"),      # decoded frames of the best video stream
    ("width", "<i4"),           # stored frame size (after resize)
    ("height", "<i4"),
    ("shard", "<i4"),           # index of the shard holding the sample
    ("audio_channels", "<i4"),  # K (1 without audio)
    ("sample_rate", "<i4"),     # 0: no audio (every clip gets empty audio)
    ("audio_partial", "<i4"),   # 1: decoding stopped part-way (see decode.AudioTrack)
    ("fps", "<f8"),             # average frame rate, as the clips layout records it
    ("t_first", "<f8"),         # time of the first audio sample (s)
    ("sample_offset", "<i8"),   # the sample's byte range in its shard
    ("sample_bytes", "<i8"),
    ("video_at", "<i8"),        # from the sample's first byte: the jpeg frame table's rows; raw: as audio_at
    ("audio_at", "<i8"),        # from the sample's first byte: media.bin's data (versions 2-3: the audio's)
    ("audio_samples", "<i8"),   # N
])
"""One row per stored video: 92 bytes (9.2 MB for 100,000 videos)."""


def video_key(video_index: int) -> str:
    """Sample key of video ``video_index`` (discovery order): 8 digits, no dot."""
    return f"{video_index:08d}"


def video_frame_member(t: int) -> str:
    """Member field of JPEG frame ``t`` of a whole video."""
    return f"f{t:06d}.jpg"


def npy_header_for(shape: tuple[int, ...], dtype: np.dtype, *, fortran: bool = False) -> bytes:
    """The NPY v1.0 header of an array of ``shape`` and ``dtype``, before its data exists (the
    converter streams a video's frames after it): the bytes ``np.save`` would write."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
                                              "fortran_order": bool(fortran), "shape": tuple(int(s) for s in shape)})
    return buf.getvalue()


def table_bytes(rows: Iterable[Mapping[str, Any]]) -> bytes:
    """``videos.npy``: the rows (mappings of :data:`TABLE_DTYPE`'s fields) as NPY bytes."""
    rows = list(rows)
    table = np.zeros(len(rows), dtype=TABLE_DTYPE)
    for i, row in enumerate(rows):
        for name in TABLE_DTYPE.names:
            table[name][i] = row[name]
    return encode_npy(table)


def read_table(data: bytes | memoryview, *, where: str = "") -> np.ndarray:
    """``videos.npy`` parsed (no pickle; dtype exactly :data:`TABLE_DTYPE`, one dimension) and
    checked for values no conversion writes (negative counts or offsets, fps <= 0)."""
    try:
        table = decode_npy(data, expect=TABLE_DTYPE)
    except ShardFormatError as exc:
        raise ShardFormatError(f"{where}: not a table of videos ({exc})") from exc
    if table.ndim != 1:
        raise ShardFormatError(f"{where}: expected one row per video, found shape {table.shape}")
    ints = ("num_frames", "width", "height", "shard", "audio_channels", "sample_rate", "sample_offset",
            "sample_bytes", "video_at", "audio_at", "audio_samples")
    for name in ints:
        if table.size and int(table[name].min()) < 0:
            raise ShardFormatError(f"{where}: negative {name} in the table of videos")
    if table.size and not bool(np.all(np.isfinite(table["fps"]) & (table["fps"] > 0))):
        raise ShardFormatError(f"{where}: a video's fps is not a positive number")
    if table.size and not bool(np.all(np.isfinite(table["t_first"]))):
        raise ShardFormatError(f"{where}: a video's first audio time is not a number")
    return table


def frame_table(rows: bytes | memoryview, num_frames: int, *, where: str = "") -> np.ndarray:
    """The rows of a JPEG sample's ``frames.npy`` (read without its header, from the ``video_at``
    the table gives): int64 ``[num_frames, 2]`` (offset from the sample's first byte, length), checked."""
    if len(rows) != 16 * num_frames:
        raise ShardFormatError(f"{where}: frame table is {len(rows)} bytes, {num_frames} frames need {16 * num_frames}")
    table = np.frombuffer(rows, dtype="<i8").reshape(num_frames, 2)
    if num_frames and (int(table.min()) < 0 or not bool(np.all(table[:, 1] > 0))
                       or not bool(np.all(np.diff(table[:, 0]) > 0))):
        raise ShardFormatError(f"{where}: frame table has negative offsets, empty frames or frames out of order")
    return table


def audio_points(num_frames: int, fps: float, sample_rate: int, t_first: float, audio_samples: int) -> np.ndarray:
    """int64 ``[num_frames + 1]``: ``p[i]``, the audio sample before which frame ``i`` is stored
    (``p[num_frames]``: where the last frame's audio ends); all 0 without audio. The audio of
    frames ``s..e`` is ``[p[s], p[e + 1])``, :func:`~clipshards.convert.clips.audio_sample_at`'s
    arithmetic, so the loader's windows fall on these points exactly."""
    return frame_points(np.arange(num_frames + 1), fps, sample_rate, t_first, audio_samples)


def frame_points(frames: np.ndarray, fps: float, sample_rate: int, t_first: float, audio_samples: int) -> np.ndarray:
    """:func:`audio_points` of the given frames only (what a clip needs)."""
    if not sample_rate:
        return np.zeros(len(frames), dtype=np.int64)
    return audio_sample_at(frames, fps, sample_rate, t_first, audio_samples)


def frame_starts(lengths: np.ndarray, points: np.ndarray, channels: int) -> np.ndarray:
    """int64: where each frame starts in ``media.bin``'s data: after the frames before it and
    the ``points[i]`` audio samples of ``channels`` float32 values before it."""
    lengths = np.asarray(lengths, dtype=np.int64)
    return np.cumsum(lengths) - lengths + 4 * int(channels) * points[: len(lengths)]


def split_media(data: bytes | memoryview, lengths: np.ndarray, points: np.ndarray, channels: int,
                audio_samples: int) -> tuple[list[memoryview], np.ndarray]:
    """``media.bin``'s data cut into each frame's bytes and the whole audio track, float32
    ``[channels, audio_samples]`` (``[1, 0]`` when there are no samples); checked to be exactly
    as long as the frames and samples, with ``points`` (:func:`audio_points`) in order."""
    view = memoryview(data).cast("B")
    lengths = np.asarray(lengths, dtype=np.int64)
    k, n, size = int(channels), int(audio_samples), int(lengths.sum()) + 4 * int(channels) * int(audio_samples)
    if len(view) != size:
        raise ShardFormatError(f"{MEDIA_MEMBER} is {len(view)} bytes, {len(lengths)} frames of "
                               f"{int(lengths.sum())} bytes and {n} samples of {k} channels need {size}")
    if len(points) != len(lengths) + 1 or int(points[0]) < 0 or int(points[-1]) > n or bool(np.any(np.diff(points) < 0)):
        raise ShardFormatError("the frames' audio points are out of order or past the track")
    starts = frame_starts(lengths, points, k).tolist()
    frames = [view[a: a + b] for a, b in zip(starts, lengths.tolist())]
    ends = [0, *(a + b for a, b in zip(starts, lengths.tolist()))]  # the audio lies between the frames
    audio = b"".join(view[a: b] for a, b in zip(ends, [*starts, len(view)]))
    track = np.frombuffer(audio, dtype="<f4").reshape(n, k).T
    return frames, (np.ascontiguousarray(track, dtype=np.float32) if n else np.empty((1, 0), dtype=np.float32))


def decode_video_sample(fields: Mapping[str, bytes | memoryview], *, where: str = "") -> dict[str, Any]:
    """A whole version-4 sample (``field -> bytes``, its members) decoded, for the tools that
    look at one (verify, preview): ``{"video": uint8 [n, H, W, 3], "audio": float32 [K, N],
    "label", "meta"}``, the frames and track cut out of ``media.bin`` by its metadata."""
    try:
        label = parse_label(fields["cls"])
        meta = json.loads(bytes(fields["json"]).decode("utf-8"))
        n, fps, h, w = int(meta["num_frames"]), float(meta["fps"]), int(meta["height"]), int(meta["width"])
        rate = int(meta.get("audio_sample_rate") or 0)
        k, total = (int(meta["audio_channels"]), int(meta["audio_samples"])) if rate else (1, 0)
        points = audio_points(n, fps, rate, float(meta.get("audio_t_first") or 0.0), total)
        if FRAMES_MEMBER in fields:
            table = decode_npy(fields[FRAMES_MEMBER], expect=np.dtype("<i8"))
            if table.shape != (n, 2) or not np.array_equal(table[:, 0], frame_starts(table[:, 1], points, k)):
                raise ShardFormatError(f"{FRAMES_MEMBER} does not place {n} frames where their audio puts them")
            lengths = table[:, 1]
        else:
            lengths = np.full(n, h * w * 3, dtype=np.int64)
        frames, audio = split_media(fields[MEDIA_MEMBER], lengths, points, k, total)
        if FRAMES_MEMBER in fields:
            video = decode_jpeg_frames(frames) if n else np.empty((0, h, w, 3), dtype=np.uint8)
        else:
            video = np.stack([np.frombuffer(f, dtype=np.uint8).reshape(h, w, 3) for f in frames]) if n else \
                np.empty((0, h, w, 3), dtype=np.uint8)
    except KeyError as exc:
        raise ShardFormatError(f"{where}: missing member or metadata {exc.args[0]!r}") from exc
    except ShardFormatError as exc:
        raise ShardFormatError(f"{where}: {exc}") from exc
    except (ValueError, TypeError, UnicodeDecodeError, OverflowError) as exc:
        raise ShardFormatError(f"{where}: {type(exc).__name__}: {exc}") from exc
    return {"video": video, "audio": audio, "label": label, "meta": meta}
