"""The curation outputs a dashboard serves, and the DuckDB connection that reads them.

Each output's manifest is loaded once into an in-memory DuckDB table holding its narrow columns
(scores, statuses, reasons, span, shard/key): the wide text columns (captions, raw model output,
fingerprint lists) stay in the Parquet file and are read for the rows of one page only.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.parquet as pq

# Columns left in Parquet: large per-row text that only a page of clips ever needs.
WIDE_COLUMNS = {"caption", "captions_per_second", "caption_raw", "phashes", "phash", "content_hash", "error",
                "source_uri", "caption_error", "captioner"}


# Stand-ins for a missing inputs/shots table (an output written by hand or by an older vidmill).
EMPTY = {"inputs": "NULL::VARCHAR AS input_id, NULL::VARCHAR AS source_uri, NULL::VARCHAR AS status, "
                   "NULL::VARCHAR AS error, NULL::DOUBLE AS duration_s",
         "shots": "NULL::VARCHAR AS input_id, NULL::DOUBLE AS start_s, NULL::DOUBLE AS end_s"}


@dataclass
class Output:
    """One curation output folder (the contract in DESIGN.md)."""

    index: int
    root: Path
    run: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def open(cls, index: int, path: str | Path) -> Output:
        root = Path(path).resolve()
        if not (root / "manifest.parquet").exists():
            raise FileNotFoundError(f"{path}: no manifest.parquet (not a vidmill curate output)")
        run_path = root / "run.json"
        run = json.loads(run_path.read_text()) if run_path.is_file() else {}
        return cls(index, root, run)

    @property
    def name(self) -> str:
        return self.root.name

    def file(self, name: str) -> Path | None:
        path = self.root / name
        return path if path.is_file() else None

    def parquet(self, name: str) -> str:
        return _quote(self.root / name)

    def manifest_rows(self) -> str:
        """The manifest as a DuckDB relation with a `file_row_number` unique over the whole table: a single
        manifest.parquet, or the parts of the manifest.parquet/ dataset (part-00000.parquet ...) one after
        the other, each part's row numbers offset by the rows before it."""
        path = self.root / "manifest.parquet"
        if path.is_file():
            return f"read_parquet({_quote(path)}, file_row_number = true)"
        parts, offset, selects = sorted(path.glob("*.parquet")), 0, []
        for part in parts:
            selects.append(f"SELECT * REPLACE (file_row_number + {offset} AS file_row_number) "
                           f"FROM read_parquet({_quote(part)}, file_row_number = true)")
            offset += pq.read_metadata(part).num_rows
        if not selects:
            raise FileNotFoundError(f"{path}: an empty manifest dataset (no part files)")
        return "(" + " UNION ALL ".join(selects) + ")"


def _quote(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


class Store:
    """DuckDB over the outputs: table `clips_<i>` per output plus views over the Parquet files."""

    def __init__(self, paths: list[str | Path], memory_limit: str = "600MB", threads: int = 2):
        if not paths:
            raise ValueError("give at least one curation output")
        self.outputs = [Output.open(i, p) for i, p in enumerate(paths)]
        self.con = duckdb.connect(":memory:", config={"memory_limit": memory_limit, "threads": threads})
        self._lock = threading.Lock()
        self._memo: dict[Any, Any] = {}
        for out in self.outputs:
            self._load(out)

    def _load(self, out: Output) -> None:
        i = out.index
        rows = out.manifest_rows()
        self.con.execute(f"CREATE VIEW manifest_{i} AS SELECT *, file_row_number AS rid FROM {rows}")
        names = [r[0] for r in self.con.execute(f"DESCRIBE SELECT * EXCLUDE (file_row_number) FROM {rows}").fetchall()]
        narrow = [n for n in names if n not in WIDE_COLUMNS]
        select = ", ".join(f'"{n}"' for n in narrow)
        captioned = "caption IS NOT NULL" if "caption" in names else "false"
        self.con.execute(f"CREATE TABLE clips_{i} AS SELECT file_row_number AS rid, {select}, "
                         f"{captioned} AS captioned FROM {rows}")
        for table in ("inputs", "shots"):
            if out.file(f"{table}.parquet"):
                source = out.parquet(f"{table}.parquet")
                self.con.execute(f"CREATE VIEW {table}_{i} AS SELECT * FROM read_parquet({source})")
            else:
                self.con.execute(f"CREATE VIEW {table}_{i} AS SELECT {EMPTY[table]} WHERE false")

    def output(self, index: int) -> Output:
        if not 0 <= index < len(self.outputs):
            raise KeyError(f"no output {index}")
        return self.outputs[index]

    def columns(self, index: int) -> dict[str, str]:
        """Column name -> DuckDB type of the loaded clips table."""
        return self.memo(("columns", index), lambda: {
            r[0]: r[1] for r in self.cursor().execute(f"DESCRIBE clips_{index}").fetchall()})

    def memo(self, key: Any, compute: Any) -> Any:
        """`compute()` once per key: the outputs are read-only, so an aggregate never goes stale."""
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """A cursor per request: DuckDB connections are not shared between threads."""
        with self._lock:
            cursor = self.con.cursor()
        cursor.execute("SET enable_progress_bar = false")
        return cursor

    def rows(self, sql: str, params: list[Any] | None = None) -> list[dict[str, Any]]:
        cur = self.cursor()
        result = cur.execute(sql, params or [])
        names = [d[0] for d in result.description]
        return [dict(zip(names, r, strict=False)) for r in result.fetchall()]

    def one(self, sql: str, params: list[Any] | None = None) -> dict[str, Any]:
        found = self.rows(sql, params)
        return found[0] if found else {}
