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
from vidmill.pipeline.finalize.stages import BucketPairs, DecidePart, PlanPart, Settings, WritePart, merge_counts
from vidmill.pipeline.records import WORK_FIELDS, ClipRecord, InputResult

UPDATE_FIELDS = [name for name in ClipRecord.__dataclass_fields__
                 if name not in (*WORK_FIELDS, "scores", "shard", "key", "dup_group", "dup_of")]
STAGED = ("decided", "keys", "pairs", "updates", "staged", "plan", "tables")


def bucket_partitions(parts: int) -> int:
    """How many partitions the LSH keys are spread over (each decide part writes one file per partition)."""
    return max(4, min(256, math.ceil(2 * math.sqrt(parts))))


class Finalize:
    def __init__(self, settings: Settings, parts: int, runner: StageRunner, resources: StageResources,
                 note: Callable[[str], None] = lambda text: None):
        self.s, self.parts, self.runner, self.resources, self.note = settings, parts, runner, resources, note
        self.stats: dict[str, Any] = {}

    @property
    def layout(self) -> Layout:
        return self.s.layout

    def _map(self, stage: type, items: list, collect: Callable[[Any, Any], None], *args: Any) -> None:
        def handle(done: Done) -> None:
            if done.error:
                raise RuntimeError(f"finalize: {done.error}")
            collect(done.tag, done.value)

        if items:
            pool = self.runner.pool(stage, self.s, *args, resources=self.resources)
            self.runner.map(pool, ((item, item) for item in items), handle)

    def decide_and_dedup(self) -> None:
        """Thresholds on every record (workers), then global dedup: keys -> pairs -> groups (dups.parquet)."""
        self.layout.clear(*STAGED)
        self.layout.fs.rm(self.layout.dups) if self.layout.fs.exists(self.layout.dups) else None
        keys = []
        self._map(DecidePart, list(range(self.parts)), lambda _, value: keys.append(value["keys"]))
        self.stats["dedup_keys"] = sum(keys)
        if not self.s.thresholds.dedup or not sum(keys):
            return
        buckets = self.s.bucket_partitions
        self._map(BucketPairs, list(range(buckets)), lambda _, value: None)
        self._map(GroupPairs, [buckets], lambda _, value: self.stats.update(value))

    def kept_clips(self) -> Iterator[tuple[int, list[ClipRecord]]]:
        """Each part's kept clips after dedup (for transcode and caption), one part in memory at a time."""
        layout = self.layout
        dups = {}
        if layout.fs.exists(layout.dups):
            dups = {r["clip_id"]: r["dup_of"] for r in layout.read_table(layout.dups).to_pylist()
                    if r["dup_of"] is not None}
        for part in range(self.parts):
            clips = []
            for record in layout.read_lines(layout.part("decided", part, "jsonl")):
                clips += [c for c in InputResult.from_work_json(record).clips if c.kept and c.clip_id not in dups]
            yield part, clips

    def save_updates(self, part: int, kept: list[ClipRecord]) -> None:
        """What transcode and caption set on a part's kept clips, for PlanPart to apply."""
        self.layout.write_lines(self.layout.part("updates", part, "jsonl"),
                                (json.dumps({"clip_id": c.clip_id, **{n: getattr(c, n) for n in UPDATE_FIELDS},
                                             "reject_reasons": c.reject_reasons}) for c in kept))

    def write(self) -> dict[str, Any]:
        """Plan each part, number its shards from the parts before it, write shards and tables; the counts."""
        shards: dict[int, int] = {}
        counts: dict[int, dict[str, Any]] = {}

        def planned(part: int, value: dict[str, Any]) -> None:
            shards[part], counts[part] = value["shards"], value["counts"]

        self._map(PlanPart, list(range(self.parts)), planned)
        first, offsets = 0, {}
        for part in range(self.parts):
            offsets[part], first = first, first + shards[part]
        index: dict[str, str] = {}
        old_index = self._old_index() if self.s.write_shards else {}
        self._map(WritePart, [(p, offsets[p]) for p in range(self.parts)], lambda _, value: index.update(value),
                  old_index)
        if self.s.write_shards:
            self._publish_shards(index)
        self._map(MergeTable, ["embeddings", "inputs", "shots"], lambda _, value: None)
        publish_manifest(self.layout)
        self.stats["shards"] = first
        return merge_counts([counts[p] for p in range(self.parts)])

    def _old_index(self) -> dict[str, str]:
        index = self.layout.read_json(self.layout.out("shards/index.json")) or {}
        return {name: value for name, value in index.items() if isinstance(value, str)}

    def _publish_shards(self, index: dict[str, str]) -> None:
        """Shards no longer planned are removed; index.json maps each shard to the digest of its rows."""
        fs, folder = self.layout.fs, self.layout.out("shards")
        fs.makedirs(folder, exist_ok=True)
        for path in fs.glob(f"{folder}/shard-*.tar"):
            if path.rsplit("/", 1)[-1] not in index:
                fs.rm(path)
        self.layout.write_bytes(f"{folder}/index.json", json.dumps(dict(sorted(index.items()))).encode())
