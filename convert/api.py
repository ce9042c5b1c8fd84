"""The conversion pipeline: discover, probe and plan, decode in parallel, pack shards, index.

One writer packs the ordered per-video results into shards of at most ``shard_size``
bytes (:mod:`.packer`), so shard boundaries depend on the input alone. After each shard a
done-marker records the resume cursor (:mod:`.resume`); a run started again with the same
arguments keeps the finished shards and continues from the cursor. The index is written
last (:mod:`.index`). ``append=True`` runs the same loop over only the videos added or changed
since a finished conversion, then merges and swaps the index (:mod:`.append`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import shutil
import time
from contextlib import nullcontext
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence

from tqdm.auto import tqdm as _tqdm

from .engine import Engine, WorkerCrashed, make_engine
from .errors import ConversionError, ConversionMismatch, OutputTooLarge, OutputUnusable, StrictModeError
from .append import Append, AppendBase, diff_input, remove_unreferenced
from .extents import TABLE_FILE
from .index import read_json, report_from_index, write_index
from .folds import FOLD_DATASETS, AnnotationError, read_fold_lists
from .layout import DatasetLayout, VideoEntry, discover, discover_classes
from .lock import FileLock, Lease, lock_output
from .options import ConvertOptions, load_config
from .packer import ShardPacker
from .plan import Plan, growth_problem, make_plan, probe_entry, probe_entry_header
from .report import ConvertReport, VideoRecord
from .resume import PROGRESS_DIR, DoneMarkers
from .schema import INDEX_NAME, LAYOUT_CLIPS, LAYOUT_VIDEOS, OFFSETS_NAME, REPORT_NAME, dumps_json, shard_name
from .spool import SPOOL_DIR, Spool, remove_orphan_spools
from .video_sample import INTERLEAVED_VERSION, VIDEOS_TABLE_NAME
from .units import human_bytes
from .storage import Location, StorageError, reach, redact
from .worker import VideoResult, VideoTask, convert_video
from .writer import ShardInfo

logger = logging.getLogger(__name__)

__all__ = ["convert", "ConversionError", "StrictModeError"]


class tqdm(_tqdm):  # noqa: N801 - tqdm's own name
    """Progress bars without tqdm's monitor thread: a run that starts its worker pool while
    it has no other thread forks the workers (see ``engine.start_method``)."""

    monitor_interval = 0


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
    append: bool = False,
    annotation_path: Optional[str | os.PathLike] = None,
    **option_values: Any,
) -> ConvertReport:
    """Convert ``root/<split>/<class>/<video>`` into clip shards under ``out/<split>/``.

    Options come from ``options``, else from ``config`` (a TOML preset) updated with
    ``option_values`` (the fields of :class:`ConvertOptions`, e.g. ``frames_per_clip=16``).
    Returns the :class:`ConvertReport`; skipped videos are listed there, not raised.
    With ``dataset="ucf101"`` or ``"hmdb51"``, ``root/<class>/<video>.avi`` goes to
    ``out/all/`` and the index records each video's folds, read from the annotation files in
    the folder ``annotation_path`` (see :mod:`.folds`).

    ``append``: ``out`` holds a finished conversion of an earlier state of ``root``, made with these
    options; only the videos added or changed since are converted, into new shards, and the index
    is replaced in one atomic step (see :mod:`.append`); the old shards keep their bytes.
    """
    if append and overwrite:
        raise ValueError("append=True and overwrite=True: append keeps the existing shards, overwrite replaces them; "
                         "give one of the two")
    opts = _resolve_options(options, config, option_values)
    started = time.perf_counter()
    layout = _discover(root, opts, annotation_path)
    loc = Location(out, storage_options).child(opts.split)
    logger.info(
        "converting %s (%d classes, %d videos) to %s [storage options %s]",
        os.fspath(root) if layout.annotations else os.path.join(os.fspath(root), opts.split), len(layout.classes),
        len(layout.videos), loc.url,
        redact(storage_options),
    )
    reach(loc, timeout=opts.resolved_connect_timeout)  # no credentials, no access, no endpoint: said now, in one line
    opts = _earlier_layout(loc, layout, opts)
    fingerprint = _fingerprint(layout, opts)
    if engine == "local":
        remove_orphan_spools()
    # one writer per output, from before it is read until its index is written (a dry run writes nothing)
    try:
        held = nullcontext(None) if opts.dry_run else lock_output(loc)
    except OutputUnusable:
        finished = _finished_read_only(loc, fingerprint, opts)
        if finished is None:
            raise
        return finished
    with held as lock:
        existing = read_json(loc, INDEX_NAME)
        if existing is not None and not opts.dry_run:
            done = _existing_output(loc, existing, fingerprint, opts, layout, overwrite=overwrite, append=append)
            if done is not None:
                return done
        if append:
            report = _append_held(layout, opts, loc, lock, fingerprint, engine, ray_address, existing)
        else:
            report = _convert_held(layout, opts, loc, lock, fingerprint, engine, ray_address,
                                   overwrite=overwrite and existing is not None)
    report.seconds = time.perf_counter() - started
    if not report.dry_run:
        logger.info(report.summary())
    return report


def _convert_held(layout: DatasetLayout, opts: ConvertOptions, loc: Location, lock: Optional[FileLock | Lease],
                  fingerprint: str, engine: str, ray_address: Optional[str], *, overwrite: bool) -> ConvertReport:
    """Probe, plan and (unless a dry run) convert, with the output's lock held."""
    with make_engine(engine, opts.workers if engine == "ray" else opts.resolved_workers, ray_address) as eng:
        plan = _probe_and_plan(eng, layout, opts)
        report = ConvertReport(out=loc.url, split=opts.split, plan=plan.to_json(),
                               discovery=[n.to_json() for n in layout.notes])
        _check_growth(plan, opts, layout, loc)
        if _planned_only(report, plan, layout, opts):
            return report
        if overwrite:
            _clear(loc)
        assert lock is not None

        def finish(packer: ShardPacker, records: dict[int, VideoRecord]) -> None:
            write_index(loc, opts=opts, layout=layout, fingerprint=fingerprint, shards=packer.shards, records=records,
                        clips=packer.clips, total_bytes=packer.bytes, report=report)

        _execute(_Run(layout, opts, loc, eng, plan, fingerprint, engine, report, lock,
                      target=RunTarget(opts.split, finish, lambda: _clear(loc))))
    return report


