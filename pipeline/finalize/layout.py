"""Where finalize keeps its parts (OUTPUT/_work/finalize/ on any fsspec filesystem) and how they are read.

    listing/part-00000.parquet   the inputs in listing order, `inputs_per_part` a part (written by the driver)
    unsaved/{input_id}.json      an input whose worker died: reported in this run, redone on the next
    decided/part-00000.jsonl     each input's record after the thresholds (one JSON line an input)
    keys/b-0000/part-00000.parquet  LSH bucket keys of part 0 that hash to bucket partition 0
    dups.parquet                 clip_id -> dup_group, dup_of for clips in a duplicate group
    updates/part-00000.jsonl     kept clips after transcode / caption (clip_bytes, captions, rejections)
    staged/part-00000.jsonl      manifest rows before shard names; plan/part-00000.json its shard plan
    tables/{name}/part-00000.parquet  the finished parts of manifest, inputs, shots, embeddings
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from vidmill.pipeline.output.store import Store
from vidmill.pipeline.records import InputResult
from vidmill.pipeline.sources import InputRef

LISTING_SCHEMA = pa.schema([("input_id", pa.string()), ("source_uri", pa.string()), ("size_bytes", pa.int64()),
                            ("version", pa.string()), ("problem", pa.string())])


@dataclass(frozen=True)
class Layout:
    """Finalize's paths on OUTPUT's Store (absolute filesystem paths; every write is the Store's atomic put)."""

    store: Store

    @classmethod
    def of(cls, output: str, **storage_options: Any) -> Layout:
        return cls(Store(str(output), storage_options))

    @property
    def fs(self) -> fsspec.AbstractFileSystem:
        return self.store.fs

    @property
    def output(self) -> str:
        """OUTPUT's path on `fs` (no protocol)."""
        return self.store.path()

    @property
    def root(self) -> str:
        return f"{self.output}/_work/finalize"

    def record(self, input_id: str) -> str:
        return f"{self.output}/_work/inputs/{input_id}.json"

    def unsaved(self, input_id: str) -> str:
        return f"{self.root}/unsaved/{input_id}.json"

    def part(self, kind: str, i: int, ext: str = "parquet") -> str:
        return f"{self.root}/{kind}/part-{i:05d}.{ext}"

    def keys(self, bucket: int, i: int) -> str:
        return f"{self.keys_dir(bucket)}/part-{i:05d}.parquet"

    def keys_dir(self, bucket: int) -> str:
        return f"{self.root}/keys/b-{bucket:04d}"

    def table_part(self, name: str, i: int) -> str:
        return f"{self.root}/tables/{name}/part-{i:05d}.parquet"

    @property
    def dups(self) -> str:
        return f"{self.root}/dups.parquet"

    def out(self, name: str) -> str:
        return f"{self.output}/{name}"

    # -- reading and writing ------------------------------------------------------------------
    def write_bytes(self, path: str, data: bytes) -> None:
        self.store.put(self.store.rel(path), data)

    def read_json(self, path: str) -> Any:
        try:
            return json.loads(self.fs.cat_file(path))
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def write_table(self, table: pa.Table, path: str) -> None:
        sink = io.BytesIO()
        pq.write_table(table, sink)
        self.write_bytes(path, sink.getvalue())

    def read_table(self, path: str) -> pa.Table:
        with self.fs.open(path, "rb") as handle:
            return pq.read_table(handle)

    def write_lines(self, path: str, lines: Iterable[str]) -> None:
        self.write_bytes(path, "".join(line + "\n" for line in lines).encode())

    def read_lines(self, path: str) -> Iterator[Any]:
        if not self.fs.exists(path):
            return
        with self.fs.open(path, "rt") as handle:
            for line in handle:
                if line.strip():
                    yield json.loads(line)

    def clear(self, *kinds: str) -> None:
        """Remove parts of an earlier run (finalize writes every part again)."""
        for kind in kinds:
            path = f"{self.root}/{kind}"
            if self.fs.exists(path):
                self.fs.rm(path, recursive=True)

    def listing(self, i: int) -> list[InputRef]:
        return [InputRef(**row) for row in self.read_table(self.part("listing", i)).to_pylist()]

    def load_result(self, ref: InputRef, fingerprint: str) -> InputResult | None:
        """The input's record made under `fingerprint` (its marker, else this run's unsaved result)."""
        for path in (self.record(ref.input_id), self.unsaved(ref.input_id)):
            record = self.read_json(path)
            if record is not None and record.get("fingerprint") == fingerprint:
                return InputResult.from_work_json(record)
        return None

    def save_unsaved(self, result: InputResult, fingerprint: str) -> None:
        record = {"fingerprint": fingerprint, **result.work_json()}
        self.write_bytes(self.unsaved(result.input.input_id), json.dumps(record).encode())


class ListingWriter:
    """The driver's only per-input writes: the listing, in parts of `per_part` refs as they stream past."""

    def __init__(self, layout: Layout, per_part: int):
        self.layout, self.per_part = layout, per_part
        self.buffer: list[InputRef] = []
        self.parts = 0
        self.count = 0

    def add(self, ref: InputRef) -> None:
        self.buffer.append(ref)
        self.count += 1
        if len(self.buffer) >= self.per_part:
            self.flush()

    def flush(self) -> None:
        if not self.buffer:
            return
        rows = [{"input_id": r.input_id, "source_uri": r.source_uri, "size_bytes": r.size_bytes,
                 "version": r.version, "problem": r.problem} for r in self.buffer]
        table = pa.Table.from_pylist(rows, schema=LISTING_SCHEMA)
        self.layout.write_table(table, self.layout.part("listing", self.parts))
        self.parts += 1
        self.buffer = []
