"""`vidmill eval demo-set` on a curated output whose manifest is the dataset directory of parts."""

from __future__ import annotations

import pyarrow.parquet as pq

from vidmill.evaluation.demo_set import _kept_clips


def test_kept_clips_read_the_manifest_dataset(curated):
    manifest = curated / "manifest.parquet"
    assert manifest.is_dir() and (manifest / "_SUCCESS").is_file()
    rows = pq.read_table(manifest).to_pylist()
    fps = next(r["fps"] for r in rows if r["kept"] and r["shard"])
    expected = {(r["key"], r["shard"]) for r in rows if r["kept"] and r["shard"] and abs(r["fps"] - fps) < 0.01}
    clips = _kept_clips(curated, fps)
    assert clips and set(clips) == expected
