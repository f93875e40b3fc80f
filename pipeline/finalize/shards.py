"""Shard jobs `(name, rows)` from a part's plan, and the writer of one job (output/writers.write_tar)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Any

from vidmill.pipeline.finalize.layout import Layout
from vidmill.pipeline.output.writers import write_tar


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
    digest = signature(rows)
    if old == digest and layout.fs.exists(layout.out(f"shards/{name}")):
        return digest
    write_tar(layout.store, f"shards/{name}", rows,
              lambda row: layout.fs.cat_file(f"{clips_dir}/{row['input_id']}/{row['clip_id']}.mp4"))
    return digest
