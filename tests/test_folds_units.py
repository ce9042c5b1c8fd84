"""The fold rules and the arithmetic under the UCF101/HMDB51 loaders, without media: annotation
lines (good, blank, CRLF, malformed: named by file and line), missing files, membership bits,
the epoch plan over runs of clips (the shard plan unchanged), runs cut at shard boundaries,
local-to-global clip lookup, and start-up time with UCF101's 13,320 video records."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from clipshards.convert.folds import (
    HMDB51,
    TEST,
    TRAIN,
    UCF101,
    AnnotationError,
    check_fold,
    parse_hmdb51_line,
    parse_ucf101_line,
    read_fold_lists,
)
from clipshards.convert.schema import checksum_of, decode_npy, encode_npy
from clipshards.loader.folds import FoldSelection
from clipshards.loader.plan import EpochPlan, runs_in_shards


def _ucf(folder: Path, lists: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for f in (1, 2, 3):
        for kind in ("train", "test"):
            name = f"{kind}list{f:02d}.txt"
            (folder / name).write_bytes(lists.get(name, "").encode())
    return folder


@pytest.mark.parametrize("line,want", [
    ("ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1", "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi"),
    ("ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi", "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi"),
    ("  a/nested/b.avi  12  ", "a/nested/b.avi"),
    ("", None),
    ("   ", None),
])
def test_ucf101_lines(line, want):
    assert parse_ucf101_line(line, "f:1") == want


@pytest.mark.parametrize("line", [
    "v_ApplyEyeMakeup_g08_c01.avi 1",  # no class folder
    "ApplyEyeMakeup v_ApplyEyeMakeup_g08_c01.avi 1",  # a space instead of '/'
    "/abs/path.avi",
    "a//b.avi",
    "a/../b.avi",
    "a/b.avi\t1",  # a tab: torchvision's token would be 'a/b.avi\t1'
    "a/b.avi one",
    "a/b.avi 1 2",
])
def test_malformed_ucf101_lines_name_file_and_line(line):
    with pytest.raises(AnnotationError, match=r"^trainlist01\.txt:7: "):
        parse_ucf101_line(line, "trainlist01.txt:7")


@pytest.mark.parametrize("line,want", [
    ("April_09_brush_hair_u_nm_np1_ba_goo_0.avi 1 ", ("April_09_brush_hair_u_nm_np1_ba_goo_0.avi", 1)),
    ("x.avi 0", ("x.avi", 0)),
    ("x.avi\t2", ("x.avi", 2)),
    ("", None),
])
def test_hmdb51_lines(line, want):
    assert parse_hmdb51_line(line, "f:1") == want


@pytest.mark.parametrize("line", ["x.avi", "x.avi 3", "x.avi -1", "x.avi one", "x.avi 1 2", "c/x.avi 1"])
def test_malformed_hmdb51_lines_name_file_and_line(line):
    with pytest.raises(AnnotationError, match=r"^brush_test_split1\.txt:3: .*tag 0 \(unused\)"):
        parse_hmdb51_line(line, "brush_test_split1.txt:3")


def test_ucf101_lists_crlf_blank_lines_and_both_splits(tmp_path):
    ann = _ucf(tmp_path, {
        "trainlist01.txt": "A/a.avi 1\r\nA/b.avi 1\r\n\r\n",
        "testlist01.txt": "A/c.avi\nA/b.avi\n",
        "trainlist02.txt": "A/c.avi 1\n",
    })
    lists = read_fold_lists(UCF101, ann)
    assert lists.membership("A/a.avi") == [TRAIN, 0, 0]
    assert lists.membership("A/b.avi") == [TRAIN | TEST, 0, 0]  # listed in both: in both, as torchvision
    assert lists.membership("A/c.avi") == [TEST, TRAIN, 0]
    assert lists.membership("B/a.avi") == [0, 0, 0]  # same name, other class: UCF101 matches whole paths
    assert [(f["fold"], f["name"]) for f in lists.files] == [
        (1, "trainlist01.txt"), (1, "testlist01.txt"), (2, "trainlist02.txt"), (2, "testlist02.txt"),
        (3, "trainlist03.txt"), (3, "testlist03.txt")]


def test_hmdb51_lists_match_base_names_and_ignore_tag_0(tmp_path):
    for f in (1, 2, 3):
        (tmp_path / f"brush_test_split{f}.txt").write_text(f"a.avi {f % 3} \nb.avi 0 \n\n")
    (tmp_path / "brush_test_split10.txt").write_text("b.avi 1\n")  # fold 10, not fold 1
    (tmp_path / ".hidden_test_split1.txt").write_text("b.avi 1\n")  # glob skips dot files, as torchvision's
    lists = read_fold_lists(HMDB51, tmp_path)
    assert lists.membership("brush/a.avi") == [TRAIN, TEST, 0]
    assert lists.membership("other/nested/a.avi") == [TRAIN, TEST, 0]
    assert lists.membership("brush/b.avi") == [0, 0, 0]
    assert [f["name"] for f in lists.files] == [f"brush_test_split{f}.txt" for f in (1, 2, 3)]


def test_missing_files_are_named(tmp_path):
    ann = _ucf(tmp_path / "ucf", {})
    (ann / "testlist02.txt").unlink()
    with pytest.raises(AnnotationError, match=r"ucf/testlist02\.txt: no such file"):
        read_fold_lists(UCF101, ann)
    assert read_fold_lists(UCF101, ann, folds=(1,)).folds == (1,)  # a loader reads only the fold it needs
    (tmp_path / "hmdb").mkdir()
    with pytest.raises(AnnotationError, match=r"hmdb/\*test_split1\.txt: no such file"):
        read_fold_lists(HMDB51, tmp_path / "hmdb")
    with pytest.raises(AnnotationError, match="is not a folder"):
        read_fold_lists(UCF101, tmp_path / "nowhere")
    with pytest.raises(AnnotationError, match=r"trainlist01\.txt:2: 'x' is not"):
        read_fold_lists(UCF101, _ucf(tmp_path / "bad", {"trainlist01.txt": "A/a.avi 1\nx\n"}))


def test_fold_must_be_1_2_or_3():
    assert [check_fold(f) for f in (1, 2, 3)] == [1, 2, 3]
    for bad in (0, 4, -1, 1.0, "1", True, None):
        with pytest.raises(ValueError, match="fold"):
            check_fold(bad)


@pytest.mark.parametrize("block_size", [None, 1, 3, 7])
@pytest.mark.parametrize("shuffle", [False, True])
def test_runs_that_are_the_shards_give_the_shard_plan(block_size, shuffle):
    counts = [5, 0, 9, 4, 13, 1]
    firsts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    kw = dict(epoch=2, shuffle=shuffle, seed=7, block_size=block_size, world_size=3, shuffle_buffer=4)
    a, b = EpochPlan(counts, **kw), EpochPlan(runs=(firsts, np.array(counts)), **kw)
    assert np.array_equal(a.block_starts, b.block_starts) and np.array_equal(a.block_lengths, b.block_lengths)
    for r in range(3):
        assert [o.tolist() for o in a.yield_orders(r, 2)] == [o.tolist() for o in b.yield_orders(r, 2)]


@pytest.mark.parametrize("block_size", [None, 1, 2, 5])
def test_a_plan_over_runs_reads_the_kept_clips_once_in_blocks_inside_runs(block_size):
    firsts, counts = np.array([2, 9, 10, 30]), np.array([4, 1, 6, 3])
    kept = sorted(int(f) + i for f, n in zip(firsts, counts) for i in range(n))
    plan = EpochPlan(runs=(firsts, counts), epoch=0, shuffle=True, seed=1, block_size=block_size, world_size=1)
    assert plan.num_clips == len(kept) and sorted(plan.sequence(0, plan.num_clips).tolist()) == kept
    for s, n in zip(plan.block_starts.tolist(), plan.block_lengths.tolist()):
        assert any(f <= s and s + n <= f + c for f, c in zip(firsts.tolist(), counts.tolist()))
    with pytest.raises(ValueError, match="one of the two"):
        EpochPlan([1], runs=(firsts, counts), epoch=0, shuffle=False, seed=0, block_size=None)


def _brute_runs(firsts, counts, shard_firsts, n):
    shard = np.searchsorted(shard_firsts, np.arange(n), side="right") - 1
    clips = sorted({int(f) + i for f, c in zip(firsts, counts) for i in range(int(c))})
    runs: list[list[int]] = []
    for g in clips:
        if runs and runs[-1][0] + runs[-1][1] == g and shard[g] == shard[g - 1]:
            runs[-1][1] += 1
        else:
            runs.append([g, 1])
    return runs


def test_runs_are_joined_and_cut_at_shard_boundaries():
    starts, lengths = runs_in_shards(np.array([0, 3, 5, 12]), np.array([3, 2, 4, 0]), np.array([0, 4, 8]), 14)
    assert list(zip(starts.tolist(), lengths.tolist())) == [(0, 4), (4, 4), (8, 1)]  # 0-9 joined, cut at 4 and 8; 12 empty
    rng = np.random.default_rng(0)
    for _ in range(200):
        per_video = rng.integers(0, 5, size=int(rng.integers(1, 15)))
        vfirsts = np.concatenate(([0], np.cumsum(per_video)[:-1]))
        n = int(per_video.sum()) or 1
        keep = rng.random(per_video.size) < 0.6
        shard_firsts = np.unique(np.concatenate(([0], rng.integers(0, n, size=int(rng.integers(0, 6))))))
        got = runs_in_shards(vfirsts[keep], per_video[keep], shard_firsts, n)
        assert [list(r) for r in zip(*(a.tolist() for a in got))] == _brute_runs(vfirsts[keep], per_video[keep],
                                                                                  shard_firsts, n)


def test_local_clips_map_to_the_kept_videos_clips():
    sel = FoldSelection(np.array([1, 4, 6]), np.array([3, 20, 40]), np.array([2, 3, 1]))
    assert sel.num_clips == 6
    assert sel.global_clips(np.arange(6)).tolist() == [3, 4, 20, 21, 22, 40]
    assert sel.global_clips(4) == 22 and isinstance(sel.global_clips(4), int)
    assert FoldSelection(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64)).num_clips == 0


def test_ucf101_size_index_opens_well_under_a_second(tmp_path):
    """UCF101 has 13,320 videos: the loader reads every video record at start-up."""
    from fold_trees import make_ucf101
    from clipshards.loader import IndexedKinetics, UCF101 as Loader
    from reference import run_cli

    root, ann = make_ucf101(tmp_path / "src")
    out = tmp_path / "out"
    run_cli(root, out, "-T", 4, "-S", 3, "--layout", "clips", "--dataset", "ucf101", "--annotation-path", ann,
            "--workers", 1, "--no-progress", "--quiet")
    index_path = out / "all" / "index.json"
    index = json.loads(index_path.read_bytes())
    model = index["videos"][0]
    n_videos, per = 13_320, 10
    index["videos"] = [{**model, "index": i, "path": f"Class{i % 101:03d}/v_{i:05d}.avi", "label": i % 101,
                        "first_clip": i * per, "clips": per, "folds": [1 + i % 2, 2 - i % 2, 1 + (i % 3 == 0)]}
                       for i in range(n_videos)]
    index["counts"]["clips"] = n_videos * per
    index["classes"] = [f"Class{c:03d}" for c in range(101)]
    offsets_path = out / "all" / index["offsets"]["name"]
    rows = np.zeros((n_videos * per, decode_npy(offsets_path.read_bytes()).shape[1]), dtype=np.int64)
    g = np.arange(n_videos * per)
    rows[:, 0], rows[:, 1] = g * 512, 512  # one 512-byte clip after another in one shard
    if rows.shape[1] > 2:  # index version 2: each clip's key and label too
        rows[:, 2], rows[:, 3] = (g // per) * 10**6 + g % per, (g // per) % 101
    offsets = encode_npy(rows)
    offsets_path.write_bytes(offsets)
    algo = index["options"]["checksum"]
    index["offsets"].update({"bytes": len(offsets), algo: checksum_of(algo, offsets)})
    index["shards"] = [{**index["shards"][0], "clips": n_videos * per, "first_clip": 0, "bytes": n_videos * per * 512 + 1024}]
    index_path.write_bytes(json.dumps(index, sort_keys=True, separators=(",", ":")).encode())
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        ds = Loader(out, fold=1, train=True)
        times.append(time.perf_counter() - t0)
    assert len(ds) == n_videos // 2 * per
    t0 = time.perf_counter()
    IndexedKinetics(out, "all")  # the same index, its video records left unread
    head_only = time.perf_counter() - t0
    print(f"UCF101 loader start-up with {n_videos} video records ({index_path.stat().st_size / 1e6:.1f} MB index): "
          f"best {min(times) * 1000:.0f} ms of 3 (IndexedKinetics on the same index: {head_only * 1000:.0f} ms)")
    assert min(times) < 1.0
    shutil.rmtree(out)