def _append_held(layout: DatasetLayout, opts: ConvertOptions, loc: Location, lock: Optional[FileLock | Lease],
                 fingerprint: str, engine: str, ray_address: Optional[str],
                 existing: Optional[dict[str, Any]]) -> ConvertReport:
    """``convert --append``: convert the videos added or changed since ``existing`` (the index of
    the finished conversion in ``loc``) into shards of a new generation, then write the merged
    tables and replace the index (:class:`.append.Append`), with the output's lock held."""
    base = AppendBase.load(loc, existing, opts)
    change = diff_input(base, layout)
    logger.info("append to %s: %s", loc.url, change.describe())
    with make_engine(engine, opts.workers if engine == "ray" else opts.resolved_workers, ray_address) as eng:
        plan = _probe_and_plan(eng, change.delta, opts)
        report = ConvertReport(out=loc.url, split=opts.split, plan=plan.to_json(),
                               discovery=[n.to_json() for n in layout.notes])
        job = Append(loc, opts, base, change, layout, fingerprint, report)
        _check_growth(plan, opts, change.delta, loc)
        if _planned_only(report, plan, change.delta, opts):
            return report
        assert lock is not None
        def discard() -> None:  # a strict run refused: the output is left as it was
            job.discard()
            loc.remove_tree(PROGRESS_DIR)

        _execute(_Run(change.delta, opts, loc, eng, plan, fingerprint, engine, report, lock,
                      target=RunTarget(job.names, lambda packer, records: job.finish(packer.shards, records), discard)))
    return report


