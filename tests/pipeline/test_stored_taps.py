"""Frame taps travel analysis worker -> scorer worker through Ray's object store (issue 18 follow-up):
StoredTaps gives the same frames as FrameTaps in process, and a batch whose taps are lost fails retryably."""

from __future__ import annotations

import time
from functools import partial

import numpy as np
import pytest

from vidmill.pipeline.analysis.analyze import FrameTaps, StoredTaps, join_taps
from vidmill.pipeline.analysis.spans import ClipSpan
from vidmill.pipeline.config import CurateConfig, StageResources
from vidmill.pipeline.scoring.base import ScoreBatch
from vidmill.pipeline.scoring.motion import MotionScorer


def _taps(times: list[float]) -> FrameTaps:
    taps = FrameTaps()
    for t in times:
        taps.add(t, np.random.default_rng(int(t * 10)).integers(0, 255, (32, 48, 3), np.uint8))
        taps.details[t] = taps.jpegs[-1]
    return taps


class _Store:
    """An in-memory stand-in for the object store: put returns a key, get resolves a list of keys."""

    def __init__(self):
        self.objects: dict[int, FrameTaps] = {}

    def put(self, value: FrameTaps) -> int:
        self.objects[len(self.objects)] = value
        return len(self.objects) - 1

    def get(self, keys: list[int]) -> list[FrameTaps]:
        self.fetched = list(keys)
        return [self.objects[k] for k in keys]


def test_stored_taps_subset_equals_in_memory_subset_across_ranges():
    ranges = [[0.0, 0.5, 1.0, 1.5], [2.0, 2.5, 3.0], [], [3.5, 4.0]]  # one range without taps
    store = _Store()
    stored = join_taps([StoredTaps(((store.put(_taps(r)), r[0], r[-1]),)) if r else FrameTaps() for r in ranges])
    memory = join_taps([_taps(r) for r in ranges])
    assert isinstance(stored, StoredTaps) and len(stored.parts) == 3
    for start, end in [(0.0, 5.0), (0.4, 1.5), (1.5, 2.6), (2.6, 3.6), (4.1, 9.0), (1.6, 1.9)]:
        got, want = stored.subset(start, end).fetch(store.get), memory.subset(start, end)
        assert (got.times_s, got.jpegs, got.details) == (want.times_s, want.jpegs, want.details)
    stored.subset(2.0, 3.0).fetch(store.get)
    assert store.fetched == [1]  # only the range the window overlaps is fetched
    narrowed = stored.subset(0.0, 3.0).subset(2.5, 9.0)  # nested windows intersect
    assert narrowed.fetch(store.get).times_s == [2.5]


def test_mixed_taps_are_refused():
    with pytest.raises(ValueError):
        join_taps([StoredTaps(((0, 0.0, 1.0),)), _taps([2.0])])


def _wait_until_lost(ref, limit_s: float = 30.0) -> None:
    import ray

    @ray.remote(num_cpus=0)
    def fetch(box):
        try:
            ray.get(box[0])
        except ray.exceptions.ObjectLostError:
            return True
        return False

    deadline = time.monotonic() + limit_s
    while not ray.get(fetch.remote([ref])):
        assert time.monotonic() < deadline, "the owner's death was never noticed"
        time.sleep(0.2)


def test_lost_taps_give_a_counted_retryable_failure_not_a_crash(local_ray):
    """The worker that put the taps dies: the scorer's batch comes back as a retryable error per clip."""
    import ray

    from vidmill.pipeline.executor.actor_pool import ActorPool

    @ray.remote
    class Owner:
        def put(self, taps):
            return [ray.put(taps)]  # a nested ref: owned by this actor, as the analysis workers' taps are


    config = CurateConfig()
    spans = (ClipSpan("v_0000_00", 0.0, 2.0),)
    owner = Owner.remote()
    [ref] = ray.get(owner.put.remote(_taps([0.0, 0.5, 1.0, 1.5])))
    [gone] = ray.get(owner.put.remote(_taps([0.0, 0.5, 1.0, 1.5])))
    [probe] = ray.get(owner.put.remote(_taps([0.0])))
    pool = ActorPool("motion", partial(MotionScorer, config), StageResources(num_cpus=0.1), retries=0)
    try:
        pool.submit("v", ScoreBatch("v", spans, StoredTaps(((ref, 0.0, 1.5),)).subset(0.0, 2.0)))
        done = []
        while pool.pending:
            done += pool.poll(wait_s=0.5)
        assert done[0].value is not None, done[0].error
        assert done[0].value["v_0000_00"]["motion_status"] == "scored"  # fetched while the owner lives
        ray.kill(owner, no_restart=True)
        _wait_until_lost(probe)  # the owner's death is known before the batch is sent (it takes a moment)
        pool.submit("v", ScoreBatch("v", spans, StoredTaps(((gone, 0.0, 1.5),))))
        done = []
        while pool.pending:
            done += pool.poll(wait_s=0.5)
    finally:
        pool.shutdown()
    [lost] = done
    assert lost.value is None and lost.retryable and "RefLost" in lost.error, lost.error
    assert pool.failures["exception"] == 1
