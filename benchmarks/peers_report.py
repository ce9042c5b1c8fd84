"""The side-by-side results as Markdown: one table per clip size, a summary of clipshards
against the best peer, and the notes that say how each peer was used."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Optional, Sequence

from .measure import Stat
from .peers_registry import PEERS, peer
from .report import markdown_table

__all__ = ["Row", "exact_cell", "render", "summary_rows", "TARGETS"]

TARGETS = {"raw": 1.2, "jpeg": 1.1}  # clipshards' fastest row ahead of the best peer (issue 18)


@dataclass
class Row:
    """One measured (or skipped) configuration."""

    size: str
    codec: str
    key: str
    workers: int
    status: str = "ok"  # ok | skipped | failed
    reason: str = ""
    version: str = ""
    read: Stat = field(default_factory=Stat)
    collate: Stat = field(default_factory=Stat)
    first_batch_s: float = float("nan")
    rss_main_mib: float = float("nan")
    rss_before_mib: float = float("nan")
    rss_worker_mib: float = float("nan")
    stored_bytes: int = 0
    check: Optional[dict[str, Any]] = None
    load: str = ""  # the 1-minute load average when the row's process started

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["read"], d["collate"] = self.read.to_json(), self.collate.to_json()
        return d


def exact_cell(check: Optional[dict[str, Any]], codec: str) -> str:
    """How a peer's clips compare with ``IndexedKinetics`` (the torchvision tuples)."""
    if not check or not check.get("clips"):
        return "n/a"
    n = check["clips"]
    if not check["labels_equal"]:
        return f"no: labels differ ({n} clips)"
    if not check["video_shapes_equal"]:
        video = "video shape differs"
    else:
        video = "video exact" if check["video_max_diff"] == 0 else f"video ±{check['video_max_diff']}"
    if not check["audio"]:
        audio = "no audio"
    elif not check["audio_shapes_equal"]:
        audio = "audio length differs"
    elif check["audio_max_diff"] == 0:
        audio = "audio exact"
    else:
        audio = f"audio ±{check['audio_max_diff']:.1g}"
    if video == "video exact" and audio == "audio exact":
        return f"yes ({n} clips{', = clipshards jpeg' if codec == 'jpeg' else ''})"
    return f"{video}, {audio} ({n} clips)"


def _mib(x: float) -> str:
    return "n/a" if x != x else f"{x:,.0f}"


def _stored(n: int) -> str:
    if not n:
        return "n/a"
    mib = n / 2**20
    return f"{mib:,.0f} MiB" if mib >= 10 else f"{mib:.2g} MiB"


def _row_cells(r: Row) -> list[str]:
    p = peer(r.key)
    name = f"{p.label} {r.version}".strip()
    if r.status != "ok":
        return [r.codec, name, str(r.workers), f"{r.status}: {r.reason}", "", "", "", _stored(r.stored_bytes), "",
                p.equal_ranks, p.resume, r.load]
    rss = f"{_mib(r.rss_main_mib)}" + (f" / {_mib(r.rss_worker_mib)}" if r.workers else "")
    return [r.codec, name, str(r.workers), r.read.fmt(), r.collate.fmt(), f"{r.first_batch_s:.3f} s", rss,
            _stored(r.stored_bytes), exact_cell(r.check, r.codec), p.equal_ranks, p.resume, r.load]


HEADERS = ["Codec", "Peer", "W", "read: clips/s", "collate: clips/s", "first batch", "peak RSS MiB (main / worker)",
           "stored", "exact torchvision tuples", "equal rank counts", "resume", "load"]


def _best(rows: Sequence[Row], consumer: str) -> Optional[Row]:
    ok = [r for r in rows if r.status == "ok" and getattr(r, consumer).values]
    return max(ok, key=lambda r: getattr(r, consumer).median, default=None)


