"""Measurements that need a fresh interpreter: ``python -m benchmarks.probe '{"kind": ..., ...}'``.

Prints one JSON line (the last line of stdout) with the result. Used for the time to the
first batch (nothing cached from earlier runs) and for peak memory (``ru_maxrss`` and the
``VmHWM`` of DataLoader workers).
"""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import Any, Callable

from .measure import children_pids, peak_rss_mib, vm_hwm_mib

__all__ = ["HwmPoller", "first_batch", "convert_timing", "decode_timing", "convert_memory", "loader_memory", "main"]


def first_batch(args: dict[str, Any]) -> dict[str, Any]:
    """Seconds from opening the dataset to holding its first batch (imports excluded)."""
    import torch  # noqa: F401  (imported before the clock starts, as in a training script)

    import gc

    from clipshards.loader import StreamingKinetics

    gc.collect()  # the imports' garbage: a collection of it is not the loader's start-up
    start = time.perf_counter()
    ds = StreamingKinetics(args["out"], "train", shuffle=True, seed=args.get("seed", 0),
                           shuffle_buffer=args.get("shuffle_buffer", "auto"), block_size=args.get("block_size", "auto"))
    loader = ds.loader(batch_size=args["batch_size"], num_workers=args["workers"])
    batch = next(iter(loader))
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "clips": int(batch.label.shape[0]), "num_clips": ds.index.num_clips,
            "shuffle_buffer": ds.shuffle_buffer, "block_size": ds.block_size}


def convert_timing(args: dict[str, Any]) -> dict[str, Any]:
    """Seconds of one conversion (``codec``, ``workers``) from the call to the written index.

    A fresh process, so spawned converter workers import this small module as their main,
    not the harness (which imports torch).
    """
    import shutil

    from clipshards.convert import convert

    shutil.rmtree(args["out"], ignore_errors=True)
    start = time.perf_counter()
    report = convert(
        args["root"], args["out"], frames_per_clip=args["frames_per_clip"], step_between_clips=args["step_between_clips"],
        layout="clips", codec=args["codec"], workers=args["workers"], progress=False, yes=True,  # raw: far over 20x the input
    )
    seconds = time.perf_counter() - start
    shutil.rmtree(args["out"], ignore_errors=True)
    if report.skipped:
        raise RuntimeError(f"conversion skipped {report.skipped[0].path}: {report.skipped[0].reason}")
    return {"seconds": seconds, "videos": len(report.videos), "frames": sum(v.frames for v in report.videos)}


def decode_timing(args: dict[str, Any]) -> dict[str, Any]:
    """Seconds to decode every frame (RGB24) and the audio of ``paths`` in ``workers`` processes
    (``jpeg_quality``: each frame JPEG-encoded too)."""
    from .limits import decode_only

    frames, seconds = decode_only(args["paths"], workers=args["workers"], jpeg_quality=args.get("jpeg_quality", 0))
    return {"seconds": seconds, "videos": len(args["paths"]), "frames": frames}


def convert_memory(args: dict[str, Any]) -> dict[str, Any]:
    """Peak RSS of a one-worker (in-process) conversion, and the RSS before it started."""
    import shutil

    from clipshards.convert import convert

    shutil.rmtree(args["out"], ignore_errors=True)  # else the converter finds its own output and does nothing
    before = peak_rss_mib()
    report = convert(
        args["root"], args["out"], frames_per_clip=args["frames_per_clip"], step_between_clips=args["step_between_clips"],
        layout="clips", codec=args["codec"], workers=1, progress=False, yes=True,
    )
    shutil.rmtree(args["out"], ignore_errors=True)
    if report.skipped or not report.clips or report.resumed_shards:
        raise RuntimeError(f"conversion of {args['root']} gave {report.clips} clips ({report.resumed_shards} shards reused), skipped {len(report.skipped)} videos")
    return {"peak_mib": peak_rss_mib(), "before_mib": before, "clips": report.clips,
            "frames": sum(v.frames for v in report.videos)}


class HwmPoller:
    """Keeps the largest ``VmHWM`` seen of each child process (DataLoader workers)."""

    def __init__(self, interval: float = 0.02):
        self.peaks: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(interval,), daemon=True)

    def _run(self, interval: float) -> None:
        while not self._stop.is_set():
            self.poll()
            time.sleep(interval)

    def poll(self) -> None:
        for pid in children_pids():
            v = vm_hwm_mib(pid)
            if v == v:
                self.peaks[pid] = max(self.peaks.get(pid, 0.0), v)

    def __enter__(self) -> "HwmPoller":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()


def loader_memory(args: dict[str, Any]) -> dict[str, Any]:
    """Peak RSS of each DataLoader worker (and of the main process) over one epoch."""
    import torch  # noqa: F401

    from clipshards.loader import StreamingKinetics

    base = peak_rss_mib()
    ds = StreamingKinetics(args["out"], "train", shuffle=True, shuffle_buffer=args["shuffle_buffer"],
                           block_size=args["block_size"], seed=0)
    loader = ds.loader(batch_size=args["batch_size"], num_workers=args["workers"], persistent_workers=args["workers"] > 0)
    clips = 0
    limit = args.get("clips", 0)
    with HwmPoller() as poller:
        it = iter(loader)
        for batch in it:
            clips += int(batch.label.shape[0])
            if limit and clips >= limit:
                break
        poller.poll()
        workers = sorted(poller.peaks.values())
        del it
    return {"worker_peak_mib": workers, "main_peak_mib": peak_rss_mib(), "main_before_mib": base, "clips": clips,
            "clip_bytes": ds.index.clip_bytes, "shuffle_buffer": ds.shuffle_buffer, "block_size": ds.block_size}


KINDS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "first_batch": first_batch, "convert_timing": convert_timing, "decode_timing": decode_timing,
    "convert_memory": convert_memory, "loader_memory": loader_memory,
}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        raise SystemExit("usage: python -m benchmarks.probe JSON")
    args = json.loads(argv[0])
    kind = args.get("kind")
    if kind not in KINDS:
        raise SystemExit(f"unknown probe kind {kind!r} (known: {sorted(KINDS)})")
    sys.stdout.write(json.dumps(KINDS[kind](args)) + "\n")


if __name__ == "__main__":
    main()
