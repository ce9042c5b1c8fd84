"""torchvision's clip samplers, shipped in ``clipshards.loader``: under the same ``torch.manual_seed``
they yield the same indices as torchvision's over the same videos.

Compared with a transcription of torchvision 0.26's ``torchvision/datasets/samplers/clip_sampler.py``
written out here (the same torch RNG calls in the same order), over the clip counts of a real
``videos`` layout output for several T/S/R (videos with no clip included), and, where
torchvision is importable, with torchvision's own samplers (skipped here otherwise: torchvision
cannot be installed beside this torch).
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from clipshards.convert import convert
from clipshards.convert.synth import VideoSpec, make_dataset, write_video
from clipshards.loader import IndexedKinetics
from clipshards.loader.samplers import (
    DistributedSampler,
    EvalDistributedSampler,
    PaddedIndex,
    RandomClipSampler,
    UniformClipSampler,
    clip_counts_of,
)


# -- torchvision's algorithms, transcribed ---------------------------------------------------


def tv_random(counts, k):
    idxs, s = [], 0
    for length in counts:
        idxs.append(torch.randperm(length)[: min(length, k)] + s)
        s += length
    flat = torch.cat(idxs)
    return flat[torch.randperm(len(flat))].tolist()


def tv_uniform(counts, k):
    idxs, s = [], 0
    for length in counts:
        if length == 0:
            continue
        idxs.append(torch.linspace(s, s + length - 1, steps=k).floor().to(torch.int64))
        s += length
    return torch.cat(idxs).tolist()


def tv_distributed(order, num_replicas, rank, shuffle, epoch, group_size=1):
    n = len(order)
    groups = math.ceil((n // group_size) / num_replicas)
    total = groups * group_size * num_replicas
    g = torch.Generator()
    g.manual_seed(epoch)
    indices = torch.randperm(n, generator=g).tolist() if shuffle else list(range(n))
    indices += indices[: total - n]
    rows = [indices[i: i + group_size] for i in range(0, total, group_size)]
    mine = [i for row in rows[rank::num_replicas] for i in row]
    return [order[i] for i in mine]


@pytest.fixture(scope="module")
def videos_out(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("samplers") / "ds"
    make_dataset(root, classes=("a", "b"), videos_per_class=3, spec=VideoSpec(frames=30))
    write_video(root / "train" / "b" / "short.mp4", VideoSpec(frames=5))  # no clip for T >= 6
    out = root.parent / "out"
    convert(root, out, frames_per_clip=8, step_between_clips=8, layout="videos", workers=1, progress=False)
    return out


SETTINGS = [dict(frames_per_clip=8, step_between_clips=1), dict(frames_per_clip=4, step_between_clips=3, frame_rate=15),
            dict(frames_per_clip=16, step_between_clips=2, frame_rate=60)]


@pytest.mark.parametrize("settings", SETTINGS, ids=["T8S1", "T4S3R15", "T16S2R60"])
@pytest.mark.parametrize("seed", [0, 7])
def test_random_and_uniform_samplers_draw_as_torchvision(videos_out, settings, seed):
    ds = IndexedKinetics(videos_out, **settings)
    counts = [int(c) for c in ds.clips_per_video]
    assert 0 in counts and sum(counts) == len(ds)
    for k in (1, 5, 40):
        torch.manual_seed(seed)
        want = tv_random(counts, k)
        torch.manual_seed(seed)
        sampler = RandomClipSampler(ds, k)
        got = list(sampler)
        assert got == want and len(sampler) == len(got) == sum(min(c, k) for c in counts)
        assert list(UniformClipSampler(ds, k)) == tv_uniform(counts, k)
        assert len(UniformClipSampler(ds, k)) == k * sum(c > 0 for c in counts)
    # what the samplers index is the dataset's clip order: a clip's video is where the counts say
    for g in list(UniformClipSampler(ds, 3)):
        video, clip = ds.get_clip_location(g)
        assert 0 <= clip < counts[video] and sum(counts[:video]) + clip == g


@pytest.mark.parametrize("world, shuffle, group", [(1, False, 1), (3, False, 1), (4, True, 1), (2, True, 5)])
def test_distributed_sampler_splits_as_torchvision(videos_out, world, shuffle, group):
    ds = IndexedKinetics(videos_out, frames_per_clip=4, step_between_clips=1)
    counts = [int(c) for c in ds.clips_per_video]
    for epoch in (0, 3):
        for rank in range(world):
            torch.manual_seed(11)
            inner = UniformClipSampler(ds, 5)
            sampler = DistributedSampler(inner, num_replicas=world, rank=rank, shuffle=shuffle, group_size=group)
            sampler.set_epoch(epoch)
            torch.manual_seed(11)
            assert list(sampler) == tv_distributed(tv_uniform(counts, 5), world, rank, shuffle, epoch, group)
            assert len(sampler) == len(list(sampler))
        # over a RandomClipSampler the inner draw comes from the global RNG, as in torchvision
        torch.manual_seed(epoch)
        got = list(DistributedSampler(RandomClipSampler(ds, 2), num_replicas=world, rank=0, shuffle=shuffle))
        torch.manual_seed(epoch)
        assert got == tv_distributed(tv_random(counts, 2), world, 0, shuffle, 0)


def test_eval_sampler_covers_every_view_once_and_pads_with_a_mask(videos_out):
    ds = IndexedKinetics(videos_out, frames_per_clip=8, step_between_clips=4, with_ids=True)
    views = list(UniformClipSampler(ds, 3))
    for world in (1, 2, 4, 7):
        parts = [list(EvalDistributedSampler(UniformClipSampler(ds, 3), num_replicas=world, rank=r)) for r in range(world)]
        assert len({len(p) for p in parts}) == 1  # equal on every rank: no DDP hang
        real = sorted(i for p in parts for i in p if not isinstance(i, PaddedIndex))
        assert real == sorted(views)
        padded = [i for p in parts for i in p if isinstance(i, PaddedIndex)]
        assert len(padded) == world * len(parts[0]) - len(views)
    item = ds[PaddedIndex(views[0])]
    assert item[3] == -1 and ds[views[0]][3] >= 0  # the padding's video_idx masks it out


def test_sampler_arguments_and_sources(videos_out):
    ds = IndexedKinetics(videos_out)

    class FakeVideoClips:  # what torchvision's VideoClips holds: a list of clips per video
        clips = [torch.zeros(3, 8), torch.zeros(0, 8), torch.zeros(2, 8)]

    class FakeDataset:
        video_clips = FakeVideoClips()

    assert clip_counts_of(FakeVideoClips()) == clip_counts_of(FakeDataset()) == [3, 0, 2]
    assert clip_counts_of(ds) == [int(c) for c in ds.clips_per_video]
    with pytest.raises(TypeError, match="clips_per_video"):
        RandomClipSampler(object(), 3)
    with pytest.raises(ValueError, match="max_clips_per_video=0"):
        RandomClipSampler(ds, 0)
    with pytest.raises(ValueError, match="rank=2"):
        DistributedSampler(UniformClipSampler(ds, 2), num_replicas=2, rank=2)
    with pytest.raises(RuntimeError, match="torch.distributed"):
        DistributedSampler(UniformClipSampler(ds, 2))


def test_same_draws_as_torchvisions_own_samplers(videos_out):
    tv = pytest.importorskip("torchvision.datasets.samplers", reason="torchvision is not installable beside this torch")
    from torchvision.datasets.video_utils import VideoClips

    ds = IndexedKinetics(videos_out, frames_per_clip=4, step_between_clips=2, frame_rate=15)
    clips = VideoClips.__new__(VideoClips)  # no decoding: only the clip lists the samplers read
    clips.clips = [torch.zeros(int(c), 4) for c in ds.clips_per_video]
    for k in (1, 3, 50):
        torch.manual_seed(5)
        want = list(tv.RandomClipSampler(clips, k))
        torch.manual_seed(5)
        assert list(RandomClipSampler(ds, k)) == want
        assert list(UniformClipSampler(ds, k)) == list(tv.UniformClipSampler(clips, k))
    for rank in range(3):
        a = tv.DistributedSampler(tv.UniformClipSampler(clips, 2), num_replicas=3, rank=rank, shuffle=True)
        b = DistributedSampler(UniformClipSampler(ds, 2), num_replicas=3, rank=rank, shuffle=True)
        a.set_epoch(4)
        b.set_epoch(4)
        assert list(a) == list(b)