def _planned_only(report: ConvertReport, plan: Plan, layout: DatasetLayout, opts: ConvertOptions) -> bool:
    """True for a dry run (``report`` then holds the planned records); a strict run with
    unreadable videos raises :class:`StrictModeError` before anything is written."""
    if opts.dry_run:
        report.dry_run = True
        report.videos = _planned_records(layout, plan)
        return True
    if opts.strict and plan.unreadable:
        report.videos = _planned_records(layout, plan)
        first = next(e for e in layout.videos if e.index in plan.unreadable)
        raise StrictModeError(
            f"strict: {len(plan.unreadable)} unreadable videos, nothing written "
            f"(first: {first.relpath}: {plan.unreadable[first.index]})",
            report,
        )
    return False


def _execute(run: "_Run") -> None:
    """Run the conversion loop; a failed write is a :class:`ConversionError` saying that a rerun resumes."""
    try:
        run.execute()
    except StorageError:
        raise  # no credentials, access denied ...: rerunning as it is would not help
    except OSError as exc:
        raise ConversionError(
            f"writing {run.loc.url} failed ({type(exc).__name__}: {exc}); finished shards are kept, "
            "run the same command again to resume"
        ) from exc


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


def _discover(root: str | os.PathLike, opts: ConvertOptions, annotation_path: Optional[str | os.PathLike]) -> DatasetLayout:
    """ROOT's classes and videos; for UCF101/HMDB51 with each video's folds from the annotation files."""
    if opts.dataset not in FOLD_DATASETS:
        if annotation_path is not None:
            raise ValueError(f"annotation_path={os.fspath(annotation_path)!r}: only dataset 'ucf101' or 'hmdb51' "
                             f"reads annotation files (dataset is {opts.dataset!r})")
        return discover(root, opts.split, opts.extensions)
    if annotation_path is None:
        raise ValueError(f"dataset={opts.dataset!r} needs annotation_path (--annotation-path): the folder holding "
                         "its split files")
    lists = read_fold_lists(opts.dataset, annotation_path)
    layout = discover_classes(root, opts.extensions, split=opts.split)
    videos = tuple(dataclasses.replace(v, folds=tuple(lists.membership(v.relpath))) for v in layout.videos)
    if videos and not any(any(v.folds) for v in videos):
        raise AnnotationError(f"no video of {os.fspath(root)!r} is named in the annotation files of "
                              f"{os.fspath(annotation_path)!r}: is ROOT the folder of the class folders "
                              f"(ROOT/<class>/<video>.avi), and are these {opts.dataset}'s files?")
    return dataclasses.replace(layout, videos=videos, annotations=lists.to_json())


def _fingerprint(layout: DatasetLayout, opts: ConvertOptions) -> str:
    """What makes two runs the same conversion: the output options and every video's path, size
    and stamp (modification time, or a hash of its ends where the filesystem keeps none), so a
    source rewritten in place is noticed by a rerun and a resume. Only this hash is recorded:
    the same files give the same index bytes; a copy of the dataset (new mtimes) reconverts."""
    desc = {
        "options": opts.output_options(),
        "classes": list(layout.classes),
        "videos": [[v.relpath, v.size, v.stamp] for v in layout.videos],
    }
    if layout.annotations is not None:
        desc["annotations"] = layout.annotations  # the folds: which files, with which checksums
    if opts.layout == LAYOUT_VIDEOS:  # its samples' format changed in version 4: an older run's are not these
        desc["sample_format"] = INTERLEAVED_VERSION
    return hashlib.sha256(dumps_json(desc)).hexdigest()


