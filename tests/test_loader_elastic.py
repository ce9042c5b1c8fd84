"""Elastic resume (issue 17): a state saved at W1 ranks with N1 DataLoader workers loads at W2
ranks with N2 workers, in real gloo groups on 127.0.0.1. The rest of the epoch yields every clip
not yet yielded exactly once across the ranks (plus at most W2 - 1 "pad" repeats), equal batch
counts per rank; the next epoch is exactly a fresh W2 x N2 job's. Every clip is counted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from clipshards.convert import convert
from clipshards.convert.synth import VideoSpec, make_dataset
from clipshards.loader import ClipLoader, StreamingKinetics
from clipshards.loader.plan import EpochPlan, Leg, part_bounds
from loader_helpers import NUM_CLIPS, batch_ids, copy_out, id_table, read_index, rewrite_shard, shard_members
from loader_helpers import converted, table  # noqa: F401  (pytest fixtures)
from servers import free_port
from state_helpers import checkpoint, run_test_save_load_state, take

HERE = Path(__file__).resolve().parent
EPOCH = 1
# chain name: its legs, each (world size, DataLoader workers, where it stops; None: the epoch's end)
CHAINS = {
    "2to3-start": [(2, 2, "start"), (3, 1, None)],
    "2to3-mid": [(2, 2, "mid"), (3, 1, None)],
    "2to3-end": [(2, 2, "end"), (3, 1, None)],
    "3to1-mid": [(3, 0, "mid"), (1, 2, None)],
    "3to1-late": [(3, 0, "late"), (1, 2, None)],
    "1to4-start": [(1, 1, "start"), (4, 0, None)],
    "1to4-mid": [(1, 1, "mid"), (4, 0, None)],
    "twice": [(2, 2, "mid"), (3, 1, 2), (1, 2, None)],
}
NEXT_EPOCH = ("2to3-mid", "3to1-mid", "1to4-mid", "twice")
VIDEO_CLIPS = dict(frames_per_clip=4, step_between_clips=2, frame_rate=15)


def launch(spec: dict, world: int, tmp: Path) -> tuple[list[subprocess.Popen], list[Path]]:
    spec_path = tmp / f"spec-w{world}.json"
    spec_path.write_text(json.dumps(spec))
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    procs, results = [], []
    for rank in range(world):
        results.append(tmp / f"result-w{world}-r{rank}.json")
        cmd = [sys.executable, str(HERE / "elastic_worker.py"), str(spec_path), str(port), str(rank), str(world),
               str(results[-1])]
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    return procs, results


def run_chains(datasets: dict[str, dict], tmp: Path) -> dict[str, dict[str, list[list[dict]]]]:
    """Every chain's legs on every dataset (name: ``out``, ``options``, ``batch_size``), leg by
    leg (the legs of one step run side by side, one process per rank for all of them): per
    dataset, per chain, per leg, each rank's result. A leg after the first loads rank 0's state
    of the leg before."""
    done = {(d, name): [] for d in datasets for name in CHAINS}
    for step in range(max(len(c) for c in CHAINS.values())):
        by_world: dict[int, dict] = {}
        for (d, name), results in done.items():
            legs = CHAINS[name]
            if step < len(legs):
                world, workers, stop = legs[step]
                job = {**datasets[d], "num_workers": workers, "stop": stop,
                       "next_epoch": name in NEXT_EPOCH and step == len(legs) - 1,
                       "state": results[-1][0]["state"] if step else None}
                by_world.setdefault(world, {})[f"{d}/{name}"] = job
        running = {}
        for world, jobs in by_world.items():
            (tmp / f"step{step}").mkdir(exist_ok=True)
            spec = {"epoch": EPOCH, "jobs": jobs}
            running[world] = launch(spec, world, tmp / f"step{step}")
        for world, (procs, results) in running.items():
            logs = []
            for p in procs:
                try:
                    logs.append(p.communicate(timeout=300)[0])
                except subprocess.TimeoutExpired:
                    for q in procs:
                        q.kill()
                    pytest.fail(f"a rank of world {world} hung (uneven batches would block in all_reduce)")
            for rank, (p, log) in enumerate(zip(procs, logs)):
                assert p.returncode == 0, f"step {step}, world {world}, rank {rank} failed:\n{log[-4000:]}"
            per_rank = [json.loads(r.read_text())["jobs"] for r in results]
            for job_name in by_world[world]:
                d, name = job_name.split("/")
                done[d, name].append([jobs[job_name] for jobs in per_rank])
    return {d: {name: done[d, name] for name in CHAINS} for d in datasets}


def fresh_batches(out: Path, options: dict, world: int, workers: int, batch_size: int, epoch: int) -> list[list[list[int]]]:
    """Per rank, the batches (global clips) a fresh job at ``world`` x ``workers`` yields in
    ``epoch``: each worker's order cut into batches, handed out round-robin as a DataLoader does."""
    out_batches = []
    for rank in range(world):
        ds = StreamingKinetics(out, **options, rank=rank, world_size=world)
        chunks = [[o[i:i + batch_size].tolist() for i in range(0, len(o), batch_size)]
                  for o in ds.epoch_order(epoch, num_workers=max(1, workers))]
        out_batches.append([c[r] for r in range(max(map(len, chunks))) for c in chunks if r < len(c)])
    return out_batches


