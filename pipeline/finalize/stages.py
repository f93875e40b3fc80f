"""The finalize stages: each runs in workers over one part (or one bucket partition) read from storage.

    DecidePart   records of a listing part -> thresholds -> decided part + LSH keys by bucket partition
    BucketPairs  one bucket partition's keys -> duplicate pairs (and the ranks of the paired clips)
    PlanPart     decided part + duplicate groups + transcode / caption updates -> staged rows, shard plan,
                 inputs / shots / embeddings parts, counts
    WritePart    staged rows + the part's first shard number -> shards (job shape (name, rows)), manifest part
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from vidmill.pipeline.config import ShardConfig, Thresholds
from vidmill.pipeline.decide import filter_reasons, rank_key
from vidmill.pipeline.dedup import DedupItem, DedupRule, bucket_keys, bucket_pairs
from vidmill.pipeline.finalize.layout import Layout
from vidmill.pipeline.finalize.shards import shard_jobs, write_shard
from vidmill.pipeline.outcomes import DUPLICATE, TRANSCODE_ERROR, ScoreState
from vidmill.pipeline.output.writers import plan_shards
from vidmill.pipeline.records import (
    EMBEDDINGS_SCHEMA,
    ClipRecord,
    InputRecord,
    InputResult,
    inputs_schema,
    manifest_schema,
    shots_schema,
)
from vidmill.pipeline.scoring import registered
from vidmill.pipeline.stage import Stage

KEY_SCHEMA = pa.schema([("key", pa.string()), ("clip_id", pa.string()), ("content_hash", pa.string()),
                        ("phashes", pa.list_(pa.uint64())), ("embedding", pa.list_(pa.float64())),
                        ("rank", pa.list_(pa.float64()))])
DUPS_SCHEMA = pa.schema([("clip_id", pa.string()), ("dup_group", pa.string()), ("dup_of", pa.string())])
PAIRS_SCHEMA = pa.schema([("a", pa.string()), ("b", pa.string())])
RANKS_SCHEMA = pa.schema([("clip_id", pa.string()), ("rank", pa.list_(pa.float64()))])


def save_pairs(layout: Layout, bucket: int, pairs: list[tuple[str, str]], ranks: dict[str, tuple]) -> None:
    layout.write_table(pa.Table.from_pylist([{"a": a, "b": b} for a, b in pairs], schema=PAIRS_SCHEMA),
                       f"{layout.root}/pairs/b-{bucket:04d}.parquet")
    layout.write_table(pa.Table.from_pylist([{"clip_id": c, "rank": [float(v) for v in r]} for c, r in ranks.items()],
                                            schema=RANKS_SCHEMA), f"{layout.root}/pairs/r-{bucket:04d}.parquet")


@dataclass(frozen=True)
class Settings:
    """What every finalize worker needs to know (small: sent once to each actor)."""

    layout: Layout
    fingerprint: str
    thresholds: Thresholds
    shards: ShardConfig
    bucket_partitions: int
    clips_dir: str  # the run's clip files: {clips_dir}/{input_id}/{clip_id}.mp4
    assumed_clip_bytes: int | None = None  # bench only: no clip files, every kept clip has this size
    write_shards: bool = True  # bench: plan only


def table_of(rows: list[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    """Rows with `schema` first; columns a stage added beyond it follow, types inferred."""
    extra = [k for k in (rows[0] if rows else {}) if k not in schema.names]
    arrays = [pa.array([r.get(f.name) for r in rows], type=f.type) for f in schema]
    arrays += [pa.array([r.get(name) for r in rows]) for name in extra]
    return pa.Table.from_arrays(arrays, names=schema.names + extra)


def key_partition(key: str, partitions: int) -> int:
    return int.from_bytes(hashlib.sha1(key.encode()).digest()[:8], "big") % partitions


class DecidePart(Stage):
    """Thresholds on every clip of a listing part; kept clips with pHashes emit their LSH bucket keys."""

    name = "finalize_decide"

    def __init__(self, settings: Settings, resources=None):
        super().__init__(resources)
        self.s = settings

    def process(self, part: int) -> dict[str, int]:
        from vidmill.pipeline.analysis.analyze import error_result

        layout, th = self.s.layout, self.s.thresholds
        lines, keys = [], defaultdict(list)
        for ref in layout.listing(part):
            result = layout.load_result(ref, self.s.fingerprint) or error_result(ref, "not processed")
            for clip in result.clips:
                for reason in filter_reasons(clip.scores, th):
                    clip.reject(reason)
                if th.dedup and clip.kept and clip.scores.get("phashes"):
                    self._keys(clip, keys)
            lines.append(json.dumps(result.work_json()))
        layout.write_lines(layout.part("decided", part, "jsonl"), lines)
        for bucket, rows in keys.items():
            layout.write_table(pa.Table.from_pylist(rows, schema=KEY_SCHEMA), layout.keys(bucket, part))
        return {"inputs": len(lines), "keys": sum(len(rows) for rows in keys.values())}

    def _keys(self, clip: ClipRecord, keys: dict[int, list[dict[str, Any]]]) -> None:
        scores = clip.scores
        phashes = [int(h, 16) for h in scores["phashes"]]
        item = DedupItem(clip.clip_id, scores["content_hash"], tuple(phashes))
        embedding = scores.get("clip_embedding")
        rank = rank_key(clip.row())
        for key in bucket_keys(item, self.s.thresholds.lsh_bands):
            text = f"{key[0]}:{key[1]}"
            keys[key_partition(text, self.s.bucket_partitions)].append(
                {"key": text, "clip_id": clip.clip_id, "content_hash": item.content_hash, "phashes": phashes,
                 "embedding": list(embedding) if embedding else None, "rank": [float(v) for v in rank]})


class BucketPairs(Stage):
    """Duplicate pairs inside every bucket of one bucket partition (pairwise inside a bucket only)."""

    name = "finalize_pairs"

    def __init__(self, settings: Settings, resources=None):
        super().__init__(resources)
        self.s = settings
        self.rule = DedupRule(settings.thresholds.phash_distance_max, settings.thresholds.clip_cosine_min)

    def process(self, bucket: int) -> int:
        layout = self.s.layout
        folder = layout.keys_dir(bucket)
        paths = sorted(layout.fs.glob(f"{folder}/*.parquet")) if layout.fs.exists(folder) else []
        by_key: dict[str, list[DedupItem]] = defaultdict(list)
        ranks: dict[str, list[float]] = {}
        for path in paths:
            for row in layout.read_table(path).to_pylist():
                by_key[row["key"]].append(DedupItem(row["clip_id"], row["content_hash"], tuple(row["phashes"]),
                                                    tuple(row["embedding"]) if row["embedding"] else None))
                ranks[row["clip_id"]] = row["rank"]
        pairs: set[tuple[str, str]] = set()
        for members in by_key.values():
            pairs |= bucket_pairs(members, self.rule)
        paired = {c for pair in pairs for c in pair}
        save_pairs(self.s.layout, bucket, sorted(pairs), {c: ranks[c] for c in sorted(paired)})
        return len(pairs)


def rank_of(values: list[float]) -> tuple:
    """decide.rank_key's tuple back from its stored floats."""
    aesthetic, sharpness, area = values
    return (aesthetic, sharpness, int(area) if math.isfinite(area) else area)


