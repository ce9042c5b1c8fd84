"""The loader yields torchvision's exact (video, audio, label) tuples, in the global clip order."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler, Subset

from clipshards.convert.schema import decode_jpeg, encode_jpeg
from clipshards.loader import ClipLoader, IndexedKinetics, StreamingKinetics, collate_clips
from loader_helpers import FRAMES_PER_CLIP, NUM_CLIPS, STEP, clip_id, make_converted
from loader_helpers import converted  # noqa: F401  (pytest fixtures)
from reference import reference_dataset


@pytest.fixture(scope="module")
def reference(converted):
    root, _ = converted
    return reference_dataset(root, frames_per_clip=FRAMES_PER_CLIP, step_between_clips=STEP)


def assert_same_tuple(got, want, where):
    gv, ga, gy = got
    wv, wa, wy = want
    assert type(gy) is int and gy == wy, where
    assert gv.dtype == torch.uint8 and gv.shape == wv.shape, (where, gv.shape, wv.shape)
    assert torch.equal(gv, wv), where
    assert ga.dtype == torch.float32 and ga.shape == wa.shape, (where, ga.shape, wa.shape)
    assert torch.equal(ga, wa), where


def ref_tuple(ref, output_format="TCHW"):
    video = torch.from_numpy(ref.video)
    if output_format == "TCHW":
        video = video.permute(0, 3, 1, 2)
    return video, torch.from_numpy(ref.audio), ref.label


def test_indexed_equals_reference_for_every_clip(converted, reference):
    _, out = converted
    ds = IndexedKinetics(out)
    assert len(ds) == len(reference) == NUM_CLIPS
    assert ds.classes == ["archery", "bowling", "juggling balls"]
    assert ds.class_to_idx == {"archery": 0, "bowling": 1, "juggling balls": 2}
    for i, ref in enumerate(reference):
        got = ds[i]
        assert_same_tuple(got, ref_tuple(ref), f"clip {i}")
        # the same memory layout as torchvision's TCHW: a permuted view of THWC
        T, C, H, W = got[0].shape
        assert got[0].stride() == (H * W * C, 1, W * C, C)
    assert_same_tuple(ds[-1], ref_tuple(reference[-1]), "ds[-1]")
    with pytest.raises(IndexError, match="out of range"):
        ds[NUM_CLIPS]
    with pytest.raises(TypeError):
        ds[1.5]


def test_tensors_are_writable_and_independent(converted):
    _, out = converted
    ds = IndexedKinetics(out)
    v, a, _ = ds[3]
    v.zero_()
    a.add_(1.0)
    v2, a2, _ = ds[3]
    assert v2.any() and not torch.equal(a, a2)


def test_streaming_unshuffled_yields_global_order(converted, reference):
    _, out = converted
    ds = StreamingKinetics(out, shuffle=False)
    assert len(ds) == NUM_CLIPS
    got = list(ds)
    assert len(got) == NUM_CLIPS
    for i, (g, ref) in enumerate(zip(got, reference)):
        assert_same_tuple(g, ref_tuple(ref), f"clip {i}")
    # and through a single-process DataLoader, unbatched
    again = list(DataLoader(ds, batch_size=None))
    assert [clip_id(v) for v, _, _ in again] == [clip_id(v) for v, _, _ in got]


def test_thwc_output_and_transform_on_video_only(converted, reference):
    _, out = converted
    seen = []

    def transform(video):
        seen.append(video.shape)
        return video[:, :16, :16, :].float() / 255

    ds = IndexedKinetics(out, output_format="THWC", transform=transform)
    v, a, y = ds[5]
    want_v, want_a, want_y = ref_tuple(reference[5], "THWC")
    assert seen == [want_v.shape]
    assert torch.equal(v, want_v[:, :16, :16, :].float() / 255)
    assert torch.equal(a, want_a) and y == want_y
    s = StreamingKinetics(out, shuffle=False, output_format="THWC")
    v0, _, _ = next(iter(s))
    assert v0.shape == (FRAMES_PER_CLIP, 48, 64, 3)


def test_jpeg_conversion_within_jpeg_error(tmp_path_factory, converted, reference):
    root, _ = converted
    _, out = make_converted(tmp_path_factory.mktemp("jpeg"), codec="jpeg", root=root)
    ds = IndexedKinetics(out)
    quality = ds.index.options["jpeg_quality"]
    stream = list(StreamingKinetics(out, shuffle=False))
    assert len(ds) == len(stream) == len(reference)
    for i, ref in enumerate(reference):
        v, a, y = ds[i]
        wv, wa, wy = ref_tuple(ref)
        assert y == wy and v.shape == wv.shape and v.dtype == torch.uint8
        assert torch.equal(a, wa)
        # within JPEG error: exactly what a JPEG round trip of the reference frames gives
        roundtrip = np.stack([decode_jpeg(encode_jpeg(f, quality)) for f in ref.video])
        assert torch.equal(v, torch.from_numpy(roundtrip).permute(0, 3, 1, 2)), i
        assert (v.int() - wv.int()).abs().float().mean().item() < 8.0, i
        sv, sa, sy = stream[i]
        assert torch.equal(sv, v) and torch.equal(sa, a) and sy == y


def test_works_with_subset_and_distributed_sampler(converted, reference):
    _, out = converted
    ds = IndexedKinetics(out)
    sub = Subset(ds, [10, 2, 40])
    for j, i in enumerate([10, 2, 40]):
        assert_same_tuple(sub[j], ref_tuple(reference[i]), f"subset {j}")
    table = {clip_id(torch.from_numpy(r.video).permute(0, 3, 1, 2)): g for g, r in enumerate(reference)}
    per_rank = []
    for rank in range(2):
        sampler = DistributedSampler(ds, num_replicas=2, rank=rank, shuffle=True, seed=1)
        loader = DataLoader(ds, batch_size=4, sampler=sampler, collate_fn=collate_clips, num_workers=2)
        got = [table[clip_id(v)] for batch in loader for v in batch.video]
        assert got == list(sampler)
        per_rank.append(got)
    assert len(per_rank[0]) == len(per_rank[1]) == (NUM_CLIPS + 1) // 2
    assert set(per_rank[0]) | set(per_rank[1]) == set(range(NUM_CLIPS))


def test_collate_pads_audio_and_reports_lengths(converted):
    _, out = converted
    ds = IndexedKinetics(out)
    samples = [ds[0], ds[7]]
    short = (samples[1][0], samples[1][1][:1, :100], samples[1][2])  # 1 channel, 100 samples
    silent = (samples[0][0], torch.empty((1, 0)), 2)
    batch = collate_clips([samples[0], short, silent])
    L = samples[0][1].shape[1]
    assert batch.video.shape == (3, FRAMES_PER_CLIP, 3, 48, 64)
    assert batch.audio.shape == (3, 2, L) and batch.audio.dtype == torch.float32
    assert batch.audio_lengths.tolist() == [L, 100, 0]
    assert batch.audio_channels.tolist() == [2, 1, 1]
    assert batch.label.dtype == torch.int64 and batch.label.tolist() == [samples[0][2], samples[1][2], 2]
    assert torch.equal(batch.audio[1, :1, :100], short[1]) and not batch.audio[1, 1:].any() and not batch.audio[1, :, 100:].any()
    odd = (samples[0][0][:, :, :10], samples[0][1], 0)
    with pytest.raises(ValueError, match="differ in shape"):
        collate_clips([samples[0], odd])
    with pytest.raises(ValueError, match="empty"):
        collate_clips([])


def test_streaming_batches_through_dataloader_workers(converted):
    _, out = converted
    ds = StreamingKinetics(out, shuffle=False)
    for workers in (0, 2):
        loader = ClipLoader(ds, batch_size=4, num_workers=workers)
        batches = list(loader)
        assert len(batches) == len(loader)
        assert sum(len(b.label) for b in batches) == NUM_CLIPS
        plain = list(DataLoader(ds, batch_size=4, num_workers=workers, collate_fn=collate_clips))
        assert [b.label.tolist() for b in plain] == [b.label.tolist() for b in batches]


def test_same_as_torchvision_kinetics(converted):
    """The converted dataset against real torchvision.datasets.Kinetics, clip by clip."""
    tv = pytest.importorskip("torchvision", reason="torchvision is not installed")
    root, out = converted
    try:
        kinetics = tv.datasets.Kinetics(root, frames_per_clip=FRAMES_PER_CLIP, step_between_clips=STEP, split="train",
                                        num_workers=1, output_format="TCHW")
    except Exception as exc:  # no video backend for torchvision in this environment
        pytest.skip(f"torchvision.datasets.Kinetics cannot decode here: {exc}")
    ds = IndexedKinetics(out)
    assert len(kinetics) == len(ds)
    assert kinetics.classes == ds.classes
    for i in range(len(ds)):
        assert_same_tuple(ds[i], kinetics[i], f"clip {i}")


def test_feeds_torchvision_transforms_v2(converted):
    tv = pytest.importorskip("torchvision", reason="torchvision is not installed")
    from torchvision.transforms import v2

    _, out = converted
    transform = v2.Compose([v2.Resize((32, 40), antialias=True), v2.ToDtype(torch.float32, scale=True)])
    ds = StreamingKinetics(out, shuffle=False, transform=transform)
    v, a, y = next(iter(ds))
    assert tv is not None and v.shape == (FRAMES_PER_CLIP, 3, 32, 40) and v.dtype == torch.float32
    assert 0.0 <= float(v.min()) and float(v.max()) <= 1.0
    batch = next(iter(ClipLoader(ds, batch_size=2)))
    assert batch.video.shape == (2, FRAMES_PER_CLIP, 3, 32, 40)
    assert np.isfinite(batch.audio.numpy()).all()
