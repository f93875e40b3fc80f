"""Putting finished parts in place: inputs / shots / embeddings merged into one file each (a worker streams the
parts through a ParquetWriter, one part in memory), the manifest as a dataset directory of its parts."""

from __future__ import annotations

import posixpath

import pyarrow.parquet as pq

from vidmill.pipeline.finalize.layout import Layout
from vidmill.pipeline.finalize.stages import Settings, table_of
from vidmill.pipeline.records import EMBEDDINGS_SCHEMA, inputs_schema, manifest_schema, shots_schema
from vidmill.pipeline.stage import Stage

SCHEMAS = {"inputs": inputs_schema, "shots": shots_schema, "embeddings": lambda: EMBEDDINGS_SCHEMA,
           "manifest": manifest_schema}


def part_paths(layout: Layout, name: str) -> list[str]:
    folder = f"{layout.root}/tables/{name}"
    return sorted(layout.fs.glob(f"{folder}/part-*.parquet")) if layout.fs.exists(folder) else []


class MergeTable(Stage):
    """One table's parts, in order, into OUTPUT/{name}.parquet (written aside, then moved into place)."""

    name = "finalize_merge"

    def __init__(self, settings: Settings, resources=None):
        super().__init__(resources)
        self.s = settings

    def process(self, name: str) -> int:
        layout, fs = self.s.layout, self.s.layout.fs
        paths = part_paths(layout, name)
        tmp = layout.out(f".{name}.parquet.tmp")
        rows = 0
        with fs.open(tmp, "wb") as handle:
            writer = None
            for path in paths:
                table = layout.read_table(path)
                if writer is None:
                    writer = pq.ParquetWriter(handle, table.schema)
                writer.write_table(table.cast(writer.schema))
                rows += table.num_rows
            if writer is None:
                writer = pq.ParquetWriter(handle, SCHEMAS[name]())
                writer.write_table(table_of([], SCHEMAS[name]()))
            writer.close()
        replace(layout, tmp, layout.out(f"{name}.parquet"))
        return rows


def replace(layout: Layout, src: str, dst: str) -> None:
    """Move `src` (a file or a directory) to `dst`, replacing what is there (a file or a directory)."""
    fs = layout.fs
    if fs.exists(dst) and (fs.isdir(dst) or fs.isdir(src)):
        old = f"{posixpath.dirname(dst)}/.{posixpath.basename(dst)}.old"
        if fs.exists(old):
            fs.rm(old, recursive=True)
        fs.mv(dst, old, recursive=True)
        fs.mv(src, dst, recursive=True)
        fs.rm(old, recursive=True)
    else:
        fs.mv(src, dst, recursive=fs.isdir(src))


def publish_manifest(layout: Layout) -> None:
    """The manifest's parts (part-00000.parquet ...) become OUTPUT/manifest.parquet/, a Parquet dataset."""
    src = f"{layout.root}/tables/manifest"
    if not part_paths(layout, "manifest"):
        layout.write_table(table_of([], manifest_schema()), f"{src}/part-00000.parquet")
    replace(layout, src, layout.out("manifest.parquet"))
