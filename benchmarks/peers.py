"""``python -m benchmarks.peers``: clipshards side by side with the other ways to feed video clips.

On the harness's Kinetics-like sets (T=16, S=16; 340x256 and 160x120 clips), one shuffled
epoch, batch 8, DataLoader ``num_workers`` 0 and 2, it measures clips/s (a consumer that
reads each clip, and one that collates batches), the time to the first batch, peak RSS and
the bytes stored of:

1. decoding the source videos on the fly: torchcodec (CPU), PyAV (torchvision's way), decord;
2. the same pre-decoded clips (raw uint8 and JPEG q90) in MosaicML Streaming (MDS), LitData
   and plain ``wds.WebDataset``;
3. clipshards ``StreamingKinetics`` and ``IndexedKinetics``.

Every configuration runs in a fresh process (``benchmarks.peers_probe``). Peers that are not
installed, or do not import, are reported as skipped rows. Results: ``peers.md`` and
``peers.json`` in ``--out`` (default ``benchmarks/results``); the table is printed too.

Installing the peers (``pip install 'clipshards[bench]'`` brings torchcodec and decord):

- torchcodec is ABI-tied to torch: 0.13 for torch 2.13 (PyPI's 0.14+ wheels need CUDA torch).
  It loads the system's FFmpeg (4-8): ``apt-get install libavcodec59 libavformat59 libavutil57
  libswscale6 libswresample4 libavdevice59 libavfilter8`` on Debian 12.
- LitData and MosaicML Streaming require torchvision, whose PyPI wheels pull another (CUDA)
  torch, and MosaicML pins numpy<2.2: install them without dependencies, then their light ones::

    pip install --no-deps litdata==0.2.76 lightning-utilities==0.15.3
    pip install --no-deps mosaicml-streaming==0.13.0 'transformers<5' 'huggingface-hub<1' \\
        safetensors 'tokenizers<0.23' Brotli 'python-snappy<1' cramjam 'zstd<2' catalogue

  (``streaming`` is imported without its torchvision datasets: see ``import_streaming``.)
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
import time
from typing import Any, Callable, Optional, Sequence

if __package__ in (None, ""):  # ``python benchmarks/peers.py``
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import data  # noqa: E402
from benchmarks.measure import Stat, run_python  # noqa: E402
from benchmarks.peers_config import PeersConfig, parse_size, quick_peers_config  # noqa: E402
from benchmarks.peers_readers import RunSpec  # noqa: E402
from benchmarks.peers_registry import PEERS, missing, peer, version  # noqa: E402
from benchmarks.peers_report import Row, render, summary_rows  # noqa: E402
from benchmarks.peers_stores import folder_bytes, is_built, store_desc, warm_folder  # noqa: E402
from benchmarks.report import machine  # noqa: E402
from benchmarks.run import load_average  # noqa: E402

logger = logging.getLogger("benchmarks.peers")

__all__ = ["main", "build_parser", "run", "config_from_args"]

TABLE_NAME, JSON_NAME = "peers.md", "peers.json"


class _Size:
    """One clip size's set: the synthetic videos, their conversions and the peers' copies."""

    def __init__(self, cfg: PeersConfig, size: str) -> None:
        self.cfg, self.size = cfg, size
        self.bench = cfg.bench_config(size)
        self.root = data.build_dataset(self.bench)
        self.outs = {c: data.converted(self.bench, self.root, c) for c in ("raw", *cfg.codecs)}
        w, h = parse_size(size)
        self.clip_bytes = cfg.frames_per_clip * w * h * 3

    def store(self, key: str, codec: str) -> str:
        return os.path.join(self.bench.work, f"{key}_{codec}") if peer(key).family == "stored" and key != "webdataset" else ""

    def spec(self, key: str, codec: str, workers: int) -> RunSpec:
        out = self.outs["raw" if codec == "video" else codec]
        return RunSpec(key=key, codec=codec, workers=workers, batch_size=self.cfg.batch_size, seed=0, root=self.root,
                       out=out, store=self.store(key, codec), frames_per_clip=self.cfg.frames_per_clip,
                       step_between_clips=self.cfg.step_between_clips,
                       shuffle_buffer=max(1, (self.cfg.shuffle_mib << 20) // self.clip_bytes))

    def read_folder(self, key: str, codec: str) -> str:
        """What the peer reads: its copy, clipshards' split folder, or the source videos."""
        if codec == "video":
            return os.path.join(self.root, "train")
        return self.store(key, codec) or os.path.join(self.outs[codec], "train")


