"""``convert --append``: after videos and classes were added to ROOT (one removed, one changed),
the appended output loads exactly as a fresh conversion of the new ROOT, its old shards keep
their bytes, and a crash at any step leaves the old or the new index, which a rerun finishes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from torch.utils.data import IterableDataset

from clipshards.convert import convert, inspect_output, read_clip, verify_output
from clipshards.convert.cli import main
from clipshards.convert.errors import ConversionMismatch, StrictModeError
from clipshards.convert.storage import Location
from clipshards.convert.synth import VideoSpec, make_dataset, write_video
from clipshards.loader import IndexedKinetics, StreamingKinetics, webdataset_pipeline
from clipshards.loader.index import DatasetIndex

T, S = 4, 4
KW = dict(frames_per_clip=T, step_between_clips=S, layout="clips", workers=1, progress=False, shard_size=150_000)
RAW = dict(codec="rawvideo", audio_codec="pcm_s16le")  # its size depends on the frame count alone


def _before(root: Path) -> None:
    """ROOT as first converted: classes a, c, e; an empty file (skipped); a video to be changed."""
    make_dataset(root, classes=("a", "c", "e"), videos_per_class=2, spec=VideoSpec(frames=16))
    (root / "train" / "c" / "video_000_empty.mp4").write_bytes(b"")
    write_video(root / "train" / "e" / "video_009.avi", VideoSpec(frames=20, seed=31, **RAW))


def _edit(root: Path) -> None:
    """Videos added in and at the end of class a, class b added in the middle of the sorted list
    (labels of c and e shift), one video removed, one changed (same size, new content and mtime)."""
    train = root / "train"
    write_video(train / "a" / "video_000b.mp4", VideoSpec(frames=13, seed=40))
    write_video(train / "a" / "video_005.mp4", VideoSpec(frames=9, seed=41))
    write_video(train / "b" / "video_000.mp4", VideoSpec(frames=12, seed=42))
    write_video(train / "b" / "video_001.mp4", VideoSpec(frames=8, seed=43))
    os.remove(train / "c" / "video_001.mp4")
    changed = train / "e" / "video_009.avi"
    size = changed.stat().st_size
    write_video(changed, VideoSpec(frames=20, seed=32, **RAW))
    assert changed.stat().st_size == size
    later = time.time() + 10
    os.utime(changed, (later, later))


@pytest.fixture(scope="module")
def trees(tmp_path_factory) -> dict[str, Path]:
    """``root`` (edited), ``before`` (its first conversion, untouched), ``appended`` and ``fresh``."""
    base = tmp_path_factory.mktemp("append")
    root = base / "root"
    _before(root)
    convert(root, base / "before", **KW)
    _edit(root)
    shutil.copytree(base / "before", base / "appended")
    report = convert(root, base / "appended", append=True, **KW)
    convert(root, base / "fresh", **KW)
    assert report.append is not None
    return {"root": root, "before": base / "before", "appended": base / "appended", "fresh": base / "fresh",
            "base": base}


def _items(ds) -> list[tuple[bytes, bytes, int]]:
    """Each item's video and audio bytes and label (and ids when given), in order."""
    out = []
    for item in ds if isinstance(ds, IterableDataset) else (ds[i] for i in range(len(ds))):
        out.append((item[0].numpy().tobytes(), item[1].numpy().tobytes(), *(int(x) for x in item[2:])))
    return out


@pytest.fixture(scope="module")
def fresh_items(trees):
    return _items(IndexedKinetics(trees["fresh"]))


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _index(out: Path) -> dict:
    return json.loads((out / "train" / "index.json").read_bytes())


def test_appended_output_loads_as_a_fresh_conversion(trees, fresh_items):
    appended, fresh = trees["appended"], trees["fresh"]
    ds = IndexedKinetics(appended)
    assert ds.index.appended and not IndexedKinetics(fresh).index.appended
    assert ds.classes == ["a", "b", "c", "e"] == IndexedKinetics(fresh).classes
    assert len(ds) == len(fresh_items) > 30
    assert _items(ds) == fresh_items  # count, order, video, audio and label, item by item
    assert _items(IndexedKinetics(appended, with_ids=True)) == _items(IndexedKinetics(fresh, with_ids=True))
    streamed = _items(StreamingKinetics(appended, shuffle=False))
    assert streamed == fresh_items == _items(StreamingKinetics(fresh, shuffle=False))
    # shuffled: the same clips, each once (blocks follow where clips are stored, so the order differs)
    shuffled = _items(StreamingKinetics(appended, shuffle=True, seed=3))
    assert sorted(shuffled) == sorted(fresh_items)
    labels = [item[2] for item in fresh_items]
    assert labels == sorted(labels) and set(labels) == {0, 1, 2, 3}  # c and e moved from 1, 2 to 2, 3


