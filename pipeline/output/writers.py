"""Output writers: inputs / shots / manifest Parquet tables (schemas from records.py) and WebDataset shards.

Every file is published atomically through the Store (store.py), shards before the manifest, so a
killed run never leaves a manifest that points at a partial shard. Shards are planned on the driver
(`plan_shards`, `shard_jobs`) and written by workers (`WriteShard`), which read the clip files from
the Store themselves: no clip bytes pass through the driver.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterable
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import webdataset as wds

from vidmill.pipeline.config import ShardConfig
from vidmill.pipeline.output.store import Store
from vidmill.pipeline.output.workdir import WorkDir
from vidmill.pipeline.stage import Stage

ShardJob = tuple[str, list[dict[str, Any]]]  # (shard name, its rows with shard and key set)
RunJobs = Callable[[list[ShardJob]], dict[str, list[str]]]  # jobs -> shard name -> member signature


def write_table(rows: list[dict[str, Any]], schema: pa.Schema, store: Store, rel: str) -> None:
    """Rows to Parquet with `schema` first; columns a stage added beyond it follow, types inferred."""
    extra = [k for k in (rows[0] if rows else {}) if k not in schema.names]
    columns = {name: [r.get(name) for r in rows] for name in schema.names + extra}
    arrays = [pa.array(columns[f.name], type=f.type) for f in schema]
    arrays += [pa.array(columns[name]) for name in extra]
    table = pa.Table.from_arrays(arrays, names=schema.names + extra)
    sink = io.BytesIO()
    pq.write_table(table, sink)
    store.put(rel, sink.getvalue())


def plan_shards(rows: list[dict[str, Any]], config: ShardConfig) -> list[list[dict[str, Any]]]:
    """Kept rows in (source_uri, start_s) order, packed into shards by sample count and bytes."""
    shards: list[list[dict[str, Any]]] = [[]]
    size = 0
    for row in sorted(rows, key=lambda r: (r["source_uri"], r["start_s"])):
        if shards[-1] and (len(shards[-1]) >= config.max_samples or size + row["clip_bytes"] > config.max_bytes):
            shards.append([])
            size = 0
        shards[-1].append(row)
        size += row["clip_bytes"]
    return [s for s in shards if s]


def shard_jobs(rows: list[dict[str, Any]], config: ShardConfig) -> list[ShardJob]:
    """The plan as jobs: each shard's name and its rows, each with its shard and key set."""
    return [(f"shard-{number:06d}.tar", [{**row, "shard": f"shard-{number:06d}.tar", "key": row["clip_id"]}
                                        for row in members])
            for number, members in enumerate(plan_shards(rows, config))]


def signature(rows: Iterable[dict[str, Any]]) -> list[str]:
    """What a shard holds, as index.json records it: each member's json, in order."""
    return [json.dumps(r, sort_keys=True, default=str) for r in rows]


class WriteShard(Stage):
    """One shard's job -> its tar, published under its name through the Store; returns its signature."""

    name = "shards"

    def __init__(self, work: WorkDir, out_dir: str = "shards"):
        super().__init__()
        self.work, self.out_dir = work, out_dir

    def process(self, job: ShardJob) -> list[str]:
        name, rows = job
        with self.work.store.writer(f"{self.out_dir}/{name}") as handle, wds.TarWriter(handle, mtime=0) as tar:
            for row in rows:
                sample = {"__key__": row["key"], "mp4": self.work.read_clip(row["input_id"], row["clip_id"]),
                          "json": json.dumps(row, sort_keys=True, default=str).encode()}
                if row.get("caption"):
                    sample["txt"] = row["caption"].encode()
                tar.write(sample)
        return signature(rows)


def write_shards(rows: list[dict[str, Any]], store: Store, config: ShardConfig, run_jobs: RunJobs,
                 out_dir: str = "shards") -> dict[str, tuple[str, str]]:
    """Write the kept rows into tars (each row's json with its shard/key set) by `run_jobs`; a shard whose
    content is unchanged is kept, stale ones are removed, index.json records each shard's members.
    Returns clip_id -> (shard, key)."""
    index_rel = f"{out_dir}/index.json"
    try:
        old_index = json.loads(store.get(index_rel))
    except FileNotFoundError:
        old_index = {}
    present = {rel.rsplit("/", 1)[-1] for rel in store.find(out_dir)}
    index, placed, todo = {}, {}, []
    for name, members in shard_jobs(rows, config):
        placed.update({row["clip_id"]: (name, row["key"]) for row in members})
        index[name] = signature(members)
        if old_index.get(name) != index[name] or name not in present:
            todo.append((name, members))
    written = run_jobs(todo) if todo else {}
    wrong = [name for name, _ in todo if written.get(name) != index[name]]
    if wrong:
        raise RuntimeError(f"shards not written: {', '.join(wrong[:5])}{' ...' if len(wrong) > 5 else ''}; "
                           "the manifest was not written, re-run to finish")
    for stale in present:  # shards no longer planned, and temp files of a writer that was killed
        if (stale.startswith("shard-") and stale.endswith(".tar") and stale not in index) or \
                (stale.startswith(".") and stale.endswith(".tmp")):
            store.remove(f"{out_dir}/{stale}")
    store.put(index_rel, json.dumps(index).encode())
    return placed


def write_shards_here(work: WorkDir, out_dir: str = "shards") -> RunJobs:
    """`run_jobs` that writes each shard in this process (tests and tools without Ray)."""
    stage = WriteShard(work, out_dir)
    return lambda jobs: {name: stage.process((name, rows)) for name, rows in jobs}
