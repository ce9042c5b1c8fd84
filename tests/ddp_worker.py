"""One rank of the 2-process test (tests/test_loader_ddp.py): a real gloo group on 127.0.0.1.

Usage: python tests/ddp_worker.py OUT PORT RANK WORLD RESULT.json

Each rank reads rank and world size from torch.distributed (not from arguments), iterates
two epochs of StreamingKinetics through ClipLoader with 2 workers, and after every batch
joins an all_reduce: a rank with one batch more than the others would block there until
the group's timeout, so an uneven split fails the test instead of passing silently.
"""

from __future__ import annotations

import json
import sys
from datetime import timedelta

import torch
import torch.distributed as dist

from clipshards.loader import ClipLoader, StreamingKinetics
from loader_helpers import batch_ids, id_table

CONFIGS = [
    {"remainder": "pad", "batch_size": 4, "shuffle_buffer": 4, "block_size": 2},
    {"remainder": "drop", "batch_size": 5, "shuffle_buffer": 0, "block_size": None},
]


def main(out: str, port: int, rank: int, world: int, result_path: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            timeout=timedelta(seconds=60))
    table = id_table(out)
    result = {"rank": dist.get_rank(), "runs": []}
    for cfg in CONFIGS:
        ds = StreamingKinetics(out, seed=21, remainder=cfg["remainder"], shuffle_buffer=cfg["shuffle_buffer"],
                               block_size=cfg["block_size"])
        run = {"config": cfg, "len": len(ds), "rank_world": list(ds.rank_and_world()), "epochs": []}
        for epoch in range(2):
            ds.set_epoch(epoch)
            loader = ClipLoader(ds, batch_size=cfg["batch_size"], num_workers=2)
            batches = []
            for batch in loader:
                token = torch.ones(1)
                dist.all_reduce(token)
                assert int(token.item()) == world
                batches.append(batch_ids(batch, table))
            counts = [None] * world
            dist.all_gather_object(counts, len(batches))
            assert len(set(counts)) == 1, f"ranks made different numbers of batches: {counts}"
            run["epochs"].append({"batches": batches, "loader_len": len(loader)})
        result["runs"].append(run)
    dist.barrier()
    with open(result_path, "w") as fh:
        json.dump(result, fh)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
