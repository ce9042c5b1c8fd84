"""One helper for every save/load-state test (in the manner of torchdata's run_test_save_load_state).

``run_test_save_load_state(make_loader, stops, identify)``: the uninterrupted run gives the
reference list of batches; then for each stop point k, a first loader yields k batches and
saves its state; the state goes through JSON (it must survive a checkpoint file); a *new*
loader, built from scratch, loads it and yields the rest. The first k batches plus the rest
must equal the reference exactly, batch by batch. With ``resume_twice``, the resumed run is
itself stopped after a few more batches and resumed again.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Hashable, Iterable, Optional, Sequence

Batch = Any


def take(loader: Iterable[Batch], identify: Callable[[Batch], Hashable], k: Optional[int]) -> list[Hashable]:
    """Identities of the first ``k`` batches (all when ``k`` is None); stops the loader after k."""
    out: list[Hashable] = []
    if k == 0:
        return out
    for batch in loader:
        out.append(identify(batch))
        if k is not None and len(out) == k:
            break
    return out


def checkpoint(state: dict[str, Any]) -> dict[str, Any]:
    """The state as a checkpoint file would give it back."""
    return json.loads(json.dumps(state))


def run_test_save_load_state(
    make_loader: Callable[[], Any],
    stops: Sequence[int],
    identify: Callable[[Batch], Hashable],
    *,
    resume_twice: int = 0,
) -> list[Hashable]:
    """Check resume at every stop point in ``stops`` (clipped to the epoch's batch count);
    returns the reference batches."""
    reference = take(make_loader(), identify, None)
    assert reference, "the loader yielded nothing"
    for k in sorted({min(s, len(reference)) for s in stops}):
        first_loader = make_loader()
        first = take(first_loader, identify, k)
        state = checkpoint(first_loader.state_dict())
        del first_loader
        resumed = make_loader()
        resumed.load_state_dict(state)
        if resume_twice and k + resume_twice < len(reference):
            middle = take(resumed, identify, resume_twice)
            state2 = checkpoint(resumed.state_dict())
            del resumed
            resumed = make_loader()
            resumed.load_state_dict(state2)
            rest = middle + take(resumed, identify, None)
        else:
            rest = take(resumed, identify, None)
        assert first + rest == reference, (
            f"stopped after {k} batches: resumed run differs from the uninterrupted one\n"
            f"uninterrupted: {reference}\nfirst {k}: {first}\nresumed: {rest}\nstate: {state}"
        )
    return reference
