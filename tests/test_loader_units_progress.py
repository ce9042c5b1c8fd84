"""The loader's bookkeeping on its own, without media: epoch progress and resume arithmetic
(loader/progress.py), the argument checks (loader/arguments.py), the ``errors`` policy's
filling (loader/datasets.py) and a worker's read order (EpochPlan.worker_order).

``Numbers`` is a ResumableDataset of plain integers that cuts its items between DataLoader
workers as StreamingKinetics cuts a rank's clips: driving it with a real ClipLoader checks
that EpochProgress replays the DataLoader's batch order, stop and resume included.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from torch.utils.data import get_worker_info

from clipshards.loader import ClipLoader, EpochPlan, EpochProgress, ShardReadError
from clipshards.loader.arguments import check_choice, check_errors, check_flag, check_rank, int_option, resolve_rank
from clipshards.loader.datasets import fill_skipped, skips
from clipshards.loader.plan import Leg, buffer_order, part_bounds
from clipshards.loader.progress import STATE_FORMAT, Position, ResumableDataset, batches_per_epoch, part_lengths
from state_helpers import run_test_save_load_state, take

# three workers on a two-core machine: torch warns, the test wants the rotation over three
pytestmark = pytest.mark.filterwarnings("ignore:This DataLoader will create")


class Numbers(ResumableDataset):
    """Integers ``0 .. n-1``; DataLoader worker ``w`` yields part ``(w + rotation) % W`` of them."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.progress = EpochProgress()

    def __len__(self) -> int:
        return self.n

    def state_identity(self) -> dict:
        return {"n": self.n}

    def __iter__(self):
        info = get_worker_info()
        num_workers, wid = (info.num_workers, info.id) if info is not None else (1, 0)
        start = self.progress.start(self.epoch, num_workers)
        a, b = part_bounds(self.n, num_workers, (wid + start.rotation) % num_workers)
        items = iter(range(a + start.consumed[(wid + start.rotation) % num_workers], b))
        yield from (self.progress.track(start, items) if info is None else items)


def numbers_loader(n: int, workers: int, batch_size: int, drop_last: bool = False):
    def make():
        ds = Numbers(n)
        ds.set_epoch(3)
        return ClipLoader(ds, batch_size=batch_size, num_workers=workers, collate_fn=list, drop_last=drop_last)

    return make


@pytest.mark.parametrize("workers,batch_size,drop_last", [(0, 4, False), (2, 3, False), (3, 4, False), (3, 2, True)])
def test_progress_replays_the_dataloader_order_and_resumes_exactly(workers, batch_size, drop_last):
    make = numbers_loader(23, workers, batch_size, drop_last)
    reference = run_test_save_load_state(make, [0, 1, 2, 4, 5, 7, 11, 12], tuple, resume_twice=2)
    assert len(reference) == len(make()) == batches_per_epoch(23, workers, batch_size, drop_last)
    got = sorted(x for b in reference for x in b)
    if drop_last:  # parts 8, 8, 7 -> 4 + 4 + 3 batches of 2: one number of the last part left out
        assert len(got) == 22 and set(got) < set(range(23))
    else:
        assert got == list(range(23))


def test_a_state_records_per_worker_consumption_and_the_next_worker():
    loader = numbers_loader(10, 3, 2)()  # parts 4, 3, 3 -> batches of 2, 2, 2 | 2, 1, 1
    first = take(loader, tuple, 4)
    state = loader.state_dict()
    assert first == [(0, 1), (4, 5), (7, 8), (2, 3)]
    assert state["format"] == STATE_FORMAT and state["epoch"] == 3 and state["n"] == 10
    assert (state["num_workers"], state["consumed"], state["rotation"]) == (3, [4, 2, 2], 1)


def test_set_epoch_keeps_a_resume_point_of_its_own_epoch_only():
    saved = {"format": STATE_FORMAT, "version": 1, "epoch": 2, "num_workers": 2, "consumed": [3, 1], "rotation": 1}
    p = EpochProgress()
    p.load_state_dict(saved, {})
    assert p.epoch == 2 and p.start(2, 2) == Position(2, 2, [3, 1], 1, 1)
    p.set_epoch(2)  # the same epoch: still resumes
    assert p.position == Position(2, 2, [3, 1], 1, 1) and p.start(2, 2).consumed == [3, 1]
    leg = p.start(2, 3)  # another worker count: a new leg after the saved one
    assert leg == Position(2, 3, [0, 0, 0], 0, 1, [Leg(1, 2, (3, 1))])
    p.set_epoch(4)  # another epoch: starts afresh
    assert p.start(4, 3) == Position(4, 3, [0, 0, 0], 0, 1)
    p.set_epoch(2)
    assert p.start(2, 2).consumed == [0, 0], "the resume point is gone once another epoch was chosen"


def test_start_hands_out_copies_and_track_counts_and_finishes():
    p = EpochProgress()
    p.load_state_dict({"format": STATE_FORMAT, "version": 1, "epoch": 0, "num_workers": 1, "consumed": [2],
                       "rotation": 0}, {})
    start = p.start(0, 1)
    start.consumed[0] = 99
    assert p.start(0, 1).consumed == [2], "an iteration never changes the saved resume point"
    items = p.track(p.start(0, 1), iter("abc"))
    assert next(items) == "a" and p.position.consumed == [3]
    assert list(items) == ["b", "c"] and p.position.consumed == [5]
    assert p.start(0, 1).consumed == [0], "a finished epoch starts afresh"


