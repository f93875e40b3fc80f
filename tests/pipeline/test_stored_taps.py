"""Frame taps travel analysis worker -> scorer worker through Ray's object store (issue 18 follow-up):
StoredTaps gives the same frames as FrameTaps in process, and a batch whose taps are lost fails retryably."""

from __future__ import annotations

import time
from functools import partial

import numpy as np
import pytest

from vidmill.pipeline.analysis.analyze import AnalyzeInput, FrameTaps, InputRange, StoredTaps, join_taps
from vidmill.pipeline.analysis.spans import ClipSpan
from vidmill.pipeline.config import CurateConfig, StageResources
from vidmill.pipeline.executor.actor_pool import Done
from vidmill.pipeline.outcomes import FailureKind
from vidmill.pipeline.scoring.base import ScoreBatch
from vidmill.pipeline.scoring.motion import MotionScorer
from vidmill.pipeline.sources import list_inputs


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


class _Pool:
    def __init__(self, name: str):
        self.name, self.items = name, []

    def submit(self, tag, item, first: bool = False) -> None:
        self.items.append((tag, item))

    def take(self) -> list:
        items, self.items = self.items, []
        return items


class _Runner:
    def __init__(self):
        self.pools: dict[str, _Pool] = {}

    def pool(self, stage, *args, name=None, **kwargs) -> _Pool:
        return self.pools.setdefault(name or stage.name, _Pool(name or stage.name))


def _analyse(stream, store: _Store, analyze: AnalyzeInput) -> None:
    """Run what the driver queued for analysis, in process, the taps offloaded as a worker would."""
    while items := stream.analyze.take():
        for tag, rng in items:
            stream.analysed(Done(tag, rng, value=analyze.offload(analyze.process(rng), store.put)))


def _motion_stream(samples, config: CurateConfig):
    """The driver's analyse-and-score stream for cuts.mp4 with the motion scorer, its input queued for analysis.
    Returns (stream, finished (result, retryable) pairs, store, analyze stage, the motion queue)."""
    from tqdm import tqdm

    from vidmill.pipeline.stream import AnalyseAndScore

    (ref,) = list_inputs(str(samples / "cuts.mp4"), config.source)
    finished = []
    stream = AnalyseAndScore(config, _Runner(), [MotionScorer], lambda r, retry: finished.append((r, retry)),
                             lambda clips: [], lambda done: None, progress=False)
    stream.bar, stream.total = tqdm(disable=True), lambda: 1
    stream.analyze.submit(ref.input_id, InputRange(ref, split=True))
    return stream, finished, _Store(), AnalyzeInput(config), stream.scoring[0]


def test_lost_taps_make_the_driver_analyse_the_input_again_once(samples):
    """Scorers that cannot fetch an input's taps (in ranges: segment_s 2) get the input analysed again; a
    second loss finishes it as a retryable failure (reported, redone on the next run), never a crash."""
    config = CurateConfig()
    config.decode.segment_s = 2.0
    stream, finished, store, analyze, motion = _motion_stream(samples, config)
    for attempt in range(2):
        _analyse(stream, store, analyze)
        batches = motion.take()
        assert batches and not finished
        assert all(isinstance(b.taps, StoredTaps) and b.taps.parts for _, b in batches)
        assert len({p[0] for _, b in batches for p in b.taps.parts}) >= 2  # the refs of several ranges
        for tag, batch in batches:
            stream.scored("motion", Done(tag, batch, error="motion: RefLost: gone", failure=FailureKind.EXCEPTION,
                                         refs_lost=True))
        assert bool(stream.analyze.items) == (attempt == 0)  # analysed again after the first loss only
    [(result, retryable)] = finished
    assert retryable and result.clips
    assert all(c.scores["motion_status"].startswith("error") for c in result.clips if "too_short" not in
               c.reject_reasons)


def test_input_scored_after_a_redo_is_finished_normally(samples):
    config = CurateConfig()
    stream, finished, store, analyze, motion = _motion_stream(samples, config)
    scorer = MotionScorer(config)
    _analyse(stream, store, analyze)
    for tag, batch in motion.take():
        stream.scored("motion", Done(tag, batch, error="motion: RefLost: gone", failure=FailureKind.EXCEPTION,
                                     refs_lost=True))
    _analyse(stream, store, analyze)
    for tag, batch in motion.take():
        stream.scored("motion", Done(tag, batch, value=scorer.process(scorer.fetched(batch, store.get))))
    [(result, retryable)] = finished
    assert not retryable
    assert all(c.scores["motion_status"] == "scored" for c in result.clips if "too_short" not in c.reject_reasons)
