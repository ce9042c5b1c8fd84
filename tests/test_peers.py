"""``python -m benchmarks.peers``: it runs on a tiny set with whatever peers are installed,
reports a peer that does not import as a skipped row (not a failure), checks each peer's
clips against ``IndexedKinetics``, and its report logic picks and compares the right rows.

No timing is asserted: the figures are measured on demand.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks.measure import Stat
from benchmarks.peers import build_parser, config_from_args, main
from benchmarks.peers_config import PeersConfig, parse_size, quick_peers_config
from benchmarks.peers_decode import clip_starts
from benchmarks.peers_probe import touch
from benchmarks.peers_registry import PEERS
from benchmarks.peers_report import Row, exact_cell, summary_rows

REPO = Path(__file__).resolve().parents[1]
ALWAYS = ("pyav", "webdataset", "clipshards-streaming", "clipshards-indexed")  # project dependencies


def _run_peers(*args: str, shadow: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    path = os.pathsep.join([str(shadow), str(REPO), os.environ.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-m", "benchmarks.peers", *args], cwd=REPO, env=dict(os.environ, PYTHONPATH=path),
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_quick_run_measures_installed_peers_and_skips_the_rest(tmp_path):
    shadow = tmp_path / "shadow"  # a decord that does not import, whether or not the real one is installed
    shadow.mkdir()
    (shadow / "decord.py").write_text("raise ImportError('decord hidden by the test')\n")
    out = tmp_path / "results"
    proc = _run_peers("--quick", "--work", str(tmp_path / "work"), "--out", str(out), shadow=shadow)
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = json.loads((out / "peers.json").read_text())
    rows = results["rows"]
    assert {r["key"] for r in rows} == {p.key for p in PEERS}
    assert not [r for r in rows if r["status"] == "failed"], [r["reason"] for r in rows if r["status"] == "failed"]
    decord = [r for r in rows if r["key"] == "decord"]
    assert [r["status"] for r in decord] == ["skipped"] and "decord hidden by the test" in decord[0]["reason"]
    for key in ALWAYS:
        assert {r["status"] for r in rows if r["key"] == key} == {"ok"}, key
    for r in (r for r in rows if r["status"] == "ok"):
        assert r["read"]["median"] > 0 and r["collate"]["median"] > 0, r["key"]
        assert 0 < r["first_batch_s"] < 60 and r["rss_main_mib"] > 50 and r["stored_bytes"] > 0, r["key"]
        check = r["check"]
        assert check["clips"] >= 2 and check["labels_equal"], r["key"]
        if r["key"] != "pyav":  # the harness's PyAV baseline cuts audio its own way (see the report)
            assert check["video_shapes_equal"] and check["audio_shapes_equal"], (r["key"], check)
        assert check["video_shapes_equal"] and check["video_max_diff"] == 0, (r["key"], check)
        if r["codec"] != "video":  # stored peers hold the converter's very arrays / JPEG bytes
            assert check["audio"] and check["audio_max_diff"] == 0.0, (r["key"], check)
    stored = [r for r in rows if r["codec"] != "video"]
    assert {r["codec"] for r in stored} == {"raw", "jpeg"}
    assert results["summary"] and all(s["ratio"] > 0 for s in results["summary"])
    table = (out / "peers.md").read_text()
    assert table == proc.stdout
    assert "### Summary: clipshards' fastest row against the best other peer" in table and "### 64x48 clips" in table
    assert "| skipped: decord: ImportError: decord hidden by the test" in table
    assert "Load average" in table and "--quick" in table


def test_sizes_and_video_counts():
    cfg = PeersConfig()
    assert cfg.clips_per_video == 18
    assert (cfg.videos("340x256"), cfg.videos("160x120")) == (12, 55)  # about 900 MB of raw clips each
    assert cfg.bench_config("160x120").width == 160 and cfg.bench_config("160x120").videos == 55
    assert parse_size("160x120") == (160, 120)
    assert cfg.clips("jpeg") == cfg.clips_jpeg and cfg.clips("video") == cfg.clips_video
    assert quick_peers_config().quick and quick_peers_config().workers == (0,)
    assert list(clip_starts(300, 16, 16)) == list(range(0, 285, 16)) and len(clip_starts(15, 16, 16)) == 0


@pytest.mark.parametrize("changes, word", [
    ({"sizes": ("161x120",)}, "even"), ({"sizes": ("160by120",)}, "WIDTHxHEIGHT"), ({"peers": ("ffcv",)}, "peers"),
    ({"codecs": ("png",)}, "codecs"), ({"workers": (-1,)}, "workers"), ({"repeats": 0}, "repeats"),
    ({"clips_jpeg": -1}, "clips_jpeg"), ({"raw_mb": 0.0}, "raw_mb"),
])
def test_bad_config_names_the_value(changes, word):
    with pytest.raises(ValueError, match=word):
        PeersConfig(**changes)


def test_cli_options_and_errors(capsys, tmp_path):
    args = build_parser().parse_args(["--quick", "--work", str(tmp_path), "--peers", "webdataset,pyav", "--workers", "0,2"])
    cfg = config_from_args(args)
    assert cfg.quick and cfg.peers == ("webdataset", "pyav") and cfg.workers == (0, 2)
    assert cfg.out == os.path.join(str(tmp_path), "results")
    with pytest.raises(SystemExit) as exc:
        main(["--sizes", "161x120"])
    assert exc.value.code == 2 and "even" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--workers", "x"])


def test_touch_reads_one_byte_of_every_page():
    pages = torch.zeros(5 * 4096, dtype=torch.uint8)
    pages[::4096] = torch.arange(1, 6, dtype=torch.uint8)
    pages[1::4096] = 100  # not at a page start: not read
    assert touch(pages) == 15
    video = pages.view(5, 4096, 1, 1).permute(0, 2, 3, 1)  # a non-contiguous view: its whole storage is read
    assert touch(video) == 15
    assert touch(torch.zeros(0, dtype=torch.float32)) == 0


def _row(key: str, codec: str, read: float, collate: float, workers: int = 0) -> Row:
    return Row(size="160x120", codec=codec, key=key, workers=workers, read=Stat.of([read]), collate=Stat.of([collate]))


def test_summary_compares_fastest_clipshards_with_best_peer():
    rows = [_row("clipshards-streaming", "raw", 4000, 2400), _row("clipshards-indexed", "raw", 2600, 2500),
            _row("litdata", "raw", 5400, 800), _row("mds", "raw", 1200, 360),
            Row(size="160x120", codec="raw", key="webdataset", workers=0, status="skipped", reason="not installed"),
            _row("torchcodec", "video", 90, 80)]
    summary = {s["consumer"]: s for s in summary_rows(rows)}
    read, collate = summary["read"], summary["collate"]
    assert (read["clipshards"], read["peer"]) == ("clipshards-streaming", "litdata")
    assert read["ratio"] == pytest.approx(4000 / 5400) and read["met"] is False and read["target"] == 1.2
    assert (collate["clipshards"], collate["peer"]) == ("clipshards-indexed", "litdata")
    assert collate["ratio"] == pytest.approx(2500 / 800) and collate["met"] is True
    assert all(s["codec"] == "raw" for s in summary.values())  # decoders are not a stored codec's rival


def test_exact_cell_says_what_differs():
    same = {"clips": 4, "video_max_diff": 0, "audio_max_diff": 0.0, "labels_equal": True, "video_shapes_equal": True,
            "audio_shapes_equal": True, "audio": True}
    assert exact_cell(same, "raw") == "yes (4 clips)"
    assert exact_cell(same, "jpeg") == "yes (4 clips, = clipshards jpeg)"
    assert exact_cell({**same, "audio_max_diff": 1.5e-7}, "video") == "video exact, audio ±1e-07 (4 clips)"
    assert exact_cell({**same, "audio": False}, "video") == "video exact, no audio (4 clips)"
    assert exact_cell({**same, "audio_shapes_equal": False}, "video") == "video exact, audio length differs (4 clips)"
    assert exact_cell({**same, "video_shapes_equal": False}, "raw") == "video shape differs, audio exact (4 clips)"
    assert exact_cell({**same, "video_max_diff": 3}, "jpeg") == "video ±3, audio exact (4 clips)"
    assert exact_cell({**same, "labels_equal": False}, "raw").startswith("no: labels differ")
    assert exact_cell(None, "raw") == "n/a"