def _codecs(cfg: PeersConfig, key: str) -> tuple[str, ...]:
    return ("video",) if peer(key).family == "decode" else cfg.codecs


def _error_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return (lines[-1] if lines else type(exc).__name__)[:200]


def _measure(cfg: PeersConfig, s: _Size, key: str, codec: str, workers: int, why: Optional[str]) -> Row:
    row = Row(size=s.size, codec=codec, key=key, workers=workers, version=version(peer(key)), load=load_average())
    folder = s.read_folder(key, codec)
    if why:
        row.status, row.reason = "skipped", why
        return row
    try:
        if s.store(key, codec) and not is_built(folder, store_desc(key, s.outs[codec])):
            run_python("benchmarks.peers_probe", {"kind": "build", "key": key, "out": s.outs[codec], "store": folder})
        row.stored_bytes = folder_bytes(folder, ".tar" if key == "webdataset" else "")
        warm_folder(folder)
        res = run_python("benchmarks.peers_probe", {"kind": "measure", "spec": s.spec(key, codec, workers).to_json(),
                                                    "repeats": cfg.repeats, "clips": cfg.clips(codec),
                                                    "torch_threads": cfg.torch_threads})
    except (RuntimeError, OSError, ValueError) as exc:
        row.status, row.reason = "failed", _error_line(exc)
        logger.warning("%s %s %s workers=%d failed: %s", s.size, key, codec, workers, exc)
        return row
    row.read, row.collate = Stat.of(res["read"], "clips/s"), Stat.of(res["collate"], "clips/s")
    row.first_batch_s, row.check = res["first_batch_s"], res["check"]
    row.rss_main_mib, row.rss_before_mib = res["rss_main_mib"], res["rss_before_mib"]
    row.rss_worker_mib = max(res["rss_workers_mib"], default=float("nan"))
    logger.info("%s %-20s %-5s w%d: read %s, collate %s, first batch %.3f s", s.size, key, codec, workers,
                row.read.fmt(), row.collate.fmt(), row.first_batch_s)
    return row


def run(cfg: PeersConfig, *, command: str, progress: Callable[[str], None] = logger.info) -> dict[str, str]:
    """Measure every (size, peer, codec, workers) and write ``peers.md`` and ``peers.json``."""
    started = time.perf_counter()
    load_before = load_average()
    why = {key: missing(peer(key)) for key in cfg.peers}
    rows: list[Row] = []
    for size in cfg.sizes:
        progress(f"{size}: building the set and its conversions")
        s = _Size(cfg, size)
        for codec in ("video", *cfg.codecs):  # rows compared with each other are measured close in time
            for w in cfg.workers:
                for key in (k for k in cfg.peers if codec in _codecs(cfg, k)):
                    rows.append(_measure(cfg, s, key, codec, w, why[key]))
    summary = summary_rows(rows)
    seconds = time.perf_counter() - started
    conditions = (f"Load average (1 min) {load_before} at the start, {load_average()} at the end: the machine is shared, "
                  "so other work adds noise (see the min-max spreads).")
    head = (f"Command: `{command}` ({seconds / 60:.1f} min). Machine: {machine()}. {conditions} Sets: "
            + "; ".join(f"{z}: {cfg.videos(z)} videos of {cfg.seconds:g} s, {cfg.videos(z) * cfg.clips_per_video} clips"
                        for z in cfg.sizes)
            + f" (H.264 GOP {cfg.gop}, {cfg.fps} fps, AAC stereo; T={cfg.frames_per_clip}, S={cfg.step_between_clips}).")
    table = render(rows, summary, config=cfg.to_json(), head=head)
    os.makedirs(cfg.out, exist_ok=True)
    paths = {"table": os.path.join(cfg.out, TABLE_NAME), "json": os.path.join(cfg.out, JSON_NAME)}
    with open(paths["table"], "w") as fh:
        fh.write(table)
    with open(paths["json"], "w") as fh:
        json.dump({"command": command, "machine": machine(), "conditions": conditions, "seconds": seconds,
                   "config": cfg.to_json(), "rows": [r.to_json() for r in rows], "summary": summary}, fh, indent=1)
    return paths


