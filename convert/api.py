"""The conversion pipeline: discover, probe and plan, decode in parallel, pack shards, index.

One writer packs the ordered per-video results into shards of at most ``shard_size``
bytes, so shard boundaries depend on the input alone. After each shard a done-marker
records the resume cursor; a run started again with the same arguments keeps the finished
shards and continues from the cursor. The index is written last.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import logging
import mmap
import os
import shutil
import tempfile
import threading
import time
from typing import Any, Callable, Iterator, Mapping, Optional

import numpy as np
from tqdm.auto import tqdm as _tqdm

from .engine import WorkerCrashed, make_engine
from .layout import DatasetLayout, discover
from .options import ConvertOptions, load_config
from .plan import Plan, make_plan, probe_entry, probe_entry_header
from .report import EXIT_STRICT, ConvertReport, VideoRecord, human_bytes
from .schema import (
    FORMAT_NAME,
    FORMAT_VERSION,
    INDEX_NAME,
    OFFSETS_NAME,
    REPORT_NAME,
    checksum_of,
    dumps_json,
    encode_npy,
    entry_checksum,
    shard_name,
)
from .storage import Location, redact
from .worker import VideoResult, VideoTask, convert_video
from .writer import MAX_DIRECT_VIEW, MIN_DIRECT_VIEW, TAR_END, ChunkPool, ShardInfo, ShardWriter

logger = logging.getLogger(__name__)

__all__ = ["convert", "ConversionError", "StrictModeError"]


class tqdm(_tqdm):  # noqa: N801 - tqdm's own name
    """Progress bars without tqdm's monitor thread: a run that starts its worker pool while
    it has no other thread forks the workers (see ``engine.start_method``)."""

    monitor_interval = 0


PROGRESS_DIR = "_progress"
SPOOL_DIR = "_spool"
SPOOL_PREFIX = "clipshards-spool-"  # + pid + "-": local spool folders, see _remove_orphan_spools


class ConversionError(RuntimeError):
    exit_code = 1


class StrictModeError(ConversionError):
    """``strict=True`` and some video could not be converted."""

    exit_code = EXIT_STRICT

    def __init__(self, message: str, report: ConvertReport):
        super().__init__(message)
        self.report = report


def convert(
    root: str | os.PathLike,
    out: str | os.PathLike,
    *,
    options: Optional[ConvertOptions] = None,
    config: Optional[str | os.PathLike] = None,
    engine: str = "local",
    ray_address: Optional[str] = None,
    storage_options: Optional[Mapping[str, Any]] = None,
    overwrite: bool = False,
    **option_values: Any,
) -> ConvertReport:
    """Convert ``root/<split>/<class>/<video>`` into clip shards under ``out/<split>/``.

    Options come from ``options``, else from ``config`` (a TOML preset) updated with
    ``option_values`` (the fields of :class:`ConvertOptions`, e.g. ``frames_per_clip=16``).
    Returns the :class:`ConvertReport`; skipped videos are listed there, not raised.
    """
    opts = _resolve_options(options, config, option_values)
    started = time.perf_counter()
    layout = discover(root, opts.split, opts.extensions)
    base = Location(out, storage_options)
    loc = base.child(opts.split)
    logger.info(
        "converting %s (%d classes, %d videos) to %s [storage options %s]",
        os.path.join(os.fspath(root), opts.split), len(layout.classes), len(layout.videos), loc.url,
        redact(storage_options),
    )
    fingerprint = _fingerprint(layout, opts)
    if engine == "local":
        _remove_orphan_spools()
    existing = _read_json(loc, INDEX_NAME)
    if existing is not None and not opts.dry_run:
        if existing.get("fingerprint") == fingerprint:
            logger.info("%s already holds this conversion (same input and options); nothing to do", loc.url)
            loc.remove_tree(PROGRESS_DIR)  # a run killed right after writing its index left these
            report_json = _read_json(loc, REPORT_NAME) or {}
            return _report_from_index(existing, report_json, loc.url, opts.split)
        if not overwrite:
            raise ConversionError(
                f"{loc.url} already holds a conversion of other input or options; "
                "choose another OUT or pass overwrite=True (--overwrite)"
            )
        _clear(loc)

    with make_engine(engine, opts.workers if engine == "ray" else opts.resolved_workers, ray_address) as eng:
        probes = list(
            tqdm(
                # a dry run and a strict run read every packet, so that a damaged file is found before
                # anything is written; otherwise the plan takes the frame counts containers declare
                # and the decoding pass finds damage (the video is skipped and reported as ever)
                eng.map_ordered(probe_entry if opts.dry_run or opts.strict else probe_entry_header,
                                layout.videos, window=4 * eng.workers),
                total=len(layout.videos), desc="probe", unit="video", disable=not opts.progress, leave=False,
            )
        )
        plan = make_plan([p for p in probes if not isinstance(p, WorkerCrashed)], opts)
        for p, e in zip(probes, layout.videos):
            if isinstance(p, WorkerCrashed):
                plan.unreadable[e.index] = "probe crashed"
        logger.info(plan.describe(opts))
        report = ConvertReport(out=loc.url, split=opts.split, plan=plan.to_json())
        if opts.dry_run:
            report.dry_run = True
            report.videos = [_record(e) for e in layout.videos]
            for r in report.videos:
                if r.index in plan.unreadable:
                    r.status, r.reason = "skipped", plan.unreadable[r.index]
            report.seconds = time.perf_counter() - started
            return report
        if opts.strict and plan.unreadable:
            report.videos = [_record(e) for e in layout.videos]
            for r in report.videos:
                if r.index in plan.unreadable:
                    r.status, r.reason = "skipped", plan.unreadable[r.index]
            raise StrictModeError(
                f"strict: {len(plan.unreadable)} unreadable videos, nothing written "
                f"(first: {layout.videos[next(iter(plan.unreadable))].relpath}: {next(iter(plan.unreadable.values()))})",
                report,
            )
        if existing is not None and overwrite:
            _clear(loc)
        run = _Run(layout, opts, loc, eng, plan, fingerprint, engine, report)
        try:
            run.execute()
        except OSError as exc:
            raise ConversionError(
                f"writing {loc.url} failed ({type(exc).__name__}: {exc}); finished shards are kept, "
                "run the same command again to resume"
            ) from exc
    report.seconds = time.perf_counter() - started
    logger.info(report.summary())
    return report


def _resolve_options(options: Optional[ConvertOptions], config: Any, values: Mapping[str, Any]) -> ConvertOptions:
    if options is not None:
        if config is not None or values:
            raise ValueError("give either options=ConvertOptions(...) or config/keyword options, not both")
        return options
    merged: dict[str, Any] = load_config(config) if config is not None else {}
    merged.update({k: v for k, v in values.items() if v is not None})
    if "frames_per_clip" not in merged:
        raise ValueError("frames_per_clip is required (e.g. frames_per_clip=16, or --frames-per-clip 16)")
    try:
        return ConvertOptions(**merged)
    except TypeError as exc:
        raise ValueError(f"unknown option: {exc}") from exc


def _fingerprint(layout: DatasetLayout, opts: ConvertOptions) -> str:
    desc = {
        "options": opts.output_options(),
        "classes": list(layout.classes),
        "videos": [[v.relpath, v.size] for v in layout.videos],
    }
    return hashlib.sha256(dumps_json(desc)).hexdigest()


def _record(e) -> VideoRecord:
    return VideoRecord(index=e.index, path=e.relpath, label=e.label)


def _read_json(loc: Location, name: str) -> Optional[dict[str, Any]]:
    try:
        return json.loads(loc.read_bytes(name))
    except (FileNotFoundError, OSError):
        return None
    except ValueError:
        logger.warning("%s is not valid JSON; ignoring it", loc.join_url(name))
        return None


def _remove_orphan_spools() -> None:
    """Delete local spool folders of conversions whose process is gone (killed runs)."""
    tmp = tempfile.gettempdir()
    for name in os.listdir(tmp):
        if not name.startswith(SPOOL_PREFIX):
            continue
        pid = name[len(SPOOL_PREFIX):].partition("-")[0]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            logger.info("removing the spool of a killed conversion: %s", os.path.join(tmp, name))
            shutil.rmtree(os.path.join(tmp, name), ignore_errors=True)
        except OSError:
            pass


def _clear(loc: Location) -> None:
    for name in loc.listdir():
        if name.endswith(".tar") or name in (INDEX_NAME, REPORT_NAME, OFFSETS_NAME):
            loc.remove(name)
    loc.remove_tree(PROGRESS_DIR)
    loc.remove_tree(SPOOL_DIR)


def _report_from_index(index: dict[str, Any], report_json: dict[str, Any], url: str, split: str) -> ConvertReport:
    report = ConvertReport(out=url, split=split, plan=report_json.get("plan"))
    report.videos = [VideoRecord.from_json(v) for v in index["videos"]]
    report.shards = list(index["shards"])
    report.clips = int(index["counts"]["clips"])
    report.bytes = int(index["counts"]["bytes"])
    report.resumed_shards = len(report.shards)
    return report


class _MappedSpool:
    """A spool slot whose samples are written straight from its pages, run by run.

    Each run is its own read-only mapping, unmapped as soon as the writer thread has written
    it: the pages it touched leave this process's RSS, which so stays the same whatever the
    length of the videos. The slot stays taken (``free`` cleared) until every run is
    written, so no worker overwrites pages being written.
    """

    def __init__(self, fd: int, free: threading.Event):
        self.fd, self.free = fd, free
        self._lock = threading.Lock()
        self._open = 0
        self._finished = False

    def view(self, pos: int, size: int) -> tuple[memoryview, Callable[[], None]]:
        """Bytes ``[pos, pos + size)`` of the slot (``pos`` need not be page-aligned), and the
        function the writer thread calls once they are written."""
        start = pos - pos % mmap.ALLOCATIONGRANULARITY
        mm = mmap.mmap(self.fd, pos + size - start, offset=start, access=mmap.ACCESS_READ)
        with self._lock:
            self._open += 1
            self.free.clear()
        return memoryview(mm)[pos - start : pos - start + size], functools.partial(self._release, mm)

    def _release(self, mm: mmap.mmap) -> None:
        try:
            mm.close()
        except BufferError:  # pragma: no cover - a view still exported: it unmaps when collected
            pass
        with self._lock:
            self._open -= 1
            self._maybe_done()

    def finish(self) -> None:
        """No more views will be made."""
        with self._lock:
            self._finished = True
            self._maybe_done()

    def _maybe_done(self) -> None:
        if self._finished and self._open == 0:
            self.free.set()


class _Run:
    """State of one conversion: the current shard, the cursor and the finished records."""

    def __init__(self, layout, opts, loc, eng, plan: Plan, fingerprint: str, engine_name: str, report: ConvertReport):
        self.layout, self.opts, self.loc, self.eng, self.plan = layout, opts, loc, eng, plan
        self.fingerprint = fingerprint
        self.engine_name = engine_name
        self.report = report
        self.records: dict[int, VideoRecord] = {}
        self.unmarked: list[int] = []  # finished videos not yet in a done-marker
        self.shards: list[ShardInfo] = []
        self.shard_first: list[int] = []
        self.writer: Optional[ShardWriter] = None
        self.chunks: Optional[ChunkPool] = None  # made with the first shard: by then the workers are decoding
        self.global_clips = 0
        self.bytes = 0

    # -- resume --------------------------------------------------------------------------
    def _resume(self) -> tuple[int, int]:
        """Load done-markers of complete shards; return the cursor (video, clip)."""
        names = [n for n in self.loc.listdir(PROGRESS_DIR) if n.endswith(".json")]
        cursor = (0, 0)
        for i in range(len(names)):
            marker = _read_json(self.loc, f"{PROGRESS_DIR}/{self.shard_name(i)}.json")
            if marker is None or marker.get("fingerprint") != self.fingerprint:
                break
            info = marker["shard"]
            if self.loc.size(info["name"]) != info["bytes"]:
                break
            algo, checksum = entry_checksum(info)
            shard = ShardInfo(index=i, name=info["name"], clips=info["clips"], bytes=info["bytes"], checksum=checksum, algo=algo)
            shard.offsets = [tuple(o) for o in marker["offsets"]]
            self.shards.append(shard)
            self.shard_first.append(self.global_clips)
            self.global_clips += shard.clips
            self.bytes += shard.bytes
            for rec in marker["videos"]:
                r = VideoRecord.from_json(rec)
                self.records[r.index] = r
            cursor = tuple(marker["next"])
        stale = [n for n in names if n not in {f"{s.name}.json" for s in self.shards}]
        for n in stale:
            self.loc.remove(f"{PROGRESS_DIR}/{n}")
        if self.shards:
            logger.info("resuming: %d complete shards kept, continuing at video %d clip %d", len(self.shards), *cursor)
        self.report.resumed_shards = len(self.shards)
        return cursor  # type: ignore[return-value]

    def shard_name(self, i: int) -> str:
        return shard_name(self.opts.split, i)

    # -- shards --------------------------------------------------------------------------
    def _shard_for(self, size: int, cursor: tuple[int, int]) -> ShardWriter:
        """The shard the next sample (``size`` bytes) goes to, finishing the current one if full."""
        if self.writer is not None and self.writer.info.clips and self.writer.size + size + len(TAR_END) > self.opts.shard_size:
            self._finish_shard(next_cursor=cursor)
        if self.writer is None:
            if self.chunks is None:
                self.chunks = ChunkPool()
            self.writer = ShardWriter(self.loc, self.opts.split, len(self.shards), pool=self.chunks, checksum=self.opts.checksum)
            self.shard_first.append(self.global_clips)
        return self.writer

    def _finish_shard(self, next_cursor: tuple[int, int]) -> None:
        assert self.writer is not None
        info = self.writer.close()
        self.writer = None
        self.shards.append(info)
        self.bytes += info.bytes
        marker = {
            "fingerprint": self.fingerprint,
            "shard": info.to_json(),
            "offsets": info.offsets,
            "next": list(next_cursor),
            "videos": [self.records[i].to_json() for i in self.unmarked],
        }
        self.unmarked = []
        self.loc.write_bytes_atomic(f"{PROGRESS_DIR}/{info.name}.json", dumps_json(marker))

    # -- main loop -----------------------------------------------------------------------
    def execute(self) -> None:
        opts, layout = self.opts, self.layout
        start_video, start_clip = self._resume()
        if self.engine_name == "local":
            spool_dir = tempfile.mkdtemp(prefix=f"{SPOOL_PREFIX}{os.getpid()}-")
            spool_url = spool_dir
        else:
            spool_dir = None
            spool_url = self.loc.join_url(SPOOL_DIR)
        storage_options = None if spool_dir else self.loc.storage_options
        spool = Location(spool_url, storage_options)
        spool.makedirs()
        todo = [e for e in layout.videos[start_video:]]
        bar = tqdm(
            total=len(layout.videos), initial=start_video, desc=f"convert {opts.split}", unit="video",
            disable=not opts.progress, dynamic_ncols=True,
        )
        first_clip_of = {start_video: self.global_clips - start_clip} if start_clip else {}
        window = 2 * self.eng.workers
        # a local spool reuses window + 1 slot files: when task k is submitted, the tasks before
        # k - window have been consumed, so slot k % (window + 1) is free
        slots = window + 1 if spool_dir else 0
        self.slot_free = [threading.Event() for _ in range(slots)]  # cleared while the writer maps the slot
        for free in self.slot_free:
            free.set()

        def tasks() -> Iterator[VideoTask]:
            k = 0
            for e in todo:
                if e.index in self.plan.unreadable:
                    continue
                skip = start_clip if e.index == start_video else 0
                if slots:
                    self.slot_free[k % slots].wait()
                yield VideoTask(e, opts, spool_url, storage_options, skip, slot=k % slots if slots else -1)
                k += 1

        results = self.eng.map_ordered(convert_video, tasks(), window=window)
        try:
            for e in todo:
                rec = self.records.get(e.index) or _record(e)
                self.records[e.index] = rec
                rec.first_clip = first_clip_of.get(e.index, self.global_clips)
                if e.index in self.plan.unreadable:
                    rec.status, rec.reason = "skipped", self.plan.unreadable[e.index]
                else:
                    res = next(results)
                    if isinstance(res, WorkerCrashed):
                        res = VideoResult(e.index, ok=False, reason=f"decoder crashed: {res}")
                    self._consume(e, rec, res, spool, start_clip if e.index == start_video else 0)
                if rec.status != "ok":
                    logger.warning("skipped %s: %s", e.relpath, rec.reason)
                    if opts.strict:
                        raise StrictModeError(f"strict: {e.relpath}: {rec.reason}", self.report)
                self.unmarked.append(e.index)
                bar.update(1)
                bar.set_postfix_str(f"{self.global_clips} clips, {human_bytes(self.bytes + (self.writer.size if self.writer else 0))}")
            if self.writer is not None:
                self._finish_shard(next_cursor=(len(layout.videos), 0))
            self._write_index()
        except BaseException as exc:
            if self.writer is not None:
                self.writer.abort()
            if isinstance(exc, StrictModeError):
                _clear(self.loc)  # a refused conversion leaves no shard behind, as documented
            raise
        finally:
            bar.close()
            close = getattr(results, "close", None)
            if close:
                close()
            if spool_dir:
                shutil.rmtree(spool_dir, ignore_errors=True)
            else:
                self.loc.remove_tree(SPOOL_DIR)

    def _consume(self, e, rec: VideoRecord, res: VideoResult, spool: Location, skip: int) -> None:
        info = res.info
        if info is not None:
            rec.frames, rec.fps, rec.width, rec.height = info.num_frames, info.fps, info.width, info.height
            rec.sample_rate = info.sample_rate
            rec.warning = info.audio_error
        if not res.ok:
            rec.status, rec.reason = "skipped", res.reason
            return
        rec.status, rec.clips = "ok", res.clips
        path = spool.path(res.spool_name)
        sizes = res.sample_sizes
        try:
            with open(path, "rb", buffering=0) if spool.is_local else spool.fs.open(path, "rb") as fh:
                mapped = self._map_spool(fh, res) if spool.is_local else None
                try:
                    pos = j = 0
                    while j < len(sizes):
                        writer = self._shard_for(sizes[j], (e.index, skip + j))
                        k = self._run_end(writer, sizes, j)
                        run = sum(sizes[j:k])
                        if mapped is not None and run >= MIN_DIRECT_VIEW and writer.takes_views:
                            # straight from the spool's pages to the disk: no copy into a chunk
                            view, done = mapped.view(pos, run)
                            writer.add_view(view, sizes[j:k], done)
                            fh.seek(pos + run)
                        else:
                            for size in sizes[j:k]:
                                if writer.add_from(fh.readinto, size) != size:
                                    raise ConversionError(f"spool of {e.relpath} is short")
                        pos += run
                        self.global_clips += k - j
                        j = k
                finally:
                    if mapped is not None:
                        mapped.finish()
        finally:
            if not res.spool_reused:
                spool.remove(res.spool_name)

    def _run_end(self, writer: ShardWriter, sizes: list[int], j: int) -> int:
        """End of the run of samples from ``j`` that go to ``writer``'s shard (the boundary rule
        of :meth:`_shard_for`), at most ``MAX_DIRECT_VIEW`` bytes (one direct write; pages
        mapped at a time)."""
        k, size, run = j + 1, writer.size + sizes[j], sizes[j]
        while k < len(sizes) and size + sizes[k] + len(TAR_END) <= self.opts.shard_size and run + sizes[k] <= MAX_DIRECT_VIEW:
            size += sizes[k]
            run += sizes[k]
            k += 1
        return k

    def _map_spool(self, fh: Any, res: VideoResult) -> Optional["_MappedSpool"]:
        """The spool slot file, to be mapped run by run for direct writes (the slot is not
        handed to another task until they are done); None where that cannot gain."""
        total = sum(res.sample_sizes)
        if not res.spool_reused or total < MIN_DIRECT_VIEW:
            return None
        try:
            if os.fstat(fh.fileno()).st_size < total:
                return None  # short: the copying path reports it
        except OSError:
            return None
        return _MappedSpool(fh.fileno(), self.slot_free[res.slot])

    def _write_index(self) -> None:
        opts, layout = self.opts, self.layout
        offsets = np.zeros((self.global_clips, 2), dtype=np.int64)
        g = 0
        for s in self.shards:
            if s.offsets:
                offsets[g : g + s.clips] = np.asarray(s.offsets, dtype=np.int64)
            g += s.clips
        offsets_bytes = encode_npy(offsets)
        self.loc.write_bytes_atomic(OFFSETS_NAME, offsets_bytes)
        videos = [self.records[e.index] for e in layout.videos]
        shards = []
        first = 0
        for s in self.shards:
            shards.append({**s.to_json(), "first_clip": first})
            first += s.clips
        counts = {
            "videos": len(videos),
            "videos_ok": sum(v.status == "ok" for v in videos),
            "videos_skipped": sum(v.status != "ok" for v in videos),
            "clips": self.global_clips,
            "shards": len(shards),
            "bytes": self.bytes,
        }
        index = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "split": opts.split,
            "fingerprint": self.fingerprint,
            "options": opts.output_options(),
            "classes": list(layout.classes),
            "counts": counts,
            "offsets": {"name": OFFSETS_NAME, "bytes": len(offsets_bytes), opts.checksum: checksum_of(opts.checksum, offsets_bytes)},
            "shards": shards,
            "videos": [v.to_json() for v in videos],
        }
        rep = self.report
        rep.videos, rep.shards, rep.clips, rep.bytes = videos, shards, self.global_clips, self.bytes
        self.loc.write_bytes_atomic(REPORT_NAME, json.dumps(rep.to_json(), indent=1, ensure_ascii=False).encode("utf-8"))
        self.loc.write_bytes_atomic(INDEX_NAME, dumps_json(index))
        self.loc.remove_tree(PROGRESS_DIR)