def check_chains(done, ids: dict[str, int], epoch_items: set[int], out: Path, options: dict, batch_size: int) -> None:
    """Count every clip of every chain across ranks and legs."""
    for name, legs in CHAINS.items():
        seen: set[int] = set()
        for (world, _, stop), ranks in zip(legs, done[name]):
            states = [r["state"] for r in ranks]
            assert all(s == states[0] for s in states), f"{name}: ranks' states differ (rank 0's must describe all)"
            counts = {len(r["batches"]) for r in ranks}
            assert len(counts) == 1, f"{name}: unequal batch counts per rank {counts}"
            got = [ids[h] for r in ranks for b in r["batches"] for h in b]
            pads = [p for r in ranks for b in r["pads"] for p in b]
            left = epoch_items - seen
            assert set(got) <= left, f"{name}: a clip yielded again in a later leg: {sorted(set(got) - left)}"
            repeats = len(got) - len(set(got))
            assert repeats <= world - 1, f"{name}: {repeats} repeats in a leg of {world} ranks"
            if options.get("with_ids"):
                assert sum(pads) == repeats, f"{name}: the repeats are not the items marked as padding"
            if stop is None:  # the epoch's end: everything left, once, plus the pad repeats
                assert set(got) == left, f"{name}: clips lost: {sorted(left - set(got))}"
                assert len(got) == world * -(-len(left) // world)
            seen |= set(got)
        if name in NEXT_EPOCH:
            world, workers, _ = legs[-1]
            want = fresh_batches(out, options, world, workers, batch_size, EPOCH + 1)
            got_next = [[[ids[h] for h in b] for b in r["next"]] for r in done[name][-1]]
            assert got_next == want, f"{name}: the next epoch is not a fresh {world} x {workers} job's"


@pytest.fixture(scope="module")
def videos_out(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("elastic_videos") / "ds"
    make_dataset(root, classes=("a", "b", "c"), videos_per_class=3, spec=VideoSpec(frames=40))
    dest = root.parent / "out"
    convert(root, dest, frames_per_clip=8, step_between_clips=8, layout="videos", workers=1, progress=False)
    return dest


def test_clips_and_videos_layouts_resume_at_other_world_sizes_and_worker_counts(converted, table, videos_out,
                                                                                tmp_path):
    """The clips layout (57 clips, batches of 3) and the videos layout's views (18: 2 random
    clips of each of 9 videos, marked padding), every chain of :data:`CHAINS`."""
    clips = {"out": str(converted[1]), "options": {"seed": 5, "shuffle_buffer": 4, "block_size": 2}, "batch_size": 3}
    videos = {"out": str(videos_out), "options": {**VIDEO_CLIPS, "seed": 3, "clips_per_video": 2, "with_ids": True},
              "batch_size": 2}
    video_ids = id_table(videos_out, **VIDEO_CLIPS)
    views = set(StreamingKinetics(videos_out, **videos["options"]).videos.items(EPOCH).tolist())
    assert len(views) == 18
    done = run_chains({"clips": clips, "videos": videos}, tmp_path)
    for name in ("2to3-start", "1to4-start"):
        assert all(r["batches"] == [] for r in done["clips"][name][0])
    assert all(r["batches"] == [] for r in done["clips"]["2to3-end"][1]), "nothing is left after the epoch's end"
    check_chains(done["clips"], table, set(range(NUM_CLIPS)), Path(clips["out"]), clips["options"], 3)
    check_chains(done["videos"], video_ids, views, videos_out, videos["options"], 2)


@pytest.mark.parametrize("remainder", ["pad", "drop"])
@pytest.mark.parametrize("w1,n1,w2,n2", [(2, 2, 3, 1), (3, 1, 1, 2), (1, 1, 4, 3), (4, 3, 4, 2), (3, 2, 2, 2)])
def test_plan_after_legs_deals_out_exactly_what_is_left(remainder, w1, n1, w2, n2):
    """The plan alone (no media): for many consumed counts, the next leg's ranks together hold
    every position no earlier leg yielded, once, plus the pad repeats (or minus the dropped ones)."""
    def plan(world):
        return EpochPlan([5, 7, 4, 9, 3, 6, 8, 15], epoch=2, shuffle=True, seed=7, block_size=3, world_size=world,
                         shuffle_buffer=4, remainder=remainder)
    rng = np.random.default_rng(0)
    first = plan(w1)
    for _ in range(6):
        consumed = tuple(int(rng.integers(0, first.part_length(n1, w) + 1)) for w in range(n1))
        yielded = [c for r in range(w1) for w, o in enumerate(first.yield_orders(r, n1)) for c in o[:consumed[w]]]
        leg = plan(w2).after([Leg(w1, n1, consumed)])
        rest = [c for r in range(w2) for o in leg.yield_orders(r, n2) for c in o]
        left = set(range(first.num_clips)) - set(yielded)
        assert leg.length == len(left) and set(rest) <= left
        assert all(n == 1 for n in Counter(rest).values()) or remainder == "pad"
        if remainder == "pad":
            assert set(rest) == left and len(rest) == w2 * -(-len(left) // w2)
        else:
            assert len(rest) == len(set(rest)) == len(left) - len(left) % w2
        assert [leg.part_length(n2, w) for w in range(n2)] == [b - a for a, b in
                                                               (part_bounds(leg.per_rank, n2, w) for w in range(n2))]


def test_a_resumed_leg_continues_exactly_when_resumed_again_unchanged(converted, table):
    """A state saved in a later leg, loaded again with that leg's world size and worker count,
    continues it batch for batch (and a state saved at the start of an epoch is a fresh epoch)."""
    _, out = converted
    opts = {"seed": 11, "shuffle_buffer": 6, "block_size": 2}
    first = ClipLoader(StreamingKinetics(out, **opts), batch_size=4, num_workers=2)
    first.dataset.set_epoch(2)
    take(first, lambda b: 0, 5)
    saved = checkpoint(first.state_dict())

    def make():
        ds = StreamingKinetics(out, **opts)
        ds.load_state_dict(saved)
        return ClipLoader(ds, batch_size=3, num_workers=0)

    reference = run_test_save_load_state(make, [1, 3, 6], lambda b: tuple(batch_ids(b, table)), resume_twice=2)
    assert sorted(x for b in reference for x in b) == sorted(set(range(NUM_CLIPS)) - {
        x for b in take(_epoch2(out, opts), lambda b: tuple(batch_ids(b, table)), 5) for x in b})
    state = make().state_dict()
    assert state["world_size"] == 1 and state["num_workers"] == 2 and state["legs"] == []


def _epoch2(out, opts):
    ds = StreamingKinetics(out, **opts)
    ds.set_epoch(2)
    return ClipLoader(ds, batch_size=4, num_workers=2)


def test_a_state_of_a_changed_dataset_is_refused_naming_both(converted, table, tmp_path):
    """Resuming across a change of the dataset (videos appended, another conversion) is refused:
    the state records a digest of the classes and shards; a state saved before it was recorded loads."""
    _, out = converted
    loader = _epoch2(out, {"seed": 11, "shuffle_buffer": 6, "block_size": 2})
    take(loader, lambda b: 0, 2)
    state = checkpoint(loader.state_dict())
    changed = copy_out(out, tmp_path / "changed")
    members = shard_members(changed / "train" / read_index(changed / "train")["shards"][0]["name"])
    keys = list(dict.fromkeys(name.partition(".")[0] for name, _ in members))
    swapped = [m for k in (keys[1], keys[0], *keys[2:]) for m in members if m[0].partition(".")[0] == k]
    rewrite_shard(changed / "train", 0, swapped)  # the same clip count, other bytes in shard 0
    other = StreamingKinetics(changed, seed=11, shuffle_buffer=6, block_size=2)
    with pytest.raises(ValueError, match=rf"index='{state['index']}', this dataset has index='\w+' "
                                         r"\(the dataset's classes or shards changed"):
        other.load_state_dict(state)
    older = {k: v for k, v in state.items() if k not in ("index", "legs")}
    same = StreamingKinetics(out, seed=11, shuffle_buffer=6, block_size=2)
    same.load_state_dict({**older, "version": 1})  # a version 1 state (no legs, no index digest) still loads
    assert same.state_dict()["consumed"] == state["consumed"]
