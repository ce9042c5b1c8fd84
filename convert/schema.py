"""The shard format, defined once: sample keys, member names, field encodings, index layout.

Both the converter (encode) and the loader (decode) use this module, so the two sides
cannot drift. Shards are plain data: arrays are ``.npy`` read with ``allow_pickle=False``
and a dtype whitelist, metadata is JSON, labels are decimal text. Nothing is unpickled.

A sample (one clip) is the consecutive tar members ``<key>.<field>``:

=================  ===========================================================
member             content
=================  ===========================================================
``<key>.cls``      label, decimal ASCII (WebDataset's ``cls`` convention)
``<key>.json``     metadata (see :func:`clip_metadata`)
``<key>.audio.npy``  float32 ``[K, L]`` (``[1, 0]`` when the video has no audio)
``<key>.video.npy``  codec ``raw``: uint8 ``[T, H, W, 3]`` RGB
``<key>.f0000.jpg``  codec ``jpeg``: one baseline JPEG per frame, ``f0000`` .. ``f{T-1}``
=================  ===========================================================

``key`` is built from positions, never from file names: ``<video index, 8 digits>_<clip
index within the video, 6 digits>`` (:func:`clip_key`). It has no dot (WebDataset cuts keys at
the first dot), is unique even when two classes hold the same file name, and sorts in clip order.
In an output appended to, old shards keep the keys they were written with and the new shards'
keys number their videos above any used before (the index records each video's number, see
:mod:`.extents`), so a key is never repeated.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import math
import re
from typing import Any, Callable, Iterable, Mapping, Optional, Union

import numpy as np
import xxhash

from .jpeg import encode_rgb_jpeg

try:
    import simplejpeg as _simplejpeg
except ImportError:  # pragma: no cover - a platform without its wheel: Pillow decodes
    _simplejpeg = None

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "CODECS",
    "CHECKSUMS",
    "new_checksum",
    "checksum_of",
    "entry_checksum",
    "INDEX_NAME",
    "REPORT_NAME",
    "OFFSETS_NAME",
    "OFFSETS_COLUMNS",
    "CLIP_CHECKSUM",
    "clip_checksum",
    "clip_checksum_of",
    "key_number",
    "key_of_number",
    "parse_label",
    "check_plain_name",
    "VIDEO_MEMBER",
    "AUDIO_MEMBER",
    "LABEL_MEMBER",
    "META_MEMBER",
    "ShardFormatError",
    "clip_key",
    "shard_name",
    "frame_member",
    "encode_npy",
    "npy_parts",
    "npy_header",
    "decode_npy",
    "encode_sample",
    "decode_sample",
    "JpegFrames",
    "dumps_json",
    "check_index_version",
    "index_layout",
    "LAYOUTS",
    "LAYOUT_CLIPS",
    "LAYOUT_VIDEOS",
    "VIDEOS_FORMAT_VERSION",
]

FORMAT_NAME = "clipshards"
# The index version the converter writes. Version 1 (read, no longer written): the clips layout
# with offsets.npy rows of (offset, length). Version 2: every output names its layout; a clips
# layout's offsets rows are OFFSETS_COLUMNS (a version-1 reader refuses it by its version, where
# it would otherwise fail on the offsets' shape). Version 3: each video record also holds the
# source file's size and stamp (what ``convert --append`` compares), and an output appended to
# names its generation and an extents table (:mod:`.extents`): its shards no longer hold the
# clips in global order, which a version-2 reader would not know (it refuses it by its version).
# Version 4: a videos layout sample interleaves its frames and audio in one member, so a clip is
# one byte range (:mod:`.video_sample`; a version-3 reader would look for the old members). The
# clips layout is unchanged from version 3.
FORMAT_VERSION = 4
CODECS = ("raw", "jpeg")
# Output layouts: ``clips`` (one sample per clip, the default) and ``videos``
# (one sample per video, clips cut when loading; index version 2 on, with ``"layout": "videos"``,
# see :mod:`clipshards.convert.video_sample`). An index of version 2 or later must name its layout.
LAYOUT_CLIPS = "clips"
LAYOUT_VIDEOS = "videos"
LAYOUTS = (LAYOUT_CLIPS, LAYOUT_VIDEOS)
VIDEOS_FORMAT_VERSION = 2  # the first version with the videos layout
_VERSION_LAYOUTS = {1: (LAYOUT_CLIPS,), 2: LAYOUTS, 3: LAYOUTS, 4: LAYOUTS}
# How the index records the content of each shard and of offsets.npy: the entry's key names the
# algorithm. XXH3-128 (default) detects corruption as surely as any 128-bit hash and runs at
# memory speed (~60 GB/s here); SHA-256 (~1.8 GB/s) cost a raw conversion a third of a core.
CHECKSUMS = ("xxh3_128", "sha256")
INDEX_NAME = "index.json"
REPORT_NAME = "report.json"
OFFSETS_NAME = "offsets.npy"
# offsets.npy: an int64 row per clip, in global clip order. Index version 1: (offset, length)
# of the clip's bytes in its shard. Version 2: OFFSETS_COLUMNS, so that a loader checks each clip
# it reads against what the converter wrote without reading the per-video records: the sample's
# key (:func:`key_number`), its label and the CLIP_CHECKSUM of its bytes (:func:`clip_checksum`).
OFFSETS_COLUMNS = ("offset", "length", "key", "label", "checksum")
CLIP_CHECKSUM = "xxh3_64"
_CLIPS_PER_KEY = 10**6  # clip_key's 6 clip digits
_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}")

VIDEO_MEMBER = "video.npy"
AUDIO_MEMBER = "audio.npy"
LABEL_MEMBER = "cls"
META_MEMBER = "json"
_ALLOWED_DTYPES = {VIDEO_MEMBER: np.dtype(np.uint8), AUDIO_MEMBER: np.dtype(np.float32)}


Member = Union[bytes, tuple[Union[bytes, memoryview], ...]]  # a tar member's data, whole or in parts


class ShardFormatError(ValueError):
    """A shard member or index that does not follow this schema."""


def new_checksum(algo: str) -> Any:
    """An incremental hasher (``update``, ``hexdigest``) for ``algo``, one of :data:`CHECKSUMS`."""
    if algo == "xxh3_128":
        return xxhash.xxh3_128()
    if algo == "sha256":
        return hashlib.sha256()
    raise ValueError(f"checksum={algo!r}: must be one of {CHECKSUMS}")


def checksum_of(algo: str, data: bytes | memoryview) -> str:
    h = new_checksum(algo)
    h.update(data)
    return h.hexdigest()


def entry_checksum(entry: Mapping[str, Any]) -> tuple[str, str]:
    """``(algorithm, hex digest)`` recorded in an index entry (a shard, the offsets file);
    ``("", "")`` when it records none."""
    for algo in CHECKSUMS:
        value = entry.get(algo)
        if isinstance(value, str) and value:
            return algo, value
    return "", ""


def clip_key(video_index: int, clip_index: int) -> str:
    """Sample key of clip ``clip_index`` of video ``video_index`` (global discovery order)."""
    return f"{video_index:08d}_{clip_index:06d}"


def key_number(video_index: int, clip_index: int) -> int:
    """:func:`clip_key` as the integer offsets.npy records: its digits without the underscore."""
    if not 0 <= clip_index < _CLIPS_PER_KEY or video_index < 0:
        raise ValueError(f"clip {clip_index} of video {video_index}: outside what a sample key can name")
    return video_index * _CLIPS_PER_KEY + clip_index


def key_of_number(number: int) -> str:
    """The sample key a :func:`key_number` stands for ("?" for a negative number: a damaged row)."""
    return clip_key(*divmod(int(number), _CLIPS_PER_KEY)) if number >= 0 else "?"


def clip_checksum(data: bytes | memoryview) -> int:
    """XXH3-64 of a clip's bytes as the signed int64 offsets.npy stores (~30 GB/s: the loader
    checks every clip it reads)."""
    return _signed64(xxhash.xxh3_64_intdigest(data))


def clip_checksum_of(hasher: Any) -> int:
    """:func:`clip_checksum` of the bytes an ``xxhash.xxh3_64()`` was updated with."""
    return _signed64(hasher.intdigest())


def _signed64(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def check_plain_name(name: Any, *, what: str, where: str) -> str:
    """``name`` when it is a plain file name inside the folder (letters, digits, ``.``, ``_``,
    ``-``, not starting with a dot: no path, no ``..``, no URL scheme), else
    :class:`ShardFormatError`: an index names only its own files."""
    if not isinstance(name, str) or not _PLAIN_NAME.fullmatch(name) or ".." in name:
        shown = repr(name) if isinstance(name, str) and len(name) <= 80 else f"a {type(name).__name__}"
        raise ShardFormatError(f"{where}: {what} name {shown} is not a plain file name inside the dataset "
                               "(no '/', '..', URL scheme or leading dot)")
    return name


def parse_label(data: bytes | memoryview) -> int:
    """A label member (decimal ASCII digits, as the converter writes it); the error never
    quotes the bytes (a hostile index could point at any file)."""
    raw = bytes(data)
    if not 0 < len(raw) <= 9 or not raw.isdigit():
        raise ShardFormatError(f"label member is not a decimal number ({len(raw)} bytes)")
    return int(raw)


def shard_name(split: str, shard_index: int) -> str:
    return f"{split}-{shard_index:06d}.tar"


def frame_member(t: int) -> str:
    return f"f{t:04d}.jpg"


def dumps_json(obj: Any) -> bytes:
    """Canonical JSON bytes (sorted keys, no spaces) so equal content gives equal bytes."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def encode_npy(array: np.ndarray) -> bytes:
    """NPY v1.0 bytes of an array (deterministic header): the same bytes as ``np.save``.

    ``write_array`` into a ``BytesIO`` goes through a buffered iterator and is ~20x slower
    on a raw clip; this is one copy of the payload.
    """
    return b"".join(npy_parts(array))


