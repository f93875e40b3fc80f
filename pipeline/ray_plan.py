"""The one place that knows Ray: actor pools per stage, streaming between them, per-item deadlines.

Each stage runs in a pool of Ray actors sized and resourced from config. The driver keeps one item in
flight per actor, streams analysis results into transcode batches as they arrive, kills and
replaces an actor whose item overruns its deadline (a hung decoder), and replaces an actor whose
worker dies. Ray Data's map_batches has no per-row deadline or kill-on-hang, hence this small loop.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import ray

from vidmill.pipeline.config import StageResources
from vidmill.pipeline.outcomes import FailureKind
from vidmill.pipeline.stage import Stage


class StageActor:
    """Holds one stage instance; `setup` runs once when the actor starts."""

    def __init__(self, factory: Callable[[], Stage]):
        self.stage = factory()
        self.stage.setup()

    def run(self, item: Any) -> tuple[Any, float]:
        return self.stage.timed(item)


@dataclass
class Done:
    tag: Any
    item: Any
    value: Any = None
    seconds: float = 0.0
    error: str | None = None
    retryable: bool = False  # not the input's fault (worker died, unexpected exception): redone on re-run


class ActorPool:
    def __init__(self, name: str, factory: Callable[[], Stage], resources: StageResources,
                 timeout_s: float | Callable[[Any], float] | None = None, retries: int = 1):
        """`timeout_s`: seconds one item may run, or a function of the item giving them."""
        self.name, self.factory, self.resources = name, factory, resources
        self.timeout_s, self.retries = timeout_s, retries
        self.remote_cls = ray.remote(StageActor).options(
            num_cpus=resources.num_cpus, num_gpus=resources.num_gpus, max_concurrency=1)
        self.idle: list[Any] = []
        self.n_actors = 0
        self.queue: deque[tuple[Any, Any, int]] = deque()
        self.failures: Counter[str] = Counter()  # timeout, worker_died, exception, and retries
        self.busy: dict[ray.ObjectRef, tuple[Any, Any, Any, int, float]] = {}

    def _spawn(self) -> None:
        self.idle.append(self.remote_cls.remote(self.factory))
        self.n_actors += 1

    def submit(self, tag: Any, item: Any, attempt: int = 0, first: bool = False) -> None:
        """Queue an item; `first`: ahead of everything queued (work that finishes a started input)."""
        if first:
            self.queue.appendleft((tag, item, attempt))
        else:
            self.queue.append((tag, item, attempt))

    @property
    def pending(self) -> int:
        return len(self.queue) + len(self.busy)

    def _dispatch(self) -> None:
        while self.queue and (self.idle or self.n_actors < self.resources.concurrency):
            if not self.idle:
                self._spawn()
            actor = self.idle.pop()
            tag, item, attempt = self.queue.popleft()
            self.busy[actor.run.remote(item)] = (actor, tag, item, attempt, time.monotonic())

    def _limit_s(self, item: Any) -> float | None:
        return self.timeout_s(item) if callable(self.timeout_s) else self.timeout_s

    def _replace(self, actor: Any) -> None:
        ray.kill(actor, no_restart=True)
        self.n_actors -= 1

    def poll(self, wait_s: float) -> list[Done]:
        """Start queued items, then collect what finished (or overran) within `wait_s`."""
        self._dispatch()
        if not self.busy:
            return []
        ready, _ = ray.wait(list(self.busy), num_returns=len(self.busy), timeout=wait_s)
        done = [self._collect(ref) for ref in ready]
        if self.timeout_s:
            now = time.monotonic()
            for ref, (actor, tag, item, _, started) in list(self.busy.items()):
                limit = self._limit_s(item)
                if limit and now - started > limit:
                    del self.busy[ref]
                    self._replace(actor)
                    self.failures[FailureKind.TIMEOUT.value] += 1
                    done.append(Done(tag, item, error=f"{self.name}: timed out after {limit:.0f}s"))
        self._dispatch()
        return [d for d in done if d is not None]

    def _collect(self, ref: ray.ObjectRef) -> Done | None:
        actor, tag, item, attempt, started = self.busy.pop(ref)
        try:
            value, seconds = ray.get(ref)
        except ray.exceptions.RayActorError as exc:
            self._replace(actor)
            self.failures[FailureKind.WORKER_DIED.value] += 1
            if attempt < self.retries:
                self.failures["retries"] += 1
                self.submit(tag, item, attempt + 1)
                return None
            cause = plain(str(exc)).strip().splitlines()[0][:300] if str(exc).strip() else ""
            return Done(tag, item, error=f"{self.name}: worker died: {type(exc).__name__}: {cause}", retryable=True)
        except ray.exceptions.RayTaskError as exc:
            self.idle.append(actor)
            cause = exc.cause if getattr(exc, "cause", None) is not None else exc
            self.failures[FailureKind.EXCEPTION.value] += 1
            # content errors come back as values; an exception here is a bug or a transient fault
            return Done(tag, item, error=plain(f"{self.name}: {type(cause).__name__}: {cause}"), retryable=True)
        self.idle.append(actor)
        return Done(tag, item, value=value, seconds=seconds)

    def shutdown(self) -> None:
        for actor in self.idle + [b[0] for b in self.busy.values()]:
            ray.kill(actor, no_restart=True)
        self.idle, self.busy, self.n_actors = [], {}, 0


ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")


def plain(text: str) -> str:
    """Text without terminal colour/cursor escapes (Ray colours its exception messages)."""
    return ANSI_ESCAPE.sub("", text)


def _packs(sizes: list[float], capacities: list[float]) -> bool:
    """First-fit decreasing: can actors of these CPU sizes all be placed on nodes of these capacities?"""
    free = sorted(capacities, reverse=True)
    for size in sorted(sizes, reverse=True):
        for i, room in enumerate(free):
            if size <= room + 1e-9:
                free[i] = room - size
                break
        else:
            return False
    return True


def fit_to_cluster(pools: list[ActorPool]) -> None:
    """Shrink CPU reservations when the pools' actors cannot all be placed on the cluster's nodes.

    Pools keep idle actors alive, so an actor that fits nowhere (too few CPUs in total, or spread
    over nodes so no node has room) would wait forever: a deadlock. Then every actor reserves
    `smallest node / number of actors`, which fits wherever Ray puts them. Real CPU use is not capped.
    """
    sizes = [p.resources.num_cpus for p in pools for _ in range(p.resources.concurrency)]
    capacities = [float(n["Resources"].get("CPU", 0.0)) for n in ray.nodes() if n.get("Alive")]
    capacities = [c for c in capacities if c > 0]
    if not capacities or _packs(sizes, capacities):
        return
    share = round(min(capacities) / len(sizes), 4)
    for pool in pools:
        pool.resources = replace(pool.resources, num_cpus=min(pool.resources.num_cpus, share))
        pool.remote_cls = ray.remote(StageActor).options(
            num_cpus=pool.resources.num_cpus, num_gpus=pool.resources.num_gpus, max_concurrency=1)
    print(f"vidmill: {len(sizes)} stage actors asking for {sum(sizes):.2f} CPUs do not fit on nodes with "
          f"{capacities} CPUs: each reserves {share} CPU instead", flush=True)


def run_pools(first: ActorPool, items: Iterator[tuple[Any, Any]],
              on_done: Callable[[ActorPool, Done], None], pools: list[ActorPool]) -> None:
    """Feed `items` to `first`; `on_done` may submit follow-up work to any pool; stop when all drain."""
    for tag, item in items:
        first.submit(tag, item)
    while any(p.pending for p in pools):
        for pool in pools:
            for done in pool.poll(wait_s=0.05 if len(pools) > 1 else 0.5):
                on_done(pool, done)


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
    from vidmill.pipeline import ray_watchdog

    node = getattr(ray._private.worker, "_global_node", None)
    processes = getattr(node, "all_processes", {}) if node is not None else {}
    raylets = [info.process.pid for info in processes.get("raylet", [])]
    if raylets:
        heads = [info.process.pid for infos in processes.values() for info in infos]
        ray_watchdog.start(os.getpid(), raylets[0], heads)

