"""A stock ``webdataset`` pipeline over a converted split, for users who compose webdataset stages.

:func:`webdataset_pipeline` lists the shards from the split's index (version-checked by
:class:`DatasetIndex`) and returns a ``webdataset`` pipeline built from the library's own stages
(``SimpleShardList``, node and worker splitters, ``detshuffle``, ``tar_file_expander``,
``group_by_keys``, ``map``, its exception handlers) whose samples are torchvision's
``(video, audio, label)`` tuples, decoded by the project's schema. ``.batched()``,
``.shuffle()``, ``.map()``, ``.with_epoch()`` ... compose on it as on ``wds.WebDataset``.

It trades what :class:`StreamingKinetics` guarantees for that composability: no exact resume,
and the shards (not the clips) are split between ranks and workers, so ranks get unequal clip
counts (the WebDataset DDP hang). Train on several GPUs with :class:`StreamingKinetics`.
"""

from __future__ import annotations

import io
import logging
import os
import tarfile
from functools import partial
from typing import Any, Callable, Iterable, Iterator, Mapping, Optional

import torch
import webdataset as wds
from webdataset.tariterators import group_by_keys, tar_file_expander

from clipshards.convert.schema import AUDIO_MEMBER, LABEL_MEMBER, META_MEMBER, VIDEO_MEMBER, ShardFormatError, key_of_number

from .arguments import Transform, check_flag, check_output, int_option
from .index import DatasetIndex, ShardEntry
from .offsets import LEGACY_COLUMNS
from .plan import AUTO, auto_shuffle_buffer
from .reader import RawSample, ShardReadError, decode, schema_field, to_output
from .options import TransportOptions
from .ranges import RangeReader
from .transport import Transport

logger = logging.getLogger(__name__)

__all__ = ["webdataset_pipeline"]

Handler = Callable[[BaseException], bool]
Splitter = Callable[[Iterable[dict]], Iterable[dict]]

_CLIP_FIELD = "__clip__"
_BAD_FIELD = "__bad__"
_STREAM_BUFFER = 1024 * 1024


class _RangeStream(io.RawIOBase):
    """A :class:`RangeReader` as the raw binary file ``tarfile`` reads a shard from."""

    def __init__(self, reader: RangeReader) -> None:
        self._reader = reader

    def readable(self) -> bool:
        return True

    def readinto(self, buf: Any) -> int:
        return self._reader.readinto(buf)

    def close(self) -> None:
        if not self.closed:
            self._reader.close()
        super().close()


def _open_shard(url: str, shard: ShardEntry, transport: Transport) -> Any:
    """A shard as a sequential stream of the project's transport: for a remote one, retries,
    read-ahead, cache and ``storage_options``; for a local one, only a regular file is opened
    (a FIFO or a device in its place is refused, never waited on) and read up to its size."""
    reader = transport.open_range(shard.name, 0, shard.bytes, size=shard.bytes)
    return io.BufferedReader(_RangeStream(reader), _STREAM_BUFFER)


def _complete(fields: set[str], frames: Optional[int]) -> bool:
    if not {LABEL_MEMBER, META_MEMBER, AUDIO_MEMBER} <= fields:
        return False
    if VIDEO_MEMBER in fields:
        return True
    jpegs = sum(1 for f in fields if f.endswith(".jpg"))
    return jpegs > 0 and (frames is None or jpegs == frames)