def npy_parts(array: np.ndarray) -> tuple[bytes, bytes | memoryview]:
    """:func:`encode_npy` as ``(header, payload)``, the payload a view of the array's memory:
    a writer writes both parts without joining them (for a raw clip, megabytes not copied)."""
    array = np.ascontiguousarray(array)
    if array.dtype.hasobject:
        raise ValueError(f"refusing to encode an object array ({array.dtype})")
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, np.lib.format.header_data_from_array_1_0(array))
    return header.getvalue(), (memoryview(array).cast("B") if array.size else b"")


def npy_header(data: bytes | memoryview) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """``(shape, fortran_order, dtype, payload_offset)`` of NPY bytes; reads the header only,
    so ``data`` may be just a prefix of the array's bytes. Raises :class:`ShardFormatError`."""
    mv = memoryview(data).cast("B")
    major = mv[6] if len(mv) > 6 else 0
    size = 10 + int.from_bytes(mv[8:10], "little") if major == 1 else 12 + int.from_bytes(mv[8:12], "little")
    return _parse_npy_header(bytes(mv[:size]))


@functools.lru_cache(maxsize=256)
def _parse_npy_header(header: bytes) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """:func:`npy_header` of exactly the header bytes; cached, as every clip of a dataset has
    one of a few headers and NumPy parses each with ``ast.literal_eval``."""
    buf = io.BytesIO(header)
    try:
        version = np.lib.format.read_magic(buf)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(buf)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(buf)
        else:
            raise ShardFormatError(f"unsupported npy version {version}")
    except ShardFormatError:
        raise
    except Exception as exc:  # NumPy's message quotes the bytes: a hostile index may point anywhere
        raise ShardFormatError(f"not an npy array (bad magic or header: {type(exc).__name__})") from exc
    return tuple(shape), bool(fortran), dtype, buf.tell()


