"""A newcomer's first hour (issue 14): the README's quick tour on videos of mixed aspect ratios,
the presets, the loader's transforms and the batch error that says what to do, the converter's
question before a huge output, ``--version``, a rerun with other options, a wrong split or path."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
import torch

from clipshards.convert import convert
from clipshards.convert.cli import main
from clipshards.convert.errors import ConversionMismatch, OutputTooLarge
from clipshards.convert.options import ConvertOptions
from clipshards.convert.plan import Plan, growth_problem
from clipshards.convert.synth import VideoSpec, write_video
from clipshards.loader import (
    CenterCrop,
    ClipLoader,
    Compose,
    IndexedKinetics,
    RandomCrop,
    Resize,
    StreamingKinetics,
    webdataset_pipeline,
)

REPO = Path(__file__).resolve().parents[1]
CLASSES = ("archery", "bowling", "juggling balls")
SIZES = ((160, 90), (128, 96), (96, 128), (112, 112))  # 16:9, 4:3, portrait, square (width, height)


@pytest.fixture(scope="module")
def mixed_dataset(tmp_path_factory) -> Path:
    """12 videos of four aspect ratios, 96 frames at 30 fps: 3 clips each of 16 frames at 15 fps."""
    root = tmp_path_factory.mktemp("mixed")
    n = 0
    for ci, cls in enumerate(CLASSES):
        for vi in range(4):
            w, h = SIZES[(ci + vi) % len(SIZES)]
            write_video(root / "train" / cls / f"video_{vi:03d}.mp4", VideoSpec(frames=96, width=w, height=h, seed=n))
            n += 1
    return root


def _readme_quick_tour() -> tuple[list[str], str]:
    """The quick tour's ``clipshards convert`` command (as argv) and its Python block, from README.md."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("## Quick tour", 1)[1].split("\n## ", 1)[0]
    bash = re.search(r"```bash\n(.*?)```", section, re.S).group(1).replace("\\\n", " ")
    convert_cmd = next(line for line in bash.splitlines() if line.startswith("clipshards convert "))
    python = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    return shlex.split(convert_cmd.split("#", 1)[0]), python


def test_the_readme_quick_tour_batches_videos_of_mixed_aspect_ratios(mixed_dataset, tmp_path, monkeypatch):
    """The quick tour's commands as the README has them, on videos of four aspect ratios: the
    conversion needs no --yes, and ClipLoader's batches of 16 stack."""
    monkeypatch.delenv("CLIPSHARDS_YES", raising=False)  # the quick tour must go through without it
    argv, python = _readme_quick_tour()
    assert argv[:2] == ["clipshards", "convert"] and "--video-height" in argv and "--video-width" in argv
    out = tmp_path / "shards"
    argv = [str(mixed_dataset) if a == "kinetics/" else str(out) if a == "shards/" else a for a in argv[1:]]
    assert main(argv + ["--workers", "1", "--no-progress", "-q"]) == 0

    code = python.replace('"shards/"', repr(str(out))).replace("num_workers=8", "num_workers=2")
    assert code.count("    ...") == 1
    code = code.replace("    ...", "    batches.append((video, label))")
    namespace: dict = {"batches": []}
    exec(compile(code, "README.md quick tour", "exec"), namespace)
    batches = namespace["batches"]
    assert sum(len(label) for _, label in batches) == 36  # every clip, 3 of each video
    full = [video for video, _ in batches if len(video) == 16]
    assert len(full) == 2 and all(v.shape == (16, 16, 3, 112, 112) and v.dtype == torch.uint8 for v in full)


def test_a_preset_gives_batchable_clips(mixed_dataset, tmp_path):
    out = tmp_path / "preset"
    preset = REPO / "configs" / "kinetics400-16x16-15fps-128-jpeg.toml"
    assert main(["convert", str(mixed_dataset), str(out), "--config", str(preset), "--workers", "1", "--no-progress", "-q"]) == 0
    batch = next(iter(ClipLoader(StreamingKinetics(out, shuffle=False), batch_size=16)))
    assert batch.video.shape == (16, 16, 3, 128, 171)


