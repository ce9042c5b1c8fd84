"""UCF101 and HMDB51 (issue 16): one conversion of ``ROOT/<class>/<video>.avi`` serves every fold
and split, and ``UCF101(out, fold=f, train=t)[i]`` (``HMDB51`` alike) equals torchvision's
``UCF101(root, ann, T, S, fold=f, train=t)[i]`` as ``tests/reference.py`` computes it,
independently: discovery, fold rules, clips, frames, audio and labels.

The trees (``tests/fold_trees.py``) hold what torchvision's rules must get right: entries
missing from disk, videos no list names, ``.mp4`` files that are not videos of these
datasets, HMDB51's tag 0 and base names shared by two classes, CRLF files.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from clipshards.convert import inspect_output
from clipshards.loader import HMDB51, UCF101, StreamingHMDB51, StreamingUCF101
from fold_trees import HMDB_LISTS, UCF_LISTS, S, T, make_hmdb51, make_ucf101
from reference import reference_flat_videos, reference_fold_dataset, reference_fold_videos, run_cli

SHARD_SIZE = 100_000  # raw 4 x 24 x 32 clips with audio, 15-40 kB: a few clips a shard, videos cut across shards
SPLITS = [(f, t) for f in (1, 2, 3) for t in (True, False)]
MAKERS = {"ucf101": make_ucf101, "hmdb51": make_hmdb51}
MAP_STYLE = {"ucf101": UCF101, "hmdb51": HMDB51}
STREAMING = {"ucf101": StreamingUCF101, "hmdb51": StreamingHMDB51}
LISTS = {"ucf101": UCF_LISTS, "hmdb51": HMDB_LISTS}


def convert_args(root: Path, out: Path, dataset: str, ann: Path, *extra) -> list:
    return [root, out, "-T", T, "-S", S, "--dataset", dataset, "--annotation-path", ann, "--workers", 1,
            "--shard-size", SHARD_SIZE, "--no-progress", "--quiet", "--layout", "clips", *extra]


@pytest.fixture(scope="module", params=["ucf101", "hmdb51"])
def converted(request, tmp_path_factory):
    """``(dataset, root, annotation folder, OUT, reference cache)``, converted by the command line."""
    dataset = request.param
    base = tmp_path_factory.mktemp(dataset)
    root, ann = MAKERS[dataset](base)
    out = base / "out"
    rc = run_cli(*convert_args(root, out, dataset, ann))
    assert rc == (3 if dataset == "ucf101" else 0)  # UCF's 3-frame video gives no clip: reported
    return dataset, root, ann, out, {}


def reference(converted, fold: int, train: bool):
    dataset, root, ann, _, cache = converted
    return reference_fold_dataset(root, ann, dataset, fold, train, cache=cache, frames_per_clip=T, step_between_clips=S)


def test_the_index_records_every_video_once_with_its_folds(converted):
    dataset, root, ann, out, _ = converted
    index = json.loads((out / "all" / "index.json").read_bytes())
    assert index["split"] == "all" and index["options"]["dataset"] == dataset
    assert index["options"]["extensions"] == ["avi"] and "num_classes" not in index["options"]
    videos = index["videos"]
    # every .avi of the root (nested, upper-case extension), no .mp4 (even a listed one)
    assert [(v["path"], v["label"]) for v in videos] == reference_flat_videos(root)
    assert not any(v["path"].endswith(".mp4") for v in videos)
    for fold, train in SPLITS:
        want = {p for p, _ in reference_fold_videos(root, ann, dataset, fold, train)}
        got = {v["path"] for v in videos if v["folds"][fold - 1] & (1 if train else 2)}
        assert got == want, (fold, train)
    assert any(not any(v["folds"]) for v in videos), "the trees hold a video that no list names"
    firsts = {s["first_clip"] for s in index["shards"]}
    assert any(v["first_clip"] < f < v["first_clip"] + v["clips"] for v in videos for f in firsts), \
        "some video's clips must span two shards (runs are cut there)"
    assert any(sum(v["first_clip"] < s["first_clip"] + s["clips"] and s["first_clip"] < v["first_clip"] + v["clips"]
                   for v in videos) > 1 for s in index["shards"]), "some shard must hold clips of two videos"
    files = index["annotations"]["files"]
    assert index["annotations"]["dataset"] == dataset
    assert {f["name"] for f in files} == {n for n in LISTS[dataset] if "split10" not in n}
    for f in files:
        assert f["sha256"] == hashlib.sha256((ann / f["name"]).read_bytes()).hexdigest()


@pytest.mark.parametrize("fold,train", SPLITS)
def test_every_fold_and_split_equals_torchvision(converted, fold, train):
    dataset, root, _, out, _ = converted
    want = reference(converted, fold, train)
    ds = MAP_STYLE[dataset](out, fold=fold, train=train)
    assert len(ds) == len(want) > 0
    assert ds.classes == sorted(p.name for p in root.iterdir() if p.is_dir())
    videos = reference_fold_videos(root, converted[2], dataset, fold, train)
    assert len(ds.clips_per_video) == len(videos) and int(ds.clips_per_video.sum()) == len(want)  # the samplers' view
    for i, r in enumerate(want):
        k, c = ds.get_clip_location(i)
        assert videos[k][0] == r.path and c == r.clip_index, i
        video, audio, label = ds[i]
        assert tuple(video.shape) == r.video.shape, i  # THWC, torchvision's default for these datasets
        assert np.array_equal(video.numpy(), r.video), (i, r.path, r.clip_index)
        assert np.array_equal(audio.numpy(), r.audio), (i, r.path)
        assert type(label) is int and label == r.label, (i, r.path)
    assert [int(x[2]) for x in ds.__getitems__([len(want) - 1, 0])] == [want[-1].label, want[0].label]
    with pytest.raises(IndexError):
        ds[len(want)]


@pytest.mark.parametrize("fold,train", [(1, True), (3, False)])
def test_streaming_yields_the_same_clips(converted, fold, train):
    dataset, _, _, out, _ = converted
    mapped = MAP_STYLE[dataset](out, fold=fold, train=train)
    globals_ = mapped.selection.global_clips(np.arange(len(mapped))).tolist()
    plain = STREAMING[dataset](out, fold=fold, train=train, shuffle=False)
    assert len(plain) == len(mapped)
    assert [int(g) for g in plain.epoch_order()[0]] == globals_
    want = [mapped[i] for i in range(len(mapped))]
    got = list(plain)
    assert len(got) == len(want)
    for (v, a, l), (wv, wa, wl) in zip(got, want):
        assert np.array_equal(v.numpy(), wv.numpy()) and np.array_equal(a.numpy(), wa.numpy()) and l == wl
    # shuffled, on two ranks, blocks of two clips: every kept clip once (plus the pad), nothing else
    ranks = [STREAMING[dataset](out, fold=fold, train=train, seed=3, block_size=2, rank=r, world_size=2)
             for r in (0, 1)]
    orders = [np.concatenate(ds.epoch_order(1, num_workers=2)).tolist() for ds in ranks]
    assert len(orders[0]) == len(orders[1]) == len(ranks[0]) == -(-len(mapped) // 2)
    assert set(orders[0] + orders[1]) == set(globals_)
    plan = ranks[0]._plan(1)
    firsts, counts = ranks[0]._runs
    for s, n in zip(plan.block_starts.tolist(), plan.block_lengths.tolist()):
        k = np.searchsorted(firsts, s, side="right") - 1
        assert firsts[k] <= s and s + n <= firsts[k] + counts[k], "a block crosses a run boundary"
        assert ranks[0].index.shard_of(s) == ranks[0].index.shard_of(s + n - 1), "a block crosses a shard boundary"
    whole = STREAMING[dataset](out, fold=fold, train=train, block_size=None)._plan(0)  # None: a block is a whole run
    assert sorted(zip(whole.block_starts.tolist(), whole.block_lengths.tolist())) == list(zip(*(a.tolist() for a in ranks[0]._runs)))


def test_streaming_resumes_and_refuses_another_folds_state(converted):
    dataset, _, _, out, _ = converted
    make = STREAMING[dataset]
    ds = make(out, fold=1, train=True, seed=5)
    full = [int(x[2]) for x in ds]
    first = make(out, fold=1, train=True, seed=5)
    it = iter(first)
    head = [int(next(it)[2]) for _ in range(3)]
    state = first.state_dict()
    again = make(out, fold=1, train=True, seed=5)
    again.load_state_dict(state)
    assert head + [int(x[2]) for x in again] == full
    with pytest.raises(ValueError, match="fold|num_clips"):
        make(out, fold=2, train=True, seed=5).load_state_dict(state)


def test_streaming_resumes_at_another_world_size(converted):
    """Elastic resume on a fold (issue 17): 2 ranks x 3 clips, then rank 0's state at 3 ranks:
    the rest holds every clip the first leg left, once (``"drop"``: at most 2 left out)."""
    dataset, _, _, out, _ = converted
    make, digest = STREAMING[dataset], (lambda x: hashlib.blake2b(x[0].numpy().tobytes()).hexdigest())
    every = [digest(x) for x in MAP_STYLE[dataset](out, fold=1, train=True)]
    ranks = [make(out, fold=1, train=True, seed=5, remainder="drop", rank=r, world_size=2) for r in range(2)]
    its = [iter(ds) for ds in ranks]
    first = [digest(next(it)) for it in its for _ in range(3)]
    state = ranks[0].state_dict()
    rest = []
    for r in range(3):
        ds = make(out, fold=1, train=True, seed=5, remainder="drop", rank=r, world_size=3)
        ds.load_state_dict(state)
        rest.append([digest(x) for x in ds])
    left = len(every) - len(first)
    assert len({len(x) for x in rest}) == 1 and sum(map(len, rest)) == left - left % 3
    assert not Counter(first + [d for x in rest for d in x]) - Counter(every), "a clip came twice"


def test_a_given_annotation_path_overrides_the_recorded_folds(converted, tmp_path, caplog):
    dataset, root, ann, out, _ = converted
    same = MAP_STYLE[dataset](out, ann, fold=2, train=True)
    assert same.selection.videos.tolist() == MAP_STYLE[dataset](out, fold=2, train=True).selection.videos.tolist()
    edited = tmp_path / "ann"
    shutil.copytree(ann, edited)
    name = "trainlist02.txt" if dataset == "ucf101" else "cartwheel_test_split2.txt"
    lines = (edited / name).read_text().splitlines()
    (edited / name).write_text("\n".join(lines[1:]) + "\n")  # the first listed train video leaves fold 2's train split
    with caplog.at_level(logging.INFO, logger="clipshards.loader.folds"):
        ds = MAP_STYLE[dataset](out, edited, fold=2, train=True)
    assert "differ" in caplog.text
    want = reference_fold_videos(root, edited, dataset, 2, True)
    assert len(want) == len(same.selection.videos) - 1
    assert [ds.index.videos[k]["path"] for k in ds.selection.videos] == [p for p, _ in want]


def test_clip_options_are_those_converted(converted):
    dataset, _, _, out, _ = converted
    cls = MAP_STYLE[dataset]
    assert len(cls(out, None, T, S, None, 1, True)) == len(cls(out))
    with pytest.raises(ValueError, match="frames_per_clip=8: .*converted with frames_per_clip=4 .*convert again"):
        cls(out, frames_per_clip=8)
    with pytest.raises(ValueError, match="step_between_clips=1: .*converted with step_between_clips=3"):
        STREAMING[dataset](out, step_between_clips=1)
    with pytest.raises(ValueError, match="frame_rate=25.*converted with frame_rate=None"):
        cls(out, frame_rate=25)
    for fold in (0, 4, "1", True):
        with pytest.raises(ValueError, match="fold"):
            cls(out, fold=fold)
    with pytest.raises(ValueError, match="train"):
        cls(out, train="yes")
    other = HMDB51 if dataset == "ucf101" else UCF101
    with pytest.raises(ValueError, match=f"holds a {dataset} conversion"):
        other(out)


def test_inspect_counts_every_fold_and_split(converted, capsys):
    dataset, root, ann, out, cache = converted
    info = inspect_output(out)
    assert info["split"] == "all"
    for row in info["folds"]["folds"]:
        for split, train in (("train", True), ("test", False)):
            ref = reference_fold_dataset(root, ann, dataset, row["fold"], train, cache=cache, frames_per_clip=T,
                                         step_between_clips=S)
            assert row[split]["clips"] == len(ref)
            assert row[split]["videos"] == len(reference_fold_videos(root, ann, dataset, row["fold"], train))
    from clipshards.convert.cli import main

    assert main(["inspect", str(out)]) in (0, None)
    text = capsys.readouterr().out
    assert f"folds of {dataset}" in text and "in neither" in text


def test_a_rerun_is_a_no_op_and_changed_folds_are_another_conversion(converted, tmp_path, capsys):
    dataset, root, ann, out, _ = converted
    before = (out / "all" / "index.json").read_bytes()
    assert run_cli(*convert_args(root, out, dataset, ann)) in (0, 3)
    assert (out / "all" / "index.json").read_bytes() == before
    edited = tmp_path / "ann"
    shutil.copytree(ann, edited)
    name, line = (("testlist03.txt", "Archery/v_Archery_g01_c01.avi") if dataset == "ucf101"
                  else ("brush_hair_test_split3.txt", "Blonde_brush_hair_f_nm_np2_le_med_0.avi 2"))
    (edited / name).write_text((edited / name).read_text() + line + "\n")  # one more video in fold 3's test split
    assert run_cli(*convert_args(root, out, dataset, edited)) in (1, 2)  # refused: the folds are part of the output
    assert (out / "all" / "index.json").read_bytes() == before


@pytest.mark.parametrize("case,extra,message", [
    ("no annotation path", ["--annotation-path", None], "needs annotation_path"),
    ("a split", ["--split", "train"], "split='train': ucf101 has no split folder"),
    ("other extensions", ["--extensions", "avi,mp4"], "takes .avi files only"),
    ("annotations for kinetics", ["--dataset", "kinetics"], "only dataset 'ucf101' or 'hmdb51' reads annotation files"),
])
def test_bad_arguments_exit_2_with_one_line(tmp_path, capsys, case, extra, message):
    root, ann = tmp_path / "root", tmp_path / "ann"
    (root / "a").mkdir(parents=True)
    ann.mkdir()
    args = convert_args(root, tmp_path / "out", "ucf101", ann)
    for flag, value in zip(extra[::2], extra[1::2]):
        i = args.index(flag) if flag in args else None
        if value is None:
            del args[i : i + 2]
        elif i is not None:
            args[i + 1] = value
        else:
            args += [flag, value]
    assert run_cli(*args) == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("dataset,edit,message", [
    ("ucf101", ("testlist02.txt", None), r"testlist02\.txt: no such file"),
    ("ucf101", ("trainlist03.txt", "ApplyEyeMakeup v_ApplyEyeMakeup_g01_c01.avi 1\n"), r"trainlist03\.txt:2: "),
    ("hmdb51", ("chew_test_split3.txt", "Chew_chew_h_nm_np1_fr_goo_0.avi 3\n"), r"chew_test_split3\.txt:2: "),
    ("hmdb51", ("*_test_split2.txt", None), r"\*test_split2\.txt: no such file"),
])
def test_a_missing_or_malformed_annotation_file_is_named(tmp_path, capsys, dataset, edit, message):
    base = tmp_path / dataset
    root, ann = base / "root", base / "ann"
    (root / "c").mkdir(parents=True)
    ann.mkdir()
    for name, lines in LISTS[dataset].items():
        (ann / name).write_text("\n".join(lines) + "\n")
    name, added = edit
    for path in ann.glob(name):
        if added is None:
            path.unlink()
        else:
            path.write_text(path.read_text().splitlines()[0] + "\n" + added)
    assert run_cli(*convert_args(root, base / "out", dataset, ann)) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and re.search(message, err), err


def test_a_kinetics_conversion_is_not_a_fold_dataset(tiny_converted):
    for cls in (UCF101, StreamingHMDB51):
        with pytest.raises(FileNotFoundError, match="holds no (ucf101|hmdb51) conversion .*--dataset"):
            cls(tiny_converted)
    index = json.loads((tiny_converted / "train" / "index.json").read_bytes())
    assert "annotations" not in index and "dataset" not in index["options"]  # Kinetics indexes keep their bytes
    assert not any("folds" in v for v in index["videos"])


@pytest.mark.parametrize("dataset", ["ucf101", "hmdb51"])
def test_the_videos_layout_gives_every_fold_for_any_clip_settings(dataset, tmp_path):
    """A ``--layout videos`` conversion stores each video once; the map-style loaders cut a
    fold's clips when loading, for the converted settings or any others, equal to torchvision's."""
    root, ann = MAKERS[dataset](tmp_path)
    out = tmp_path / "out"
    assert run_cli(*convert_args(root, out, dataset, ann, "--layout", "videos")) == 0  # short videos are kept
    index = json.loads((out / "all" / "index.json").read_bytes())
    assert index["layout"] == "videos" and all(len(v["folds"]) == 3 for v in index["videos"])
    cache: dict = {}
    for (fold, train), (t, s) in zip(SPLITS, [(T, S), (3, 2), (5, 1), (T, S), (2, 4), (3, 3)]):
        want = reference_fold_dataset(root, ann, dataset, fold, train, cache=cache.setdefault((t, s), {}),
                                      frames_per_clip=t, step_between_clips=s)
        ds = MAP_STYLE[dataset](out, None, t, s, fold=fold, train=train, with_ids=True)
        assert len(ds) == len(want) == int(ds.clips_per_video.sum()), (fold, train, t, s)
        videos = reference_fold_videos(root, ann, dataset, fold, train)
        assert len(ds.clips_per_video) == len(videos)
        for i, r in enumerate(want):
            video, audio, label, video_idx, clip_idx = ds[i]
            assert np.array_equal(video.numpy(), r.video) and np.array_equal(audio.numpy(), r.audio), (i, r.path)
            assert label == r.label and clip_idx == r.clip_index
            assert index["videos"][video_idx]["path"] == r.path  # with_ids: the root-wide video index
            k, c = ds.get_clip_location(i)
            assert videos[k][0] == r.path and c == r.clip_index  # torchvision's: the fold's video index
    with pytest.raises(ValueError, match="videos layout conversion: StreamingUCF101|videos layout conversion: StreamingHMDB51"):
        STREAMING[dataset](out)