def decode_npy(data: bytes | memoryview, *, expect: Optional[np.dtype] = None) -> np.ndarray:
    """Parse NPY bytes without pickle and without copying the payload.

    Raises :class:`ShardFormatError` for object dtypes, a dtype other than ``expect``,
    or a payload whose length does not match the header.
    """
    mv = memoryview(data)
    shape, fortran, dtype, offset = npy_header(mv)
    if dtype.hasobject:
        raise ShardFormatError(f"refusing npy with object dtype {dtype}")
    if expect is not None and dtype != expect:
        raise ShardFormatError(f"expected dtype {expect}, found {dtype}")
    count = math.prod(shape)  # exact (np.prod wraps around on a hostile shape), and a few us less a clip
    if len(mv) - offset != count * dtype.itemsize:
        raise ShardFormatError(
            f"npy payload is {len(mv) - offset} bytes, header {shape} {dtype} needs {count * dtype.itemsize}"
        )
    arr = np.frombuffer(mv, dtype=dtype, count=count, offset=offset)
    return arr.reshape(shape, order="F" if fortran else "C")


def encode_jpeg(frame: np.ndarray, quality: int) -> bytes:
    """JPEG bytes of an RGB frame, 4:2:0, standard tables: what ``PIL.Image.save`` writes (see :mod:`.jpeg`)."""
    return encode_rgb_jpeg(frame, quality)


