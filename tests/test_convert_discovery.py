"""Discovery never returns wrong data silently (issue 13): odd file names, symlink loops and
files reached twice.

- A file or class name that is not valid UTF-8 is converted; index, report and sample
  metadata stay valid UTF-8 (each undecodable byte written ``\\xNN``) and the report names it.
  Names with newlines or a leading dash convert as any other. A NUL byte cannot be part of
  a POSIX file name (the kernel refuses it), so there is no such file to test.
- A symlink back to an ancestor folder is not followed (``os.walk(followlinks=True)``, as
  torchvision walks, lists the same videos again at every level until the path is too long);
  the loop is reported.
- A file reached twice (a symlinked folder or file, a hard link) is converted once, where the
  walk first meets it; the duplicate is reported.
- For a tree without loops or duplicates the order is torchvision's.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest

from clipshards.convert.layout import discover
from clipshards.convert.synth import VideoSpec, write_video
from clipshards.convert.walk import Walker, escape_surrogates
from reference import assert_same_clips, read_shards, reference_dataset, reference_videos, run_command

ARGS = ["-T", "4", "-S", "4", "--no-progress", "--workers", "1", "--yes"]
BAD_FILE = os.fsdecode(b"clip \xff\xfe.mp4")  # not UTF-8: os.fsdecode keeps the bytes as surrogates
BAD_CLASS = os.fsdecode(b"caf\xe9")  # Latin-1 "café"


def _video(path: Path | str, seed: int) -> None:
    write_video(path, VideoSpec(frames=8 + seed % 3, seed=seed))


def _record(root: Path) -> list[tuple[str, int]]:
    """torchvision's (relative path, label) list, names recorded as clipshards records them."""
    return [(escape_surrogates(p), label) for p, label in reference_videos(root)]