class WithDups(Stage):
    """A part stage that needs the duplicate groups (dups.parquet: read once per actor, never by the driver)."""

    def __init__(self, settings: Settings, resources=None):
        super().__init__(resources)
        self.s = settings
        self.dups: dict[str, tuple[str, str | None]] | None = None

    def _load_dups(self) -> dict[str, tuple[str, str | None]]:
        if self.dups is None:
            layout = self.s.layout
            rows = layout.read_table(layout.dups).to_pylist() if layout.fs.exists(layout.dups) else []
            self.dups = {r["clip_id"]: (r["dup_group"], r["dup_of"]) for r in rows}
        return self.dups


class KeptPart(WithDups):
    """A decided part's clips still kept after global dedup, for transcode and caption (kept/part-N.jsonl)."""

    name = "finalize_kept"

    def process(self, part: int) -> int:
        layout, dups = self.s.layout, self._load_dups()
        kept = [clip.work_row() for record in layout.read_lines(layout.part("decided", part, "jsonl"))
                for clip in InputResult.from_work_json(record).clips
                if clip.kept and dups.get(clip.clip_id, (None, None))[1] is None]
        layout.write_lines(layout.part("kept", part, "jsonl"), (json.dumps(row) for row in kept))
        return len(kept)


class PlanPart(WithDups):
    """A decided part made final except for shard names: duplicates and updates applied, tables written."""

    name = "finalize_plan"

    def process(self, part: int) -> dict[str, Any]:
        layout, dups = self.s.layout, self._load_dups()
        updates = {u["clip_id"]: u for u in layout.read_lines(layout.part("updates", part, "jsonl"))}
        inputs, shots, clips = [], [], []
        for record in layout.read_lines(layout.part("decided", part, "jsonl")):
            result = InputResult.from_work_json(record)
            inputs.append(result.input)
            shots += [{"input_id": result.input.input_id, **dataclasses.asdict(s)} for s in result.shots]
            for clip in result.clips:
                if clip.clip_id in dups:
                    clip.dup_group, clip.dup_of = dups[clip.clip_id]
                    if clip.dup_of is not None and clip.kept:
                        clip.reject(DUPLICATE.name)
                if clip.kept:
                    self._apply_update(clip, updates.get(clip.clip_id))
                clips.append(clip)
        embeddings = [{"clip_id": c.clip_id, "clip_embedding": c.scores.pop("clip_embedding")}
                      for c in clips if c.scores.get("clip_embedding") is not None]
        for clip in clips:
            clip.scores.pop("clip_embedding", None)
        rows = [c.row() for c in clips]  # kept as JSON: each shard's {key}.json is this row, as before
        layout.write_lines(layout.part("staged", part, "jsonl"), (json.dumps(r) for r in rows))
        plan = [[r["clip_id"] for r in shard] for shard in plan_shards([r for r in rows if r["kept"]], self.s.shards)]
        layout.write_bytes(layout.part("plan", part, "json"), json.dumps(plan).encode())
        layout.write_table(table_of([r.row() for r in inputs], inputs_schema()), layout.table_part("inputs", part))
        layout.write_table(table_of(shots, shots_schema()), layout.table_part("shots", part))
        layout.write_table(table_of(embeddings, EMBEDDINGS_SCHEMA), layout.table_part("embeddings", part))
        return {"shards": len(plan), "counts": part_counts(inputs, len(shots), clips)}

    def _apply_update(self, clip: ClipRecord, update: dict[str, Any] | None) -> None:
        """Transcode and caption results of a kept clip (no update: the clip file decides, as transcode does)."""
        if update is not None:
            for name, value in update.items():
                setattr(clip, name, list(value) if name == "reject_reasons" else value)
            return
        if self.s.assumed_clip_bytes is not None:
            clip.clip_bytes = self.s.assumed_clip_bytes
            return
        path = f"{self.s.clips_dir}/{clip.input_id}/{clip.clip_id}.mp4"
        if self.s.layout.fs.exists(path):
            clip.clip_bytes = self.s.layout.fs.size(path)
        else:
            clip.error = "transcode: no output"
            clip.reject(TRANSCODE_ERROR.name)


