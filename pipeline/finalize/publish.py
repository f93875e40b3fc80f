"""Putting finished parts in place: inputs / shots / embeddings merged into one file each (a worker streams the
parts through a ParquetWriter, one part in memory), the manifest as a dataset directory of its parts."""

from __future__ import annotations

import json
import posixpath

import pyarrow.parquet as pq

from vidmill.pipeline.finalize.layout import Layout
from vidmill.pipeline.finalize.stages import Settings, table_of
from vidmill.pipeline.records import EMBEDDINGS_SCHEMA, inputs_schema, manifest_schema, shots_schema
from vidmill.pipeline.stage import Stage

MANIFEST, SUCCESS = "manifest.parquet", "_SUCCESS"
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
        layout = self.s.layout
        rows = 0
        with layout.store.writer(f"{name}.parquet") as handle:  # published atomically when complete
            writer = None
            for path in part_paths(layout, name):
                table = layout.read_table(path)
                if writer is None:
                    writer = pq.ParquetWriter(handle, table.schema)
                writer.write_table(table.cast(writer.schema))
                rows += table.num_rows
            if writer is None:
                writer = pq.ParquetWriter(handle, SCHEMAS[name]())
                writer.write_table(table_of([], SCHEMAS[name]()))
            writer.close()
        return rows


def replace(layout: Layout, src: str, dst: str) -> None:
    """Move the local directory `src` to `dst`, replacing what is there (a file or a directory): a rename swap."""
    fs = layout.fs
    if fs.exists(dst):
        old = f"{posixpath.dirname(dst)}/.{posixpath.basename(dst)}.old"
        if fs.exists(old):
            fs.rm(old, recursive=True)
        fs.mv(dst, old, recursive=True)
        fs.mv(src, dst, recursive=True)
        fs.rm(old, recursive=True)
    else:
        fs.mv(src, dst, recursive=True)


def copy_parts(layout: Layout, src: str, dst: str, names: list[str]) -> None:
    """Object stores (no rename): each part copied server-side to its name under `dst` (every copy is
    all-or-nothing), then parts of an earlier manifest that are not in `names` removed."""
    fs = layout.fs
    fs.invalidate_cache()
    if fs.isfile(dst):  # an earlier run's single-file manifest
        fs.rm(dst)
    old = [p for p in fs.glob(f"{dst}/*.parquet") if p.rsplit("/", 1)[-1] not in names]
    for name in names:
        fs.copy(f"{src}/{name}", f"{dst}/{name}")
    for path in old:
        fs.rm(path)


def publish_manifest(layout: Layout) -> None:
    """The manifest's parts (part-00000.parquet ...) become OUTPUT/manifest.parquet/, a Parquet dataset, with
    `_SUCCESS` (the Hadoop/Spark commit marker, which pyarrow, DuckDB globs of *.parquet and Spark skip) written
    last: a reader that finds no `_SUCCESS` is looking at a manifest being replaced."""
    src = f"{layout.root}/tables/manifest"
    names = [p.rsplit("/", 1)[-1] for p in part_paths(layout, "manifest")]
    if not names:
        layout.write_table(table_of([], manifest_schema()), f"{src}/part-00000.parquet")
        names = ["part-00000.parquet"]
    marker = f"{MANIFEST}/{SUCCESS}"
    if layout.store.exists(marker):
        layout.store.remove(marker)
    if layout.store.local:
        replace(layout, src, layout.out(MANIFEST))
    else:
        copy_parts(layout, src, layout.out(MANIFEST), names)
    layout.store.put(marker, json.dumps({"parts": names}).encode())
