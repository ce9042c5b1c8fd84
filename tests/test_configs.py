"""configs/: every preset loads, says what it is, matches its name and the README; one drives
a real conversion with a command-line flag overriding it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from clipshards.convert import ConvertOptions, load_config
from clipshards.convert.cli import main

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
PRESETS = sorted(CONFIGS.glob("*.toml"))


def test_there_are_presets_for_each_dataset():
    names = [p.stem for p in PRESETS]
    assert "example" in names
    for prefix in ("kinetics400-", "kinetics600-", "kinetics700-", "ucf101-", "hmdb51-"):
        assert any(n.startswith(prefix) for n in names), f"no {prefix}* preset"


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.name)
def test_preset_loads_and_starts_with_a_one_line_comment(path):
    opts = ConvertOptions(**load_config(path))
    assert opts.frames_per_clip >= 1
    first = path.read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith("# ") and len(first) > 20, f"{path.name}: first line must say what the preset is"
    assert not any(f in load_config(path) for f in ("workers", "decoder_threads", "dry_run", "strict", "progress")), (
        "presets describe the output; run-only options belong on the command line"
    )


def _expected_from_name(stem: str) -> dict:
    """What a preset name promises: ``<dataset>-<T>x<S>[-<fps>fps]-<height>-<codec>[-<kHz>k][-mono]``."""
    want: dict = {}
    m = re.match(r"kinetics(400|600|700)\b", stem)
    if m:
        want["num_classes"] = m.group(1)
    for part in stem.split("-")[1:]:
        if m := re.fullmatch(r"(\d+)x(\d+)", part):
            want["frames_per_clip"], want["step_between_clips"] = int(m.group(1)), int(m.group(2))
        elif m := re.fullmatch(r"(\d+)fps", part):
            want["frame_rate"] = float(m.group(1))
        elif m := re.fullmatch(r"(\d+)k", part):
            want["audio_samples"] = int(m.group(1)) * 1000
        elif part == "mono":
            want["audio_channels"] = 1
        elif part in ("raw", "jpeg"):
            want["codec"] = part
        elif part.isdigit():
            want["video_height"] = int(part)
    if "frame_rate" not in want and "frames_per_clip" in want:
        want["frame_rate"] = None
    return want


@pytest.mark.parametrize("path", [p for p in PRESETS if p.stem != "example"], ids=lambda p: p.name)
def test_preset_matches_its_name(path):
    opts = ConvertOptions(**load_config(path)).output_options()
    want = _expected_from_name(path.stem)
    assert {"frames_per_clip", "step_between_clips", "codec", "video_height"} <= set(want), path.stem
    assert {k: opts[k] for k in want} == want
    # one frame size for every clip, whatever each video's aspect ratio, so that batches stack:
    # the width 4/3 of the height (torchvision's video-classification recipe: 128 x 171)
    assert opts["video_min_dimension"] == 0 and abs(opts["video_width"] - opts["video_height"] * 4 / 3) < 1.5, opts


def test_readme_lists_every_preset():
    readme = (CONFIGS / "README.md").read_text(encoding="utf-8")
    listed = set(re.findall(r"^\| `([^`]+\.toml)` \|", readme, flags=re.M))
    assert listed == {p.name for p in PRESETS}


def test_example_preset_drives_a_conversion_with_a_flag_override(tiny_dataset, tmp_path, capsys):
    preset = load_config(CONFIGS / "example.toml")
    assert preset["step_between_clips"] == 4
    out = tmp_path / "out"
    rc = main([
        "convert", str(tiny_dataset), str(out), "--config", str(CONFIGS / "example.toml"),
        "--step-between-clips", "8", "--workers", "1", "--no-progress", "--quiet",
    ])
    assert rc == 0, capsys.readouterr()
    index = json.loads((out / "train" / "index.json").read_bytes())
    opts = index["options"]
    assert opts["step_between_clips"] == 8  # the flag wins over the preset's 4
    assert opts["frames_per_clip"] == preset["frames_per_clip"] == 8
    assert opts["shard_size"] == preset["shard_size"] and opts["codec"] == preset["codec"]
    # videos of 30 and 37 frames per class: (30-8)//8+1 + (37-8)//8+1 = 3 + 4 clips
    assert index["counts"]["clips"] == 3 * (3 + 4)


def test_a_typo_in_a_preset_is_named(tiny_dataset, tmp_path, capsys):
    bad = tmp_path / "typo.toml"
    bad.write_text((CONFIGS / "example.toml").read_text() + "frames_per_clipp = 4\n")
    with pytest.raises(SystemExit) as exc:
        main(["convert", str(tiny_dataset), str(tmp_path / "out"), "--config", str(bad), "--no-progress"])
    assert exc.value.code == 2
    assert "frames_per_clipp" in capsys.readouterr().err