def part_counts(inputs: list[InputRecord], n_shots: int, clips: list[ClipRecord]) -> dict[str, Any]:
    """A part's share of run.json's counts (report.run_summary's keys); `merge_counts` adds parts in order."""
    not_scored: dict[str, Counter] = {}
    for scorer in registered():
        statuses = (scorer.status(c.scores) for c in clips)
        not_scored[scorer.name] = Counter(str(s) for s in statuses
                                          if s is not None and s.state is ScoreState.NOT_SCORED)
    return {"inputs": len(inputs), "inputs_ok": sum(r.status == "ok" for r in inputs),
            "inputs_error": sum(r.status == "error" for r in inputs), "shots": n_shots, "clips": len(clips),
            "clips_kept": sum(c.kept for c in clips), "clips_rejected": sum(not c.kept for c in clips),
            "reject_reasons": Counter(reason for c in clips for reason in c.reject_reasons),
            "video_seconds": sum(r.duration_s or 0.0 for r in inputs), "not_scored": not_scored,
            "error_inputs": [{"source_uri": r.source_uri, "error": r.error}
                             for r in inputs if r.status == "error"][:20]}


def merge_counts(parts: list[dict[str, Any]]) -> dict[str, Any]:
    total: dict[str, Any] = {"inputs": 0, "inputs_ok": 0, "inputs_error": 0, "shots": 0, "clips": 0,
                             "clips_kept": 0, "clips_rejected": 0, "reject_reasons": Counter(),
                             "video_seconds": 0.0, "not_scored": defaultdict(Counter), "error_inputs": []}
    for part in parts:
        for key in ("inputs", "inputs_ok", "inputs_error", "shots", "clips", "clips_kept", "clips_rejected",
                    "video_seconds"):
            total[key] += part[key]
        total["reject_reasons"].update(part["reject_reasons"])
        for name, counter in part["not_scored"].items():
            total["not_scored"][name].update(counter)
        total["error_inputs"] = (total["error_inputs"] + part["error_inputs"])[:20]
    total["not_scored"] = dict(total["not_scored"])
    return total


class WritePart(Stage):
    """Shard names from the part's first number, the kept rows' shard / key set, shards and manifest part."""

    name = "finalize_write"

    def __init__(self, settings: Settings, old_index: dict[str, str], resources=None):
        super().__init__(resources)
        self.s, self.old_index = settings, old_index

    def process(self, item: tuple[int, int]) -> dict[str, str]:
        part, first = item
        layout = self.s.layout
        rows = list(layout.read_lines(layout.part("staged", part, "jsonl")))
        plan = layout.read_json(layout.part("plan", part, "json")) or []
        by_id = {r["clip_id"]: r for r in rows}
        index = {}
        for name, members in shard_jobs(plan, by_id, first):
            for row in members:
                by_id[row["clip_id"]].update(shard=row["shard"], key=row["key"])
            if self.s.write_shards:
                index[name] = write_shard(layout, name, members, self.s.clips_dir, self.old_index.get(name))
            else:
                index[name] = ""
        layout.write_table(table_of(rows, manifest_schema()), layout.table_part("manifest", part))
        return index
