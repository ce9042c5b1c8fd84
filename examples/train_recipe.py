"""torchvision's video classification recipe, end to end, on a ``videos`` layout conversion.

The settings of torchvision's ``references/video_classification/train.py``: clips of 16 frames
with a step of 1 at 15 fps, 5 random clips of every video per epoch for training
(``RandomClipSampler``), 5 uniformly spaced clips per video for evaluation
(``UniformClipSampler``), resize to 128x171 and crop 112, SGD with a linear warm-up, and the
model ``r2plus1d_18``. Clips are cut from each video stored once (``--layout videos``), so step 1
costs no storage; evaluation reports the video-level accuracy (each video's views averaged),
counting every view exactly once under DDP::

    clipshards convert kinetics/ out/ --layout videos -T 16 -S 1 --frame-rate 15 --split train
    clipshards convert kinetics/ out/ --layout videos -T 16 -S 1 --frame-rate 15 --split val
    python examples/train_recipe.py out/ --epochs 45
    torchrun --nproc_per_node 8 examples/train_recipe.py out/ --epochs 45     # DDP

``r2plus1d_18`` comes from torchvision when it is installed; otherwise a small 3D CNN with the
same interface (``[B, 3, T, H, W]`` in, ``[B, classes]`` out) stands in.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from typing import Any, Optional, Sequence

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.utils.data import DataLoader

from clipshards.loader import (
    CenterCrop,
    Compose,
    DistributedSampler,
    EvalDistributedSampler,
    IndexedKinetics,
    RandomClipSampler,
    RandomCrop,
    Resize,
    UniformClipSampler,
    VideoAccuracy,
    collate_clips,
    collate_views,
)

logger = logging.getLogger("train_recipe")

MEAN = torch.tensor([0.43216, 0.394666, 0.37645]).view(1, 3, 1, 1, 1)
STD = torch.tensor([0.22803, 0.22145, 0.216989]).view(1, 3, 1, 1, 1)


class Tiny3DCNN(nn.Module):
    """A small stand-in for ``r2plus1d_18``: ``[B, 3, T, H, W]`` to ``[B, num_classes]``."""

    def __init__(self, num_classes: int, width: int = 16) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv3d(3, width, kernel_size=(3, 7, 7), stride=(1, 2, 2), padding=(1, 3, 3), bias=False),
            nn.BatchNorm3d(width), nn.ReLU(inplace=True),
            nn.Conv3d(width, 2 * width, kernel_size=3, stride=2, padding=1, bias=False),
            nn.BatchNorm3d(2 * width), nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool3d(1),
        )
        self.fc = nn.Linear(2 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).flatten(1))


def build_model(name: str, num_classes: int) -> nn.Module:
    """torchvision's video model ``name`` when torchvision is importable, else :class:`Tiny3DCNN`."""
    if name != "tiny":
        try:
            import torchvision

            return torchvision.models.video.__dict__[name](num_classes=num_classes)
        except ImportError:
            logger.warning("torchvision is not installed: training the small 3D CNN stand-in instead of %s", name)
    return Tiny3DCNN(num_classes)


def to_model_input(video: torch.Tensor) -> torch.Tensor:
    """uint8 ``[B, T, C, H, W]`` clips to normalised float ``[B, C, T, H, W]`` (torchvision's presets)."""
    x = video.permute(0, 2, 1, 3, 4).float().div_(255)
    return (x - MEAN) / STD


def datasets(args: argparse.Namespace) -> tuple[IndexedKinetics, IndexedKinetics]:
    clip = dict(frames_per_clip=args.clip_len, step_between_clips=1, frame_rate=args.frame_rate)
    train = IndexedKinetics(args.url, args.train_split, **clip,
                            transform=Compose([Resize(args.resize), RandomCrop(args.crop)]))
    val = IndexedKinetics(args.url, args.val_split, **clip, with_ids=True,
                          transform=Compose([Resize(args.resize), CenterCrop(args.crop)]))
    return train, val


