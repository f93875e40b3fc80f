"""Behaviour lock: the sample bucket's inputs / shots / manifest tables, sorted and hashed, equal the
values computed on the code before the issue-10 restructuring (commit 0f2927b).

Run-specific parts are normalised: the bucket's temporary path (and the input ids and clip ids derived
from it) become the file names, dup_group ids become their sorted members. Volatile columns are left
out: the columns that depend on the transcoded bytes (tests/transcoded_columns.py TRANSCODE_DEPENDENT: x264's
macroblock tree makes them depend on what the encoder process encoded before), and
source_version (the input's size + mtime, added later as an extension of the contract by issue 17).
The Arrow schema (names and types) of each table is part of the hash: the contract must not change.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pyarrow.parquet as pq
from transcoded_columns import TRANSCODE_DEPENDENT

VOLATILE = {*TRANSCODE_DEPENDENT, "source_version"}

LOCKED = {
    "inputs.parquet": "dc13463e157038d08088737672a260269679a879eae848ca6c602d5269575a4b",
    "shots.parquet": "b25f53fd840d4459632a26ae4abdcc7c952c4a255c4038dfc94601f698983faf",
    # Without the transcode-dependent columns. With captions included (the original lock, 38f6b6cc...) the
    # merged code reproduced the value of the code before issue 10 on the run that computed this one.
    "manifest.parquet": "4dd4d6b241484948df59bf01f0f0d6619a57190244dc25b9b2513ea7f8d9b8ac",
}


def normalised_rows(out: Path, name: str, names: dict[str, str], root: str) -> list[str]:
    def clean(value):
        if isinstance(value, str):
            for input_id, file_name in names.items():
                value = value.replace(input_id, file_name)
            return value.replace(root, "<bucket>")
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    rows = [{k: clean(v) for k, v in row.items() if k not in VOLATILE} for row in pq.read_table(out / name).to_pylist()]
    groups: dict[str, list[str]] = {}
    for row in rows:
        if row.get("dup_group"):
            groups.setdefault(row["dup_group"], []).append(row["clip_id"])
    for row in rows:
        if row.get("dup_group"):
            row["dup_group"] = sorted(groups[row["dup_group"]])
    return sorted(json.dumps(row, sort_keys=True) for row in rows)


def table_digest(out: Path, name: str, samples: Path) -> str:
    inputs = pq.read_table(out / "inputs.parquet").to_pylist()
    names = {r["input_id"]: Path(r["source_uri"]).name for r in inputs}
    # a table may be a single file or a dataset directory (manifest.parquet/ since issue 18): read as one table
    schema = [f"{f.name}:{f.type}" for f in pq.read_table(out / name).schema if f.name not in VOLATILE]
    digest = hashlib.sha256(json.dumps(schema).encode())
    for row in normalised_rows(out, name, names, str(samples.resolve())):
        digest.update(row.encode())
    return digest.hexdigest()


def test_tables_equal_the_locked_values(curated, samples):
    got = {name: table_digest(curated, name, samples) for name in LOCKED}
    assert got == LOCKED


def test_work_of_an_earlier_version_resumes(samples, tmp_path):
    """_work markers written by the code before issue 10 (tests/integration/data) are read as complete:
    nothing is analysed again and the tables equal the locked values."""
    from vidmill.pipeline.config import load_config
    from vidmill.pipeline.curate import Curation
    from vidmill.pipeline.sources import input_id_for

    root = samples.resolve()
    markers = tmp_path / "out" / "_work" / "inputs"
    markers.mkdir(parents=True)
    for old in (Path(__file__).parent / "data" / "work_0f2927b").glob("*.json"):
        input_id = input_id_for(str(root / old.stem))
        text = old.read_text().replace("<bucket>", str(root)).replace(f"<id:{old.stem}>", input_id)
        (markers / f"{input_id}.json").write_text(text)
    # the settings added since (issue 11) at the values that reproduce that code's behaviour
    config = load_config(None, ["shots.frame_scaling=fast", "scoring.ocr.detail_short_side=0"])
    summary = Curation(str(samples), tmp_path / "out", config, progress=False).run()
    assert summary["counts"]["inputs_resumed"] == summary["counts"]["inputs"] == 21
    assert {name: table_digest(tmp_path / "out", name, samples) for name in LOCKED} == LOCKED
