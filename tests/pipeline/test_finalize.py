"""Finalize over per-input records on storage equals today's in-memory path (decide, dedup, shard plan,
tables) on synthetic records with duplicates across parts, and the driver builds no per-input record."""

from __future__ import annotations

import copy

import pyarrow.parquet as pq
import pytest

from vidmill.pipeline.config import CurateConfig, ShardConfig, StageResources
from vidmill.pipeline.decide import filter_reasons
from vidmill.pipeline.dedup import mark_duplicates
from vidmill.pipeline.executor.runner import StageRunner
from vidmill.pipeline.finalize import Finalize, Layout
from vidmill.pipeline.finalize.run import bucket_partitions
from vidmill.pipeline.finalize.stages import Settings, table_of
from vidmill.pipeline.finalize.synthetic import synthetic_results, write_records
from vidmill.pipeline.output.writers import plan_shards
from vidmill.pipeline.records import EMBEDDINGS_SCHEMA, InputResult, manifest_schema

CLIP_BYTES = 1000
RESOURCES = StageResources(num_cpus=0.125, concurrency=2)
SHARDS = ShardConfig(max_samples=40)


def in_memory(results: list[InputResult], config: CurateConfig, shards: ShardConfig) -> dict:
    """Today's path (curate before issue 18): every clip in the driver, decide, mark_duplicates, plan_shards."""
    clips = [c for r in results for c in r.clips]
    for clip in clips:
        for reason in filter_reasons(clip.scores, config.thresholds):
            clip.reject(reason)
    mark_duplicates(clips, config.thresholds, StageRunner(), RESOURCES)
    for clip in clips:
        if clip.kept:
            clip.clip_bytes = CLIP_BYTES
    embeddings = [{"clip_id": c.clip_id, "clip_embedding": c.scores.pop("clip_embedding")}
                  for c in clips if c.scores.get("clip_embedding") is not None]
    rows = table_of([c.row() for c in clips], manifest_schema()).to_pylist()
    plan = [[r["clip_id"] for r in shard] for shard in plan_shards([r for r in rows if r["kept"]], shards)]
    return {"rows": rows, "plan": plan, "inputs": [r.input.row() for r in results],
            "embeddings": table_of(embeddings, EMBEDDINGS_SCHEMA).to_pylist()}


def on_records(results: list[InputResult], config: CurateConfig, shards: ShardConfig, out, per_part: int) -> dict:
    layout = Layout.of(str(out))
    listed = write_records(layout, "fp", iter(copy.deepcopy(results)), per_part)
    settings = Settings(layout, "fp", config.thresholds, shards, bucket_partitions(listed.parts), f"{out}/clips",
                        assumed_clip_bytes=CLIP_BYTES, write_shards=False)
    finalize = Finalize(settings, listed.parts, StageRunner(), RESOURCES)
    finalize.decide_and_dedup()
    counts = finalize.write()
    rows = pq.read_table(out / "manifest.parquet").to_pylist()
    by_shard: dict[str, list[str]] = {}
    for row in rows:
        if row["shard"]:
            by_shard.setdefault(row["shard"], []).append(row["clip_id"])
    return {"rows": rows, "plan": [by_shard[name] for name in sorted(by_shard)], "parts": listed.parts,
            "shards": sorted(by_shard), "counts": counts,
            "inputs": pq.read_table(out / "inputs.parquet").to_pylist(),
            "embeddings": pq.read_table(out / "embeddings.parquet").to_pylist()}


@pytest.fixture(scope="module")
def synthetic() -> list[InputResult]:
    return list(synthetic_results(120, clips=6, duplicates=0.2, embeddings=True, seed=3))


def lsh4() -> CurateConfig:
    config = CurateConfig()
    config.thresholds.lsh_bands = 4
    return config


@pytest.fixture(scope="module")
def want(synthetic) -> dict:
    from vidmill.pipeline.executor.runner import init_ray

    init_ray(None)
    return in_memory(copy.deepcopy(synthetic), lsh4(), SHARDS)


@pytest.mark.parametrize("per_part", [1000, 25])
def test_finalize_on_records_equals_the_in_memory_path(synthetic, want, tmp_path, per_part):
    got = on_records(synthetic, lsh4(), SHARDS, tmp_path, per_part)
    assert got["parts"] == (1 if per_part == 1000 else 5)
    groups: dict[str, set[int]] = {}
    for number, result in enumerate(synthetic):
        for clip in result.clips:
            row = next(r for r in want["rows"] if r["clip_id"] == clip.clip_id)
            if row["dup_group"]:
                groups.setdefault(row["dup_group"], set()).add(number // 25)
    assert len(groups) > 5 and any(len(parts) > 1 for parts in groups.values())  # some span parts of 25 inputs
    assert got["inputs"] == want["inputs"] and got["embeddings"] == want["embeddings"]

    def decided(rows):
        return [{k: v for k, v in r.items() if k not in ("shard", "key")} for r in rows]

    assert decided(got["rows"]) == decided(want["rows"])  # thresholds, dup groups, dup_of, every column
    assert got["counts"]["clips_kept"] == sum(r["kept"] for r in want["rows"])
    kept_order = [c for shard in want["plan"] for c in shard]
    assert [c for shard in got["plan"] for c in shard] == kept_order  # (source_uri, start_s) order
    assert got["shards"] == [f"shard-{n:06d}.tar" for n in range(len(got["plan"]))]
    if got["parts"] == 1:
        assert got["plan"] == want["plan"]  # identical shard names and members
    else:  # a shard never spans two parts; the others are packed as before
        assert len(want["plan"]) <= len(got["plan"]) <= len(want["plan"]) + got["parts"] - 1


def test_the_driver_builds_no_input_record(synthetic, tmp_path, local_ray, monkeypatch):
    """By the code path: while finalize runs, the driver process never parses a record into an InputResult
    nor a clip (workers do, in their own processes)."""
    calls = []
    original = InputResult.from_work_json.__func__
    monkeypatch.setattr(InputResult, "from_work_json",
                        classmethod(lambda cls, data: calls.append(1) or original(cls, data)))
    on_records(synthetic[:40], CurateConfig(), ShardConfig(), tmp_path, per_part=10)
    assert calls == []
    from vidmill.pipeline.curate import Curation

    assert not hasattr(Curation(str(tmp_path), tmp_path / "o", CurateConfig(), progress=False), "results")
