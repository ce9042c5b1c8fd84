"""``convert --append`` beyond the clips layout on a local disk: the videos layout, a UCF101
conversion (``OUT/all``, folds recomputed from the new annotation files) and an output on S3
(moto on 127.0.0.1): each appended output loads as a fresh conversion of the new ROOT."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from torch.utils.data import IterableDataset

from clipshards.convert import convert, verify_output
from clipshards.convert.synth import VideoSpec, make_dataset, write_video
from clipshards.loader import UCF101, IndexedKinetics, StreamingKinetics, StreamingUCF101
from fold_trees import T as FOLD_T, S as FOLD_S, make_ucf101
from servers import s3_server  # noqa: F401  (fixture)


def _items(ds) -> list[tuple]:
    """Each item's arrays as bytes and its ints, in order."""
    items = ds if isinstance(ds, IterableDataset) else (ds[i] for i in range(len(ds)))
    return [tuple(x.numpy().tobytes() if hasattr(x, "numpy") else int(x) for x in item) for item in items]


def _grow(root: Path, split: str = "train") -> None:
    """A class inserted in the middle of the sorted list, a video added to a class, one removed."""
    write_video(root / split / "b" / "video_000.mp4", VideoSpec(frames=14, seed=60))
    write_video(root / split / "a" / "video_000x.mp4", VideoSpec(frames=11, seed=61))
    os.remove(root / split / "c" / "video_000.mp4")


def test_videos_layout(tmp_path):
    root = tmp_path / "root"
    make_dataset(root, classes=("a", "c"), videos_per_class=2, spec=VideoSpec(frames=16))
    kw = dict(frames_per_clip=4, step_between_clips=2, layout="videos", workers=1, progress=False, shard_size=100_000)
    convert(root, tmp_path / "out", **kw)
    _grow(root)
    report = convert(root, tmp_path / "out", append=True, **kw)
    assert report.append["added"] == ["train/a/video_000x.mp4", "train/b/video_000.mp4"]
    convert(root, tmp_path / "fresh", **kw)
    out, fresh = IndexedKinetics(tmp_path / "out", with_ids=True), IndexedKinetics(tmp_path / "fresh", with_ids=True)
    assert out.index.appended and out.index.layout == "videos" and len(out) == len(fresh) > 20
    assert _items(out) == _items(fresh)
    for settings in (dict(frames_per_clip=3, step_between_clips=3), dict(frames_per_clip=5, step_between_clips=1)):
        assert _items(IndexedKinetics(tmp_path / "out", **settings)) == _items(IndexedKinetics(tmp_path / "fresh", **settings))
    assert _items(StreamingKinetics(tmp_path / "out", shuffle=False)) == _items(StreamingKinetics(tmp_path / "fresh", shuffle=False))
    assert verify_output(tmp_path / "out", decode="all").ok
    names = os.listdir(tmp_path / "out" / "train")
    assert "videos.g2.npy" in names and "videos.npy" not in names


def test_ucf101_folds_recomputed(tmp_path):
    root, ann = make_ucf101(tmp_path / "ucf")
    kw = dict(dataset="ucf101", annotation_path=ann, frames_per_clip=FOLD_T, step_between_clips=FOLD_S, layout="clips",
              workers=1, progress=False, shard_size=40_000)
    convert(root, tmp_path / "out", **kw)
    write_video(root / "Archer" / "v_Archer_g01_c01.avi",  # a class that sorts before Archery: later labels shift
                VideoSpec(frames=14, fps=25, width=32, height=24, codec="mpeg4", audio_codec="mp3", seed=70))
    os.remove(root / "Archery" / "v_Archery_g01_c01.avi")
    for name, line in (("trainlist01.txt", "Archer/v_Archer_g01_c01.avi 2"), ("testlist02.txt", "Archer/v_Archer_g01_c01.avi")):
        with open(ann / name, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
    report = convert(root, tmp_path / "out", append=True, **kw)
    assert report.append["added"] == ["Archer/v_Archer_g01_c01.avi"]
    assert report.append["removed"] == ["Archery/v_Archery_g01_c01.avi"]
    convert(root, tmp_path / "fresh", **kw)
    for fold, train in ((1, True), (2, False), (3, True)):
        got, want = UCF101(tmp_path / "out", fold=fold, train=train), UCF101(tmp_path / "fresh", fold=fold, train=train)
        assert got.classes == want.classes and len(got) == len(want) > 0
        assert _items(got) == _items(want), (fold, train)
    assert UCF101(tmp_path / "out", fold=1, train=True).index.appended
    streamed = _items(StreamingUCF101(tmp_path / "out", fold=1, train=True, shuffle=False))
    assert streamed == _items(StreamingUCF101(tmp_path / "fresh", fold=1, train=True, shuffle=False))


def test_append_on_s3(s3_server, tmp_path):  # noqa: F811
    root = tmp_path / "root"
    make_dataset(root, classes=("a", "c"), videos_per_class=2, spec=VideoSpec(frames=12))
    kw = dict(frames_per_clip=4, step_between_clips=4, layout="clips", workers=1, progress=False, shard_size=100_000)
    url, so = f"s3://{s3_server.make_bucket()}/conv", s3_server.storage_options()
    convert(root, url, storage_options=so, **kw)
    _grow(root)
    report = convert(root, url, storage_options=so, append=True, **kw)
    assert report.append["generation"] == 2 and report.out == f"{url}/train"
    convert(root, tmp_path / "fresh", **kw)
    got = IndexedKinetics(url, storage_options=so)
    assert got.index.appended and _items(got) == _items(IndexedKinetics(tmp_path / "fresh"))
    assert _items(StreamingKinetics(url, storage_options=so, shuffle=False)) == _items(StreamingKinetics(tmp_path / "fresh", shuffle=False))
    result = verify_output(url, storage_options=so, decode="all")
    assert result.ok, result.summary()
    again = convert(root, url, storage_options=so, append=True, **kw)  # nothing changed since: nothing to do
    assert again.append is None


@pytest.mark.parametrize("codec", ["raw", "jpeg"])
def test_batches_of_large_clips(tmp_path, codec):
    """ClipLoader batches (raw pixels over 1 MiB read straight into the batch, JPEG frames decoded
    into it, both checked when collated) of an appended output equal a fresh conversion's."""
    root = tmp_path / "root"
    spec = VideoSpec(frames=16, width=256, height=192)
    make_dataset(root, classes=("a", "c"), videos_per_class=1, spec=spec, vary_length=False)
    kw = dict(frames_per_clip=8, step_between_clips=8, layout="clips", codec=codec, workers=1, progress=False,
              shard_size=4_000_000)
    convert(root, tmp_path / "out", **kw)
    write_video(root / "train" / "b" / "video_000.mp4", VideoSpec(frames=16, width=256, height=192, seed=80))
    convert(root, tmp_path / "out", append=True, **kw)
    convert(root, tmp_path / "fresh", **kw)

    def batches(out: Path) -> list[tuple]:
        loader = StreamingKinetics(out, shuffle=False).loader(batch_size=2, num_workers=0)
        return [(b.video.numpy().tobytes(), b.audio.numpy().tobytes(), b.label.tolist()) for b in loader]

    got = batches(tmp_path / "out")
    assert got == batches(tmp_path / "fresh") and [b[2] for b in got] == [[0, 0], [1, 1], [2, 2]]
