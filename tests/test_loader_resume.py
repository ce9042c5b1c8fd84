"""Mid-epoch resume: a restarted job yields exactly the batches the uninterrupted job would have."""

from __future__ import annotations

import pytest

from clipshards.loader import ClipLoader, StreamingKinetics
from loader_helpers import NUM_CLIPS, batch_ids, clip_id
from loader_helpers import converted, table  # noqa: F401  (pytest fixtures)
from state_helpers import checkpoint, run_test_save_load_state, take


def loader_factory(out, table, *, workers, batch_size=4, epoch=2, **options):
    def make():
        ds = StreamingKinetics(out, seed=11, shuffle_buffer=6, block_size=2, **options)
        ds.set_epoch(epoch)
        return ClipLoader(ds, batch_size=batch_size, num_workers=workers)

    def identify(batch):
        return tuple(batch_ids(batch, table))

    return make, identify


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_at_many_stop_points(converted, table, workers):
    _, out = converted
    make, identify = loader_factory(out, table, workers=workers)
    # 57 clips, batch 4: 15 batches (2 workers: 29 + 28 clips -> 8 + 7 batches)
    reference = run_test_save_load_state(make, [0, 1, 2, 3, 5, 8, 13, 14, 15], identify)
    assert len(reference) == 15
    assert sorted(x for b in reference for x in b) == list(range(NUM_CLIPS))


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_twice(converted, table, workers):
    _, out = converted
    make, identify = loader_factory(out, table, workers=workers, batch_size=3)
    run_test_save_load_state(make, [1, 4, 7], identify, resume_twice=3)


def test_resume_with_ranks_and_unbatched(converted, table):
    _, out = converted
    for rank in range(3):
        make, _ = loader_factory(out, table, workers=2, batch_size=None, rank=rank, world_size=3, remainder="drop")

        def identify(sample):
            return table[clip_id(sample[0])]

        reference = run_test_save_load_state(make, [1, 4, 9, 18], identify)
        assert len(reference) == NUM_CLIPS // 3


def test_state_round_trip_and_next_epoch(converted, table):
    """After a resumed epoch, set_epoch(e + 1) gives the fresh order of epoch e + 1."""
    _, out = converted
    make, identify = loader_factory(out, table, workers=2)
    loader = make()
    take(loader, identify, 4)
    state = checkpoint(loader.state_dict())
    assert state["epoch"] == 2 and state["num_workers"] == 2 and sum(state["consumed"]) == 16
    resumed = make()
    resumed.load_state_dict(state)
    assert resumed.state_dict() == state
    assert len(take(resumed, identify, None)) == 15 - 4
    resumed.dataset.set_epoch(3)
    fresh = make()
    fresh.dataset.set_epoch(3)
    assert take(resumed, identify, None) == take(fresh, identify, None)


def test_state_mismatch_is_refused(converted, table):
    _, out = converted
    make, identify = loader_factory(out, table, workers=2)
    loader = make()
    take(loader, identify, 2)
    state = checkpoint(loader.state_dict())
    other = StreamingKinetics(out, seed=12, shuffle_buffer=6, block_size=2)
    with pytest.raises(ValueError, match="seed=11"):
        other.load_state_dict(state)
    two_ranks = StreamingKinetics(out, seed=11, shuffle_buffer=6, block_size=2, rank=0, world_size=2)
    two_ranks.load_state_dict(state)  # another world size: a new leg of the epoch (tests/test_loader_elastic.py)
    ds = StreamingKinetics(out, seed=11, shuffle_buffer=6, block_size=2)
    ds.load_state_dict(state)
    ds.set_epoch(2)
    rest = take(ClipLoader(ds, batch_size=4, num_workers=0), identify, None)  # another worker count: the rest
    assert sorted(x for b in rest for x in b) == sorted(set(range(NUM_CLIPS)) - {x for b in take(make(), identify, 2)
                                                                                    for x in b})
    with pytest.raises(ValueError, match="not a StreamingKinetics state"):
        ds.load_state_dict({"epoch": 1})
    with pytest.raises(ValueError, match="version 9"):
        ds.load_state_dict({**state, "version": 9})
    with pytest.raises(ValueError, match="malformed state"):
        ds.load_state_dict({**state, "consumed": [1]})


def test_state_at_epoch_start_and_end(converted, table):
    _, out = converted
    make, identify = loader_factory(out, table, workers=2)
    loader = make()
    start = loader.state_dict()
    assert start["epoch"] == 2 and start["num_workers"] is None
    everything = take(loader, identify, None)
    end = checkpoint(loader.state_dict())
    assert sum(end["consumed"]) == NUM_CLIPS
    after_end = make()
    after_end.load_state_dict(end)
    assert take(after_end, identify, None) == []
    from_start = make()
    from_start.load_state_dict(checkpoint(start))
    assert take(from_start, identify, None) == everything