def test_a_dataloader_with_workers_reads_it_as_the_fresh_output(trees, fresh_items):
    loader = StreamingKinetics(trees["appended"], shuffle=False).loader(batch_size=None, num_workers=2)
    got = sorted((v.numpy().tobytes(), a.numpy().tobytes(), int(y)) for v, a, y in loader)
    assert got == sorted(fresh_items)


def test_old_shards_keep_their_bytes_and_checksums(trees):
    before, appended = _index(trees["before"]), _index(trees["appended"])
    old = {s["name"]: s for s in before["shards"]}
    kept = [s for s in appended["shards"] if s["name"] in old]
    new = [s for s in appended["shards"] if s["name"] not in old]
    assert kept and new and all(s["name"].startswith("train-g2-") for s in new)
    for s in kept:
        assert s["xxh3_128"] == old[s["name"]]["xxh3_128"] and s["bytes"] == old[s["name"]]["bytes"]
        assert _sha(trees["appended"] / "train" / s["name"]) == _sha(trees["before"] / "train" / s["name"])
    # a shard whose every clip belonged to the removed video is gone; the others are all kept
    dropped = set(old) - {s["name"] for s in kept}
    assert dropped and not any((trees["appended"] / "train" / n).exists() for n in dropped)
    assert appended["generation"] == 2 and appended["version"] == 4
    files = set(os.listdir(trees["appended"] / "train"))
    listed = {s["name"] for s in appended["shards"]} | {appended["offsets"]["name"], appended["extents"]["name"]}
    assert files == listed | {"index.json", "report.json"}, "nothing left over: old tables, progress, partial files"
    assert appended["fingerprint"] == _index(trees["fresh"])["fingerprint"]


def test_report_lists_what_changed(trees):
    report = json.loads((trees["appended"] / "train" / "report.json").read_bytes())["append"]
    assert report["added"] == ["train/a/video_000b.mp4", "train/a/video_005.mp4", "train/b/video_000.mp4",
                               "train/b/video_001.mp4"]
    assert report["changed"] == ["train/e/video_009.avi"] and report["removed"] == ["train/c/video_001.mp4"]
    assert report["generation"] == 2 and report["shards_written"] >= 5 and report["shards_dropped"]
    records = {v["path"]: v for v in _index(trees["appended"])["videos"]}
    assert records["train/c/video_000_empty.mp4"]["status"] == "skipped"  # unchanged: kept as it was
    assert [v["index"] for v in _index(trees["appended"])["videos"]] == list(range(len(records)))


def test_cli_append_prints_one_summary_line(trees, tmp_path, capsys):
    out = tmp_path / "out"
    shutil.copytree(trees["before"], out)
    args = [str(trees["root"]), str(out), "-T", str(T), "-S", str(S), "--layout", "clips", "--shard-size", "150000",
            "--workers", "1", "--no-progress", "-q"]
    assert main(["convert", *args, "--append"]) == 3  # an empty file is skipped: status 3, as a fresh conversion
    printed = capsys.readouterr().out
    assert "append (generation 2): 4 videos added, 1 changed (converted again), 1 removed;" in printed
    for name in os.listdir(trees["appended"] / "train"):
        if name != "report.json":
            assert _sha(out / "train" / name) == _sha(trees["appended"] / "train" / name), name
    index = (out / "train" / "index.json").read_bytes()
    assert main(["convert", *args, "--append"]) == 3  # again: nothing to do, nothing written
    assert (out / "train" / "index.json").read_bytes() == index and "append" not in capsys.readouterr().out