def summary_rows(rows: Sequence[Row]) -> list[dict[str, Any]]:
    """Per size, stored codec, consumer and workers: clipshards' fastest row against the best other peer."""
    out = []
    keys = sorted({(r.size, r.codec, r.workers) for r in rows if r.codec in TARGETS}, key=lambda k: (k[0], k[1], k[2]))
    for size, codec, w in keys:
        group = [r for r in rows if (r.size, r.codec, r.workers) == (size, codec, w)]
        for consumer in ("read", "collate"):
            mine = _best([r for r in group if peer(r.key).family == "clipshards"], consumer)
            other = _best([r for r in group if peer(r.key).family != "clipshards"], consumer)
            if mine is None or other is None:
                continue
            ratio = getattr(mine, consumer).median / getattr(other, consumer).median
            out.append({"size": size, "codec": codec, "workers": w, "consumer": consumer, "clipshards": mine.key,
                        "clipshards_rate": getattr(mine, consumer).median, "peer": other.key,
                        "peer_rate": getattr(other, consumer).median, "ratio": ratio, "target": TARGETS[codec],
                        "met": ratio >= TARGETS[codec]})
    return out


def _summary_table(summary: Sequence[dict[str, Any]]) -> str:
    rows = [[s["size"], s["codec"], s["consumer"], str(s["workers"]), f"{s['clipshards']} {s['clipshards_rate']:,.0f}",
             f"{s['peer']} {s['peer_rate']:,.0f}", f"{s['ratio']:.2f}x", f"{s['target']:g}x",
             "yes" if s["met"] else "**no**"] for s in summary]
    return markdown_table(["Size", "Codec", "Consumer", "W", "clipshards, fastest (clips/s)", "best peer (clips/s)",
                           "ratio", "target", "met"], rows)


def notes(config: dict[str, Any]) -> list[str]:
    b = config["batch_size"]
    lines = [
        f"read: each clip is taken one at a time (`batch_size=None` through the peer's loader with workers) and one "
        f"byte of every 4 KiB page of its video and audio is read, so lazily mapped data is paid for. collate: "
        f"batches of {b} made by `collate_clips` (stacked video, padded audio) in every peer, as a training loop "
        "receives them. Rates leave out each worker's first batch; first batch is from opening the dataset "
        "(imports done) to holding the first collated batch, in a fresh process.",
        "Peak RSS: VmHWM of the measuring process over the collating epochs (it includes Python, torch and the "
        "peer's imports, ~250-350 MiB) and of the largest DataLoader worker. Stored: bytes on disk of what the "
        "peer reads (the source videos for the decoders, clipshards' shards for clipshards and webdataset).",
        "load: the machine's 1-minute load average as the row started (2 cores; above 2, other work competed).",
        "Exact: a few clips of each peer, read unshuffled, against `IndexedKinetics` on the same conversion "
        "(raw: torchvision's tuples; jpeg: the same JPEG bytes decoded the same way, so = clipshards jpeg).",
        f"Each configuration runs in a fresh process, page cache warm, torch intra-op threads = "
        f"{config['torch_threads']} (the DataLoader's own setting in workers; on a shared 2-core machine two "
        "OpenMP threads made collation 10-60x slower and erratic), median (min-max) of "
        f"{config['repeats']} epochs (or first clips: raw {config['clips_raw'] or 'all'}, jpeg "
        f"{config['clips_jpeg'] or 'all'}, decoders {config['clips_video'] or 'all'}; at least 0.5 s of them, "
        "or the epoch: a fast reader's 400 clips pass in 70 ms).",
        "clipshards StreamingKinetics with 0 workers and one clip at a time decodes the next 8 JPEG clips "
        "together on 2 threads (`read_ahead`, a pipeline stage independent of torch's intra-op threads, as "
        "LitData's chunk-preparing thread is); raw clips are read in the caller's thread.",
    ]
    lines += [f"{p.label}: {p.how}." for p in PEERS if p.key in config["peers"]]
    return lines


def _order(r: Row) -> tuple[int, int, int]:
    codecs = ("video", "raw", "jpeg")
    return codecs.index(r.codec), [p.key for p in PEERS].index(r.key), r.workers


def render(rows: Sequence[Row], summary: Sequence[dict[str, Any]], *, config: dict[str, Any], head: str) -> str:
    parts = ["## Side by side: clipshards and other ways to feed clips", "", head, "",
             "### Summary: clipshards' fastest row against the best other peer", "", _summary_table(summary)]
    for size in config["sizes"]:
        table = [_row_cells(r) for r in sorted((r for r in rows if r.size == size), key=_order)]
        parts += ["", f"### {size} clips", "", markdown_table(HEADERS, table)]
    parts += [""] + [f"- {n}" for n in notes(config)]
    return "\n".join(parts) + "\n"
