"""``StreamingKinetics`` on a ``videos`` layout output: ``clips_per_video=k`` with ``clip_sampling``
``"random"`` (k distinct clips of each video, drawn afresh each epoch from (seed, epoch)) or
``"uniform"`` (k equally spaced ones); the same clips as ``IndexedKinetics`` gives; equal counts
and batches on every rank with the padding marked; ``len()``; exact resume."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from clipshards.convert import convert
from clipshards.convert.synth import VideoSpec, make_dataset, write_video
from clipshards.loader import ClipLoader, IndexedKinetics, StreamingKinetics
from clipshards.loader.video_epochs import random_clips, uniform_clips

CLIPS = dict(frames_per_clip=4, step_between_clips=2, frame_rate=15)


@pytest.fixture(scope="module")
def out(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("videos_streaming") / "ds"
    make_dataset(root, classes=("a", "b", "c"), videos_per_class=2, spec=VideoSpec(frames=40))
    write_video(root / "train" / "b" / "tiny.mp4", VideoSpec(frames=8, seed=4))  # 1 clip at T=4, 15 fps
    write_video(root / "train" / "c" / "none.mp4", VideoSpec(frames=5, seed=5))  # none
    dest = root.parent / "out"
    convert(root, dest, frames_per_clip=8, step_between_clips=8, layout="videos", workers=1, progress=False)
    return dest


def _ids(ds, epoch=0, **kw):
    ds.set_epoch(epoch)
    return [(int(v), int(c)) for *_, v, c in ds]


def test_uniform_views_are_the_indexed_clips(out):
    indexed = IndexedKinetics(out, **CLIPS, with_ids=True)
    ds = StreamingKinetics(out, **CLIPS, clips_per_video=3, clip_sampling="uniform", shuffle=False, with_ids=True)
    want = uniform_clips(indexed.clips_per_video, 3)
    assert len(ds) == len(want) == 3 * int(np.count_nonzero(indexed.clips_per_video))
    got = list(ds)
    assert len(got) == len(want)
    for item, g in zip(got, want.tolist()):
        ref = indexed[g]
        assert item[2:] == ref[2:] and torch.equal(item[0], ref[0]) and torch.equal(item[1], ref[1])
    tiny = [c for *_, v, c in got if indexed.clips_per_video[v] == 1]
    assert tiny == [0, 0, 0]  # a video with fewer clips than views repeats them, as UniformClipSampler
    assert [ds.epoch_order(0)[0].tolist()] == [want.tolist()]


def test_random_clips_per_video_change_with_the_epoch(out):
    counts = IndexedKinetics(out, **CLIPS).clips_per_video
    ds = StreamingKinetics(out, **CLIPS, clips_per_video=2, seed=3, with_ids=True)
    epochs = [_ids(ds, e) for e in (0, 1, 0)]
    assert epochs[0] == epochs[2] and sorted(epochs[0]) != sorted(epochs[1])
    for ids in epochs:
        assert len(ids) == len(ds) == int(np.minimum(counts, 2).sum())
        per_video = Counter(v for v, _ in ids)
        assert all(per_video[v] == min(2, int(n)) for v, n in enumerate(counts))
        assert len(set(ids)) == len(ids)  # distinct clips of each video
    other = StreamingKinetics(out, **CLIPS, clips_per_video=2, seed=4, with_ids=True)
    assert sorted(_ids(other, 0)) != sorted(epochs[0])


def test_random_choice_is_uniform_and_distinct():
    rng = np.random.default_rng(0)
    counts = np.array([0, 1, 3, 5, 9, 40, 200])
    seen = Counter()
    for _ in range(3000):
        items = random_clips(counts, 4, rng)
        assert len(items) == 0 + 1 + 3 + 4 + 4 + 4 + 4 and len(set(items.tolist())) == len(items)
        seen.update(items.tolist())
    firsts = np.cumsum(counts) - counts
    for v in (4, 5, 6):  # each clip of a video of n > k clips is taken with probability k / n
        freq = np.array([seen[firsts[v] + c] for c in range(counts[v])]) / 3000
        assert np.allclose(freq, 4 / counts[v], atol=0.05 + 4 / counts[v] * 0.25), (v, freq)


@pytest.mark.parametrize("sampling", ["uniform", "random"])
def test_ranks_get_equal_counts_and_every_view_once(out, sampling):
    world = 4
    parts = [StreamingKinetics(out, **CLIPS, clips_per_video=3, clip_sampling=sampling, rank=r, world_size=world,
                               seed=1, with_ids=True) for r in range(world)]
    got = [_ids(ds, 2) for ds in parts]
    assert len({len(g) for g in got}) == 1 and all(len(g) == len(parts[0]) for g in got)
    real = [i for g in got for i in g if i[0] >= 0]
    single = StreamingKinetics(out, **CLIPS, clips_per_video=3, clip_sampling=sampling, seed=1, with_ids=True)
    assert Counter(real) == Counter(_ids(single, 2))
    assert sum(i[0] < 0 for g in got for i in g) == world * len(parts[0]) - len(real)


def test_resume_mid_epoch_gives_the_same_batches(out):
    def make():
        return StreamingKinetics(out, **CLIPS, clips_per_video=2, seed=9)

    def loader(ds):
        return ClipLoader(ds, batch_size=3, num_workers=2)

    ds = make()
    ds.set_epoch(1)
    full = [b.video.clone() for b in loader(ds)]
    assert len(full) == len(loader(ds))
    ds = make()
    ds.set_epoch(1)
    first = loader(ds)
    done = []
    for b in first:
        done.append(b.video.clone())
        if len(done) == 3:
            state = first.state_dict()
            break
    resumed_ds = make()
    resumed_ds.load_state_dict(state)
    rest = [b.video.clone() for b in loader(resumed_ds)]
    assert len(done) + len(rest) == len(full)
    assert all(torch.equal(a, b) for a, b in zip(done + rest, full))
    with pytest.raises(ValueError, match="state was saved with (num_clips|clip_sampling)"):  # other clips: refused
        StreamingKinetics(out, **CLIPS, clips_per_video=2, clip_sampling="uniform", seed=9).load_state_dict(state)


def test_defaults_and_arguments(out, tmp_path):
    ds = StreamingKinetics(out)
    assert (ds.block_size, ds.shuffle_buffer) == (1, 0)  # a clip is one read: a uniformly random order
    assert len(ds) == len(IndexedKinetics(out))  # every clip, T/S/R as converted
    with pytest.raises(ValueError, match="clip_sampling='even'"):
        StreamingKinetics(out, clips_per_video=2, clip_sampling="even")
    with pytest.raises(ValueError, match="clips_per_video=0"):
        StreamingKinetics(out, clips_per_video=0)
    clips_out = tmp_path / "clips"
    convert(out.parent / "ds", clips_out, frames_per_clip=4, step_between_clips=4, workers=1, progress=False)
    with pytest.raises(ValueError, match="needs a videos layout"):
        StreamingKinetics(clips_out, clips_per_video=2)
    with pytest.raises(ValueError, match="--layout videos"):
        StreamingKinetics(clips_out, frames_per_clip=8)
    with pytest.raises(ValueError, match="with_ids"):
        StreamingKinetics(clips_out, with_ids=True)
    assert len(StreamingKinetics(clips_out, frames_per_clip=4)) == len(IndexedKinetics(clips_out))


@pytest.mark.parametrize("threads", [1, 4])
@pytest.mark.parametrize("frame_rate", [15, None, 45])  # 45: frames repeated, read in the dataset
def test_clip_loader_reads_raw_frames_straight_into_the_batch(out, threads, frame_rate, monkeypatch):
    """Under ClipLoader a raw clip that shows each frame once is read by the collate straight into
    the batch (RunPixels; over 1 or 4 threads): the batches are IndexedKinetics' clips."""
    from clipshards.loader.reader import DeferredVideo
    from clipshards.loader.video_ranges import RunPixels
    from loader_helpers import poison_batch_memory

    monkeypatch.setattr("clipshards.loader.collate.batch_threads", lambda: threads)
    poison_batch_memory(monkeypatch)
    clips = {**CLIPS, "frame_rate": frame_rate}
    indexed = IndexedKinetics(out, **clips)
    ds = StreamingKinetics(out, **clips, shuffle=False)
    with ds.decoding_in_collate(True):
        video = next(iter(ds))[0]
    assert isinstance(video, DeferredVideo) == (frame_rate != 45)
    assert frame_rate == 45 or isinstance(video.frames, RunPixels)
    batches = list(ClipLoader(ds, batch_size=4))
    got = [(v, a[:, : int(n)], int(y)) for b in batches for v, a, y, n in zip(b.video, b.audio, b.label, b.audio_lengths)]
    assert len(got) == len(indexed)
    for g, (v, a, y) in enumerate(got):
        rv, ra, ry = indexed[g]
        assert torch.equal(v, rv) and torch.equal(a, ra) and y == ry, f"clip {g}"