def _shard_members(sources: Iterable[dict], *, shards: Mapping[str, ShardEntry], transport: Transport,
                   frames: Optional[int], handler: Handler) -> Iterator[dict]:
    """Open each shard and expand it into its schema members with webdataset's tar iterator.

    Adds a ``<key>.__clip__`` member (the global clip index) before each sample's members, and
    a ``<key>.__bad__`` member to a sample cut short by an error, which ``group_by_keys`` then
    drops. The clip count is checked against the index: ``tarfile`` ends a stream quietly at a
    corrupt header, which would otherwise lose the rest of the shard unnoticed. Failures become
    :class:`ShardReadError` naming the shard URL, clip and member, and go to ``handler``: True
    goes on with the next shard, False ends the stream.
    """
    for source in sources:
        url = source["url"]
        shard = shards[url]
        clip = shard.first_clip - 1
        key: Optional[str] = None
        fields: set[str] = set()
        last: Optional[str] = None
        stream = None
        try:
            stream = _open_shard(url, shard, transport)
            for member in tar_file_expander([dict(url=url, stream=stream)], select_files=_is_schema_member):
                if not member:  # its end-of-shard marker; ours follows the checks below
                    continue
                name = member["fname"]
                k, _, field = name.partition(".")
                if k != key:
                    if clip + 1 == shard.first_clip + shard.clips:
                        raise ShardReadError(url, clip + 1, name, f"more samples than the {shard.clips} the index lists")
                    key, fields, clip = k, set(), clip + 1
                    yield dict(fname=f"{k}.{_CLIP_FIELD}", data=clip, __url__=url)
                if field in fields:
                    raise ShardReadError(url, clip, name, "duplicate member")
                fields.add(field)
                last = name
                yield member
            seen = clip + 1 - shard.first_clip
            cut_short = key is not None and not _complete(fields, frames)
            if seen < shard.clips or cut_short:
                raise ShardReadError(url, clip if cut_short else clip + 1, f"after {last}" if last else "first member header",
                                     f"the tar stream ends after {seen - cut_short} of the {shard.clips} clips the index "
                                     "lists (truncated shard or corrupt tar header)")
        except (ShardReadError, OSError, tarfile.TarError, EOFError, ValueError, UnicodeError) as exc:
            if isinstance(exc, ShardReadError):
                err = exc
            else:
                cut_short = key is not None and not _complete(fields, frames)
                err = ShardReadError(url, clip if cut_short else clip + 1,
                                     f"after {last}" if last else "first member header",
                                     f"{type(exc).__name__}: {_reason(exc)}")
            if key is not None and err.clip == clip:
                yield dict(fname=f"{key}.{_BAD_FIELD}", data=True, __url__=url)
            if not handler(err):
                return
            logger.debug("skipping the rest of %s (%s)", url, err)
        finally:
            if stream is not None:
                stream.close()
        yield {}


def _is_schema_member(name: str) -> bool:
    return schema_field(name.partition(".")[2])


def _reason(exc: BaseException) -> str:
    """The first argument of an exception, without the `` @ <stream>`` webdataset appends."""
    if exc.args and isinstance(exc.args[0], str):
        return exc.args[0].split(" @ ", 1)[0]
    return str(exc)


def _to_tuple(sample: dict[str, Any], *, index: DatasetIndex, output_format: str,
              transform: Optional[Transform]) -> tuple[Any, torch.Tensor, int]:
    """One grouped sample as ``(video, audio, label)``; only schema members are read. Its key
    and label are checked against its offsets row, its frames against the index's limits (a
    stream of members has no byte range to check a checksum on: that needs the datasets)."""
    url, key, clip = sample["__url__"], sample["__key__"], sample[_CLIP_FIELD]
    fields = {k: v for k, v in sample.items() if not k.startswith("__")}
    try:
        row = index.rows(clip, clip + 1)[0]
    except ShardFormatError as exc:
        raise ShardReadError(index.offsets.url, clip, None, str(exc)) from exc
    raw = RawSample(clip, url, key, fields, limits=index.clip_limits())
    if len(row) > LEGACY_COLUMNS:
        if key != key_of_number(int(row[2])):
            raise ShardReadError(url, clip, None, f"holds sample {key!r}, clip {clip} is sample "
                                 f"{key_of_number(int(row[2]))!r}: the shard was replaced or offsets.npy is another conversion's")
        raw.label = int(row[3])
    return to_output(decode(raw), output_format, transform)


