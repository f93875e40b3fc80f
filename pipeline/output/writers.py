"""Output writers: inputs / shots / manifest Parquet tables (schemas from records.py) and WebDataset shards.

Every file is written to a temporary name and renamed into place, shards before the manifest, so a
killed run never leaves a manifest that points at a partial shard.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import webdataset as wds

from vidmill.pipeline.config import ShardConfig
from vidmill.pipeline.output.workdir import atomic_write


def write_table(rows: list[dict[str, Any]], schema: pa.Schema, path: Path) -> None:
    """Rows to Parquet with `schema` first; columns a stage added beyond it follow, types inferred."""
    extra = [k for k in (rows[0] if rows else {}) if k not in schema.names]
    columns = {name: [r.get(name) for r in rows] for name in schema.names + extra}
    arrays = [pa.array(columns[f.name], type=f.type) for f in schema]
    arrays += [pa.array(columns[name]) for name in extra]
    table = pa.Table.from_arrays(arrays, names=schema.names + extra)
    sink = io.BytesIO()
    pq.write_table(table, sink)
    atomic_write(path, sink.getvalue())


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


def write_shards(rows: list[dict[str, Any]], clip_bytes: Callable[[dict[str, Any]], bytes],
                 extras: Callable[[dict[str, Any]], dict[str, bytes]], out_dir: Path,
                 config: ShardConfig) -> dict[str, tuple[str, str]]:
    """Write the kept rows into tars (each row's json with its shard/key set); a shard whose content is
    unchanged is kept. Returns clip_id -> (shard, key)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    index_path = out_dir / "index.json"
    old_index = json.loads(index_path.read_text()) if index_path.exists() else {}
    index, placed = {}, {}
    for number, members in enumerate(plan_shards(rows, config)):
        name = f"shard-{number:06d}.tar"
        members = [{**row, "shard": name, "key": row["clip_id"]} for row in members]
        placed.update({row["clip_id"]: (name, row["key"]) for row in members})
        signature = [json.dumps(r, sort_keys=True, default=str) for r in members]
        index[name] = signature
        if old_index.get(name) == signature and (out_dir / name).exists():
            continue
        tmp = out_dir / f".{name}.tmp"
        with open(tmp, "wb") as handle, wds.TarWriter(handle, mtime=0) as writer:
            for row in members:
                sample = {"__key__": row["key"], "mp4": clip_bytes(row),
                          "json": json.dumps(row, sort_keys=True, default=str).encode()}
                sample.update(extras(row))
                writer.write(sample)
        os.replace(tmp, out_dir / name)
    for stale in out_dir.glob("shard-*.tar"):
        if stale.name not in index:
            stale.unlink()
    atomic_write(index_path, json.dumps(index).encode())
    return placed
