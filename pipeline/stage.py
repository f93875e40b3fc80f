"""The stage contract: a small class with one job, declared resources, and per-item bookkeeping.

A stage never imports Ray; the runner (pipeline/executor/) decides where and how many copies run, and
keeps each stage's StageStats.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from vidmill.pipeline.config import StageResources


class InputError(RuntimeError):
    """A problem with one item's content: recorded in its row and never retried."""


@dataclass
class StageStats:
    """Counts and busy time of one stage, summed over every copy that ran it."""

    items: int = 0
    errors: int = 0
    timeouts: int = 0
    worker_deaths: int = 0
    retries: int = 0
    busy_s: float = 0.0
    extra: dict[str, float] = field(default_factory=dict)

    def count_failures(self, failures: dict[str, int]) -> None:
        """Add a pool's failure counters (timeouts, worker deaths, retries), counted where they happen."""
        self.timeouts += failures.get("timeout", 0)
        self.worker_deaths += failures.get("worker_died", 0)
        self.retries += failures.get("retries", 0)

    def add(self, other: dict[str, float]) -> None:
        for key, value in other.items():
            self.extra[key] = self.extra.get(key, 0.0) + value


class Stage:
    """Subclasses set `name` and implement `process(item)`; `setup` loads anything heavy once."""

    name = "stage"

    def __init__(self, resources: StageResources | None = None):
        self.resources = resources or StageResources()

    def setup(self) -> None:  # noqa: B027 - optional hook
        pass

    def process(self, item: Any) -> Any:
        raise NotImplementedError

    def offload(self, value: Any, put: Callable[[Any], Any]) -> Any:
        """In a worker, before `value` goes back: large parts the driver only forwards may go to the object
        store through `put` (they come back as refs). Not called in process."""
        return value

    def fetched(self, item: Any, get: Callable[[list[Any]], list[Any]]) -> Any:
        """In a worker, before `process`: refs in `item` resolved through `get`. Not called in process."""
        return item

    def timed(self, item: Any) -> tuple[Any, float]:
        start = time.perf_counter()
        result = self.process(item)
        return result, time.perf_counter() - start
