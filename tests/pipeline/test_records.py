"""Typed records: one shape in flight and on disk; table schemas derived from them; statuses and reasons."""

from __future__ import annotations

import pyarrow as pa

from vidmill.pipeline.outcomes import REASONS, ScoreStatus
from vidmill.pipeline.records import ClipRecord, InputRecord, InputResult, Shot, inputs_schema, manifest_schema

OLD_WORK_CLIP = {  # a clip as earlier versions wrote it in _work/inputs/*.json
    "clip_id": "abc_0000_00", "input_id": "abc", "source_uri": "/b/x.mp4", "shot_index": 0, "start_s": 0.25,
    "end_s": 3.75, "duration_s": 3.5, "fps": 24.0, "width": 448, "height": 256, "reject_reasons": [],
    "sharpness": 91.2, "quality_status": "scored", "phashes": ["00ff", "ff00", "0f0f"], "hash_status": "scored",
    "aesthetic_status": "not_scored: no weights (scoring.aesthetic.clip_weights is not set)",
}


def test_a_clip_of_an_earlier_run_loads_and_saves_in_the_same_format():
    clip = ClipRecord.from_work_row(OLD_WORK_CLIP)
    assert clip.kept and clip.start_s == 0.25 and clip.scores["sharpness"] == 91.2
    assert clip.work_row() == OLD_WORK_CLIP
    result = InputResult(InputRecord("abc", "/b/x.mp4", 10, n_clips=1), [Shot(0, 0.0, 4.0, 0, 96)], [clip])
    again = InputResult.from_work_json(result.work_json())
    assert again.input == result.input and again.shots == result.shots and again.clips[0].work_row() == OLD_WORK_CLIP


def test_manifest_row_lays_scores_out_where_the_schema_has_them():
    clip = ClipRecord.from_work_row(OLD_WORK_CLIP)
    clip.reject("duplicate")
    row = clip.row()
    assert not row["kept"] and row["reject_reasons"] == ["duplicate"] and row["sharpness"] == 91.2
    schema = manifest_schema()
    table = pa.Table.from_pylist([row], schema=schema)  # every value fits its declared type
    assert table.schema.field("phashes").type == pa.list_(pa.string())
    names = schema.names
    assert names.index("key") < names.index("sharpness") < names.index("hash_status") < names.index("dup_group")
    assert inputs_schema().field("size_bytes").type == pa.int64()


def test_score_status_strings_and_declared_reasons():
    import vidmill.pipeline.decide  # noqa: F401  (declares every scorer's reasons)

    assert str(ScoreStatus.error("no frames")) == "error: no frames"
    assert ScoreStatus.parse("not_scored: no weights") == ScoreStatus.not_scored("no weights")
    assert {"blurry", "too_static", "too_shaky", "text_overlay", "low_aesthetic", "duplicate", "quality_error",
            "hashes_error"} <= set(REASONS)
    assert REASONS["blurry"].setting == "thresholds.sharpness_min"
