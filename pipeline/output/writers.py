"""Output writers: WebDataset shards, published atomically through the Store (store.py).

Finalize (pipeline/finalize/) plans the shards part by part (`plan_shards`) and its workers write them
(`write_tar`), reading the clip files from the Store themselves: no clip bytes pass through the driver.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import webdataset as wds

from vidmill.pipeline.config import ShardConfig
from vidmill.pipeline.output.store import Store


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


def write_tar(store: Store, rel: str, rows: list[dict[str, Any]], read_clip: Callable[[dict[str, Any]], bytes]) -> None:
    """One shard: each row's clip (`read_clip(row)`), its json and its caption as txt, published atomically at
    `rel` (a temp file renamed locally, one upload on an object store)."""
    with store.writer(rel) as handle, wds.TarWriter(handle, mtime=0) as tar:
        for row in rows:
            sample = {"__key__": row["key"], "mp4": read_clip(row),
                      "json": json.dumps(row, sort_keys=True, default=str).encode()}
            if row.get("caption"):
                sample["txt"] = row["caption"].encode()
            tar.write(sample)
