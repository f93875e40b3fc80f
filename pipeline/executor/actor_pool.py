"""A pool of Ray actors running one stage: one item in flight per actor, per-item deadlines, retries.

Each stage runs in a pool of Ray actors sized and resourced from config. The pool kills and replaces
an actor whose item overruns its deadline (a hung decoder) and replaces an actor whose worker dies.
Ray Data's map_batches has no per-row deadline or kill-on-hang, hence this small loop. Failures come
back as `Done` with a `FailureKind`; the runner (runner.py) counts them.
"""

from __future__ import annotations

import re
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import ray

from vidmill.pipeline.config import StageResources
from vidmill.pipeline.outcomes import FailureKind
from vidmill.pipeline.stage import Stage


class RefLost(RuntimeError):
    """An item's refs cannot be fetched (their owner, the worker that put them, died): retryable."""


class StageActor:
    """Holds one stage instance; `setup` runs once when the actor starts. Items' refs are fetched here and
    the stage may put large results in the object store (Stage.fetched / Stage.offload)."""

    def __init__(self, factory: Callable[[], Stage]):
        self.stage = factory()
        self.stage.setup()

    def run(self, item: Any) -> tuple[Any, float]:
        try:
            item = self.stage.fetched(item, ray.get)
        except ray.exceptions.ObjectLostError as exc:  # OwnerDiedError included
            raise RefLost(f"{type(exc).__name__}: the worker that put this item's data is gone") from None
        value, seconds = self.stage.timed(item)
        return self.stage.offload(value, ray.put), seconds


@dataclass
class Done:
    tag: Any
    item: Any
    value: Any = None
    seconds: float = 0.0
    error: str | None = None
    failure: FailureKind | None = None
    refs_lost: bool = False  # the item's refs could not be fetched (the worker that put them died)

    @property
    def retryable(self) -> bool:
        """Not the input's fault (worker died, unexpected exception): redone on the next run."""
        return self.failure in (FailureKind.WORKER_DIED, FailureKind.EXCEPTION)


class ActorPool:
    def __init__(self, name: str, factory: Callable[[], Stage], resources: StageResources,
                 timeout_s: float | Callable[[Any], float] | None = None, retries: int = 1):
        """`timeout_s`: seconds one item may run, or a function of the item giving them."""
        self.name, self.factory, self.resources = name, factory, resources
        self.timeout_s, self.retries = timeout_s, retries
        self.reserve(resources)
        self.idle: list[Any] = []
        self.n_actors = 0
        self.queue: deque[tuple[Any, Any, int]] = deque()
        self.failures: Counter[str] = Counter()  # timeout, worker_died, exception, and retries
        self.busy: dict[ray.ObjectRef, tuple[Any, Any, Any, int, float]] = {}

    def reserve(self, resources: StageResources) -> None:
        """Set what each actor reserves (before any starts)."""
        self.resources = resources
        self.remote_cls = ray.remote(StageActor).options(
            num_cpus=resources.num_cpus, num_gpus=resources.num_gpus, max_concurrency=1)

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
                    done.append(Done(tag, item, error=f"{self.name}: timed out after {limit:.0f}s",
                                     failure=FailureKind.TIMEOUT))
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
            return Done(tag, item, error=f"{self.name}: worker died: {type(exc).__name__}: {cause}",
                        failure=FailureKind.WORKER_DIED)
        except ray.exceptions.RayTaskError as exc:
            self.idle.append(actor)
            cause = exc.cause if getattr(exc, "cause", None) is not None else exc
            self.failures[FailureKind.EXCEPTION.value] += 1
            # content errors come back as values; an exception here is a bug or a transient fault
            return Done(tag, item, error=plain(f"{self.name}: {type(cause).__name__}: {cause}"),
                        failure=FailureKind.EXCEPTION, refs_lost=isinstance(cause, RefLost))
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
