"""The Ray plan's actor pools: a hung item times out, a crashing worker is replaced, the rest finish."""

from __future__ import annotations

import sys

from ray import cloudpickle

from vidmill.pipeline.config import StageResources
from vidmill.pipeline.executor.actor_pool import ActorPool
from vidmill.pipeline.executor.runner import StageRunner, always_placeable
from vidmill.pipeline.outcomes import FailureKind
from vidmill.pipeline.stage import Stage

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import tests/


def make_stage():
    import os
    import time

    class Misbehaving(Stage):
        name = "misbehaving"

        def process(self, item):
            if item == "hang":
                time.sleep(120)
            if item == "crash":
                os._exit(3)  # like a decoder segfault: the worker process dies
            if item == "raise":
                raise RuntimeError("bad item")
            return item.upper()

    return Misbehaving()


def test_hang_crash_and_exception_become_errors_and_other_items_finish(local_ray):
    pool = ActorPool("misbehaving", make_stage, StageResources(num_cpus=0.25, concurrency=2), timeout_s=20)
    results = {}
    items = ["a", "hang", "b", "crash", "c", "raise", "d"]
    runner = StageRunner()
    runner.map(pool, ((i, i) for i in items), lambda done: results.__setitem__(done.tag, done))
    assert set(results) == set(items)
    for ok in "abcd":
        assert results[ok].value == ok.upper() and results[ok].error is None and results[ok].failure is None
    assert "timed out after 20s" in results["hang"].error and not results["hang"].retryable
    assert results["hang"].failure is FailureKind.TIMEOUT
    assert "worker died" in results["crash"].error and results["crash"].retryable
    assert results["crash"].failure is FailureKind.WORKER_DIED
    assert "RuntimeError: bad item" in results["raise"].error and results["raise"].retryable
    assert results["raise"].failure is FailureKind.EXCEPTION
    stats = runner.stats["misbehaving"]  # failures counted by the pool where they happen
    # "crash" kills its worker twice: once on the first try, once on its retry
    assert (stats.items, stats.errors, stats.timeouts, stats.worker_deaths, stats.retries) == (7, 3, 1, 2, 1)


def make_sleeper():
    import time

    class Sleeper(Stage):
        name = "sleeper"

        def process(self, item):
            time.sleep(item[1])
            return item[0]

    return Sleeper()


def test_deadline_can_depend_on_the_item(local_ray):
    limits = {"small": 1.0, "large": 60.0}  # e.g. seconds allowed by input size
    pool = ActorPool("sleeper", make_sleeper, StageResources(num_cpus=0.25, concurrency=2),
                     timeout_s=lambda item: limits[item[0]])
    results = {}
    StageRunner().map(pool, ((name, (name, 4.0)) for name in limits), lambda done: results.__setitem__(done.tag, done))
    assert "timed out after 1s" in results["small"].error
    assert results["large"].value == "large" and results["large"].error is None


def test_input_deadline_grows_with_file_size():
    from vidmill.pipeline.config import DecodeConfig

    cfg = DecodeConfig(input_timeout_s=600.0, timeout_s_per_gb=600.0)
    assert cfg.input_deadline_s(0) == 600.0 and cfg.input_deadline_s(4_000_000_000) == 3000.0


def test_placement_check_sees_fragmentation_across_nodes():
    assert not always_placeable([0.6, 0.6, 0.6], [1.0, 1.0])  # 1.8 CPUs in total, yet the third fits nowhere
    assert not always_placeable([2 / 9] * 9, [1.0, 1.0])  # 4 + 4 per node, the ninth nowhere
    # an exact fit is not enough: Ray may put 0.25 + 0.25 + 3 x 0.125 on one node and strand the last 0.25
    assert not always_placeable([0.25] * 6 + [0.125] * 4, [1.0, 1.0])
    assert always_placeable([0.25] * 6 + [0.125] * 4, [2.0])  # the default pools on one 2-CPU node
    share = 2.0 / (10 + 2 - 1)  # the fallback share for 10 actors on two 1-CPU nodes
    assert always_placeable([share] * 10, [1.0, 1.0])