def _earlier_layout(loc: Location, layout: DatasetLayout, opts: ConvertOptions) -> ConvertOptions:
    """``opts`` with the other layout when the layout was not given and ``loc`` holds this very
    conversion (its index's options, or a killed run's first done-marker) in that layout: an
    output made before the default became videos for S < T is rerun or resumed, not refused."""
    if not opts.layout_auto:
        return opts
    was = LAYOUT_CLIPS if opts.layout == LAYOUT_VIDEOS else LAYOUT_VIDEOS
    other = opts.keep_layout(was, f"the layout {loc.url} was converted with (no --layout given)")
    index = read_json(loc, INDEX_NAME)
    if index is not None:
        same = index.get("options") == other.output_options()
    else:
        marker = read_json(loc, f"{PROGRESS_DIR}/{shard_name(opts.split, 0)}.json")
        same = marker is not None and marker.get("fingerprint") == _fingerprint(layout, other)
    if not same:
        return opts
    logger.info("%s holds this conversion in the %s layout: keeping it (pass --layout to choose)", loc.url, was)
    return other


def _input_change(index: Mapping[str, Any], layout: DatasetLayout, opts: ConvertOptions) -> str:
    """How the input differs from what ``index`` was converted from, when its options are these."""
    if index.get("options") != opts.output_options() or index.get("classes") != list(layout.classes):
        return ""
    before = {v.get("path") for v in index.get("videos", [])}
    now = {v.relpath for v in layout.videos}
    if before == now:
        return " (the same files, but some changed since: size or modification time)"
    return f" (the input changed since: {len(now - before)} videos added, {len(before - now)} removed)"


def _option_changes(before: Mapping[str, Any], now: Mapping[str, Any]) -> list[str]:
    """``"name: old -> new"`` for each output option that differs between an index and this run
    (an option an index leaves out had its default)."""
    defaults = {f.name: f.default for f in dataclasses.fields(ConvertOptions)}
    defaults["layout"] = LAYOUT_CLIPS  # an index without one is of the clips layout

    def value(options: Mapping[str, Any], name: str) -> Any:
        v = options.get(name, defaults.get(name))
        return list(v) if isinstance(v, tuple) else v

    names = sorted(set(before) | set(now))
    return [f"{n}: {value(before, n)!r} -> {value(now, n)!r}" for n in names if value(before, n) != value(now, n)]


def _check_growth(plan: Plan, opts: ConvertOptions, layout: DatasetLayout, loc: Location) -> None:
    """Refuse (:class:`OutputTooLarge`, status 2) a plan whose output is over 20x the input or
    over the free space, unless ``yes``; a dry run and ``yes`` only warn."""
    problem = growth_problem(plan, opts, sum(v.size for v in layout.videos), _free_space(loc))
    if not problem:
        return
    if opts.resolved_yes or opts.dry_run:
        logger.warning("%s", problem.replace(". To write it anyway pass --yes (yes=True)", ""))
        return
    raise OutputTooLarge(f"nothing written: {problem}")


