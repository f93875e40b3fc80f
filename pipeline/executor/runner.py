"""The stage runner: the one place that starts Ray, fits pools to the cluster, runs them until they
drain, counts every finished item into its stage's statistics, and shuts the pools down.

A phase of the pipeline is `runner.run({pool: handler, ...}, feed)`: the items of `feed` go to their
pools, each finished item (`Done`) to its pool's handler, which may submit follow-up work to any pool
(analysis results stream into scorers, scored inputs into transcode). Deadlines and retries are the
pools' (actor_pool.py); counts, busy time, errors, timeouts and worker deaths are recorded here.
"""

from __future__ import annotations

import io
import logging
import math
import os
import pickle
from collections.abc import Callable, Iterable
from dataclasses import replace
from functools import partial
from typing import Any

import ray

from vidmill.pipeline.config import StageResources
from vidmill.pipeline.executor.actor_pool import ActorPool, Done
from vidmill.pipeline.stage import Stage, StageStats

Handler = Callable[[Done], None]


class StageRunner:
    def __init__(self, address: str | None = None, stats: dict[str, StageStats] | None = None):
        self.address = address
        self.stats: dict[str, StageStats] = stats if stats is not None else {}
        # per stage, pickled sizes of what the driver received (results) and sent (items, once per item)
        self.driver_bytes: dict[str, int] = {}
        self.driver_bytes_sent: dict[str, int] = {}

    def pool(self, stage: type[Stage] | Callable[..., Stage], *args: Any, name: str | None = None,
             resources: StageResources, timeout_s: float | Callable[[Any], float] | None = None,
             retries: int = 1) -> ActorPool:
        """A pool of actors each building `stage(*args)`; not started until `run`."""
        name = name or getattr(stage, "name", "stage")
        self.stats.setdefault(name, StageStats())
        return ActorPool(name, partial(stage, *args), resources, timeout_s, retries)

    def run(self, handlers: dict[ActorPool, Handler], feed: Iterable[tuple[ActorPool, Any, Any]],
            weight: Callable[[Any], int] = lambda item: 1, in_flight: int | None = None) -> None:
        """Start Ray, submit `feed` ((pool, tag, item) triples), poll every pool until all drain.

        Back-pressure: `feed` is pulled lazily, only while fewer than `in_flight` items (default: 4 per actor
        of all pools) are queued or running in all pools together, follow-up work included; so a feed of any
        length (a streaming listing) never sits in memory, and neither do its results."""
        init_ray(self.address)
        pools = list(handlers)
        fit_to_cluster(pools)
        limit = in_flight or max(1, 4 * sum(p.resources.concurrency for p in pools))
        feed = iter(feed)
        try:
            while True:
                while feed is not None and sum(p.pending for p in pools) < limit:
                    step = next(feed, None)
                    if step is None:
                        feed = None
                        break
                    pool, tag, item = step
                    pool.submit(tag, item)
                if feed is None and not any(p.pending for p in pools):
                    break
                for pool in pools:
                    for done in pool.poll(wait_s=0.05 if len(pools) > 1 else 0.5):
                        self.count(pool.name, done, weight(done.item))
                        handlers[pool](done)
        finally:
            for pool in pools:
                self.stats.setdefault(pool.name, StageStats()).count_failures(pool.failures)
                pool.shutdown()

    def map(self, pool: ActorPool, items: Iterable[tuple[Any, Any]], handler: Handler,
            weight: Callable[[Any], int] = lambda item: 1) -> None:
        """One pool over (tag, item) pairs."""
        self.run({pool: handler}, ((pool, tag, item) for tag, item in items), weight)

    def count(self, name: str, done: Done, items: int = 1) -> None:
        stats = self.stats.setdefault(name, StageStats())
        stats.items += items
        stats.busy_s += done.seconds
        self.driver_bytes[name] = self.driver_bytes.get(name, 0) + pickled_size(done.value)
        self.driver_bytes_sent[name] = self.driver_bytes_sent.get(name, 0) + pickled_size(done.item)
        if done.error:  # timeouts, worker deaths and retries are counted by the pool where they happen
            stats.errors += 1


class _RefsById(pickle.Pickler):
    """Pickles an ObjectRef as its id: what Ray sends for it, and no out-of-band serialization (which would
    pin the object in the store for good)."""

    def persistent_id(self, obj: Any) -> bytes | None:
        return obj.binary() if isinstance(obj, ray.ObjectRef) else None


def pickled_size(value: Any) -> int:
    buf = io.BytesIO()
    _RefsById(buf).dump(value)
    return buf.tell()


def always_placeable(sizes: list[float], capacities: list[float]) -> bool:
    """Do actors of these CPU sizes fit whatever node Ray puts each one on?

    Ray does not pack optimally, so an exact fit can still strand the last actor (every node left with
    less room than it needs). If an actor of size x cannot be placed, every node has less than x free, so
    sum(sizes) - x > sum(capacities) - n * x; hence sum(sizes) <= sum(capacities) - (n - 1) * max(sizes)
    guarantees a place for every actor (on one node: sum(sizes) <= capacity).
    """
    if not sizes:
        return True
    biggest = max(sizes)
    return biggest <= min(capacities) + 1e-9 and \
        sum(sizes) <= sum(capacities) - (len(capacities) - 1) * biggest + 1e-9


def fit_to_cluster(pools: list[ActorPool]) -> None:
    """Shrink CPU reservations when the pools' actors might not all be placed on the cluster's nodes.

    Pools keep idle actors alive, so an actor that finds no room would wait forever: a deadlock. Then
    every actor reserves the same share s, the largest with N * s <= sum(capacities) - (n - 1) * s (and at
    most the smallest node), which `always_placeable` accepts. Real CPU use is not capped.
    """
    sizes = [p.resources.num_cpus for p in pools for _ in range(p.resources.concurrency)]
    capacities = [float(n["Resources"].get("CPU", 0.0)) for n in ray.nodes() if n.get("Alive")]
    capacities = [c for c in capacities if c > 0]
    if not capacities or always_placeable(sizes, capacities):
        return
    share = math.floor(min(min(capacities), sum(capacities) / (len(sizes) + len(capacities) - 1)) * 1e4) / 1e4
    for pool in pools:
        pool.reserve(replace(pool.resources, num_cpus=min(pool.resources.num_cpus, share)))
    print(f"vidmill: {len(sizes)} stage actors asking for {sum(sizes):.2f} CPUs might not all find room on nodes "
          f"with {capacities} CPUs: each reserves {share} CPU instead", flush=True)


def init_ray(address: str | None) -> None:
    """Local Ray on 127.0.0.1 by default; an existing cluster with --address or RAY_ADDRESS."""
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, logging_level="WARNING")
    else:  # "local": a fresh instance, never a cluster some earlier `ray start` left on this machine
        # Token auth stays on; only its "you may opt out" notice is silenced for vidmill's own loopback instance.
        logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
        ray.init(address="local", include_dashboard=False, logging_level="WARNING")
        _watch_local_ray()


def _watch_local_ray() -> None:
    """Kill the local instance's leftovers if this driver dies without shutting Ray down (SIGKILL)."""
    from vidmill.pipeline.executor import ray_watchdog

    node = getattr(ray._private.worker, "_global_node", None)
    processes = getattr(node, "all_processes", {}) if node is not None else {}
    raylets = [info.process.pid for info in processes.get("raylet", [])]
    if raylets:
        heads = [info.process.pid for infos in processes.values() for info in infos]
        ray_watchdog.start(os.getpid(), raylets[0], heads)

