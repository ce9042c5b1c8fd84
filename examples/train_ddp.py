"""Distributed training (DDP) on clip shards read straight from object storage.

Run one process per GPU (or per CPU slot) with torchrun; every rank streams its own slice
of each epoch from the URL, with no local copy of the dataset:

    torchrun --nproc_per_node 8 examples/train_ddp.py s3://bucket/kinetics400 \\
        --epochs 10 --batch-size 16 --num-workers 8 --cache-dir /local/nvme/clipshards --cache-limit 500GB

    # several nodes: the same command on each, plus --nnodes N --node_rank I --master_addr HOST

Credentials come from the usual places (``AWS_*`` variables or ``~/.aws`` profiles for S3,
``GOOGLE_APPLICATION_CREDENTIALS`` or ``gcloud`` for GCS), or ``--storage-option key=value``
(e.g. ``client_kwargs.endpoint_url=http://minio:9000``); they are never logged. The model is
a small 3D CNN stand-in: replace :func:`build_model` with yours.

The process group uses NCCL when CUDA is available, else gloo (``--backend`` to choose).
``--record DIR`` writes, per rank, the digest of every clip each step trained on and the
final weights' checksum, so a run can be checked against the same data read elsewhere.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import time
from datetime import timedelta
from typing import Any, Optional, Sequence

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel

from clipshards.convert.storage import parse_storage_options
from clipshards.loader import ClipLoader, StreamingKinetics, TransportOptions

logger = logging.getLogger("train_ddp")


def build_model(num_classes: int) -> nn.Module:
    """A tiny video classifier: uint8 clips [B, T, C, H, W] in, class logits out."""
    return nn.Sequential(
        nn.Conv3d(3, 16, kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool3d(1),
        nn.Flatten(),
        nn.Linear(16, num_classes),
    )


def to_input(video: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 [B, T, C, H, W] -> float [B, C, T, H, W] in [0, 1], as Conv3d expects."""
    return video.to(device, non_blocking=True).permute(0, 2, 1, 3, 4).float().div_(255)


def clip_digest(video: torch.Tensor) -> str:
    return hashlib.sha256(video.contiguous().numpy().tobytes()).hexdigest()[:16]


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("url", help="the converter's OUT: s3://..., gs://..., https://... or a local folder")
    p.add_argument("--split", default="train")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--max-steps", type=int, default=None, help="stop each epoch after this many steps")
    p.add_argument("--batch-size", type=int, default=8, help="clips per step per rank")
    p.add_argument("--num-workers", type=int, default=4, help="DataLoader worker processes per rank")
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--seed", type=int, default=0, help="shuffle seed (the same on every rank)")
    p.add_argument("--backend", choices=("nccl", "gloo"), default=None, help="default: nccl with CUDA, else gloo")
    p.add_argument("--storage-option", action="append", default=[], metavar="KEY=VALUE",
                   help="fsspec storage option, repeatable (credentials are better left to the environment)")
    p.add_argument("--cache-dir", default=None, help="local folder caching shard blocks across epochs")
    p.add_argument("--cache-limit", default="20GB", help="size limit of --cache-dir, e.g. 500GB")
    p.add_argument("--record", default=None, help="folder for per-rank records of the clips each step saw")
    args = p.parse_args(argv)
    for name in ("epochs", "batch_size"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    return args


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    backend = args.backend or ("nccl" if torch.cuda.is_available() else "gloo")
    dist.init_process_group(backend, timeout=timedelta(minutes=10))
    rank, world = dist.get_rank(), dist.get_world_size()
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    device = torch.device("cuda", local_rank) if backend == "nccl" else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if rank != 0:
        logging.getLogger().setLevel(logging.WARNING)

    transport = TransportOptions.from_env(
        **({"cache_dir": args.cache_dir, "cache_limit": args.cache_limit} if args.cache_dir else {})
    )
    dataset = StreamingKinetics(
        args.url, args.split, seed=args.seed, storage_options=parse_storage_options(args.storage_option),
        transport=transport,
    )
    loader = ClipLoader(dataset, batch_size=args.batch_size, num_workers=args.num_workers, drop_last=True,
                        pin_memory=device.type == "cuda", persistent_workers=args.num_workers > 0)
    logger.info("%s: %d classes, %d clips; %d ranks x %d clips per epoch, %d steps per epoch",
                dataset.index.url, len(dataset.classes), dataset.index.num_clips, world, len(dataset), len(loader))

    torch.manual_seed(args.seed)  # the same initial weights on every rank (DDP also broadcasts them)
    model = build_model(len(dataset.classes)).to(device)
    model = DistributedDataParallel(model, device_ids=[local_rank] if device.type == "cuda" else None)
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()

    record: dict[str, Any] = {"rank": rank, "world_size": world, "epochs": []}
    for epoch in range(args.epochs):
        dataset.set_epoch(epoch)
        model.train()
        steps, started, seen = [], time.perf_counter(), 0
        for step, batch in enumerate(loader):
            if args.max_steps is not None and step >= args.max_steps:
                break
            logits = model(to_input(batch.video, device))
            loss = loss_fn(logits, batch.label.to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            seen += batch.video.shape[0]
            value = float(loss.detach())
            if not math.isfinite(value):
                raise RuntimeError(f"loss is {value} at epoch {epoch} step {step}")
            steps.append({"loss": value, "labels": batch.label.tolist(), "clips": [clip_digest(v) for v in batch.video]})
            if rank == 0 and step % 10 == 0:
                logger.info("epoch %d step %d/%d loss %.4f", epoch, step, len(loader), value)
        elapsed = time.perf_counter() - started
        logger.info("epoch %d: %d steps, %.1f clips/s on this rank", epoch, len(steps), seen / max(elapsed, 1e-9))
        record["epochs"].append({"epoch": epoch, "steps": steps})

    checksum = hashlib.sha256(b"".join(p.detach().cpu().numpy().tobytes() for p in model.parameters())).hexdigest()
    record["weights_sha256"] = checksum
    if args.record:
        os.makedirs(args.record, exist_ok=True)
        with open(os.path.join(args.record, f"rank{rank}.json"), "w") as fh:
            json.dump(record, fh)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
