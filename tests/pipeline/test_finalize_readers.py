"""The manifest as a dataset directory (manifest.parquet/part-*.parquet) reads as one table in pyarrow,
pandas and DuckDB, in the dashboard (row ids unique across parts) and on the training side."""

from __future__ import annotations

import duckdb
import pandas as pd
import pyarrow.parquet as pq

from vidmill.pipeline.finalize.stages import table_of
from vidmill.pipeline.finalize.synthetic import synthetic_results
from vidmill.pipeline.records import manifest_schema


def test_a_manifest_dataset_reads_as_one_table(tmp_path):
    rows = [c.row() for r in synthetic_results(6, clips=4) for c in r.clips]
    folder = tmp_path / "manifest.parquet"
    folder.mkdir()
    pq.write_table(table_of(rows[:9], manifest_schema()), folder / "part-00000.parquet")
    pq.write_table(table_of(rows[9:], manifest_schema()), folder / "part-00001.parquet")
    ids = [r["clip_id"] for r in rows]
    assert pq.read_table(folder).column("clip_id").to_pylist() == ids
    assert pd.read_parquet(folder)["clip_id"].tolist() == ids
    assert duckdb.sql(f"SELECT count(*) FROM read_parquet('{folder}/*.parquet')").fetchall() == [(len(ids),)]

    from vidmill.dashboards.outputs import Store

    store = Store([tmp_path])
    got = store.con.execute("SELECT rid, clip_id FROM clips_0 ORDER BY rid").fetchall()
    assert [rid for rid, _ in got] == list(range(len(ids))) and [c for _, c in got] == ids
    joined = store.con.execute("SELECT count(*) FROM manifest_0 m JOIN clips_0 c USING (rid) "
                               "WHERE m.clip_id = c.clip_id").fetchone()[0]
    assert joined == len(ids)

    from vidmill.training.run import is_latents_output

    assert not is_latents_output(tmp_path)  # a curated manifest (dataset) has no latent columns