def loaders(args: argparse.Namespace, train: IndexedKinetics, val: IndexedKinetics,
            world: Optional[tuple[int, int]]) -> tuple[DataLoader, DataLoader, Any]:
    """torchvision's samplers: random clips for training, uniform views for evaluation."""
    train_sampler: Any = RandomClipSampler(train, args.clips_per_video)
    val_sampler: Any = UniformClipSampler(val, args.clips_per_video)
    if world is not None:
        train_sampler = DistributedSampler(train_sampler, num_replicas=world[1], rank=world[0])
        val_sampler = EvalDistributedSampler(val_sampler, num_replicas=world[1], rank=world[0])
    common = dict(batch_size=args.batch_size, num_workers=args.workers, pin_memory=torch.cuda.is_available())
    return (DataLoader(train, sampler=train_sampler, collate_fn=collate_clips, **common),
            DataLoader(val, sampler=val_sampler, collate_fn=collate_views, **common), train_sampler)


def train_one_epoch(model: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer, scheduler: Any,
                    device: torch.device, max_iters: int) -> dict[str, float]:
    model.train()
    criterion = nn.CrossEntropyLoss()
    seen = correct = 0
    loss_sum = 0.0
    for i, batch in enumerate(loader):
        if max_iters and i >= max_iters:
            break
        video, target = to_model_input(batch.video).to(device), batch.label.to(device)
        output = model(video)
        loss = criterion(output, target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        seen += target.shape[0]
        correct += int((output.argmax(1) == target).sum())
        loss_sum += float(loss) * target.shape[0]
    return {"clips": seen, "loss": loss_sum / max(1, seen), "clip_acc1": correct / max(1, seen)}


@torch.inference_mode()
def evaluate(model: nn.Module, loader: DataLoader, val: IndexedKinetics, num_classes: int, device: torch.device,
             max_iters: int) -> dict[str, Any]:
    """Video-level accuracy: each video's views averaged (every view once, even under DDP)."""
    model.eval()
    acc = VideoAccuracy(len(val.clips_per_video), num_classes, topk=(1, 5))
    for i, batch in enumerate(loader):
        if max_iters and i >= max_iters:
            break
        output = model(to_model_input(batch.video).to(device))
        acc.update(output, batch.label, batch.video_idx, batch.valid)
    result = acc.compute()
    result.pop("predictions")
    return result


def main(argv: Optional[Sequence[str]] = None) -> dict[str, Any]:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    world = None
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        world = (dist.get_rank(), dist.get_world_size())
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    train, val = datasets(args)
    num_classes = len(train.classes)
    train_loader, val_loader, train_sampler = loaders(args, train, val, world)
    model = build_model(args.model, num_classes).to(device)
    if world is not None:
        model = nn.parallel.DistributedDataParallel(model)
    lr = args.lr * (world[1] if world else 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=1e-4)
    iters = max(1, min(len(train_loader), args.max_iters or len(train_loader)))
    warmup = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=0.001, total_iters=iters * args.warmup_epochs)
    history = []
    for epoch in range(args.epochs):
        if world is not None:
            train_sampler.set_epoch(epoch)
        t = time.perf_counter()
        stats = train_one_epoch(model, train_loader, optimizer, warmup, device, args.max_iters)
        stats.update(evaluate(model, val_loader, val, num_classes, device, args.max_iters), epoch=epoch,
                     seconds=round(time.perf_counter() - t, 2))
        logger.info("epoch %d: %s", epoch, stats)
        history.append(stats)
    result = {"model": type(model.module if world else model).__name__, "epochs": history}
    if not world or world[0] == 0:
        print(json.dumps(result))
    if world is not None:  # every rank done before the group goes, the DDP wrapper (its reducer) before the group
        dist.barrier()
        del model
        dist.destroy_process_group()
    return result


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("url", help="a --layout videos conversion (local folder or s3://, gs://, https://)")
    p.add_argument("--train-split", default="train")
    p.add_argument("--val-split", default="val")
    p.add_argument("--model", default="r2plus1d_18", help="a torchvision.models.video name, or 'tiny'")
    p.add_argument("--clip-len", type=int, default=16)
    p.add_argument("--frame-rate", type=float, default=15.0)
    p.add_argument("--clips-per-video", type=int, default=5)
    p.add_argument("--resize", type=int, nargs=2, default=(128, 171), metavar=("H", "W"))
    p.add_argument("--crop", type=int, default=112)
    p.add_argument("--batch-size", type=int, default=24)
    p.add_argument("--workers", type=int, default=10)
    p.add_argument("--epochs", type=int, default=45)
    p.add_argument("--warmup-epochs", type=int, default=10)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--max-iters", type=int, default=0, help="stop each epoch's training and evaluation after this many batches (0: all)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    args.resize = tuple(args.resize)
    return args


if __name__ == "__main__":
    main()