def decode_jpeg(data: bytes | memoryview, out: Optional[np.ndarray] = None) -> np.ndarray:
    """One JPEG frame as uint8 ``[H, W, 3]`` RGB, into ``out`` when given (then it must be
    exactly that shape, C-contiguous).

    libjpeg-turbo through ``simplejpeg`` (accurate DCT and upsampling: the same pixels as
    Pillow, about 5x faster on clip frames, and no intermediate image); Pillow for what
    simplejpeg refuses (it is not installed, or a colour space it cannot convert to RGB).
    """
    if _simplejpeg is not None:
        try:
            h, w = _simplejpeg.decode_jpeg_header(data)[:2]
        except ValueError as exc:
            raise ShardFormatError(f"not a JPEG frame: {exc}") from exc
        if out is not None and out.shape != (h, w, 3):
            raise ShardFormatError(f"frame is {w}x{h}, the clip's first frame is {out.shape[1]}x{out.shape[0]}")
        try:
            return _simplejpeg.decode_jpeg(data, colorspace="RGB", buffer=out)
        except ValueError as exc:
            if "colorspace" not in str(exc).lower():
                raise ShardFormatError(f"corrupt JPEG frame: {exc}") from exc
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        if img.format != "JPEG":
            raise ShardFormatError(f"frame is {img.format}, not JPEG")
        if out is not None and out.shape != (img.height, img.width, 3):  # before decoding it
            raise ShardFormatError(f"frame is {img.width}x{img.height}, the clip's first frame is {out.shape[1]}x{out.shape[0]}")
        frame = np.asarray(img.convert("RGB"))
    if out is None:
        return frame
    if out.shape != frame.shape:
        raise ShardFormatError(f"frame is {frame.shape[1]}x{frame.shape[0]}, the clip's first frame is {out.shape[1]}x{out.shape[0]}")
    out[...] = frame
    return out


def jpeg_size(data: bytes | memoryview) -> tuple[int, int]:
    """``(height, width)`` from a JPEG frame's header, nothing decoded."""
    if _simplejpeg is not None:
        try:
            h, w = _simplejpeg.decode_jpeg_header(data)[:2]
        except ValueError as exc:
            raise ShardFormatError(f"not a JPEG frame: {exc}") from exc
        return int(h), int(w)
    from PIL import Image, UnidentifiedImageError  # pragma: no cover - a platform without simplejpeg

    try:  # pragma: no cover
        with Image.open(io.BytesIO(data)) as img:
            if img.format != "JPEG":
                raise ShardFormatError(f"frame is {img.format}, not JPEG")
            return int(img.height), int(img.width)
    except (UnidentifiedImageError, OSError) as exc:  # pragma: no cover
        raise ShardFormatError(f"not a JPEG frame: {exc}") from exc


def decode_jpeg_frames(frames: list[bytes | memoryview], alloc: Optional[Callable[[tuple[int, ...]], np.ndarray]] = None,
                       *, max_size: Optional[tuple[int, int]] = None) -> np.ndarray:
    """The frames of one clip decoded into one ``[T, H, W, 3]`` array (from ``alloc(shape)``
    when given): no per-frame arrays, no stacking copy. ``max_size``: see :class:`JpegFrames`."""
    clip = JpegFrames(frames, max_size=max_size)
    return clip.decode_into(alloc(clip.shape) if alloc is not None else np.empty(clip.shape, dtype=np.uint8))


