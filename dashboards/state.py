"""What a running dashboard holds: the store, one what-if engine per output, and clip media lookups.

Every file the server reads is found from a manifest row chosen by clip_id (a shard under the
output's `shards/`, or the clip's own source for a rejected clip's preview); no request path or
parameter is ever joined onto the filesystem.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vidmill.dashboards import gallery, media
from vidmill.dashboards.outputs import Store
from vidmill.dashboards.whatif import WhatIf

SHARD_NAME = re.compile(r"^[A-Za-z0-9_.-]+\.tar$")


@dataclass(frozen=True)
class ClipMedia:
    path: Path
    member: media.Member


class Dashboard:
    def __init__(self, outputs: list[str | Path]):
        self.store = Store(outputs)
        self._whatifs: dict[int, WhatIf] = {}
        self._lock = threading.Lock()
        self.thumbs = media.LRU(32 * 1024 * 1024)
        self.previews = media.LRU(128 * 1024 * 1024)

    def whatif(self, i: int) -> WhatIf:
        self.store.output(i)
        with self._lock:
            if i not in self._whatifs:
                self._whatifs[i] = WhatIf(self.store, i)
            return self._whatifs[i]

    def warm(self) -> None:
        """Compute every output's page aggregates once (they never change: the outputs are read-only)."""
        from vidmill.dashboards import distributions, funnel

        for out in self.store.outputs:
            engine = self.whatif(out.index)
            funnel.view(self.store, out.index, engine.owned)
            engine.sliders()
            engine.evaluate({})  # the run's own classes, kept: a slider move then recomputes one column
            for chart in distributions.charts(self.store, out.index, engine):
                distributions.data(self.store, out.index, chart["column"])
            gallery.options(self.store, out.index)
            gallery.page(self.store, out.index, gallery.Filters())

    def tile(self, i: int, clip_id: str) -> dict[str, Any] | None:
        return self.store.one(f"SELECT clip_id, kept, shard, key, start_s, end_s, duration_s, input_id "
                              f"FROM clips_{i} WHERE clip_id = ?", [clip_id])

    def member(self, i: int, clip_id: str, ext: str) -> ClipMedia | None:
        """The shard member `{key}.{ext}` of a kept clip, or None."""
        row = self.tile(i, clip_id)
        if not row or not row.get("shard") or not row.get("key") or not SHARD_NAME.match(row["shard"]):
            return None
        shards = self.store.output(i).root / "shards"
        path = (shards / row["shard"]).resolve()
        if path.parent != shards.resolve() or not path.is_file():
            return None
        found = media.tar_index(path).get(f"{row['key']}.{ext}")
        return ClipMedia(path, found) if found else None

    def source_of(self, i: int, clip_id: str) -> str | None:
        row = self.store.one(f"SELECT source_uri FROM manifest_{i} WHERE clip_id = ?", [clip_id])
        return row.get("source_uri")

    def storage_options(self, i: int) -> dict:
        config = self.store.output(i).run.get("config") or {}
        return (config.get("source") or {}).get("storage_options") or {}

    def thumbnail(self, i: int, clip_id: str) -> bytes | None:
        key = (i, clip_id)
        cached = self.thumbs.get(key)
        if cached is not None:
            return cached
        row = self.tile(i, clip_id)
        if not row:
            return None
        found = self.member(i, clip_id, "mp4")
        if found:
            data = media.read_member(found.path, found.member)
            jpg = media.thumbnail(data, min(1.0, (row["duration_s"] or 0) / 2))
        else:
            source = self.source_of(i, clip_id)
            if not source:
                return None
            mid = (row["start_s"] or 0) + (row["duration_s"] or 0) / 2
            jpg = media.thumbnail(source, mid, storage_options=self.storage_options(i))
        return self.thumbs.put(key, jpg)

    def preview(self, i: int, clip_id: str) -> bytes | None:
        """A rejected clip played from its source span (made once, then cached)."""
        key = (i, clip_id)
        cached = self.previews.get(key)
        if cached is not None:
            return cached
        row = self.tile(i, clip_id)
        source = self.source_of(i, clip_id) if row else None
        if not source:
            return None
        data = media.span_preview(source, row["start_s"], row["end_s"], storage_options=self.storage_options(i))
        return self.previews.put(key, data)

    def captions_vtt(self, i: int, clip_id: str) -> str | None:
        row = gallery.clip(self.store, i, clip_id)
        if row is None:
            return None
        return media.webvtt(row.get("captions_per_second"), row.get("duration_s"))