def _free_space(loc: Location) -> Optional[int]:
    """Bytes free on the filesystem of a local OUT (its nearest existing folder); None on object storage."""
    if not loc.is_local:
        return None
    path = loc.root
    while not os.path.isdir(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


def _finished_read_only(loc: Location, fingerprint: str, opts: ConvertOptions) -> Optional[ConvertReport]:
    """The report of this very conversion in an output that cannot be written (a read-only
    mount): nothing to do, so nothing to lock; None when it holds anything else."""
    index = read_json(loc, INDEX_NAME)
    if index is None or index.get("fingerprint") != fingerprint:
        return None
    logger.info("%s cannot be written, but already holds this conversion; nothing to do", loc.url)
    return report_from_index(index, read_json(loc, REPORT_NAME) or {}, loc.url, opts.split)


def _existing_output(loc: Location, index: dict[str, Any], fingerprint: str, opts: ConvertOptions,
                     layout: DatasetLayout, *, overwrite: bool, append: bool = False) -> Optional[ConvertReport]:
    """``loc`` already holds a finished conversion: its report when it is this one; else it is
    cleared (``overwrite``), left for an append to build on (``append``, same options) or refused."""
    if index.get("fingerprint") == fingerprint:
        logger.info("%s already holds this conversion (same input and options); nothing to do", loc.url)
        # a run killed right after writing its index left these (an append: files it no longer lists too)
        remove_unreferenced(loc, index, opts.split)
        loc.remove_tree(PROGRESS_DIR)
        report_json = read_json(loc, REPORT_NAME) or {}
        return report_from_index(index, report_json, loc.url, opts.split)
    if not overwrite:
        changes = _option_changes(index.get("options") or {}, opts.output_options())
        if changes:
            raise ConversionMismatch(
                f"{loc.url} already holds a conversion made with other options: {'; '.join(changes)} "
                "(was -> now); " + ("--append adds to an output with the options it was made with: give those, or "
                                    "choose another OUT" if append else
                                    "choose another OUT, convert with the options it was made with, or pass "
                                    "--overwrite (overwrite=True) to replace it")
            )
        if append:
            return None
        if opts.layout == LAYOUT_VIDEOS and int(index.get("version") or 0) < INTERLEAVED_VERSION:
            raise ConversionMismatch(
                f"{loc.url} already holds a videos layout conversion in the sample format of index version "
                f"{index.get('version')!r} (audio kept apart from the frames), which this release reads but no longer "
                f"writes (version {INTERLEAVED_VERSION} interleaves them, a clip one read): keep reading it as it is, or "
                "pass --overwrite (overwrite=True) to convert it again")
        raise ConversionMismatch(
            f"{loc.url} already holds a conversion of other input{_input_change(index, layout, opts)}; "
            "choose another OUT, pass --append (append=True) to convert only the videos added or changed since, "
            "or --overwrite (overwrite=True) to replace it"
        )
    _clear(loc)
    return None


def _probe_and_plan(eng: Engine, layout: DatasetLayout, opts: ConvertOptions) -> Plan:
    """Probe every video on the engine's workers and plan the run (logged)."""
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
    return plan


def _record(e: VideoEntry) -> VideoRecord:
    return VideoRecord(index=e.index, path=e.relpath, label=e.label, folds=list(e.folds) if e.folds else None,
                       size=e.size, stamp=e.stamp)


def _planned_records(layout: DatasetLayout, plan: Plan) -> list[VideoRecord]:
    """A record per video; those the plan found unreadable are skipped with its reason."""
    records = [_record(e) for e in layout.videos]
    for r in records:
        if r.index in plan.unreadable:
            r.status, r.reason = "skipped", plan.unreadable[r.index]
    return records


def _clear(loc: Location) -> None:
    """Remove a conversion from ``loc``: shards, index files, done-markers, spool."""
    for name in loc.listdir():
        if name.endswith(".tar") or name in (INDEX_NAME, REPORT_NAME) or TABLE_FILE.fullmatch(name):
            loc.remove(name)
    loc.remove_tree(PROGRESS_DIR)
    loc.remove_tree(SPOOL_DIR)


@dataclasses.dataclass(frozen=True)
class RunTarget:
    """Where a run's shards go and what ends it: the shard (and done-marker) name prefix, the step
    that writes the index once every shard is done (``finish(packer, records)``) and what a strict
    run's refusal removes (``discard()``)."""

    names: str
    finish: Callable[[ShardPacker, dict[int, VideoRecord]], None]
    discard: Callable[[], None]


class _Run:
    """One conversion's main loop: tasks out to the engine, results in order into the shards,
    a record per video, done-markers, and the index at the end (``target.finish``)."""

    def __init__(self, layout: DatasetLayout, opts: ConvertOptions, loc: Location, eng: Engine, plan: Plan,
                 fingerprint: str, engine_name: str, report: ConvertReport, lock: FileLock | Lease, *, target: RunTarget):
        self.layout, self.opts, self.loc, self.eng, self.plan = layout, opts, loc, eng, plan
        self.lock = lock  # checked after each video: a run that lost its lease stops
        self.engine_name = engine_name
        self.report = report
        self.target = target
        self.markers = DoneMarkers(loc, target.names, fingerprint)
        self.records: dict[int, VideoRecord] = {}
        self.unmarked: list[int] = []  # finished videos not yet in a done-marker

    def _mark(self, info: ShardInfo, next_cursor: tuple[int, int]) -> None:
        """A shard is finished: its done-marker takes the videos finished since the last one."""
        videos = [self.records[i] for i in self.unmarked]
        self.unmarked = []
        self.markers.write(info, next_cursor, videos)

    def execute(self) -> None:
        opts, layout = self.opts, self.layout
        resumed = self.markers.load()
        self.report.resumed_shards = len(resumed.shards)
        self.records.update(resumed.records)
        start_video, start_clip = resumed.cursor
        packer = ShardPacker(self.loc, opts, kept=resumed.shards, on_shard_done=self._mark, names=self.target.names)
        window = 2 * self.eng.workers
        spool = Spool(self.loc, local=self.engine_name == "local", window=window)
        todo = [e for e in layout.videos if e.index >= start_video]  # an append's videos are numbered from its first key
        bar = tqdm(
            total=len(layout.videos), initial=len(layout.videos) - len(todo), desc=f"convert {opts.split}", unit="video",
            disable=not opts.progress, dynamic_ncols=True,
        )
        first_clip_of = {start_video: packer.clips - start_clip} if start_clip else {}
        results = self.eng.map_ordered(convert_video, self._tasks(todo, spool, start_video, start_clip), window=window)
        try:
            for e in todo:
                rec = self.records.get(e.index) or _record(e)
                self.records[e.index] = rec
                rec.first_clip = first_clip_of.get(e.index, packer.clips)
                if e.index in self.plan.unreadable:
                    rec.status, rec.reason = "skipped", self.plan.unreadable[e.index]
                else:
                    res = next(results)
                    if isinstance(res, WorkerCrashed):
                        res = VideoResult(e.index, ok=False, reason=f"decoder crashed: {res}")
                    self._consume(e, rec, res, spool, packer, start_clip if e.index == start_video else 0)
                self._video_done(e, rec)
                self.lock.check()
                bar.update(1)
                bar.set_postfix_str(f"{packer.clips} clips, {human_bytes(packer.bytes_written)}")
            if packer.writer is not None:
                packer.finish(next_cursor=(layout.videos[-1].index + 1, 0))
            self.lock.check()
            self.target.finish(packer, self.records)
            self.markers.clear()
        except BaseException as exc:
            packer.abort()
            if isinstance(exc, StrictModeError):
                self.target.discard()  # a refused conversion leaves no shard behind, as documented
            raise
        finally:
            bar.close()
            close = getattr(results, "close", None)
            if close:
                close()
            spool.remove()

    def _tasks(self, todo: Sequence[VideoEntry], spool: Spool, start_video: int, start_clip: int) -> Iterator[VideoTask]:
        """A task per readable video, each given a spool slot once the writer is done with it."""
        k = 0
        for e in todo:
            if e.index in self.plan.unreadable:
                continue
            skip = start_clip if e.index == start_video else 0
            slot = spool.slot_for(k)
            yield VideoTask(e, self.opts, spool.url, spool.storage_options, skip, slot=slot)
            k += 1

    def _consume(self, e: VideoEntry, rec: VideoRecord, res: VideoResult, spool: Spool, packer: ShardPacker,
                 skip: int) -> None:
        """Record one video's result; pack its samples from the spool when it was converted."""
        info = res.info
        if info is not None:
            rec.frames, rec.fps, rec.width, rec.height = info.num_frames, info.fps, info.width, info.height
            rec.sample_rate = info.sample_rate
            rec.warning = info.audio_error
        if not res.ok:
            rec.status, rec.reason = "skipped", res.reason
            return
        rec.status, rec.clips, rec.sample = "ok", res.clips, res.sample
        with spool.read(res) as (fh, mapped):
            packer.add_video(fh, mapped, res.sample_sizes, e.index, skip, e.relpath, label=e.label,
                             checksums=res.sample_checksums)

    def _video_done(self, e: VideoEntry, rec: VideoRecord) -> None:
        if rec.status != "ok":
            logger.warning("skipped %s: %s", e.relpath, rec.reason)
            if self.opts.strict:
                raise StrictModeError(f"strict: {e.relpath}: {rec.reason}", self.report)
        self.unmarked.append(e.index)