@pytest.mark.parametrize("state,match", [
    ({"format": "other"}, "not a StreamingKinetics state"),
    ([1, 2], "format='list'"),
    ({"format": STATE_FORMAT, "version": 3}, "version 3"),
    ({"format": STATE_FORMAT, "version": 1, "epoch": 0, "n": 11}, "saved with n=11, this dataset has n=10"),
    ({"format": STATE_FORMAT, "version": 1, "epoch": 0, "n": 10, "num_workers": 2, "consumed": [1]}, "malformed"),
    ({"format": STATE_FORMAT, "version": 1, "epoch": 0, "n": 10, "num_workers": 2, "consumed": [1, 1],
      "rotation": 2}, "malformed"),
    ({"format": STATE_FORMAT, "version": 1, "epoch": -1, "n": 10, "num_workers": None}, "epoch=-1"),
])
def test_bad_states_are_refused_naming_what_is_wrong(state, match):
    p = EpochProgress()
    with pytest.raises(ValueError, match=match):
        p.load_state_dict(state, {"n": 10})
    assert p.epoch == 0 and p.position == Position(0)


def test_skip_counters_and_pickling():
    p = EpochProgress()
    p.set_epoch(5)
    for worker in (0, 1, 1, 64):  # slot 64 wraps onto slot 0
        p.count_skip(worker)
    assert p.skipped == 4
    copy = pickle.loads(pickle.dumps(p))
    assert (copy.epoch, copy.skipped, copy.position) == (5, 4, Position(5))


def test_part_lengths_and_batches_per_epoch():
    assert part_lengths(10, 3) == [4, 3, 3] and part_lengths(2, 3) == [1, 1, 0]
    assert batches_per_epoch(10, 3, 2) == 2 + 2 + 2
    assert batches_per_epoch(10, 3, 2, drop_last=True) == 2 + 1 + 1
    assert batches_per_epoch(10, 0, 4) == batches_per_epoch(10, 1, 4) == 3
    assert batches_per_epoch(10, 2, None) == 10
    assert batches_per_epoch(0, 4, 8) == 0


def test_worker_order_is_the_part_through_its_buffer():
    plan = EpochPlan([5, 7, 4], epoch=1, shuffle=True, seed=3, block_size=2, world_size=2, shuffle_buffer=4)
    orders = plan.yield_orders(rank=1, num_workers=2)
    for w in range(2):
        clips, order = plan.worker_order(1, 2, w)
        assert list(clips) == list(plan.part(1, 2, w))
        rng = np.random.default_rng([3, 1, 1, 1, w])  # seed, epoch, the buffer's stream, rank, worker
        assert list(orders[w]) == list(clips[buffer_order(len(clips), 4, rng)])
    unshuffled = EpochPlan([5, 7, 4], epoch=1, shuffle=False, seed=3, block_size=2, shuffle_buffer=4)
    assert [list(o) for o in unshuffled.yield_orders(0, 1)] == [list(range(16))], "no buffer without shuffle"


def error(clip: int) -> ShardReadError:
    return ShardReadError("s.tar", clip, None, "damaged")


def test_fill_skipped_replaces_errors_by_a_neighbouring_good_item():
    seen = []
    items = [error(0), error(1), "a", error(3), "b", error(5)]
    out = list(fill_skipped(iter(items), len(items), lambda e: True, on_skip=lambda: seen.append(1)))
    assert out == ["a", "a", "a", "a", "b", "b"] and len(seen) == 4
    with pytest.raises(ShardReadError, match="clip 3"):
        list(fill_skipped(iter(items[2:]), 4, lambda e: False))
    with pytest.raises(ShardReadError, match="no readable clip in this worker's 2 clips; last error: damaged"):
        list(fill_skipped(iter([error(0), error(1)]), 2, lambda e: True))


def test_errors_policies(caplog):
    assert skips("skip", error(1)) and not skips("raise", error(1))
    assert "skipping unreadable clip" in caplog.text
    asked = []
    assert skips(lambda e: asked.append(e.clip) or True, error(7)) and asked == [7]
    assert not skips(lambda e: False, error(8))
    check_errors("skip")
    check_errors(print)
    with pytest.raises(ValueError, match="errors='ignore'"):
        check_errors("ignore")


def test_argument_checks_name_the_bad_value():
    assert int_option("seed", np.int64(3), 0) == 3 and type(int_option("seed", np.int64(3), 0)) is int
    assert int_option("block_size", None, 1, allow_none=True) is None
    assert int_option("block_size", "auto", 1, auto=True) == "auto"
    for value, match in ((True, "block_size=True: must be"), (0, "block_size=0"), ("big", "'auto' or an integer >= 1 or None")):
        with pytest.raises(ValueError, match=match):
            int_option("block_size", value, 1, allow_none=True, auto=True)
    assert check_flag("shuffle", False) is False
    with pytest.raises(ValueError, match="shuffle=1: must be True or False"):
        check_flag("shuffle", 1)
    with pytest.raises(ValueError, match="remainder='cut'"):
        check_choice("remainder", "cut", ("pad", "drop"))
    assert check_rank(None, None) == (None, None) and check_rank(1, 2) == (1, 2)
    with pytest.raises(ValueError, match="rank=2: must be < world_size=2"):
        check_rank(2, 2)
    assert resolve_rank(None, None) == (0, 1) and resolve_rank(2, 3) == (2, 3)
