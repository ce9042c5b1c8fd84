"""Reading clips out of shards: one clip by direct access, or runs of clips as one stream.

Either way the byte range of every clip comes from ``offsets.npy``: a clip is read into its
own uninitialised buffer (direct access: one ranged read; a run: consecutive ``readinto`` calls on
one sequential stream opened at the run's first clip), then its tar members are located
with :mod:`tarfile` and handed to :func:`clipshards.convert.schema.decode_sample` as
zero-copy views. Only schema members are looked at (``cls``, ``json``, ``audio.npy``,
``video.npy``, ``fNNNN.jpg``); anything else is skipped unread, so a shard can never make
the loader unpickle, import or execute anything.

Nothing wrong is returned silently: each clip read is checked against its offsets row
(:func:`verify_read`: its key, then the checksum of its bytes) and, once decoded, against the
index (:func:`decode`: its label, frame count and frame size; a JPEG frame claiming to be larger
than the index's largest is refused before decoding). Whatever makes a clip unreadable is a
:class:`ShardReadError` naming the shard, the clip and the reason; messages never quote the
bytes they refuse.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import re
import tarfile
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence

import numpy as np
import torch
import xxhash

from clipshards.convert.schema import (
    AUDIO_MEMBER,
    CLIP_CHECKSUM,
    LABEL_MEMBER,
    META_MEMBER,
    VIDEO_MEMBER,
    JpegFrames,
    ShardFormatError,
    clip_checksum,
    clip_checksum_of,
    clip_key,
    decode_npy,
    decode_sample,
    key_of_number,
    parse_label,
)

from .index import ClipLimits, DatasetIndex, ShardEntry
from .offsets import LEGACY_COLUMNS
from .pixels import HEAD_BYTES, RawPixels, UnreadPixels, plain_header, scan_head
from .plan import Segment, iter_segments
from .buffers import MIN_POOLED, POOLED_CLIP, pool
from .transport import RangeReader, Transport, empty_buffer

logger = logging.getLogger(__name__)

__all__ = ["ShardReadError", "SampleReader", "parse_sample", "OUTPUT_FORMATS", "to_output", "DeferredVideo"]

OUTPUT_FORMATS = ("TCHW", "THWC")
_FRAME_FIELD = re.compile(r"f\d{4,}\.jpg")
_KEY = re.compile(r"[0-9]{8}_[0-9]{6}")  # schema.clip_key
_NPY_DTYPES = {VIDEO_MEMBER: np.dtype(np.uint8), AUDIO_MEMBER: np.dtype(np.float32)}


def schema_field(field: str) -> bool:
    return field in (LABEL_MEMBER, META_MEMBER, AUDIO_MEMBER, VIDEO_MEMBER) or bool(_FRAME_FIELD.fullmatch(field))


class ShardReadError(RuntimeError):
    """A clip could not be read: truncated or corrupt shard, or a member outside the schema's
    rules. Names the shard URL, the global clip and (when known) the tar member."""

    def __init__(self, shard: str, clip: Optional[int] = None, member: Optional[str] = None,
                 reason: Optional[str] = None) -> None:
        self.shard, self.clip, self.member, self.reason = shard, clip, member, reason
        if clip is None and reason is None:  # rebuilt from its message (DataLoader workers re-raise so)
            super().__init__(shard)
            return
        where = f"{shard}: clip {clip}" + (f", member {member!r}" if member else "")
        super().__init__(f"{where}: {reason}")

    def __reduce__(self):
        return (ShardReadError, (self.shard, self.clip, self.member, self.reason))


class _BufferFile:
    """The read/seek/tell :mod:`tarfile` needs, over a memoryview (headers only are read)."""

    def __init__(self, view: memoryview) -> None:
        self._view = view
        self._pos = 0

    def read(self, n: int = -1) -> bytes:
        end = len(self._view) if n is None or n < 0 else min(len(self._view), self._pos + n)
        data = self._view[self._pos:end].tobytes()
        self._pos = end
        return data

    def seek(self, pos: int, whence: int = 0) -> int:
        self._pos = pos if whence == 0 else (self._pos + pos if whence == 1 else len(self._view) + pos)
        return self._pos

    def tell(self) -> int:
        return self._pos


@dataclass
class RawSample:
    """The schema members of one clip, as views into the buffer it was read into, and what
    decoding them must give (``label``: from offsets.npy, None where it does not say)."""

    clip: int
    shard: str
    key: str
    fields: dict[str, memoryview]
    label: Optional[int] = None
    limits: Optional[ClipLimits] = None
    pixels: Optional[RawPixels] = None  # a raw video read later, straight into its batch (see .pixels)
    # an appended output: the index's class of the clip; its stored class name must be this one,
    # and ``label`` is its label (the one its shard stores may predate a class inserted before it)
    class_name: Optional[str] = None


def parse_sample(buf: bytearray | memoryview, *, shard: str, clip: int, expected: Optional[int] = None,
                 verify: bool = True) -> RawSample:
    """Locate the tar members of one clip in ``buf`` (exactly the clip's byte range).

    ``expected`` is the length the index gives; a shorter ``buf`` means the shard is
    truncated and the error names the member cut short. ``verify=False``: the tar headers' own
    checksums are left to the clip's checksum (see :func:`~.pixels.plain_header`).
    """
    view = memoryview(buf)
    if expected is None or len(view) == expected:
        fast = _scan_plain(view) if verify else _scan_plain(view, verify=False)
        if fast is not None:
            return RawSample(clip, shard, fast[0], fast[1])
    key: Optional[str] = None
    fields: dict[str, memoryview] = {}
    last: Optional[str] = None
    try:
        tf = tarfile.open(fileobj=_BufferFile(view), mode="r:")  # type: ignore[arg-type]
        for ti in tf:
            last = ti.name
            if not ti.isreg():
                continue
            if ti.offset_data + ti.size > len(view):
                raise ShardReadError(shard, clip, ti.name, f"truncated: member data ends at byte {ti.offset_data + ti.size} "
                                                           f"of the clip, only {len(view)} bytes present")
            k, dot, field = ti.name.partition(".")
            if key is None:
                key = k
            elif k != key:
                raise ShardReadError(shard, clip, ti.name, f"the clip's byte range holds members of two samples ({key!r}, {k!r})")
            if not schema_field(field):
                logger.debug("%s: clip %d: ignoring member %r (not in the schema)", shard, clip, ti.name)
                continue
            if field in fields:
                raise ShardReadError(shard, clip, ti.name, "duplicate member")
            fields[field] = view[ti.offset_data: ti.offset_data + ti.size]
        end = tf.offset
    except ShardReadError:
        raise
    except (tarfile.TarError, ValueError, UnicodeError) as exc:
        member = f"after {last}" if last else "first member header"
        raise ShardReadError(shard, clip, member, f"corrupt tar data ({type(exc).__name__}: {exc})") from exc
    if expected is not None and len(view) < expected:
        raise ShardReadError(shard, clip, last, f"truncated: {len(view)} of {expected} bytes present")
    if end < len(view):
        after = f"after {last}" if last else "first member header"
        raise ShardReadError(shard, clip, after, f"corrupt tar header at byte {end} of the clip ({len(view)} bytes)")
    if key is None:
        raise ShardReadError(shard, clip, None, "no tar member in the clip's byte range")
    return RawSample(clip, shard, key, fields)


def _scan_plain(view: memoryview, verify: bool = True) -> Optional[tuple[str, dict[str, memoryview]]]:
    """``(key, schema fields)`` of a sample laid out exactly as the converter writes it
    (POSIX ustar headers with valid checksums, regular members of one key, no duplicate, ending
    at the end of ``view``); None for anything else, which :func:`parse_sample` then reads
    with :mod:`tarfile` and reports precisely. The common case in a few microseconds."""
    n = len(view)
    pos = 0
    key: Optional[str] = None
    fields: dict[str, memoryview] = {}
    try:
        while pos < n:
            if pos + 512 > n:
                return None
            member = plain_header(bytes(view[pos: pos + 512]), verify=verify)
            if member is None:
                return None
            size = member[1]
            start = pos + 512
            if start + size > n:
                return None
            k, dot, field = member[0].partition(".")
            if key is None:
                key = k
            elif k != key or not dot:
                return None
            if schema_field(field):
                if field in fields:
                    return None
                fields[field] = view[start: start + size]
            pos = start + size + (-size) % 512
    except (ValueError, UnicodeError):
        return None
    if pos != n or key is None:
        return None
    return key, fields


def _culprit(fields: dict[str, memoryview]) -> Optional[str]:
    """The field that makes :func:`decode_sample` fail (for the error message only)."""
    for name in (LABEL_MEMBER, META_MEMBER, AUDIO_MEMBER, VIDEO_MEMBER):
        if name not in fields:
            continue
        try:
            if name == LABEL_MEMBER:
                parse_label(fields[name])
            elif name == META_MEMBER:
                json.loads(bytes(fields[name]).decode("utf-8"))
            else:
                decode_npy(fields[name], expect=_NPY_DTYPES[name])
        except Exception:
            return name
    return None


def decode(raw: RawSample, *, defer_jpeg: bool = False) -> dict[str, Any]:
    """Arrays of one clip (see :func:`clipshards.convert.schema.decode_sample`), checked against
    ``raw.limits`` (no JPEG frame larger than the index's largest is decoded) and ``raw.label``;
    errors name the member."""
    limits = raw.limits
    try:
        sample = decode_sample(raw.fields, where=raw.key, alloc=_frames_array, defer_jpeg=defer_jpeg,
                               max_frame=limits.max_frame if limits is not None else None, video=raw.pixels)
    except ShardFormatError as exc:
        field = _culprit(raw.fields)
        member = f"{raw.key}.{field}" if field else raw.key
        raise ShardReadError(raw.shard, raw.clip, member, str(exc)) from exc
    problem = _disagreement(raw, sample)
    if problem is not None:
        raise ShardReadError(raw.shard, raw.clip, f"{raw.key}.{problem[0]}", problem[1])
    if raw.class_name is not None:
        sample["label"] = raw.label
    return sample


def _disagreement(raw: RawSample, sample: dict[str, Any]) -> Optional[tuple[str, str]]:
    """``(field, why)`` when a decoded clip is not what the index says its clips are."""
    label, limits = sample["label"], raw.limits
    if raw.class_name is not None:  # an appended output: the class by name, the label from the index
        if sample["meta"].get("class") != raw.class_name:
            return META_MEMBER, f"its class is not {raw.class_name!r}, the index's class of this clip"
        label = raw.label
    elif raw.label is not None and label != raw.label:
        return LABEL_MEMBER, f"label {label}, offsets.npy records {raw.label} for this clip"
    if limits is not None:
        if not 0 <= label < limits.classes:
            return LABEL_MEMBER, f"label {label} is outside 0..{limits.classes - 1} (the index lists {limits.classes} classes)"
        t, h, w, _ = sample["video"].shape
        field = VIDEO_MEMBER if VIDEO_MEMBER in raw.fields else "fNNNN.jpg"
        if limits.frames is not None and t != limits.frames:
            return field, f"{t} frames, the index says {limits.frames} per clip"
        if limits.max_frame is not None and (h > limits.max_frame[0] or w > limits.max_frame[1]):
            return field, f"frames are {w}x{h}, larger than the index's largest {limits.max_frame[1]}x{limits.max_frame[0]}"
    return None


class LegacyIdentities:
    """Each clip's key and label for an index of version 1, whose offsets rows say neither: from
    the per-video records (index.json read whole, once; old outputs only). Such an output has
    no clip checksums: a clip damaged in place is found only where its structure breaks."""

    def __init__(self, videos: list[dict[str, Any]]) -> None:
        ok = sorted((v for v in videos if v.get("status") == "ok" and int(v.get("clips", 0)) > 0),
                    key=lambda v: int(v["first_clip"]))
        self.firsts = np.array([int(v["first_clip"]) for v in ok], dtype=np.int64)
        self.videos = [(int(v["index"]), int(v["clips"]), int(v["label"])) for v in ok]

    def of(self, g: int) -> Optional[tuple[str, int]]:
        """``(key, label)`` of global clip ``g``; None when no video record holds it."""
        i = int(np.searchsorted(self.firsts, g, side="right")) - 1
        if i < 0 or g >= self.firsts[i] + self.videos[i][1]:
            return None
        video, _, label = self.videos[i]
        return clip_key(video, g - int(self.firsts[i])), label


def verify_read(raw: RawSample, buf: bytearray | memoryview, row: np.ndarray,
                legacy: Optional[LegacyIdentities] = None, checksum: Optional[int] = None) -> RawSample:
    """``raw`` (parsed from ``buf``, the bytes read for offsets row ``row``) when it is the clip
    the converter wrote there: its key, then the checksum of its bytes (``checksum``: taken as
    they were read); the row's label is kept for :func:`decode` to check. An index of version 1
    has neither in its rows: ``legacy`` gives the key and label, and there is no checksum."""
    if len(row) > LEGACY_COLUMNS:
        want: Optional[tuple[str, int]] = (key_of_number(int(row[2])), int(row[3]))
    else:
        want = legacy.of(raw.clip) if legacy is not None else None
        if want is None:
            raise ShardReadError(raw.shard, raw.clip, None, "no converted video of the index holds this clip")
    if raw.key != want[0]:
        raise ShardReadError(raw.shard, raw.clip, None,
                             f"holds sample {_shown(raw.key)}, clip {raw.clip} is sample {want[0]!r}: the shard was replaced "
                             "(another shard, a copy, a wrong sync) or offsets.npy is another conversion's")
    if len(row) > LEGACY_COLUMNS and (clip_checksum(buf) if checksum is None else checksum) != int(row[4]):
        raise ShardReadError(raw.shard, raw.clip, None, f"its bytes differ from what the converter wrote ({CLIP_CHECKSUM} "
                             "of the clip's byte range): the shard is damaged or was changed")
    raw.label = want[1]
    return raw


def _shown(key: str) -> str:
    """A key read from a shard, quoted only when it has a key's form (never a file's bytes)."""
    return repr(key) if _KEY.fullmatch(key) else f"of {len(key)} characters"


def _frames_array(shape: tuple[int, ...]) -> np.ndarray:
    """Where a clip's JPEG frames are decoded: a pooled buffer when it is large."""
    nbytes = int(np.prod(shape))
    if nbytes < MIN_POOLED:
        return np.empty(shape, dtype=np.uint8)
    return np.frombuffer(pool().buffer(nbytes), dtype=np.uint8).reshape(shape)


def _tensor(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(a if a.flags.writeable else a.copy())


class DeferredVideo:
    """A clip's video, not decoded yet (JPEG frames) or not read yet (raw pixels, see
    :mod:`.pixels`): :func:`~clipshards.loader.collate.collate_clips` decodes or reads it straight
    into the batch. Only :class:`~clipshards.loader.ClipLoader` asks for these (no ``transform``,
    ``errors="raise"``); anything else gets tensors."""

    __slots__ = ("frames", "output_format", "shard", "clip", "member")
    dtype = torch.uint8

    def __init__(self, frames: JpegFrames | UnreadPixels, output_format: str, raw: RawSample) -> None:
        self.frames, self.output_format = frames, output_format
        self.shard, self.clip = raw.shard, raw.clip
        self.member = f"{raw.key}.{VIDEO_MEMBER if isinstance(frames, UnreadPixels) else 'fNNNN.jpg'}"

    @property
    def shape(self) -> torch.Size:
        t, h, w, c = self.frames.shape
        return torch.Size((t, c, h, w) if self.output_format == "TCHW" else (t, h, w, c))

    def decode_into(self, out: np.ndarray) -> None:
        """Decode into ``out``, uint8 ``[T, H, W, 3]`` memory; errors name the shard and clip."""
        try:
            self.frames.decode_into(out)
        except ShardFormatError as exc:
            raise ShardReadError(self.shard, self.clip, self.member, str(exc)) from exc

    def tensor(self, *, pooled: bool = False) -> torch.Tensor:
        """The video as :func:`to_output` gives a decoded one (``pooled``: in memory of the
        process's :class:`~clipshards.loader.buffers.BufferPool` when large, no page faults)."""
        shape = tuple(self.frames.shape)
        out = (pool().take(math.prod(shape), minimum=POOLED_CLIP).numpy().reshape(shape) if pooled
               else np.empty(shape, dtype=np.uint8))
        self.decode_into(out)
        video = torch.from_numpy(out)
        return video.permute(0, 3, 1, 2) if self.output_format == "TCHW" else video


def to_output(sample: dict[str, Any], output_format: str, transform: Optional[Callable[[torch.Tensor], Any]],
              raw: Optional[RawSample] = None) -> tuple[Any, torch.Tensor, int]:
    """torchvision's ``(video, audio, label)``: video uint8 THWC, or TCHW as a permuted view
    (as torchvision makes it); ``transform`` sees the video only. A deferred video (JPEG frames
    not decoded, raw pixels not read: see :func:`decode`) becomes a :class:`DeferredVideo` of ``raw``."""
    if isinstance(sample["video"], (JpegFrames, UnreadPixels)):
        if raw is None or transform is not None:
            raise ValueError("a deferred video needs its RawSample and no transform")
        return DeferredVideo(sample["video"], output_format, raw), _tensor(sample["audio"]), int(sample["label"])
    video = _tensor(sample["video"])
    if output_format == "TCHW":
        video = video.permute(0, 3, 1, 2)
    if transform is not None:
        video = transform(video)
    return video, _tensor(sample["audio"]), int(sample["label"])


class SampleReader:
    """Reads the clips of one converted split through its index's transport.

    Every clip it returns passed :func:`verify_read` against its offsets row, and carries the
    index's :class:`~clipshards.loader.index.ClipLimits` for :func:`decode`; every failure to
    read one (bad offsets row, I/O error, a missing or special file, damage) is a
    :class:`ShardReadError` naming the shard, the clip and the reason.
    """

    def __init__(self, index: DatasetIndex) -> None:
        self.index = index
        self._limits: Optional[ClipLimits] = None
        self._legacy: Optional[LegacyIdentities] = None
        self._head = HEAD_BYTES  # bytes read of a clip whose pixels are read later: see _unread_pixels

    @property
    def limits(self) -> ClipLimits:
        if self._limits is None:
            self._limits = self.index.clip_limits()
        return self._limits

    def _located(self, g: int) -> tuple[ShardEntry, np.ndarray]:
        try:
            return self.index.locate(g)
        except ShardFormatError as exc:
            raise ShardReadError(self.index.offsets.url, g, None, str(exc)) from exc

    def checked(self, buf: bytearray | memoryview, url: str, g: int, row: np.ndarray,
                checksum: Optional[int] = None) -> RawSample:
        """Clip ``g`` parsed from ``buf`` (what was read for offsets row ``row``) and verified
        (``checksum``: of ``buf``, taken as it was read). Where the row has the clip's checksum,
        that covers the tar headers' own."""
        if len(row) <= LEGACY_COLUMNS and self._legacy is None:
            self._legacy = _legacy_identities(self.index, url, g)
        summed = len(row) > LEGACY_COLUMNS
        raw = verify_read(parse_sample(buf, shard=url, clip=g, expected=int(row[1]), verify=not summed),
                          buf, row, self._legacy, checksum)
        raw.limits = self.limits
        return _named(raw, self.index)

    def fetch(self, g: int, defer: bool = False) -> RawSample:
        """Clip ``g`` by one ranged read of its bytes (``defer``: a large local raw clip's
        pixels are left for the collate to read into the batch, see :mod:`.pixels`)."""
        shard, row = self._located(g)
        return self._fetch_at(g, shard, row, defer)

    def _fetch_at(self, g: int, shard: ShardEntry, row: np.ndarray, defer: bool) -> RawSample:
        """:meth:`fetch` of clip ``g``, whose offsets row ``row`` in ``shard`` is known."""
        url = self.index.transport.url_of(shard.name)
        if defer and int(row[1]) >= MIN_POOLED and len(row) > LEGACY_COLUMNS and self.index.transport.location.is_local:
            head = _unread_pixels(self.index.transport, shard, url, g, row, self.limits, self._head)
            if head is not None:
                self._head = head.pixels.lead + 1024  # type: ignore[union-attr]  # the next clip's, most likely, with room
                return _named(head, self.index)
        return self.checked(*_read_whole(self.index.transport, shard.name, url, g, row))

    def fetch_many(self, gs: Sequence[int]) -> list[RawSample]:
        """Clips ``gs`` by ranged reads issued together (concurrent on remote storage)."""
        transport = self.index.transport
        if transport.location.is_local:
            return [self.fetch(g) for g in gs]
        located = [self._located(g) for g in gs]
        bufs = transport.read_many([(s.name, int(r[0]), int(r[0] + r[1])) for s, r in located],
                                   return_exceptions=True, buffers=True)
        out = []
        for g, (shard, row), buf in zip(gs, located, bufs):
            url = transport.url_of(shard.name)
            if isinstance(buf, Exception):
                raise ShardReadError(url, g, None, f"read of bytes [{row[0]}, {row[0] + row[1]}) failed: {buf}") from buf
            out.append(self.checked(buf, url, g, row))
        return out

    def stream(self, segs: Iterable[Segment], defer: bool = False) -> Iterator[tuple[int, RawSample | ShardReadError]]:
        """``(position, sample or error)`` for every clip of the segments, in order.

        Each segment of several clips is read as one sequential stream (a single clip: one
        ranged read). When the stream fails (short read, I/O error), the rest of that segment
        is read clip by clip by direct access, so damage in one place costs only the clips it
        touches. ``defer``: see :meth:`fetch`.
        """
        for seg in segs:
            yield from self._segment(seg, defer)

    def in_order(self, clips: np.ndarray, order: Iterator[int], skip: int = 0,
                 defer: bool = False) -> Iterator[RawSample | ShardReadError]:
        """Clips ``clips[order[skip:]]`` (``order``: read positions, as a shuffle buffer emits
        them; the first ``skip`` are consumed unread), each a sample or the error reading it.

        Read sequentially (:meth:`stream`) from the first position not yet read before ``skip``,
        holding what is read ahead of its turn; clips read before that (held in the buffer when
        a position was saved) are fetched by direct access. So is every clip of local shards
        whose clips are a megabyte or more, at its turn: from local storage a read of that size
        costs the same in any order, and a clip read ahead would wait in memory (a shuffle
        buffer holds hundreds of MB), then be read again, from memory, by its consumer.
        ``defer``: see :meth:`fetch`.
        """
        n = len(clips)
        if skip >= n:
            return
        lazy = self.index.transport.location.is_local and self.index.clip_bytes >= MIN_POOLED
        cursor = max(itertools.islice(order, skip)) + 1 if skip else 0
        stream = self.stream(iter_segments(clips, self.index.shard_of(clips), cursor), defer)
        held: dict[int, RawSample | ShardReadError] = {}
        next_pos = cursor
        try:
            for p in itertools.islice(order, n - skip):
                if lazy:
                    item = _or_error(self.fetch, int(clips[p]), defer)
                elif p in held:
                    item = held.pop(p)
                elif p >= next_pos:
                    while True:
                        q, got = next(stream)
                        next_pos = q + 1
                        if q == p:
                            item = got
                            break
                        held[q] = got
                else:
                    item = _or_error(self.fetch, int(clips[p]), defer)
                yield item
        finally:  # the epoch's end (or its iterator dropped): the shards kept open are closed
            self.index.transport.release()

    def _segment(self, seg: Segment, defer: bool) -> Iterator[tuple[int, RawSample | ShardReadError]]:
        index = self.index
        shard = index.shards[seg.shard]
        url = index.transport.url_of(shard.name)
        try:
            rows = index.rows(seg.first, seg.first + seg.count)
        except ShardFormatError as exc:  # a page of offsets.npy that is refused: each of its clips says so
            for j in range(seg.count):
                yield seg.pos + j, ShardReadError(index.offsets.url, seg.first + j, None, str(exc))
            return
        done = 0
        start, end = int(rows[0, 0]), int(rows[-1, 0] + rows[-1, 1])
        # large local raw clips whose pixels go straight to the batch: clip by clip (see .pixels)
        direct = defer and index.transport.location.is_local and (end - start) // seg.count >= MIN_POOLED
        if seg.count > 1 and not direct:
            try:
                reader = index.transport.open_range(shard.name, start, end, size=shard.bytes)
            except OSError as exc:
                logger.warning("%s: cannot open for reading (%s); reading clip by clip", url, exc)
            else:
                with reader:
                    for j, item in _read_run(reader, rows, url, seg.first, self.checked):
                        yield seg.pos + j, item
                        done = j + 1
        for j in range(done, seg.count):
            yield seg.pos + j, _or_error(self._fetch_at, seg.first + j, shard, rows[j], defer)


def _legacy_identities(index: DatasetIndex, url: str, g: int) -> LegacyIdentities:
    """The keys and labels of a version-1 output's clips, from index.json's video records."""
    try:
        return LegacyIdentities(index.videos)
    except (KeyError, TypeError, ValueError, OSError) as exc:
        raise ShardReadError(url, g, None, f"index.json's video records, which give a version-1 "
                             f"output's keys, are unreadable ({type(exc).__name__}: {exc})") from exc


def _read_whole(transport: Transport, name: str, url: str, g: int,
                row: np.ndarray) -> tuple[memoryview, str, int, np.ndarray, Optional[int]]:
    """The arguments of :meth:`SampleReader.checked` for clip ``g`` read whole by one ranged read:
    its checksum taken as the bytes are read (from cache), where the row has one."""
    off, length = int(row[0]), int(row[1])
    hasher = xxhash.xxh3_64() if len(row) > LEGACY_COLUMNS else None
    try:
        buf = transport.read_buffer(name, off, off + length, each=hasher.update if hasher else None)
    except (OSError, ValueError) as exc:
        raise ShardReadError(url, g, None, f"read of bytes [{off}, {off + length}) failed: {exc}") from exc
    return buf, url, g, row, clip_checksum_of(hasher) if hasher is not None and len(buf) == length else None


def _named(raw: RawSample, index: DatasetIndex) -> RawSample:
    """``raw`` with the index's class name of its label, in an output appended to (see :class:`RawSample`)."""
    if index.appended and raw.label is not None:
        raw.class_name = index.classes[raw.label]
    return raw


def _unread_pixels(transport: Transport, shard: ShardEntry, url: str, g: int, row: np.ndarray,
                   limits: ClipLimits, head_bytes: int = HEAD_BYTES) -> Optional[RawSample]:
    """Clip ``g`` (offsets row ``row``) with its raw pixels not read yet (a
    :class:`~.pixels.RawPixels`: the collate reads them and checks the clip's checksum); its first
    ``head_bytes`` (where the last clip's pixels started; :data:`~.pixels.HEAD_BYTES` when that
    is too few) are read now and its key checked. None when it is not laid out for that (read it
    whole). The tar headers' own checksums are not checked: the clip's XXH3 covers them."""
    off, length = int(row[0]), int(row[1])
    for size in dict.fromkeys((min(length, head_bytes), min(length, HEAD_BYTES))):
        try:
            head = transport.read_buffer(shard.name, off, off + size)
        except (OSError, ValueError) as exc:
            raise ShardReadError(url, g, None, f"read of bytes [{off}, {off + size}) failed: {exc}") from exc
        scanned = scan_head(head, length, verify=False)
        if scanned is not None:
            break
    else:
        return None
    key, fields, start, size = scanned
    raw = RawSample(g, url, key, fields, label=int(row[3]), limits=limits)
    if key != key_of_number(int(row[2])):
        verify_read(raw, head, row)  # raises, naming the sample the shard holds instead
    try:
        raw.pixels = RawPixels.at(transport, shard.name, off, head, (start, size), length, int(row[4]))
    except ShardFormatError as exc:
        raise ShardReadError(url, g, f"{key}.{VIDEO_MEMBER}", str(exc)) from exc
    return raw


def _read_run(reader: RangeReader, rows: np.ndarray, url: str, first: int,
              checked: Callable[[Any, str, int, np.ndarray], RawSample]) -> Iterator[tuple[int, RawSample | ShardReadError]]:
    """``(j, sample or error)`` of consecutive clips ``first + j`` read from one sequential
    ``reader``, each into its own buffer; ends after the first clip that could not be read whole."""
    pos = int(rows[0, 0])
    for j, row in enumerate(rows):
        off, length = int(row[0]), int(row[1])
        g = first + j
        if off != pos:
            yield j, ShardReadError(url, g, None, f"offsets.npy puts it at byte {off}, the previous clip ends at {pos}")
            return
        buf = empty_buffer(length)
        try:
            got = reader.readinto(buf)
        except OSError as exc:
            yield j, ShardReadError(url, g, None, f"read failed at byte {pos}: {exc}")
            return
        pos += got
        yield j, _or_error(checked, buf[:got] if got < length else buf, url, g, row)
        if got < length:
            return


def _or_error(read: Callable[..., RawSample], *args: Any) -> RawSample | ShardReadError:
    """``read(*args)``, or the :class:`ShardReadError` it raised."""
    try:
        return read(*args)
    except ShardReadError as exc:
        return exc
