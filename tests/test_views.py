"""Multi-view evaluation: ``collate_views`` and ``VideoAccuracy`` turn per-clip predictions into
per-video accuracy; under DDP (3 gloo processes on 127.0.0.1) every view counts exactly once and the
result equals one process's."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from clipshards.convert import convert
from clipshards.convert.synth import VideoSpec, make_dataset, write_video
from clipshards.loader import EvalDistributedSampler, IndexedKinetics, UniformClipSampler
from clipshards.loader.views import VideoAccuracy, collate_views

CLASSES = 3
VIEWS = 3


@pytest.fixture(scope="module")
def out(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("views") / "ds"
    make_dataset(root, classes=("a", "b", "c"), videos_per_class=2, spec=VideoSpec(frames=24))
    write_video(root / "train" / "c" / "short.mp4", VideoSpec(frames=3, seed=8))  # no clip: no view
    dest = root.parent / "out"
    convert(root, dest, frames_per_clip=4, step_between_clips=4, layout="videos", workers=1, progress=False)
    return dest


def fake_logits(video_idx: torch.Tensor, clip_idx: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """A deterministic 'model': per view, noise plus a push toward the label on some views."""
    rows = []
    for v, c, y in zip(video_idx.tolist(), clip_idx.tolist(), labels.tolist()):
        g = torch.Generator().manual_seed(1000 * max(v, 0) + c)
        row = torch.randn(CLASSES, generator=g, dtype=torch.float64)
        if (v + c) % 3:
            row[(y + v % 2) % CLASSES] += 1.5  # odd videos pushed to the wrong class
        rows.append(row)
    return torch.stack(rows)


def evaluate(out: Path, world: int, rank: int) -> dict:
    ds = IndexedKinetics(out, frames_per_clip=4, step_between_clips=2, with_ids=True)
    views = UniformClipSampler(ds, VIEWS)
    sampler = EvalDistributedSampler(views, num_replicas=world, rank=rank)
    expected = [VIEWS if n else 0 for n in ds.clips_per_video.tolist()]
    acc = VideoAccuracy(len(ds.clips_per_video), CLASSES, topk=(1, 2), views_per_video=expected)
    batches = 0
    for batch in DataLoader(ds, batch_size=4, sampler=sampler, collate_fn=collate_views):
        acc.update(fake_logits(batch.video_idx, batch.clip_idx, batch.label), batch.label, batch.video_idx)
        batches += 1
    result = acc.compute()
    result["predictions"] = result["predictions"].tolist()
    result["batches"] = batches
    return result


def test_collate_views_marks_the_padding(out):
    ds = IndexedKinetics(out, frames_per_clip=4, step_between_clips=2, with_ids=True)
    padded = 0
    for rank in range(4):
        sampler = EvalDistributedSampler(UniformClipSampler(ds, VIEWS), num_replicas=4, rank=rank)
        batches = list(DataLoader(ds, batch_size=8, sampler=sampler, collate_fn=collate_views, num_workers=1))
        valid = torch.cat([b.valid for b in batches])
        assert valid.shape[0] == len(sampler)
        assert torch.equal(torch.cat([b.video_idx for b in batches]) >= 0, valid)
        padded += int((~valid).sum())
    assert padded == 4 * len(sampler) - len(UniformClipSampler(ds, VIEWS)) > 0
    with pytest.raises(ValueError, match="with_ids=True"):
        collate_views([ds[0][:3]])


def test_video_accuracy_averages_the_views():
    acc = VideoAccuracy(3, 2, topk=(1,), average="prob")
    # video 0: two views, one wrong but less sure; video 1: one wrong view; video 2: none
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [0.0, 3.0], [5.0, 5.0]])
    labels = torch.tensor([0, 0, 0, 1])
    video_idx = torch.tensor([0, 0, 1, -1])  # the last is padding
    acc.update(logits, labels, video_idx)
    r = acc.compute()
    assert (r["videos"], r["views"]) == (2, 3) and r["top1"] == 0.5 and r["clip_top1"] == pytest.approx(1 / 3)
    assert r["predictions"].tolist() == [0, 1, -1]
    with pytest.raises(ValueError, match="different labels"):
        acc.update(torch.zeros(1, 2), torch.tensor([1]), torch.tensor([0]))
    twice = VideoAccuracy(2, 2, views_per_video=[1, 1])
    twice.update(torch.zeros(2, 2), torch.tensor([0, 0]), torch.tensor([0, 0]))
    with pytest.raises(ValueError, match="counted twice or missed"):
        twice.compute()
    with pytest.raises(ValueError, match="average='mean'"):
        VideoAccuracy(2, 2, average="mean")


def _rank(rank: int, world: int, port: int, out: str, result_dir: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        result = evaluate(Path(out), world, rank)
        batches = [None] * world
        dist.all_gather_object(batches, result["batches"])
        result["all_batches"] = batches
        with open(os.path.join(result_dir, f"{rank}.json"), "w") as fh:
            json.dump(result, fh)
    finally:
        dist.destroy_process_group()


def test_ddp_counts_every_view_once(out, tmp_path):
    import socket

    import torch.multiprocessing as mp

    single = evaluate(out, 1, 0)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    world = 3
    mp.spawn(_rank, args=(world, port, str(out), str(tmp_path)), nprocs=world, join=True)
    results = [json.loads((tmp_path / f"{r}.json").read_text()) for r in range(world)]
    for r in results:
        assert len(set(r["all_batches"])) == 1  # equal batches on every rank
        for key in ("videos", "views", "top1", "top2", "clip_top1", "predictions"):
            assert r[key] == single[key], key
    assert single["views"] == VIEWS * single["videos"] and 0 < single["top1"] < 1
