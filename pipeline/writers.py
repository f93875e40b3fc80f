"""Output writers: inputs / shots / manifest Parquet tables, WebDataset shards and run.json.

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
from vidmill.pipeline.workdir import atomic_write

INPUTS_SCHEMA = pa.schema([
    ("input_id", pa.string()), ("source_uri", pa.string()), ("size_bytes", pa.int64()),
    ("status", pa.string()), ("error", pa.string()), ("duration_s", pa.float64()),
    ("n_shots", pa.int32()), ("n_clips", pa.int32()), ("fps", pa.float64()), ("width", pa.int32()),
    ("height", pa.int32()), ("rotation", pa.int32()), ("codec", pa.string()), ("video_start_s", pa.float64()),
    ("source_version", pa.string()),
])
SHOTS_SCHEMA = pa.schema([
    ("input_id", pa.string()), ("shot_index", pa.int32()), ("start_s", pa.float64()),
    ("end_s", pa.float64()), ("start_frame", pa.int32()), ("end_frame", pa.int32()),
])
MANIFEST_SCHEMA = pa.schema([
    ("clip_id", pa.string()), ("input_id", pa.string()), ("source_uri", pa.string()),
    ("shot_index", pa.int32()), ("start_s", pa.float64()), ("end_s", pa.float64()),
    ("duration_s", pa.float64()), ("fps", pa.float64()), ("width", pa.int32()), ("height", pa.int32()),
    ("kept", pa.bool_()), ("reject_reasons", pa.list_(pa.string())), ("error", pa.string()),
    ("clip_bytes", pa.int64()), ("shard", pa.string()), ("key", pa.string()),
    ("sharpness", pa.float64()), ("brightness", pa.float64()), ("colourfulness", pa.float64()),
    ("quality_status", pa.string()), ("motion_score", pa.float64()), ("camera_motion", pa.string()),
    ("motion_status", pa.string()), ("text_area_max", pa.float64()), ("text_area_mean", pa.float64()),
    ("text_persistent_area", pa.float64()), ("ocr_status", pa.string()), ("aesthetic_mean", pa.float64()),
    ("aesthetic_min", pa.float64()), ("aesthetic_status", pa.string()), ("content_hash", pa.string()),
    ("phash", pa.string()), ("phashes", pa.list_(pa.string())), ("hash_status", pa.string()),
    ("dup_group", pa.string()), ("dup_of", pa.string()),
    ("caption", pa.string()), ("captions_per_second", pa.list_(pa.string())), ("captioner", pa.string()),
    ("caption_tokens_in", pa.int64()), ("caption_tokens_out", pa.int64()), ("caption_latency_s", pa.float64()),
    ("caption_error", pa.string()), ("caption_raw", pa.string()),
])
EMBEDDINGS_SCHEMA = pa.schema([("clip_id", pa.string()), ("clip_embedding", pa.list_(pa.float32()))])


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
                 config: ShardConfig) -> None:
    """Set each kept row's shard/key and write the tars; a shard whose content is unchanged is kept."""
    out_dir.mkdir(parents=True, exist_ok=True)
    index_path = out_dir / "index.json"
    old_index = json.loads(index_path.read_text()) if index_path.exists() else {}
    index = {}
    for number, members in enumerate(plan_shards(rows, config)):
        name = f"shard-{number:06d}.tar"
        for row in members:
            row["shard"], row["key"] = name, row["clip_id"]
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
