"""Clips of a batch spread over threads (loader/parallel.py): each index once, the first error
in index order, the caller's thread working too, and a batch equal to one made in one thread."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from clipshards.loader.parallel import batch_threads, each_index


@pytest.mark.parametrize("count,threads", [(0, 2), (1, 2), (8, 1), (8, 2), (8, 4), (3, 8)])
def test_each_index_runs_every_index_once(count, threads):
    seen: list[int] = []
    lock = threading.Lock()

    def work(i: int) -> None:
        with lock:
            seen.append(i)

    each_index(count, work, threads=threads)
    assert sorted(seen) == list(range(count))


def test_each_index_uses_more_than_one_thread_and_the_caller():
    names: set[str] = set()
    both = threading.Barrier(2, timeout=10)  # indices 0 and 1 run at once, or the barrier breaks

    def work(i: int) -> None:
        names.add(threading.current_thread().name)
        if i < 2:
            both.wait()

    each_index(8, work, threads=2)
    assert threading.current_thread().name in names
    assert len(names) == 2


def test_each_index_raises_the_lowest_failing_index_after_all_finished():
    done: list[int] = []

    def work(i: int) -> None:
        time.sleep(0.005 * (8 - i))  # later indices finish first
        if i in (2, 5):
            raise ValueError(f"clip {i}")
        done.append(i)

    with pytest.raises(ValueError, match="clip 2"):
        each_index(8, work, threads=2)
    assert sorted(done) == [0, 1, 3, 4, 6, 7]  # every other index still ran: no batch memory in use after


def test_batch_threads_follows_torch():
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert batch_threads() == 1
        torch.set_num_threads(3)
        assert batch_threads() == 3
    finally:
        torch.set_num_threads(before)