def test_mixed_sizes_fail_with_the_fix_and_a_transform_makes_them_stack(mixed_dataset, tmp_path):
    """Converted with the shorter side only, clips keep their aspect ratios: the batch error
    names the shapes and both fixes; a resize-and-crop transform makes them stack."""
    out = tmp_path / "aspect"
    convert(mixed_dataset, out, frames_per_clip=16, step_between_clips=16, frame_rate=15, video_min_dimension=64,
            codec="jpeg", workers=1, progress=False)
    ds = StreamingKinetics(out, shuffle=False)
    with pytest.raises(ValueError) as info:
        next(iter(ClipLoader(ds, batch_size=16)))
    message = str(info.value)
    assert "differ in shape" in message and "[16, 3, 64, 85] x 6" in message and "[16, 3, 85, 64] x 4" in message
    assert "--video-height" in message and "--video-width" in message and "CenterCrop(112)" in message

    cropped = StreamingKinetics(out, shuffle=False, transform=Compose([Resize(64), CenterCrop(64)]))
    batches = list(ClipLoader(cropped, batch_size=16, num_workers=2))
    assert [tuple(b.video.shape) for b in batches if len(b.video) == 16] == [(16, 16, 3, 64, 64)] * 2
    # the crop is the middle of the clip as converted (a 64-pixel side is left as it was)
    whole = IndexedKinetics(out)[0][0]
    top, left = (whole.shape[2] - 64 + 1) // 2, (whole.shape[3] - 64 + 1) // 2
    assert torch.equal(IndexedKinetics(out, transform=CenterCrop(64))[0][0], whole[:, :, top:top + 64, left:left + 64])


# -- transforms -------------------------------------------------------------------------------

def _clip(t: int = 4, h: int = 48, w: int = 64) -> torch.Tensor:
    """A uint8 [T, 3, H, W] clip whose every pixel says where it is."""
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (t, 3, h, w), dtype=torch.uint8, generator=g)


def test_resize_follows_torchvision_sizes_and_keeps_uint8():
    clip = _clip()
    assert Resize(32)(clip).shape == (4, 3, 32, 42)  # shorter side 32, int(32 * 64 / 48)
    assert Resize(32)(clip.transpose(2, 3)).shape == (4, 3, 42, 32)  # portrait
    exact = Resize((20, 30))(clip)
    assert exact.shape == (4, 3, 20, 30) and exact.dtype == torch.uint8
    assert Resize((48, 64))(clip) is clip  # already that size
    flat = torch.full((2, 3, 30, 40), 77, dtype=torch.uint8)
    assert torch.equal(Resize((64, 90))(flat), torch.full((2, 3, 64, 90), 77, dtype=torch.uint8))
    # the same frames in THWC give the same pixels, in THWC
    thwc = Resize(32, output_format="THWC")(clip.permute(0, 2, 3, 1))
    assert torch.equal(thwc, Resize(32)(clip).permute(0, 2, 3, 1))


def test_center_crop_is_the_middle_and_pads_small_frames():
    clip = _clip(h=9, w=12)
    assert torch.equal(CenterCrop((5, 4))(clip), clip[:, :, 2:7, 4:8])
    assert torch.equal(CenterCrop(5, output_format="THWC")(clip.permute(0, 2, 3, 1)), clip[:, :, 2:7, 4:9].permute(0, 2, 3, 1))
    small = _clip(h=2, w=2)
    padded = CenterCrop(4)(small)
    assert padded.shape == (4, 3, 4, 4) and torch.equal(padded[:, :, 1:3, 1:3], small)
    assert int(padded.sum()) == int(small.sum(dtype=torch.int64))  # black around it


def test_random_crop_is_one_window_for_the_whole_clip_and_reproducible():
    t, c, y, x = torch.meshgrid(torch.arange(5), torch.arange(3), torch.arange(20), torch.arange(30), indexing="ij")
    clip = t * 10**6 + c * 10**4 + y * 100 + x  # every pixel says where it is
    places = set()
    for seed in range(20):
        crop = RandomCrop((8, 10), generator=torch.Generator().manual_seed(seed))(clip)
        again = RandomCrop((8, 10), generator=torch.Generator().manual_seed(seed))(clip)
        assert torch.equal(crop, again) and crop.shape == (5, 3, 8, 10)
        top, left = int(crop[0, 0, 0, 0]) // 100, int(crop[0, 0, 0, 0]) % 100
        assert torch.equal(crop, clip[:, :, top:top + 8, left:left + 10])  # one window for every frame
        places.add((top, left))
    assert len(places) > 5 and all(0 <= p <= 12 and 0 <= q <= 20 for p, q in places)


