"""The benchmark harness: it runs end to end on a tiny dataset and writes its table, chart and
JSON; its baseline reads the same clips the converter stores; its helpers parse real shards.

No timing is asserted: the harness measures on demand (``python -m benchmarks.run``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

from benchmarks.baseline import TorchvisionStyleClips, scan_video
from benchmarks.config import SECTIONS, BenchConfig, quick_config
from benchmarks.limits import ShardSet, iter_tar_members, jpeg_decode_limit, jpeg_frames, raw_storage_limit
from benchmarks.measure import Stat
from benchmarks.report import Check, Section, markdown_table
from benchmarks.run import build_parser, config_from_args, main
from clipshards.convert.layout import discover
from clipshards.convert.schema import decode_sample, member_field

REPO = Path(__file__).resolve().parents[1]


def _run_harness(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "benchmarks.run", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_quick_run_writes_table_chart_and_json(tmp_path):
    work = tmp_path / "work"
    out = tmp_path / "results"
    proc = _run_harness("--quick", "--work", str(work), "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = (out / "results.md").read_text()
    assert table.startswith("## Benchmarks")
    assert "| Target (issue 5) | Measured | Met |" in table
    for title in ("Loader throughput", "Converter throughput", "Time to the first batch", "Peak memory (RSS)"):
        assert f"### {title}" in table
    assert "Machine:" in table and "cores" in table
    assert "--quick" in table
    png = (out / "results.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    results = json.loads((out / "results.json").read_text())
    assert set(results["sections"]) == set(SECTIONS)
    assert results["config"]["quick"] is True
    loader = results["sections"]["loader"]["raw"]["clips_per_s"]
    for key in ("raw_clipshards_w0", "raw_clipshards_w2", "raw_baseline_w0", "raw_limit_w0", "jpeg_limit_w0"):
        assert loader[key]["median"] > 0, key
    checks = [c for s in results["sections"].values() for c in s["checks"]]
    assert all(c["met"] in (True, False) for c in checks)
    assert any("first batch" in c["target"] for c in checks)
    reads = [c for c in checks if "one ranged read of its frames and audio" in c["target"]]  # counted, not timed
    assert len(reads) == 2 and all(c["met"] for c in reads), reads
    # the harness cleans up after its converter runs and keeps its cache under --work only
    assert not (work / "convert_bench_out").exists()
    assert (work / "dataset" / "train").is_dir()


def test_sections_option_runs_only_those(tmp_path):
    work = tmp_path / "work"
    proc = _run_harness("--quick", "--work", str(work), "--sections", "first_batch", "--loader-workers", "0",
                        "--index-videos", "20,40")
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = (work / "results" / "results.md").read_text()
    assert "### Time to the first batch" in table and "### Loader throughput" not in table
    assert "| 40 | 0 |" in table and "| 40 | 2 |" not in table


def test_help_and_bad_arguments(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--quick", "--repeats", "--videos", "--sections", "--index-videos", "--out"):
        assert flag in text
    with pytest.raises(SystemExit) as exc:
        main(["--sections", "loader,nope"])
    assert exc.value.code == 2 and "nope" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["--quick", "--width", "63"])
    assert exc.value.code == 2 and "width=63" in capsys.readouterr().err


def test_config_validation_names_the_value():
    with pytest.raises(ValueError, match="repeats=0"):
        BenchConfig(repeats=0)
    with pytest.raises(ValueError, match="convert_videos=50"):
        BenchConfig(convert_videos=50)
    with pytest.raises(ValueError, match="sections"):
        BenchConfig(sections=("loader", "gpu"))
    with pytest.raises(ValueError, match="memory_seconds"):
        BenchConfig(memory_seconds=(60.0, 10.0))
    cfg = config_from_args(build_parser().parse_args(["--quick", "--repeats", "2", "--index-videos", "5,10"]))
    assert cfg.quick and cfg.repeats == 2 and cfg.index_videos == (5, 10) and cfg.videos == quick_config().videos


def test_stat_median_and_spread():
    s = Stat.of([3.0, 1.0, 2.0], "clips/s")
    assert s.median == 2.0 and s.low == 1.0 and s.high == 3.0
    assert s.spread_pct == pytest.approx(100.0)
    assert s.fmt() == "2 clips/s (1-3)"
    assert Stat.of([4.0]).fmt() == "4"
    assert s.scaled(10, "x").median == 20.0


def test_markdown_table_and_section_render():
    sec = Section("k", "Title", headers=["a", "b|c"], rows=[["1", "x|y"]], notes=["n"],
                  checks=[Check("t", "m", True)])
    md = sec.to_markdown()
    assert md.splitlines()[0] == "### Title"
    assert "| a | b\\|c |" in md and "| 1 | x\\|y |" in md and "- n" in md
    assert markdown_table(["h"], []).count("\n") == 1


def test_tar_walker_matches_tarfile(tiny_converted):
    shards = ShardSet.open(str(tiny_converted))
    path = shards.shard_paths()[0]
    with tarfile.open(path) as tf:
        expected = [(m.name, tf.extractfile(m).read()) for m in tf.getmembers()]
    with open(path, "rb") as fh:
        got = [(n, bytes(b)) for n, b in iter_tar_members(fh.read())]
    assert got == expected


def test_raw_storage_limit_reads_every_clip(tiny_converted):
    shards = ShardSet.open(str(tiny_converted))
    clips, nbytes, seconds = raw_storage_limit(shards)
    assert clips == shards.clips > 0 and seconds > 0
    samples = list(shards.iter_samples())
    first = decode_sample({member_field(n)[1]: b for n, b in iter_tar_members(samples[0])})
    assert nbytes >= clips * first["video"].nbytes
    assert len(list(shards.iter_samples(limit=3))) == 3


def test_jpeg_limit_decodes_every_frame(tiny_dataset, tmp_path):
    from clipshards.convert import convert

    out = tmp_path / "jpeg"
    convert(tiny_dataset, out, frames_per_clip=8, step_between_clips=8, codec="jpeg", workers=1, progress=False)
    shards = ShardSet.open(str(out))
    frames, audio_bytes = jpeg_frames(shards)
    assert len(frames) == shards.clips and all(len(f) == 8 for f in frames)
    assert audio_bytes > 0
    clips, nbytes, _ = jpeg_decode_limit(frames)
    assert clips == shards.clips and nbytes == clips * 8 * 48 * 64 * 3


def test_baseline_reads_the_clips_the_converter_stores(tiny_dataset, tiny_converted):
    """The torchvision-style reader (seek + decode per clip) gives the converter's frames, in the
    same global clip order, with the same labels."""
    videos = [(v.path, v.label) for v in discover(tiny_dataset, "train", ("mp4",)).videos]
    ds = TorchvisionStyleClips(videos, frames_per_clip=8, step_between_clips=4)
    shards = ShardSet.open(str(tiny_converted))
    assert len(ds) == shards.clips
    stored = [decode_sample({member_field(n)[1]: b for n, b in iter_tar_members(s)}) for s in shards.iter_samples()]
    for i in (0, 1, 5, len(ds) - 1):
        video, audio, label = ds[i]
        assert tuple(video.shape) == (8, 3, 48, 64)
        np.testing.assert_array_equal(video.permute(0, 2, 3, 1).numpy(), stored[i]["video"])
        assert label == stored[i]["label"]
        assert audio.dtype.is_floating_point and audio.shape[0] == 2 and audio.shape[1] > 0


def test_scan_reads_every_packet_timestamp(tiny_dataset):
    path = discover(tiny_dataset, "train", ("mp4",)).videos[1].path
    scan = scan_video(path)
    assert scan.fps == pytest.approx(30.0)
    assert len(scan.pts) == 37 and list(scan.pts) == sorted(scan.pts)


def test_profile_sorts_samples_by_what_they_do(tmp_path):
    """benchmarks/profile.py: each py-spy sample goes to the category of the frame nearest its
    leaf that names one; waits and start-up are left out of the shares."""
    from benchmarks.profile import PYTHON, STARTUP, categorize, summarize

    lib = "0x7f00 (libc.so.6)"
    assert categorize(["main (x.py:1)", "LocalFiles.read_into (loader/local.py:212)", "os_preadv (libpython)", lib]) \
        == "read/write system calls"
    assert categorize(["main (x.py:1)", "stack (collate.py:3)", "raw_array_assign_array (numpy)", lib]) \
        == "memory copies (NumPy, torch, buffers)"
    assert categorize(["run (w.py:2)", "VideoStream_decode (av)", "ff_h264_decode_mb (libavcodec.so)"]) \
        == "video decoding (libavcodec)"
    assert categorize(["run (w.py:2)", "Queue.get (queue.py:171)", "Condition.wait (threading.py:320)", lib]) == "waiting"
    assert categorize(["<module> (t.py:1)", "_find_and_load (<frozen>:1)", "memmove (libc.so.6)"]) == STARTUP
    assert categorize(['process 1:""', lib, "gc_collect_main (libpython)", "THPVariable_traverse (torch)"]) == STARTUP
    assert categorize(["main (x.py:1)", "parse (reader.py:9)"]) == PYTHON
    assert categorize(["main (x.py:1)", "_stack (loader/collate.py:130)"]) == PYTHON  # a Python name, not torch's stack
    assert categorize(["main (x.py:1)", "encode_jpeg (convert/schema.py:90)", "_save (PIL/JpegImagePlugin.py:9)"]) \
        == "JPEG encoding or decoding"  # the encoder's own Python, by qualified name
    assert categorize(['process 2:"python -m clipshards.convert --codec jpeg"', "main (x.py:1)", "parse (r.py:9)"]) == PYTHON
    raw = tmp_path / "samples.txt"
    raw.write_text(f"main (x.py:1);os_write (libpython);{lib} 7\nmain (x.py:1);Condition.wait (threading.py:1) 5\n"
                   "main (x.py:1);parse (reader.py:9) 3\n")
    cats, waiting = summarize(str(raw))
    assert waiting == 5 and cats == {"read/write system calls": 7, PYTHON: 3}
