"""The layout a conversion gets when none is given: ``videos`` when clips overlap (S < T),
``clips`` when they do not (S >= T), said in the plan, recorded in the index; an output
converted in the other layout with the same options (a clips output with S < T, made when
``clips`` was always the default) is rerun and resumed as it was, not refused or redone."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from clipshards.convert import ConvertOptions, convert, load_config
from clipshards.convert.errors import ConversionMismatch
from clipshards.loader import IndexedKinetics
from reference import run_cli, tree_bytes
from servers import CONVERT_KW

OLD_KW = {k: v for k, v in CONVERT_KW.items() if k != "layout"}  # tiny_converted's options, no layout given


def test_the_default_follows_the_step():
    videos = ConvertOptions(frames_per_clip=16, step_between_clips=8)
    assert videos.layout == "videos" and videos.layout_auto
    assert "clips overlap (step 8 < 16 frames per clip)" in videos.layout_reason() and "2x" in videos.layout_reason()
    assert videos.output_options()["layout"] == "videos"  # the index records the layout written
    assert ConvertOptions(frames_per_clip=16).layout == "videos"  # torchvision's default step of 1
    for S in (16, 20):
        clips = ConvertOptions(frames_per_clip=16, step_between_clips=S)
        assert clips.layout == "clips" and clips.layout_auto and "layout" not in clips.output_options()
    assert ConvertOptions(frames_per_clip=16, step_between_clips=8, layout="auto") == videos
    given = ConvertOptions(frames_per_clip=16, step_between_clips=8, layout="clips")
    assert given.layout == "clips" and not given.layout_auto and "as given" in given.layout_reason()
    # a copy with another step is decided again; a given layout stays
    assert videos.replace(step_between_clips=16).layout == "clips"
    assert given.replace(step_between_clips=1).layout == "clips"
    with pytest.raises(ValueError, match=r"layout='clip'.*'auto'/None for the default"):
        ConvertOptions(frames_per_clip=16, layout="clip")


def test_a_preset_cannot_set_the_reason(tmp_path):
    preset = tmp_path / "p.toml"
    preset.write_text('frames_per_clip = 8\nlayout_note = "x"\n')
    with pytest.raises(ValueError, match="unknown option 'layout_note'"):
        load_config(preset)


def test_overlapping_clips_get_the_videos_layout_and_the_plan_says_why(tiny_dataset, tiny_converted, tmp_path, caplog):
    out = tmp_path / "out"
    with caplog.at_level(logging.INFO, logger="clipshards"):
        assert run_cli(tiny_dataset, out, "-T", "8", "-S", "4", "--shard-size", "200000", "--workers", "1",
                       "--no-progress") == 0
    plan = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("plan:"))
    assert "layout videos: the default when clips overlap (step 4 < 8 frames per clip)" in plan, plan
    assert "recommended: --layout videos" in plan, plan
    index = json.loads((out / "train" / "index.json").read_bytes())
    assert index["layout"] == "videos" and index["options"]["layout"] == "videos"
    report = json.loads((out / "train" / "report.json").read_bytes())
    assert report["plan"]["layouts"]["chosen"] == "videos" and "overlap" in report["plan"]["layouts"]["why"]
    # the same clips as the clips layout gives for T=8, S=4
    a, b = IndexedKinetics(out, output_format="THWC"), IndexedKinetics(tiny_converted, output_format="THWC")
    assert len(a) == len(b) > 0
    for g in range(len(b)):
        (va, aa, ya), (vb, ab, yb) = a[g], b[g]
        assert ya == yb and np.array_equal(va.numpy(), vb.numpy()) and np.array_equal(aa.numpy(), ab.numpy()), g


def test_a_finished_clips_output_made_before_the_default_is_rerun_as_it_is(tiny_dataset, tiny_converted, tmp_path, caplog):
    """tiny_converted is byte for byte what clips with S < T always wrote (no layout in its index)."""
    out = tmp_path / "old"
    shutil.copytree(tiny_converted, out)
    before = tree_bytes(out)
    assert "layout" not in json.loads((out / "train" / "index.json").read_bytes())["options"]
    with caplog.at_level(logging.INFO, logger="clipshards"):
        report = convert(tiny_dataset, out, workers=1, **OLD_KW)
    assert report.clips == json.loads((out / "train" / "index.json").read_bytes())["counts"]["clips"]
    assert any("already holds this conversion" in r.getMessage() for r in caplog.records)
    assert tree_bytes(out) == before
    assert run_cli(tiny_dataset, out, "-T", "8", "-S", "4", "--shard-size", "200000", "--workers", "1",
                   "--no-progress", "-q") == 0
    assert tree_bytes(out) == before


def test_other_options_on_an_old_output_name_the_layout_too(tiny_dataset, tiny_converted, tmp_path):
    out = tmp_path / "old"
    shutil.copytree(tiny_converted, out)
    with pytest.raises(ConversionMismatch) as info:
        convert(tiny_dataset, out, workers=1, **{**OLD_KW, "step_between_clips": 2})
    assert "layout: 'clips' -> 'videos'" in str(info.value) and "step_between_clips: 4 -> 2" in str(info.value)
    with pytest.raises(ConversionMismatch, match=r"^(?!.*layout).*step_between_clips: 4 -> 2"):
        convert(tiny_dataset, out, workers=1, **{**OLD_KW, "step_between_clips": 2, "layout": "clips"})


def _kill_after_markers(args: list, out: Path, markers: int, timeout: float = 120) -> bool:
    """Start ``python -m clipshards.convert ARGS`` and SIGKILL it once ``markers`` shards are done;
    False when it finished first."""
    proc = subprocess.Popen([sys.executable, "-m", "clipshards.convert", *map(str, args)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + timeout
    progress = out / "train" / "_progress"
    # finished markers only: one being written is ``.<name>.partial`` until it is renamed
    while not (progress.is_dir() and sum(n.endswith(".json") for n in os.listdir(progress)) >= markers):
        if proc.poll() is not None:
            return False
        if time.monotonic() > deadline:  # pragma: no cover - a hung run
            os.killpg(proc.pid, signal.SIGKILL)
            raise AssertionError("the conversion made no progress")
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return True


def test_a_killed_clips_run_made_before_the_default_resumes(tiny_dataset, tmp_path):
    """A clips run with S < T killed part-way (as a run of an older release, with no --layout,
    wrote it) is resumed by the same command without --layout: the finished shards are kept."""
    args = ["-T", "8", "-S", "4", "--shard-size", "20KB", "--workers", "1", "--no-progress", "-q"]
    whole = tmp_path / "whole"
    assert run_cli(tiny_dataset, whole, *args, "--layout", "clips") == 0
    assert sum(n.endswith(".tar") for n in tree_bytes(whole)) > 10
    out = tmp_path / "out"
    assert _kill_after_markers([tiny_dataset, out, *args, "--layout", "clips"], out, 3), "the run finished first"
    assert not (out / "train" / "index.json").exists()
    assert run_cli(tiny_dataset, out, *args) == 0
    report = json.loads((out / "train" / "report.json").read_bytes())
    assert report["resumed_shards"] >= 3
    assert tree_bytes(out) == tree_bytes(whole)


@pytest.mark.parametrize("step, layout", [(7, "videos"), (8, "clips"), (12, "clips")])
def test_the_plan_recommends_what_the_default_would_choose(tiny_dataset, tmp_path, caplog, step, layout):
    """Even with the other layout given: the recommendation and the default never disagree
    (S just below T still overlaps, so the videos layout is recommended)."""
    other = "clips" if layout == "videos" else "videos"
    with caplog.at_level(logging.INFO, logger="clipshards"):
        assert run_cli(tiny_dataset, tmp_path / "out", "-T", "8", "-S", str(step), "--layout", other, "--dry-run",
                       "--no-progress") == 0
    plan = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("plan:"))
    assert f"recommended: --layout {layout}; layout {other}: as given" in plan, plan
