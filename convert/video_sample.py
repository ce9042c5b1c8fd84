"""The ``videos`` layout's format: one sample per video, and the per-split table ``videos.npy``.

Both the converter (which writes it) and the loader (which cuts clips out of it) use this
module. A sample holds a whole video, stored once; clips are cut when loading, for any frames
per clip, step and frame rate (the rules of :mod:`clipshards.convert.clips`). Its members, in
this order (``key`` = the video's index in discovery order, 8 digits, :func:`video_key`):

=======================  ===================================================================
member                   content
=======================  ===================================================================
``<key>.cls``            label, decimal ASCII
``<key>.json``           metadata: path, class, label, video index, frames, fps, size, audio
``<key>.audio.npy``      float32 ``[K, N]``, the whole track, Fortran order: samples interleaved,
                         so the audio of a clip is one byte range (``[1, 0]`` without audio)
``<key>.video.npy``      codec ``raw``: uint8 ``[n, H, W, 3]``, every frame; frame ``i`` at
                         ``i * H * W * 3`` from the data's start
``<key>.frames.npy``     codec ``jpeg``: int64 ``[n, 2]``: each frame's (offset from the
                         sample's first byte, length)
``<key>.f000000.jpg``..  codec ``jpeg``: one JPEG per frame (6 digits: a video may have more
                         than 9,999 frames)
=======================  ===================================================================

``videos.npy`` (beside ``index.json``) is a structured array, one row per stored video in
global order (:data:`TABLE_DTYPE`): what the loader needs to count every video's clips and to
find a clip's bytes without reading the sample's headers: label, frame count, fps, frame
size, the sample's shard and byte range, where its frames and audio start inside it, and the
audio's channels, samples, rate and first timestamp. It is read without pickle, and its
dtype must be exactly :data:`TABLE_DTYPE`.
"""

from __future__ import annotations

import io
from typing import Any, Iterable, Mapping

import numpy as np

from .schema import ShardFormatError, decode_npy, encode_npy

__all__ = [
    "VIDEOS_TABLE_NAME",
    "FRAMES_MEMBER",
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
    ("video_at", "<i8"),        # from the sample's first byte: raw frame data, or the jpeg frame table
    ("audio_at", "<i8"),        # from the sample's first byte: audio data (interleaved float32)
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