def test_verify_and_inspect_an_appended_output(trees):
    result = verify_output(trees["appended"], decode="all")
    assert result.ok, result.summary()
    assert result.clips_decoded == len(IndexedKinetics(trees["fresh"]))
    info = inspect_output(trees["appended"])
    assert info["generation"] == 2 and info["counts"]["clips"] == result.clips
    assert [c["clips"] for c in info["classes"]] == [c["clips"] for c in inspect_output(trees["fresh"])["classes"]]
    fresh_index = _index(trees["fresh"])
    first_e = next(v for v in fresh_index["videos"] if v["path"].startswith("train/e/") and v["status"] == "ok")
    clip = read_clip(trees["appended"], index=first_e["first_clip"])
    assert clip["label"] == 3 and clip["class_name"] == "e" and clip["path"] == first_e["path"]


def test_resuming_a_training_state_across_an_append_is_refused(trees, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(trees["before"], old)
    ds = StreamingKinetics(old, shuffle=True, seed=1)
    it = iter(ds)
    for _ in range(3):
        next(it)
    state = ds.state_dict()
    after = StreamingKinetics(trees["appended"], shuffle=True, seed=1)
    with pytest.raises(ValueError, match=r"state was saved with index='\w+', this dataset has index='\w+' "
                                         r"\(the dataset's classes or shards changed since"):
        after.load_state_dict(state)
    again = StreamingKinetics(old, shuffle=True, seed=1)
    again.load_state_dict(state)  # the unchanged output still takes it


def test_refusals(trees, tmp_path):
    root = trees["root"]
    with pytest.raises(ConversionMismatch, match="holds no finished conversion"):
        convert(root, tmp_path / "nothing", append=True, **KW)
    with pytest.raises(ValueError, match="append=True and overwrite=True"):
        convert(root, trees["appended"], append=True, overwrite=True, **KW)
    with pytest.raises(ConversionMismatch, match=r"--append adds to an output with the options it was made with"):
        convert(root, trees["appended"], append=True, **{**KW, "frames_per_clip": 2})
    # an index of version 2 records no file sizes and stamps: refused, naming its version
    old = tmp_path / "v2"
    shutil.copytree(trees["before"], old)
    index = _index(old)
    index["version"] = 2
    for v in index["videos"]:
        v.pop("size"), v.pop("stamp")
    (old / "train" / "index.json").write_text(json.dumps(index))
    with pytest.raises(ConversionMismatch, match="format version 2, whose video records do not hold the size"):
        convert(root, old, append=True, **KW)
    assert len(IndexedKinetics(old)) == len(IndexedKinetics(trees["before"]))  # and it still loads
    # without --append, a changed input is refused with both ways out
    with pytest.raises(ConversionMismatch, match=r"pass --append \(append=True\).*or --overwrite"):
        convert(root, trees["before"], **KW)


def test_a_strict_append_refused_leaves_the_output_as_it_was(trees, tmp_path):
    root, out = tmp_path / "root", tmp_path / "out"
    shutil.copytree(trees["root"], root)
    shutil.copytree(trees["before"], out)
    write_video(root / "train" / "a" / "video_007.mp4", VideoSpec(frames=3, seed=44))  # too short for a clip
    before = {n: _sha(out / "train" / n) for n in os.listdir(out / "train")}
    with pytest.raises(StrictModeError, match="video_007.mp4: too short"):
        convert(root, out, append=True, strict=True, **KW)
    assert {n: _sha(out / "train" / n) for n in os.listdir(out / "train")} == before


def test_webdataset_pipeline_refuses_an_appended_output(trees):
    with pytest.raises(ValueError, match="was appended to .*generation 2.*StreamingKinetics or IndexedKinetics"):
        webdataset_pipeline(trees["appended"])


def test_a_stale_class_name_is_refused(trees, tmp_path):
    """An old shard's label is not trusted: its class name is checked against the index's."""
    out = tmp_path / "out"
    shutil.copytree(trees["appended"], out)
    index = _index(out)
    index["classes"][3] = "f"  # as if class e were another
    (out / "train" / "index.json").write_text(json.dumps(index, sort_keys=True, separators=(",", ":")))
    ds = IndexedKinetics(out)
    from clipshards.loader import ShardReadError

    old_e = next(v for v in index["videos"] if v["path"] == "train/e/video_000.mp4")  # in an old shard, stored label 2
    assert "key" in old_e and _index(trees["before"])["videos"][old_e["key"]]["label"] == 2 == old_e["label"] - 1
    with pytest.raises(ShardReadError, match=r"\.json'?: its class is not 'f', the index's class of this clip"):
        ds[old_e["first_clip"]]
    assert ds[0][2] == 0 and IndexedKinetics(trees["appended"])[old_e["first_clip"]][2] == 3


def test_a_damaged_extents_table_is_refused(trees, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(trees["appended"], out)
    name = _index(out)["extents"]["name"]
    table = np.load(out / "train" / name)
    table[1, 3] += 512  # an extent moved inside its shard
    np.save(out / "train" / name, table)
    from clipshards.convert.schema import ShardFormatError

    with pytest.raises(ShardFormatError, match="differs from the index"):
        DatasetIndex(out)
    index = _index(out)  # with the checksum made to match, the rows it no longer fits are refused
    data = (out / "train" / name).read_bytes()
    from clipshards.convert.schema import checksum_of

    index["extents"].update(bytes=len(data), xxh3_128=checksum_of("xxh3_128", data))
    (out / "train" / "index.json").write_text(json.dumps(index, sort_keys=True, separators=(",", ":")))
    with pytest.raises(Exception, match="not a clip of its shard|do not tile|offsets"):
        _items(IndexedKinetics(out))
    assert not verify_output(out, decode=0).ok


def test_a_second_append_and_an_unchanged_rerun(trees, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(trees["root"], root)
    out = tmp_path / "out"
    shutil.copytree(trees["appended"], out)
    first = os.stat(out / "train" / "index.json").st_mtime_ns
    report = convert(root, out, append=True, **KW)  # nothing changed: nothing written
    assert report.append is None and os.stat(out / "train" / "index.json").st_mtime_ns == first
    shutil.rmtree(root / "train" / "b")  # the class goes: labels shift back
    write_video(root / "train" / "e" / "video_010.mp4", VideoSpec(frames=10, seed=50))
    report = convert(root, out, append=True, **KW)
    assert report.append["generation"] == 3 and len(report.append["removed"]) == 2 and len(report.append["added"]) == 1
    convert(root, tmp_path / "fresh", **KW)
    assert _items(IndexedKinetics(out)) == _items(IndexedKinetics(tmp_path / "fresh"))
    names = set(os.listdir(out / "train"))
    assert {"offsets.g3.npy", "extents.g3.npy"} <= names and not names & {"offsets.g2.npy", "extents.g2.npy"}
    dropped = report.append["shards_dropped"]  # class b's shards: no clip of them is used any more
    assert dropped and all(n.startswith("train-g2-") and n not in names for n in dropped)
    assert verify_output(out, decode="all").ok


class _Crash(Exception):
    """The fault injected at one write or removal of an append."""


def _faulty(monkeypatch, fail_at: int) -> list[str]:
    """Count (and at call ``fail_at``, fail) every file written or removed through Location."""
    calls: list[str] = []
    atomic, remove = Location.open_atomic, Location.remove

    def check(name: str) -> None:
        calls.append(name)
        if len(calls) == fail_at:
            raise _Crash(name)

    def open_atomic(self, name, **kw):
        check(f"write {name}")
        return atomic(self, name, **kw)

    def removing(self, name):
        check(f"remove {name}")
        return remove(self, name)

    monkeypatch.setattr(Location, "open_atomic", open_atomic)
    monkeypatch.setattr(Location, "remove", removing)
    return calls


def test_a_crash_at_every_step_leaves_the_old_or_the_new_index(trees, fresh_items, tmp_path, monkeypatch):
    before_items = _items(IndexedKinetics(trees["before"]))
    fresh_fp, old_fp = _index(trees["fresh"])["fingerprint"], _index(trees["before"])["fingerprint"]
    probe = tmp_path / "probe"
    shutil.copytree(trees["before"], probe)
    with monkeypatch.context() as m:
        steps = _faulty(m, 0)
        convert(trees["root"], probe, append=True, **KW)
    assert any("index.json" in s for s in steps) and any(s.startswith("remove train-0") for s in steps)
    for k in range(1, len(steps) + 1):
        out = tmp_path / f"crash{k}"
        shutil.copytree(trees["before"], out)
        with monkeypatch.context() as m:
            _faulty(m, k)
            with pytest.raises(_Crash):
                convert(trees["root"], out, append=True, **KW)
        fingerprint = _index(out)["fingerprint"]
        assert fingerprint in (old_fp, fresh_fp), steps[k - 1]
        assert _items(IndexedKinetics(out)) == (fresh_items if fingerprint == fresh_fp else before_items), steps[k - 1]
        convert(trees["root"], out, append=True, **KW)  # the rerun finishes the job
        assert _index(out)["fingerprint"] == fresh_fp
        assert sorted(os.listdir(out / "train")) == sorted(os.listdir(trees["appended"] / "train")), steps[k - 1]
        if k % 5 == 0 or k == len(steps):
            assert _items(IndexedKinetics(out)) == fresh_items, steps[k - 1]
        shutil.rmtree(out)


def _progress(out: Path) -> list[str]:
    try:
        return os.listdir(out / "train" / "_progress")
    except FileNotFoundError:
        return []


@pytest.mark.parametrize("moment", ["first marker", "four markers", "tables written"])
def test_an_append_killed_is_finished_by_a_rerun(trees, fresh_items, tmp_path, moment):
    """SIGKILL (the whole process group) as soon as the append reaches ``moment``; the output
    is then the old or the new one, and the same command again finishes the append."""
    out = tmp_path / "out"
    shutil.copytree(trees["before"], out)
    cmd = [sys.executable, "-m", "clipshards.convert", str(trees["root"]), str(out), "-T", str(T), "-S", str(S),
           "--layout", "clips", "--shard-size", "150000", "--workers", "1", "--no-progress", "-q", "--append"]
    ready = {"first marker": lambda: len(_progress(out)) >= 1, "four markers": lambda: len(_progress(out)) >= 4,
             "tables written": lambda: (out / "train" / "extents.g2.npy").exists()}[moment]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    while not ready() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.0005)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()  # killed (-9) in practice: the run takes a second or so, the moments come well before its end
    assert _index(out)["fingerprint"] in (_index(trees["before"])["fingerprint"], _index(trees["fresh"])["fingerprint"])
    assert len(IndexedKinetics(out)) in (len(fresh_items), len(IndexedKinetics(trees["before"])))
    assert subprocess.run(cmd, capture_output=True).returncode == 3  # the rerun (one video is skipped: status 3)
    assert _items(IndexedKinetics(out)) == fresh_items
    assert sorted(os.listdir(out / "train")) == sorted(os.listdir(trees["appended"] / "train"))


def test_extents_table_rules():
    from clipshards.convert.extents import extents_of, generation_name, read_extents
    from clipshards.convert.schema import ShardFormatError, encode_npy

    rows = np.array([[0, 1024, 0, 0, 0], [1024, 512, 0, 0, 0], [0, 512, 0, 0, 0], [2048, 512, 0, 0, 0],
                     [1536, 512, 0, 0, 0]], dtype=np.int64)
    table = extents_of(np.array([0, 0, 1, 0, 0]), rows)  # a new shard between, then a gap, then out of order
    assert table.tolist() == [[0, 2, 0, 0, 1536], [2, 1, 1, 0, 512], [3, 1, 0, 2048, 2560], [4, 1, 0, 1536, 2048]]
    sizes = np.array([4096, 2048])
    assert read_extents(encode_npy(table), clips=5, shard_bytes=sizes, where="x").tolist() == table.tolist()
    for change, why in [((0, 1, 3), "is not a run"),  # the clip counts no longer tile the clips
                        ((1, 2, 2), "is not a run"),  # no such shard
                        ((2, 3, 2000), "is not a run"),  # not on a tar block
                        ((2, 4, 3584), "is not a run"),  # into the shard's end-of-archive blocks
                        ((3, 3, 1024), "overlaps")]:  # another extent's bytes: a clip listed twice
        bad = table.copy()
        bad[change[:2]] = change[2]
        if change[:2] == (3, 3):
            bad[3, 4] = 1536
        with pytest.raises(ShardFormatError, match=why):
            read_extents(encode_npy(bad), clips=5, shard_bytes=sizes, where="x")
    assert generation_name("offsets.npy", 1) == "offsets.npy" and generation_name("videos.npy", 12) == "videos.g12.npy"
