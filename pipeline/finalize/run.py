"""The finalize driver: runs the stages of stages.py over the parts on storage and keeps only counters,
one shard count per part and the shard index (name -> digest)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from typing import Any

from vidmill.pipeline.config import StageResources
from vidmill.pipeline.executor.actor_pool import Done
from vidmill.pipeline.executor.runner import StageRunner
from vidmill.pipeline.finalize.groups import GroupPairs
from vidmill.pipeline.finalize.layout import Layout
from vidmill.pipeline.finalize.publish import MergeTable, publish_manifest
from vidmill.pipeline.finalize.stages import (
    BucketPairs,
    DecidePart,
    KeptPart,
    PlanPart,
    Settings,
    WritePart,
    merge_counts,
)
from vidmill.pipeline.records import WORK_FIELDS, ClipRecord
from vidmill.pipeline.stage import Stage

UPDATE_FIELDS = [name for name in ClipRecord.__dataclass_fields__
                 if name not in (*WORK_FIELDS, "scores", "shard", "key", "dup_group", "dup_of")]
STAGED = ("decided", "keys", "pairs", "kept", "updates", "staged", "plan", "tables")


class FinalizeWork(Stage):
    """Every finalize stage in one actor (so one pool serves all phases): item (kind, argument)."""

    name = "finalize"

    def __init__(self, settings: Settings, old_index: dict[str, str], resources=None):
        super().__init__(resources)
        self.stages = {"decide": DecidePart(settings), "pairs": BucketPairs(settings), "groups": GroupPairs(settings),
                       "kept": KeptPart(settings), "plan": PlanPart(settings), "write": WritePart(settings, old_index),
                       "merge": MergeTable(settings)}

    def process(self, item: tuple[str, Any]) -> Any:
        kind, argument = item
        return self.stages[kind].process(argument)


def bucket_partitions(parts: int) -> int:
    """How many partitions the LSH keys are spread over (each decide part writes one file per partition)."""
    return max(4, min(256, math.ceil(2 * math.sqrt(parts))))


class Finalize:
    def __init__(self, settings: Settings, parts: int, runner: StageRunner, resources: StageResources,
                 inline_parts: int = 1):
        """`inline_parts`: up to this many parts, the stages run in the driver process (no actor start-up)."""
        self.s, self.parts, self.runner, self.resources = settings, parts, runner, resources
        self.inline_parts = inline_parts
        self.stats: dict[str, Any] = {}

    @property
    def layout(self) -> Layout:
        return self.s.layout

    def _chain(self, phases: list[tuple[str, Callable[[], list], Callable[[Any, Any], None]]]) -> None:
        """Run phases one after the other on one pool of FinalizeWork actors (started once: actor start-up
        costs seconds). A phase: (stage kind, its items (computed when the phase starts), collect(item, value)).
        A run of one part (at most INPUTS_PER_PART inputs: bounded) runs the same stages in this process."""
        if self.parts <= self.inline_parts:
            work = FinalizeWork(self.s, self._old_index())
            for kind, items, collect in phases:
                for item in items():
                    collect(item, work.process((kind, item)))
            return
        pool = self.runner.pool(FinalizeWork, self.s, self._old_index(), resources=self.resources)
        state = {"phase": -1, "left": 0}

        def start_next() -> None:
            while state["phase"] + 1 < len(phases):
                state["phase"] += 1
                kind, items, _ = phases[state["phase"]]
                todo = items()
                if todo:
                    state["left"] = len(todo)
                    for item in todo:
                        pool.submit((kind, item), (kind, item))
                    return

        def handle(done: Done) -> None:
            if done.error:
                raise RuntimeError(f"finalize: {done.error}")
            phases[state["phase"]][2](done.tag[1], done.value)
            state["left"] -= 1
            if not state["left"]:
                start_next()

        start_next()
        self.runner.run({pool: handle}, ())

    def decide_and_dedup(self) -> None:
        """Thresholds on every record (workers), then global dedup: keys -> pairs -> groups (dups.parquet),
        then each part's clips still kept (kept/part-N.jsonl), all in workers."""
        self.layout.clear(*STAGED)
        self.layout.fs.rm(self.layout.dups) if self.layout.fs.exists(self.layout.dups) else None
        keys = []

        def dedup(items: list) -> Callable[[], list]:
            return lambda: items if self.s.thresholds.dedup and sum(keys) else []

        self._chain([("decide", lambda: list(range(self.parts)), lambda _, value: keys.append(value["keys"])),
                     ("pairs", dedup(list(range(self.s.bucket_partitions))), lambda _, value: None),
                     ("groups", dedup([self.s.bucket_partitions]), lambda _, value: self.stats.update(value)),
                     ("kept", lambda: list(range(self.parts)), lambda _, value: None)])
        self.stats["dedup_keys"] = sum(keys)

    def kept_clips(self) -> Iterator[tuple[int, list[ClipRecord]]]:
        """Each part's kept clips after dedup (for transcode and caption), one part in the driver at a time."""
        for part in range(self.parts):
            yield part, [ClipRecord.from_work_row(row)
                         for row in self.layout.read_lines(self.layout.part("kept", part, "jsonl"))]

    def save_updates(self, part: int, kept: list[ClipRecord]) -> None:
        """What transcode and caption set on a part's kept clips, for PlanPart to apply."""
        self.layout.write_lines(self.layout.part("updates", part, "jsonl"),
                                (json.dumps({"clip_id": c.clip_id, **{n: getattr(c, n) for n in UPDATE_FIELDS},
                                             "reject_reasons": c.reject_reasons}) for c in kept))

    def write(self) -> dict[str, Any]:
        """Plan each part, number its shards from the parts before it, write shards and tables; the counts."""
        shards: dict[int, int] = {}
        counts: dict[int, dict[str, Any]] = {}
        index: dict[str, str] = {}

        def planned(part: int, value: dict[str, Any]) -> None:
            shards[part], counts[part] = value["shards"], value["counts"]

        def numbered() -> list[tuple[int, int]]:
            first, items = 0, []
            for part in range(self.parts):
                items.append((part, first))
                first += shards[part]
            self.stats["shards"] = first
            return items

        self._chain([("plan", lambda: list(range(self.parts)), planned),
                     ("write", numbered, lambda _, value: index.update(value)),
                     ("merge", lambda: ["embeddings", "inputs", "shots"], lambda _, value: None)])
        if self.s.write_shards:
            self._publish_shards(index)
        publish_manifest(self.layout)
        return merge_counts([counts[p] for p in range(self.parts)])

    def _old_index(self) -> dict[str, str]:
        if not self.s.write_shards:
            return {}
        index = self.layout.read_json(self.layout.out("shards/index.json")) or {}
        return {name: value for name, value in index.items() if isinstance(value, str)}

    def _publish_shards(self, index: dict[str, str]) -> None:
        """Stale shards and temp files are removed; index.json maps each shard to the digest of its rows."""
        fs, folder = self.layout.fs, self.layout.out("shards")
        fs.makedirs(folder, exist_ok=True)
        for path in fs.ls(folder, detail=False):  # shards no longer planned, temp files of a killed writer
            name = path.rsplit("/", 1)[-1]
            if (name.startswith("shard-") and name.endswith(".tar") and name not in index) or \
                    (name.startswith(".") and name.endswith(".tmp")):
                fs.rm(path)
        self.layout.write_bytes(f"{folder}/index.json", json.dumps(dict(sorted(index.items()))).encode())