def webdataset_pipeline(
    url: str | os.PathLike,
    split: str = "train",
    *,
    shuffle: bool = True,
    shuffle_buffer: int | str = AUTO,
    seed: int = 0,
    output_format: str = "TCHW",
    transform: Optional[Transform] = None,
    handler: Handler = wds.reraise_exception,
    nodesplitter: Optional[Splitter] = wds.single_node_only,
    workersplitter: Optional[Splitter] = wds.split_by_worker,
    storage_options: Optional[Mapping[str, Any]] = None,
    transport: Optional[TransportOptions] = None,
) -> wds.FluidWrapper:
    """A ``webdataset`` pipeline yielding ``(video, audio, label)`` from the shards of ``url/split``.

    ``url`` is the converter's OUT: a local path or an fsspec URL (``s3://``, ``gs://``,
    ``https://``, with ``storage_options`` and ``transport``); shards are streamed through the
    loader's transport. Without shuffle the clips come in
    global clip order, the order of :class:`IndexedKinetics`. With shuffle, each worker's shards
    are permuted and its clips pass a buffer of ``shuffle_buffer`` clips (``"auto"``: about
    256 MiB of clips), both seeded by ``seed`` plus the pipeline's iteration count (a new
    order per epoch only where the pipeline object lives on: in the main process or in
    ``persistent_workers``).

    ``handler`` is webdataset's exception handler: the default raises :class:`ShardReadError`
    naming the shard URL, clip and member; ``wds.warn_and_continue`` skips an unreadable clip,
    or the rest of a shard whose tar stream is broken. ``nodesplitter``/``workersplitter``
    split the shard list between ranks and DataLoader workers, as in ``wds.WebDataset``.

    Trade-off: webdataset's tar iterator copies every member through ``tarfile``'s stream
    (several times slower than :class:`StreamingKinetics`' index-driven reads on raw clips,
    see ``benchmarks/wds_vs_index.py``); there is no exact resume, and splitting shards gives
    ranks unequal clip counts. For training, above all with DDP, use :class:`StreamingKinetics`.
    Only schema members are read (others are skipped unread); nothing is unpickled.
    """
    check_output(output_format, transform)
    check_flag("shuffle", shuffle)
    buffer_opt = int_option("shuffle_buffer", shuffle_buffer, 0, auto=True)
    seed = int_option("seed", seed, 0)
    if not callable(handler):
        raise ValueError(f"handler={handler!r}: must be a webdataset handler (a callable taking the exception)")
    for name, splitter in (("nodesplitter", nodesplitter), ("workersplitter", workersplitter)):
        if splitter is not None and not callable(splitter):
            raise ValueError(f"{name}={splitter!r}: must be a callable over the shard list, or None")
    index = DatasetIndex(url, split, storage_options=storage_options, transport=transport)
    if index.appended:
        raise ValueError(f"{index.url} was appended to (convert --append, generation {index.generation}): its shards no "
                         "longer hold the clips in global order, and this pipeline streams shard by shard; read it "
                         "with StreamingKinetics or IndexedKinetics, or convert it afresh")
    urls = [index.transport.url_of(s.name) for s in index.shards]
    if index.transport.location.is_local:
        urls = [index.transport.location.path(s.name) for s in index.shards]
    if not urls:
        raise ValueError(f"{index.url}: the index lists no shard (0 clips), nothing to stream")
    shards = dict(zip(urls, index.shards))
    frames = index.limits.frames
    buffer = auto_shuffle_buffer(index.clip_bytes, None) if buffer_opt == AUTO else buffer_opt

    stages: list[Any] = [wds.SimpleShardList(urls)]
    stages += [s for s in (nodesplitter, workersplitter) if s is not None]
    if shuffle:
        stages.append(wds.detshuffle(len(urls), initial=len(urls), seed=seed))
    stages.append(partial(_shard_members, shards=shards, transport=index.transport, frames=frames, handler=handler))
    stages.append(partial(group_by_keys, handler=handler))
    if shuffle and buffer > 0:
        stages.append(wds.detshuffle(buffer, initial=buffer, seed=seed))
    stages.append(wds.map(partial(_to_tuple, index=index, output_format=output_format, transform=transform),
                          handler=handler))
    pipeline = wds.FluidWrapper(stages[0])
    for stage in stages[1:]:
        pipeline.append(stage)
    logger.debug("webdataset pipeline over %s: %d shards, %d clips, shuffle=%s (buffer %d)", index.url,
                 len(urls), index.num_clips, shuffle, buffer if shuffle else 0)
    return pipeline