@pytest.fixture(scope="module")
def odd(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("odd") / "ds"
    for seed, rel in enumerate(["a/ok.mp4", f"a/{BAD_FILE}", "a/new\nline.mp4", "a/-dash.mp4",
                                f"{BAD_CLASS}/v.mp4", "-b/--x.mp4"]):
        _video(os.path.join(root, "train", rel), seed)
    return root


def test_names_that_are_not_utf8_are_converted_and_reported(odd, tmp_path):
    out = tmp_path / "out"
    proc = run_command([odd, out, *ARGS])
    assert proc.returncode == 0, proc.stderr
    index = json.loads((out / "train" / "index.json").read_bytes().decode("utf-8"))  # strict UTF-8
    report = json.loads((out / "train" / "report.json").read_bytes().decode("utf-8"))
    assert [(v["path"], v["label"]) for v in index["videos"]] == _record(odd)
    assert "train/a/clip \\xff\\xfe.mp4" in [v["path"] for v in index["videos"]]
    assert index["classes"] == ["-b", "a", "caf\\xe9"]
    named = {n["path"] for n in report["discovery"] if n["kind"] == "name"}
    assert named == {"train/a/clip \\xff\\xfe.mp4", "train/caf\\xe9"}
    assert "clip \\xff\\xfe.mp4" in proc.stdout  # the summary names it too
    want = [dataclasses.replace(r, path=escape_surrogates(r.path)) for r in reference_dataset(odd, frames_per_clip=4, step_between_clips=4)]
    got = read_shards(out / "train")
    assert_same_clips(got, want)
    assert {c.meta["class"] for c in got} == {"-b", "a", "caf\\xe9"}


def test_a_decoder_message_quoting_an_undecodable_name_stays_valid(tmp_path):
    """An unreadable file with a non-UTF-8 name: skipped with its reason, the JSON still UTF-8."""
    root = tmp_path / "ds"
    _video(root / "train" / "a" / "ok.mp4", 1)
    bad = os.path.join(root, "train", "a", BAD_FILE)
    with open(bad, "wb") as fh:
        fh.write(b"not a video at all" * 10)
    proc = run_command([root, tmp_path / "out", *ARGS])
    assert proc.returncode == 3, proc.stderr
    report = json.loads((tmp_path / "out" / "train" / "report.json").read_bytes().decode("utf-8"))
    assert [s["path"] for s in report["skipped"]] == ["train/a/clip \\xff\\xfe.mp4"]


@pytest.fixture(scope="module")
def linked(tmp_path_factory) -> Path:
    """Loops and a shared folder reached twice, next to plain videos.

    train/a/{v1.mp4, sub/v2.mp4, sub/up -> .. (loop), self -> . (loop)}
    train/b/{w.mp4, twin.mp4 -> ../a/v1.mp4 (duplicate across classes), hard.mp4 (hard link to w.mp4)}
    train/c/{x -> ../../extra, y -> ../../extra}: the same folder twice (its files are duplicates under y)
    """
    root = tmp_path_factory.mktemp("linked") / "ds"
    t = root / "train"
    _video(t / "a" / "v1.mp4", 1)
    _video(t / "a" / "sub" / "v2.mp4", 2)
    os.symlink("..", t / "a" / "sub" / "up")
    os.symlink(".", t / "a" / "self")
    _video(t / "b" / "w.mp4", 3)
    os.symlink("../a/v1.mp4", t / "b" / "twin.mp4")
    os.link(t / "b" / "w.mp4", t / "b" / "hard.mp4")
    _video(root / "extra" / "e.mp4", 4)
    (t / "c").mkdir()
    os.symlink("../../extra", t / "c" / "x")
    os.symlink("../../extra", t / "c" / "y")
    return root


def test_loops_and_duplicates_are_reported_and_converted_once(linked, tmp_path):
    layout = discover(linked, "train", ("mp4",))
    assert [v.relpath for v in layout.videos] == [
        "train/a/v1.mp4", "train/a/sub/v2.mp4", "train/b/hard.mp4", "train/c/x/e.mp4",
    ]
    notes = {(n.kind, n.path) for n in layout.notes}
    assert notes == {
        ("loop", "train/a/self"), ("loop", "train/a/sub/up"),
        ("duplicate", "train/b/twin.mp4"), ("duplicate", "train/b/w.mp4"), ("duplicate", "train/c/y/e.mp4"),
    }
    out = tmp_path / "out"
    proc = run_command([linked, out, *ARGS])
    assert proc.returncode == 0, proc.stderr
    index = json.loads((out / "train" / "index.json").read_bytes())
    assert [v["path"] for v in index["videos"]] == [v.relpath for v in layout.videos]
    report = json.loads((out / "train" / "report.json").read_bytes())
    assert {(n["kind"], n["path"]) for n in report["discovery"]} == notes
    assert "symlink loop" in proc.stderr and "same file as 'train/a/v1.mp4'" in proc.stderr


def test_one_loop_lists_a_video_dozens_of_times_in_torchvision_once_here(tmp_path):
    t = tmp_path / "ds" / "train" / "a"
    t.mkdir(parents=True)
    (t / "v.mp4").write_bytes(b"v")
    os.symlink(".", t / "again")
    torchvision = [p for p, _ in reference_videos(tmp_path / "ds")]
    assert len(torchvision) > 30 and "train/a/again/again/v.mp4" in torchvision  # os.walk, until the path is too long
    layout = discover(tmp_path / "ds", "train", ("mp4",))
    assert [v.relpath for v in layout.videos] == ["train/a/v.mp4"]
    assert [(n.kind, n.path) for n in layout.notes] == [("loop", "train/a/again")]


def test_walk_order_is_torchvisions_for_a_plain_tree(tmp_path):
    """Nested folders, folder symlinks (no loop), names sorting differently as paths and as
    strings, non-matching files: the same list as ``sorted(os.walk(..., followlinks=True))``."""
    t = tmp_path / "ds" / "train"
    names = ["k/a.mp4", "k/a-b/c.mp4", "k/a/b.mp4", "k/a.b/z.MP4", "k/A/x.avi", "k/a/zz/y.mp4", "k/b.txt",
             "k/ä/ü.mp4", "k/a b/q.mp4", "k/_/r.mp4", "m/1.mp4", "m/10.mp4", "m/2.mp4"]
    for n in names:
        (t / n).parent.mkdir(parents=True, exist_ok=True)
        (t / n).write_bytes(n.encode())
    (tmp_path / "ds" / "elsewhere").mkdir()
    (tmp_path / "ds" / "elsewhere" / "e.mp4").write_bytes(b"e")
    os.symlink("../../elsewhere", t / "k" / "link")
    layout = discover(tmp_path / "ds", "train", ("mp4", "avi"))
    assert [(v.relpath, v.label) for v in layout.videos] == reference_videos(tmp_path / "ds")
    assert layout.notes == ()


def test_a_walker_shared_by_several_folders_lists_each_file_once(linked):
    """The walker other layouts use: one per split, duplicates found across its calls."""
    walker = Walker(linked, ("mp4",))
    first = walker.files(str(linked / "train" / "a"))
    again = walker.files(str(linked / "train" / "a"))
    assert [f.relpath for f in first] == ["train/a/v1.mp4", "train/a/sub/v2.mp4"] and again == []
    assert all(f.size > 0 and f.stamp.startswith("m") for f in first)