def _list(kind: Callable[[str], Any]) -> Callable[[str], tuple]:
    def parse(text: str) -> tuple:
        try:
            values = tuple(kind(x.strip()) for x in text.split(",") if x.strip())
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        if not values:
            raise argparse.ArgumentTypeError("expected at least one value")
        return values

    return parse


def build_parser() -> argparse.ArgumentParser:
    d = PeersConfig()
    p = argparse.ArgumentParser(prog="python -m benchmarks.peers", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a tiny set, one repeat, num_workers 0: a smoke run")
    p.add_argument("--out", default=None, help="folder for peers.md and peers.json [benchmarks/results]")
    p.add_argument("--work", default=None, help=f"cache for the sets and the peers' copies [{d.work}]")
    p.add_argument("--peers", type=_list(str), default=None, help=f"subset of {','.join(x.key for x in PEERS)} [all]")
    p.add_argument("--sizes", type=_list(str), default=None, help=f"clip sizes WxH [{','.join(d.sizes)}]")
    p.add_argument("--codecs", type=_list(str), default=None, help="stored codecs [raw,jpeg]")
    p.add_argument("--workers", type=_list(int), default=None, help=f"DataLoader num_workers [{','.join(map(str, d.workers))}]")
    p.add_argument("--repeats", type=int, default=None, help=f"epochs per configuration (median reported) [{d.repeats}]")
    p.add_argument("--batch-size", type=int, default=None, help=f"[{d.batch_size}]")
    p.add_argument("--raw-mb", type=float, default=None, help=f"raw clip MB per set (sets the video count) [{d.raw_mb:g}]")
    p.add_argument("--clips-raw", type=int, default=None, help=f"clips a raw run, 0: the epoch [{d.clips_raw}]")
    p.add_argument("--clips-jpeg", type=int, default=None, help=f"clips a jpeg run [{d.clips_jpeg}]")
    p.add_argument("--clips-video", type=int, default=None, help=f"clips a decoder run [{d.clips_video}]")
    p.add_argument("--torch-threads", type=int, default=None, help=f"torch intra-op threads [{d.torch_threads}]")
    p.add_argument("--quiet", "-q", action="store_true", help="warnings only")
    return p


def config_from_args(args: argparse.Namespace) -> PeersConfig:
    names = ["out", "work", "peers", "sizes", "codecs", "workers", "repeats", "batch_size", "raw_mb", "clips_raw",
             "clips_jpeg", "clips_video", "torch_threads"]
    changes = {n: getattr(args, n) for n in names if getattr(args, n) is not None}
    if args.work and not args.out:
        changes["out"] = os.path.join(args.work, "results")
    return quick_peers_config(**changes) if args.quick else PeersConfig(**changes)


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("clipshards").setLevel(logging.WARNING)
    try:
        cfg = config_from_args(args)
    except ValueError as exc:
        parser.error(str(exc))
    paths = run(cfg, command=" ".join(["python -m benchmarks.peers"] + [shlex.quote(a) for a in argv]))
    with open(paths["table"]) as fh:
        sys.stdout.write(fh.read())
    logger.info("wrote %s", ", ".join(paths.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
