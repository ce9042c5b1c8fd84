"""Two real processes in a gloo group on 127.0.0.1: disjoint, covering, equal per-rank splits."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from loader_helpers import NUM_CLIPS, flatten
from loader_helpers import converted  # noqa: F401  (pytest fixtures)
from servers import free_port

WORLD = 2
HERE = Path(__file__).resolve().parent


def test_two_ranks_get_disjoint_equal_slices(converted, tmp_path):
    _, out = converted
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    procs = []
    for rank in range(WORLD):
        cmd = [sys.executable, str(HERE / "ddp_worker.py"), str(out), str(port), str(rank), str(WORLD),
               str(tmp_path / f"rank{rank}.json")]
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    logs = []
    for p in procs:
        try:
            logs.append(p.communicate(timeout=240)[0])
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            pytest.fail("a rank hung (uneven batches would block in all_reduce)")
    for rank, (p, log) in enumerate(zip(procs, logs)):
        assert p.returncode == 0, f"rank {rank} failed:\n{log[-4000:]}"
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(WORLD)]
    assert [r["rank"] for r in results] == [0, 1]
    for i, cfg in enumerate(results[0]["runs"]):
        runs = [res["runs"][i] for res in results]
        assert [r["rank_world"] for r in runs] == [[0, WORLD], [1, WORLD]], "rank and world come from torch.distributed"
        remainder = cfg["config"]["remainder"]
        per_rank = NUM_CLIPS // WORLD if remainder == "drop" else -(-NUM_CLIPS // WORLD)
        orders = []
        for epoch in range(2):
            batches = [r["epochs"][epoch]["batches"] for r in runs]
            assert len(batches[0]) == len(batches[1]) == runs[0]["epochs"][epoch]["loader_len"]
            clips = [flatten(b) for b in batches]
            assert [len(c) for c in clips] == [per_rank, per_rank] == [r["len"] for r in runs]
            both = clips[0] + clips[1]
            if remainder == "drop":
                assert len(set(both)) == len(both), "ranks overlap"
            else:
                assert set(both) == set(range(NUM_CLIPS)), "ranks do not cover the epoch"
                assert len(both) - len(set(both)) == WORLD * per_rank - NUM_CLIPS
            orders.append(both)
        assert orders[0] != orders[1], "epoch 1 repeats epoch 0"
