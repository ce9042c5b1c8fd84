"""examples/train_ddp.py under torchrun: 2 processes (gloo) train a few steps reading from S3 (moto
on 127.0.0.1). Each rank trains on exactly the clips that the same loader settings give when the
dataset is read from local disk; the ranks' clips are disjoint and their final weights equal."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import fsspec
import pytest

from clipshards.convert import convert
from clipshards.loader import ClipLoader, StreamingKinetics

from servers import CONVERT_KW, free_port, s3_server  # noqa: F401  (s3_server: fixture)

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "train_ddp.py"
WORLD, BATCH, WORKERS, STEPS, EPOCHS, SEED = 2, 4, 1, 3, 2, 7


def digest(video) -> str:
    return hashlib.sha256(video.contiguous().numpy().tobytes()).hexdigest()[:16]


def local_steps(out: Path, rank: int, epoch: int) -> list[dict]:
    """What rank ``rank`` should train on in ``epoch``, read from local disk."""
    ds = StreamingKinetics(out, seed=SEED, rank=rank, world_size=WORLD)
    ds.set_epoch(epoch)
    steps = []
    for step, batch in enumerate(ClipLoader(ds, batch_size=BATCH, num_workers=WORKERS, drop_last=True)):
        if step >= STEPS:
            break
        steps.append({"labels": batch.label.tolist(), "clips": [digest(v) for v in batch.video]})
    return steps


def test_ddp_example_trains_from_s3(s3_server, tiny_dataset, tmp_path):
    out = tmp_path / "out"
    convert(tiny_dataset, out, workers=1, **{**CONVERT_KW, "shard_size": 1_000_000})
    bucket = s3_server.make_bucket()
    fs = fsspec.filesystem("s3", **s3_server.storage_options())
    fs.put(str(out / "train"), f"{bucket}/kinetics/train", recursive=True)

    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "CLIPSHARDS_"))}
    s3_env = s3_server.env()
    env.update({k: s3_env[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")})
    env["OMP_NUM_THREADS"] = "1"
    record = tmp_path / "record"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", str(WORLD),
        "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
        str(EXAMPLE), f"s3://{bucket}/kinetics", "--epochs", str(EPOCHS), "--max-steps", str(STEPS),
        "--batch-size", str(BATCH), "--num-workers", str(WORKERS), "--seed", str(SEED), "--backend", "gloo",
        f"--storage-option=client_kwargs.endpoint_url={s3_server.endpoint}",
        "--cache-dir", str(tmp_path / "cache"), "--record", str(record),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert s3_env["AWS_SECRET_ACCESS_KEY"] not in proc.stdout + proc.stderr

    ranks = [json.loads((record / f"rank{r}.json").read_text()) for r in range(WORLD)]
    assert [r["world_size"] for r in ranks] == [WORLD] * WORLD
    assert ranks[0]["weights_sha256"] == ranks[1]["weights_sha256"]  # DDP kept the replicas equal
    for epoch in range(EPOCHS):
        seen = []
        for rank, rec in enumerate(ranks):
            steps = rec["epochs"][epoch]["steps"]
            assert len(steps) == STEPS
            assert [{"labels": s["labels"], "clips": s["clips"]} for s in steps] == local_steps(out, rank, epoch)
            assert all(s["loss"] > 0 for s in steps)
            seen.append({c for s in steps for c in s["clips"]})
        assert not seen[0] & seen[1]  # the ranks trained on different clips
    assert ranks[0]["epochs"][0]["steps"] != ranks[0]["epochs"][1]["steps"]  # set_epoch reshuffled
    assert any((tmp_path / "cache").iterdir())  # blocks were cached locally