@pytest.mark.parametrize("make, message", [
    (lambda: Resize(0), "size=0"),
    (lambda: Resize((1, 2, 3)), "height, width"),
    (lambda: CenterCrop("112"), "size='112'"),
    (lambda: RandomCrop(8, generator=0), "generator=0"),
    (lambda: Resize(8, output_format="NCHW"), "output_format='NCHW'"),
    (lambda: Compose([1]), "not callable"),
])
def test_bad_transform_arguments_are_named(make, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        make()


def test_a_transform_told_the_wrong_layout_says_which_to_use():
    with pytest.raises(ValueError, match="output_format='THWC'"):
        CenterCrop(4)(_clip().permute(0, 2, 3, 1))


def test_transforms_on_the_datasets(tiny_converted):
    video, _, _ = IndexedKinetics(tiny_converted, transform=CenterCrop(32))[0]
    assert video.shape == (8, 3, 32, 32)
    video, _, _ = IndexedKinetics(tiny_converted, output_format="THWC", transform=Resize((24, 40), output_format="THWC"))[0]
    assert video.shape == (8, 24, 40, 3)


# -- the size question ------------------------------------------------------------------------

def _listing(split_dir: Path) -> list[str]:
    return sorted(p.name for p in split_dir.iterdir()) if split_dir.exists() else []


def test_a_huge_plan_stops_before_writing_and_says_what_to_do(tiny_dataset, tmp_path, monkeypatch, caplog):
    """torchvision's default step of 1 in the clips layout on the tiny dataset: about 90x its input."""
    monkeypatch.delenv("CLIPSHARDS_YES", raising=False)
    out = tmp_path / "out"
    with pytest.raises(OutputTooLarge) as info:
        convert(tiny_dataset, out, frames_per_clip=8, layout="clips", workers=1, progress=False)
    message = str(info.value)
    assert info.value.exit_code == 2
    assert re.search(r"planned output, ~[\d.]+ MB, is \d+x the input \([\d.]+ KB of video\), more than 20x", message)
    assert "free space on OUT: " in message and "--step-between-clips 8" in message and "--yes" in message
    assert not [n for n in _listing(out / "train") if n.endswith((".tar", ".json"))]  # nothing written

    caplog.set_level("WARNING", logger="clipshards.convert.api")
    report = convert(tiny_dataset, out, frames_per_clip=8, layout="clips", workers=1, progress=False, yes=True)
    assert report.clips > 0 and (out / "train" / "index.json").exists()
    assert any("planned output" in r.getMessage() and "--yes" not in r.getMessage() for r in caplog.records)


def test_the_environment_answers_the_size_question(tiny_dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("CLIPSHARDS_YES", "1")
    assert convert(tiny_dataset, tmp_path / "out", frames_per_clip=8, layout="clips", workers=1, progress=False).clips > 0
    monkeypatch.setenv("CLIPSHARDS_YES", "0")
    with pytest.raises(OutputTooLarge):
        convert(tiny_dataset, tmp_path / "again", frames_per_clip=8, layout="clips", workers=1, progress=False)


def test_a_dry_run_only_warns(tiny_dataset, tmp_path, monkeypatch):
    monkeypatch.delenv("CLIPSHARDS_YES", raising=False)
    report = convert(tiny_dataset, tmp_path / "out", frames_per_clip=8, layout="clips", workers=1, progress=False,
                     dry_run=True)
    assert report.dry_run and report.plan["estimated_bytes"] > 20 * sum(
        p.stat().st_size for p in tiny_dataset.rglob("*.mp4"))


def test_the_cli_prints_one_line_and_exits_2_without_yes(tiny_dataset, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "CLIPSHARDS_YES"}
    args = [sys.executable, "-m", "clipshards.convert", str(tiny_dataset), str(tmp_path / "out"), "-T", "8",
            "--layout", "clips", "--workers", "1", "--no-progress", "-q"]
    run = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ERROR clipshards: nothing written: the planned output"), run.stderr
    run = subprocess.run(args + ["--yes"], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and (tmp_path / "out" / "train" / "index.json").exists(), run.stderr


def test_growth_rules():
    opts = ConvertOptions(frames_per_clip=16, step_between_clips=16, codec="jpeg")
    plan = Plan(videos=1, clips=10, frames_stored=160, frames_distinct=160, bytes=10 * 2**20)
    assert growth_problem(plan, opts, input_bytes=2**20, free_bytes=2**30) == ""  # 10x, room enough
    short = growth_problem(plan, opts, input_bytes=2**20, free_bytes=2**20)
    assert "(not enough)" in short and "more than 20x" not in short and "--step-between-clips" not in short
    assert "--codec jpeg" not in short  # already JPEG
    big = growth_problem(plan, opts, input_bytes=2**18, free_bytes=None)  # object storage: the ratio alone
    assert "is 40x the input" in big and "free space on OUT: unknown" in big
    assert growth_problem(plan, opts, input_bytes=2**19, free_bytes=None) == ""  # 20x: not over


# -- --version, reruns, wrong splits ---------------------------------------------------------------

def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0 and capsys.readouterr().out.strip() == f"clipshards {version('clipshards')}"
    run = subprocess.run([sys.executable, "-m", "clipshards.convert", "--version"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and run.stdout.strip() == f"clipshards {version('clipshards')}"


def test_a_rerun_with_other_options_names_each_one(tiny_converted, tiny_dataset, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(tiny_converted, out)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    run = subprocess.run(
        [sys.executable, "-m", "clipshards.convert", str(tiny_dataset), str(out), "-T", "8", "-S", "8", "--codec", "jpeg",
         "--shard-size", "200000", "--workers", "1", "--no-progress", "-q"],
        capture_output=True, text=True, timeout=120,
    )
    assert run.returncode == 2, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in run.stderr, run.stderr
    assert "codec: 'raw' -> 'jpeg'" in lines[0] and "step_between_clips: 4 -> 8" in lines[0]
    assert "shard_size" not in lines[0] and "frames_per_clip" not in lines[0] and "--overwrite" in lines[0]
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != "_lock"} == \
        {p: b for p, b in before.items() if p.name != "_lock"}
    with pytest.raises(ConversionMismatch, match=r"frames_per_clip: 8 -> 4"):
        convert(tiny_dataset, out, frames_per_clip=4, step_between_clips=4, shard_size=200_000, workers=1, progress=False)


def test_a_wrong_split_or_path_says_what_is_there(tiny_converted, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"split 'val' was not converted to .*, which holds the split 'train'; "
                                                r"pass split= one of them"):
        IndexedKinetics(tiny_converted, split="val")
    with pytest.raises(FileNotFoundError, match=r"holds the split 'train'"):
        StreamingKinetics(tiny_converted, split="test")
    with pytest.raises(FileNotFoundError, match=r"holds the split 'train'"):
        webdataset_pipeline(tiny_converted, split="val")
    with pytest.raises(FileNotFoundError, match=re.escape(f"is itself a converted split (it holds index.json); "
                                                          f"pass url={str(tiny_converted)!r}, split='train'")):
        IndexedKinetics(tiny_converted / "train")
    with pytest.raises(FileNotFoundError, match="train/index.json does not exist: there is nothing at .*; pass the folder "
                                                 "or URL the converter wrote to"):
        IndexedKinetics(tmp_path / "nothing")
    (tmp_path / "videos" / "train").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"holds no clipshards output \(no <split>/index.json in it\)"):
        IndexedKinetics(tmp_path / "videos")
    two = tmp_path / "two"
    for split in ("train", "val"):
        shutil.copytree(tiny_converted / "train", two / split)
    (two / "val" / "index.json").write_text(json.dumps({}))  # any index.json marks a split
    with pytest.raises(FileNotFoundError, match=r"holds the splits 'train', 'val'"):
        IndexedKinetics(two, split="test")