class JpegFrames:
    """The JPEG frames of one clip, not decoded yet: :meth:`decode_into` decodes them straight
    into the memory of their final destination (a batch), saving a clip-sized copy. The first
    frame's header has been read, so ``shape`` is known and a non-JPEG first frame is refused
    up front; other frames are checked as they are decoded."""

    __slots__ = ("frames", "shape")

    def __init__(self, frames: list[bytes | memoryview], *, max_size: Optional[tuple[int, int]] = None) -> None:
        """``max_size``: ``(height, width)`` no frame may exceed; a header claiming more is
        refused before anything is decoded (a 30000x30000 header would cost 2.7 GB)."""
        if not frames:
            raise ShardFormatError("sample has no JPEG frame")
        h, w = jpeg_size(frames[0])
        if max_size is not None and (h > max_size[0] or w > max_size[1]):
            raise ShardFormatError(f"JPEG frame header says {w}x{h}, larger than the index's largest frame "
                                   f"{max_size[1]}x{max_size[0]}: refused before decoding")
        self.frames = frames
        self.shape = (len(frames), int(h), int(w), 3)

    def decode_into(self, out: np.ndarray) -> np.ndarray:
        """Decode every frame into ``out`` (uint8 ``shape``, each frame C-contiguous)."""
        if tuple(out.shape) != self.shape:
            raise ShardFormatError(f"clip is {self.shape}, the destination {tuple(out.shape)}")
        for t, frame in enumerate(self.frames):
            decode_jpeg(frame, out=out[t])
        return out


def encode_sample(
    key: str,
    *,
    video: np.ndarray,
    audio: np.ndarray,
    label: int,
    meta: Mapping[str, Any],
    codec: str,
    jpeg_quality: int = 90,
) -> list[tuple[str, Member]]:
    """Tar members ``(name, data)`` of one clip, in their fixed order. ``data`` is bytes, or
    for the raw video a tuple of buffers (``npy_parts``) that make the member when joined."""
    if codec not in CODECS:
        raise ValueError(f"codec must be one of {CODECS}, got {codec!r}")
    if video.dtype != np.uint8 or video.ndim != 4 or video.shape[-1] != 3:
        raise ValueError(f"video must be uint8 [T, H, W, 3], got {video.dtype} {video.shape}")
    if audio.dtype != np.float32 or audio.ndim != 2:
        raise ValueError(f"audio must be float32 [K, L], got {audio.dtype} {audio.shape}")
    members = [
        (f"{key}.{LABEL_MEMBER}", str(int(label)).encode("ascii")),
        (f"{key}.{META_MEMBER}", dumps_json(dict(meta))),
        (f"{key}.{AUDIO_MEMBER}", encode_npy(audio)),
    ]
    if codec == "raw":
        members.append((f"{key}.{VIDEO_MEMBER}", npy_parts(video)))
    else:
        members.extend((f"{key}.{frame_member(t)}", encode_jpeg(video[t], jpeg_quality)) for t in range(video.shape[0]))
    return members


def decode_sample(fields: Mapping[str, bytes | memoryview], *, where: str = "",
                  alloc: Optional[Callable[[tuple[int, ...]], np.ndarray]] = None,
                  defer_jpeg: bool = False, max_frame: Optional[tuple[int, int]] = None,
                  video: Optional[Any] = None) -> dict[str, Any]:
    """Decode the fields of one sample (``field name -> bytes``) into arrays.

    Returns ``{"video": uint8 [T,H,W,3], "audio": float32 [K,L], "label": int, "meta": dict}``.
    Members outside the schema are ignored, never interpreted. ``alloc(shape)`` gives the
    uint8 array JPEG frames are decoded into (default: a new one); with ``defer_jpeg`` the
    video of a JPEG sample is a :class:`JpegFrames`, decoded later by its consumer.
    ``max_frame``: ``(height, width)`` no JPEG frame may exceed (checked before decoding).
    JPEG frames must be ``f0000 .. f{T-1}``, none missing. ``video``: the clip's video as the
    caller has it already (an object with a ``shape``, e.g. raw pixels to be read later), in
    place of its members. Errors never quote member bytes.
    """
    try:
        label = parse_label(fields[LABEL_MEMBER])
        meta = json.loads(bytes(fields[META_MEMBER]).decode("utf-8"))
        if not isinstance(meta, dict):
            raise ShardFormatError(f"metadata is a JSON {type(meta).__name__}, not an object")
        audio = decode_npy(fields[AUDIO_MEMBER], expect=_ALLOWED_DTYPES[AUDIO_MEMBER])
        if video is None and VIDEO_MEMBER in fields:
            video = decode_npy(fields[VIDEO_MEMBER], expect=_ALLOWED_DTYPES[VIDEO_MEMBER])
        elif video is None:
            jpegs = _jpeg_members(fields)
            video = (JpegFrames(jpegs, max_size=max_frame) if defer_jpeg
                     else decode_jpeg_frames(jpegs, alloc, max_size=max_frame))
    except KeyError as exc:
        raise ShardFormatError(f"{where}: missing member {exc.args[0]!r}") from exc
    except ShardFormatError as exc:
        raise ShardFormatError(f"{where}: {exc}") from exc
    except (ValueError, UnicodeDecodeError, OSError, RecursionError, OverflowError, MemoryError) as exc:
        raise ShardFormatError(f"{where}: {type(exc).__name__}: {exc}") from exc
    if len(video.shape) != 4 or video.shape[-1] != 3:
        raise ShardFormatError(f"{where}: video has shape {video.shape}, expected [T, H, W, 3]")
    if audio.ndim != 2:
        raise ShardFormatError(f"{where}: audio has shape {audio.shape}, expected [K, L]")
    return {"video": video, "audio": audio, "label": label, "meta": meta}


