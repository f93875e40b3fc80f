"""Duplicate pairs -> groups, in one worker: the pairs of every bucket partition are read from storage,
joined by union-find (only clips that are in some pair) and written as dups.parquet."""

from __future__ import annotations

import pyarrow as pa

from vidmill.pipeline.dedup import duplicate_groups
from vidmill.pipeline.finalize.stages import DUPS_SCHEMA, Settings, rank_of
from vidmill.pipeline.stage import Stage


class GroupPairs(Stage):
    name = "finalize_groups"

    def __init__(self, settings: Settings, resources=None):
        super().__init__(resources)
        self.s = settings

    def process(self, buckets: int) -> dict[str, int]:
        layout = self.s.layout
        pairs: set[tuple[str, str]] = set()
        ranks: dict[str, tuple] = {}
        for bucket in range(buckets):
            path = f"{layout.root}/pairs/b-{bucket:04d}.parquet"
            if not layout.fs.exists(path):
                continue
            pairs.update((r["a"], r["b"]) for r in layout.read_table(path).to_pylist())
            ranks.update((r["clip_id"], rank_of(r["rank"]))
                         for r in layout.read_table(f"{layout.root}/pairs/r-{bucket:04d}.parquet").to_pylist())
        groups = duplicate_groups(sorted(ranks), pairs, ranks)
        rows = [{"clip_id": c, "dup_group": g, "dup_of": d} for c, (g, d) in sorted(groups.items())]
        layout.write_table(pa.Table.from_pylist(rows, schema=DUPS_SCHEMA), layout.dups)
        return {"pairs": len(pairs), "clips_in_groups": len(rows),
                "groups": len({g for g, _ in groups.values()})}
