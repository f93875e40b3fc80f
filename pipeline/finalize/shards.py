"""Shard jobs `(name, rows)` from a part's plan, and a writer for one job (today's tar format, as
output/writers.write_shards writes it). The "store" branch's worker stage takes the same jobs."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Any

import webdataset as wds

from vidmill.pipeline.finalize.layout import Layout


def shard_name(number: int) -> str:
    return f"shard-{number:06d}.tar"


def shard_jobs(plan: list[list[str]], rows: dict[str, dict[str, Any]], first: int
               ) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """Each planned shard of a part as (name, rows with shard and key set); numbers start at `first`."""
    for offset, members in enumerate(plan):
        name = shard_name(first + offset)
        yield name, [{**rows[clip_id], "shard": name, "key": clip_id} for clip_id in members]


def signature(rows: list[dict[str, Any]]) -> str:
    """What a shard holds, as one digest: an unchanged shard is not written again."""
    text = json.dumps([json.dumps(r, sort_keys=True, default=str) for r in rows])
    return hashlib.sha256(text.encode()).hexdigest()


def write_shard(layout: Layout, name: str, rows: list[dict[str, Any]], clips_dir: str, old: str | None) -> str:
    """Write one tar (clip bytes read from `clips_dir`) unless the same content is there; return its digest."""
    fs, digest = layout.fs, signature(rows)
    path = layout.out(f"shards/{name}")
    if old == digest and fs.exists(path):
        return digest
    tmp = layout.out(f"shards/.{name}.tmp")
    fs.makedirs(layout.out("shards"), exist_ok=True)
    with fs.open(tmp, "wb") as handle, wds.TarWriter(handle, mtime=0) as writer:
        for row in rows:
            sample = {"__key__": row["key"], "mp4": fs.cat_file(f"{clips_dir}/{row['input_id']}/{row['clip_id']}.mp4"),
                      "json": json.dumps(row, sort_keys=True, default=str).encode()}
            if row.get("caption"):
                sample["txt"] = row["caption"].encode()
            writer.write(sample)
    fs.mv(tmp, path)
    return digest
