"""One peer measurement in a fresh interpreter: ``python -m benchmarks.peers_probe JSON``.

``{"kind": "measure", "spec": RunSpec fields, "repeats": R, "clips": N, "torch_threads": 1}``: opens the peer
(the clock starts after the imports), takes its first collated batch, then times R epochs
(or N clips of each) with the collating consumer while polling peak RSS, then R with the
reading consumer, then compares a few unshuffled clips with ``IndexedKinetics``.
``{"kind": "build", "key": ..., "out": ..., "store": ...}``: writes (or finds) a peer's copy.
Prints one JSON line, the last line of stdout.
"""

from __future__ import annotations

import gc
import json
import logging
import sys
import time
import warnings
from typing import Any, Iterable, Iterator, Optional

import torch

from .bench_loader import steady_rate, warmup_batches
from .measure import peak_rss_mib
from .peers_readers import RunSpec, open_reader, reference
from .peers_registry import missing, peer
from .probe import HwmPoller

logger = logging.getLogger(__name__)

__all__ = ["measure", "build", "touch", "compare", "main"]

PAGE = 4096
MIN_SECONDS = 0.5
"""A rate is timed over at least this long (or the whole epoch): a fast reader's 400 clips pass
in 70 ms, where one stall of a shared machine moved the figure by 20%."""


def touch(t: torch.Tensor) -> int:
    """Read one byte of every page of ``t``'s memory (a mapped clip is faulted in, as a
    consumer reading it would): the cheapest honest "read"."""
    flat = torch.empty(0, dtype=torch.uint8).set_(t.untyped_storage())
    return int(flat[::PAGE].sum()) if flat.numel() else 0


def _read_items(items: Iterable[Any]) -> Iterator[tuple[None, None, tuple[int]]]:
    """The reading consumer: touches each clip's video and audio, one clip at a time
    (yielded as one-clip "batches" for :func:`steady_rate`)."""
    for video, audio, label in items:
        touch(video)
        touch(audio)
        yield None, None, (label,)


def _timed_first(batches: Iterable[Any], start: float, out: list[float]) -> Iterator[Any]:
    for i, b in enumerate(batches):
        if i == 0:
            out.append(time.perf_counter() - start)
        yield b


def _rate(batches: Iterable[Any], clips: int, workers: int) -> float:
    n, seconds = steady_rate(batches, clips, warmup=warmup_batches(workers, len(batches) if hasattr(batches, "__len__") else 0),
                             min_seconds=MIN_SECONDS)
    return n / seconds


def measure(args: dict[str, Any]) -> dict[str, Any]:
    spec = RunSpec(**args["spec"])
    repeats, clips = int(args["repeats"]), int(args["clips"])
    why = missing(peer(spec.key))  # imports the peer's modules before the clock, as a training script has
    if why:
        raise RuntimeError(f"{spec.key} is not usable: {why}")
    warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
    torch.set_num_threads(int(args.get("torch_threads", 1)))
    before = peak_rss_mib()
    gc.collect()
    first: list[float] = []
    collate, read = [], []
    with HwmPoller() as poller:
        start = time.perf_counter()
        reader = open_reader(spec)
        for r in range(repeats):
            batches = reader.loader("collate", r)
            collate.append(_rate(_timed_first(batches, start, first) if r == 0 else batches, clips, spec.workers))
        poller.poll()
        workers = sorted(poller.peaks.values())
    main_peak = peak_rss_mib()
    for r in range(repeats):
        read.append(_rate(_read_items(reader.loader("read", repeats + r)), clips, spec.workers))
    ref = reference(spec)
    return {"first_batch_s": first[0], "collate": collate, "read": read, "rss_before_mib": before,
            "rss_main_mib": main_peak, "rss_workers_mib": workers,
            "check": compare(reader.check_items(), ref) if ref is not None else None}


def compare(items: Iterable[tuple[int, Any]], ref: Any) -> dict[str, Any]:
    """Largest differences between ``items`` (global index, tuple) and ``ref[index]``."""
    out: dict[str, Any] = {"clips": 0, "labels_equal": True, "video_shapes_equal": True, "audio_shapes_equal": True,
                           "video_max_diff": 0, "audio_max_diff": 0.0, "audio": True}
    for g, (video, audio, label) in items:
        rv, ra, rl = ref[g]
        out["clips"] += 1
        out["labels_equal"] &= int(label) == int(rl)
        if tuple(video.shape) != tuple(rv.shape):
            out["video_shapes_equal"] = False
        else:
            out["video_max_diff"] = max(out["video_max_diff"], int((video.int() - rv.int()).abs().max()))
        if audio.numel() == 0 and ra.numel() > 0:
            out["audio"] = False
        elif tuple(audio.shape) != tuple(ra.shape):
            out["audio_shapes_equal"] = False
        elif audio.numel():
            out["audio_max_diff"] = max(out["audio_max_diff"], float((audio.double() - ra.double()).abs().max()))
    return out


def build(args: dict[str, Any]) -> dict[str, Any]:
    from .peers_stores import build_store

    why = missing(peer(args["key"]))
    if why:
        raise RuntimeError(f"{args['key']} is not usable: {why}")
    return build_store(args["key"], args["out"], args["store"])


KINDS = {"measure": measure, "build": build}


def main(argv: Optional[list[str]] = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        raise SystemExit("usage: python -m benchmarks.peers_probe JSON")
    args = json.loads(argv[0])
    if args.get("kind") not in KINDS:
        raise SystemExit(f"unknown kind {args.get('kind')!r} (known: {sorted(KINDS)})")
    logging.basicConfig(level=logging.WARNING)
    sys.stdout.write(json.dumps(KINDS[args["kind"]](args)) + "\n")


if __name__ == "__main__":
    main()
