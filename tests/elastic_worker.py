"""One rank of the elastic-resume tests (tests/test_loader_elastic.py): a real gloo group on 127.0.0.1.

Usage: python tests/elastic_worker.py SPEC.json PORT RANK WORLD RESULT.json

SPEC holds the ``epoch`` and ``jobs``: each builds a fresh StreamingKinetics (``out``,
``options``) and ClipLoader (``batch_size``, ``num_workers``), loads ``state`` (rank 0's
state of the previous leg, or none), yields ``stop`` batches (``"start"``, ``"mid"``, ``"late"`` (one before the end), ``"end"``
or a count; None: to the end of the epoch), and reports each batch's clip identities (content
hashes; ``pad`` marks the repeats a videos layout flags), its state, and with ``next_epoch``
the whole next epoch. Every batch joins an all_reduce, so a rank with a batch more than the
others would block there instead of passing silently.
"""

from __future__ import annotations

import hashlib
import json
import sys
from datetime import timedelta

import torch
import torch.distributed as dist

from clipshards.loader import ClipLoader, StreamingKinetics


def content_id(video: torch.Tensor) -> str:
    return hashlib.blake2b(video.contiguous().numpy().tobytes(), digest_size=12).hexdigest()


def items_of(batch: list) -> tuple[list[str], list[bool]]:
    return [content_id(s[0]) for s in batch], [len(s) > 3 and int(s[3]) == -1 for s in batch]


def run_epoch(loader: ClipLoader, stop, world: int) -> dict:
    """Up to ``stop`` batches of ``loader`` in lockstep with the other ranks."""
    ids, pads = [], []
    if stop != 0:
        for batch in loader:
            token = torch.ones(1)
            dist.all_reduce(token)
            assert int(token.item()) == world
            i, p = items_of(batch)
            ids.append(i)
            pads.append(p)
            if stop is not None and len(ids) == stop:
                break
    counts = [None] * world
    dist.all_gather_object(counts, len(ids))
    assert len(set(counts)) == 1, f"ranks made different numbers of batches: {counts}"
    return {"batches": ids, "pads": pads}


def run_job(spec: dict, job: dict, world: int) -> dict:
    ds = StreamingKinetics(job["out"], **job["options"])
    ds.set_epoch(spec["epoch"])
    if job.get("state") is not None:
        ds.load_state_dict(job["state"])
    loader = ClipLoader(ds, batch_size=job["batch_size"], num_workers=job["num_workers"], collate_fn=list)
    n = len(loader)
    stop = {"start": 0, "mid": n // 2, "late": n - 1, "end": n}.get(job["stop"], job["stop"])
    result = run_epoch(loader, stop, world)
    result["state"] = loader.state_dict()
    if job.get("next_epoch"):
        ds.set_epoch(spec["epoch"] + 1)
        result["next"] = run_epoch(loader, None, world)["batches"]
    return result


def main(spec_path: str, port: int, rank: int, world: int, result_path: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            timeout=timedelta(seconds=120))
    spec = json.loads(open(spec_path).read())
    result = {"rank": dist.get_rank(), "jobs": {name: run_job(spec, job, world) for name, job in spec["jobs"].items()}}
    dist.barrier()
    with open(result_path, "w") as fh:
        json.dump(result, fh)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