def _jpeg_members(fields: Mapping[str, bytes | memoryview]) -> list[bytes | memoryview]:
    """The frames ``f0000.jpg`` ... of a JPEG sample in frame order; a gap is an error."""
    numbers = sorted(int(k[1:-4]) for k in fields if k.startswith("f") and k.endswith(".jpg") and k[1:-4].isdigit())
    if not numbers:
        raise ShardFormatError("sample has neither video.npy nor fNNNN.jpg frames")
    if numbers[-1] != len(numbers) - 1:
        raise ShardFormatError(f"JPEG frames are not f0000..f{len(numbers) - 1:04d} ({len(numbers)} frames, the last f{numbers[-1]:04d})")
    return [fields[frame_member(t)] for t in numbers]


def index_layout(index: Mapping[str, Any]) -> str:
    """The layout an index says its output has (``clips`` for version 1, which predates layouts)."""
    return str(index.get("layout", LAYOUT_CLIPS)) if index.get("version") == 1 else str(index.get("layout"))


def check_index_version(index: Mapping[str, Any], *, where: str = "", layouts: tuple[str, ...] = (LAYOUT_CLIPS,)) -> str:
    """Raise a clear error when an index is not a clipshards index this code can read; returns
    its layout. ``layouts``: those the caller reads (an output of another layout is refused
    with the same message as an unknown version, naming the layout and what reads it)."""
    fmt = index.get("format")
    version = index.get("version")
    if fmt != FORMAT_NAME:
        raise ShardFormatError(f"{where}: not a clipshards index (format={fmt!r})")
    layout = index_layout(index)
    if layout not in _VERSION_LAYOUTS.get(version, ()):  # type: ignore[call-overload]
        raise ShardFormatError(
            f"{where}: index format version {version!r} is not supported by this clipshards "
            f"(reads versions {', '.join(map(str, _VERSION_LAYOUTS))}); "
            "convert again or install a matching release"
        )
    if layout not in layouts:
        raise ShardFormatError(
            f"{where}: index format version {version!r} is not supported here: it is a {layout!r} layout output "
            f"(this reads {' or '.join(map(repr, layouts))}); " + (
                "read it with IndexedKinetics(url, frames_per_clip=..., step_between_clips=..., frame_rate=...) "
                "or StreamingKinetics(url, clips_per_video=...)" if layout == LAYOUT_VIDEOS
                else "read it with IndexedKinetics or StreamingKinetics")
        )
    return layout


def member_field(name: str) -> tuple[str, str]:
    """Split a member name into ``(key, field)`` at the first dot, as WebDataset does."""
    key, dot, field = name.partition(".")
    if not dot:
        raise ShardFormatError(f"member {name!r} has no field extension")
    return key, field


def sample_fields(members: Iterable[tuple[str, bytes]]) -> dict[str, bytes]:
    return {member_field(n)[1]: d for n, d in members}
