"""The sample bucket curated end to end on local Ray: accounting, error rows, manifest, shards."""

from __future__ import annotations

import io
import json
from pathlib import Path

import av
import pyarrow.parquet as pq
import pytest
import webdataset as wds

from vidmill.pipeline.sources import input_id_for

CONTRACT_COLUMNS = ["clip_id", "input_id", "source_uri", "shot_index", "start_s", "end_s", "duration_s", "fps",
                    "width", "height", "kept", "reject_reasons", "shard", "key"]


def table(out: Path, name: str) -> list[dict]:
    return pq.read_table(out / name).to_pylist()


def test_every_input_is_accounted_for(curated, samples, truth):
    inputs = {Path(r["source_uri"]).name: r for r in table(curated, "inputs.parquet")}
    assert set(inputs) == set(truth)  # README.txt is skipped by the extension filter, nothing else
    for name, expected in truth.items():
        row = inputs[name]
        assert row["status"] == expected["status"], (name, row["error"])
        assert row["input_id"] == input_id_for(row["source_uri"])
        if expected["status"] == "error":
            assert row["error"], name
        else:
            assert row["error"] is None
            assert (row["width"], row["height"]) == tuple(expected["display_size"]), name
            assert row["duration_s"] == pytest.approx(expected["duration_s"], abs=0.1), name


def test_bad_inputs_have_clear_messages(curated):
    errors = {Path(r["source_uri"]).name: r["error"] for r in table(curated, "inputs.parquet") if r["error"]}
    assert errors["empty.mp4"] == "empty file (0 bytes)"
    assert "cannot open" in errors["corrupt.mp4"] and "Invalid data" in errors["corrupt.mp4"]
    assert "cannot open" in errors["notes.mp4"]


def test_shots_table_matches_input_counts(curated, truth):
    shots = table(curated, "shots.parquet")
    inputs = {r["input_id"]: r for r in table(curated, "inputs.parquet")}
    for input_id, row in inputs.items():
        assert row["n_shots"] == sum(s["input_id"] == input_id for s in shots)
    cuts = sorted(s["start_s"] for s in shots if Path(inputs[s["input_id"]]["source_uri"]).name == "cuts.mp4")
    assert cuts == pytest.approx([0.0, *truth["cuts.mp4"]["cuts_s"]], abs=1 / 24)


def test_manifest_has_every_candidate_clip(curated):
    manifest = table(curated, "manifest.parquet")
    assert set(CONTRACT_COLUMNS) <= set(manifest[0])
    inputs = table(curated, "inputs.parquet")
    assert len(manifest) == sum(r["n_clips"] for r in inputs)
    assert len({r["clip_id"] for r in manifest}) == len(manifest)
    for row in manifest:
        assert row["kept"] == (not row["reject_reasons"])
        assert (row["shard"] is not None) == row["kept"]
        assert 2.0 <= row["duration_s"] <= 10.0 or "too_short" in row["reject_reasons"]
    short = [r for r in manifest if r["source_uri"].endswith("short.mp4")]
    assert len(short) == 1 and short[0]["reject_reasons"] == ["too_short"] and not short[0]["kept"]


def test_width_and_height_are_as_displayed(curated, truth):
    for row in table(curated, "manifest.parquet"):
        name = Path(row["source_uri"]).name
        assert (row["width"], row["height"]) == tuple(truth[name]["display_size"])


def test_shards_read_back_with_webdataset_and_match_manifest(curated):
    manifest = {r["clip_id"]: r for r in table(curated, "manifest.parquet") if r["kept"]}
    shards = sorted(str(p) for p in (curated / "shards").glob("*.tar"))
    assert shards
    seen = {}
    for sample in wds.WebDataset(shards, shardshuffle=False):
        seen[sample["__key__"]] = sample
    assert set(seen) == set(manifest)
    for key, sample in seen.items():
        row = manifest[key]
        stored = json.loads(sample["json"])
        assert stored["clip_id"] == key and stored["shard"] == row["shard"]
        assert stored["start_s"] == row["start_s"] and stored["end_s"] == row["end_s"]
        with av.open(io.BytesIO(sample["mp4"])) as container:
            stream = container.streams.video[0]
            n = sum(1 for _ in container.decode(stream))
            short_side = min(stream.width, stream.height)
            assert stream.codec_context.name == "h264"
            assert (stream.width > stream.height) == (row["width"] > row["height"])
        assert short_side == min(480, min(row["width"], row["height"]))
        assert n == round(row["duration_s"] * 24)  # constant 24 fps output


def test_run_json_records_config_versions_counts_and_throughput(curated):
    run = json.loads((curated / "run.json").read_text())
    assert run["config"]["spans"]["min_s"] == 2.0
    assert {"ray", "av", "scenedetect", "pyarrow"} <= set(run["versions"])
    counts = run["counts"]
    assert counts["inputs"] == len(table(curated, "inputs.parquet"))
    assert counts["clips_kept"] == sum(r["kept"] for r in table(curated, "manifest.parquet"))
    assert counts["inputs_error"] == 3
    assert run["stages"]["analyze"]["items"] == counts["inputs"]
    assert run["wall_s"] > 0 and run["throughput"]["video_s_per_s"] > 0


def test_frame_taps_go_worker_to_worker_not_through_the_driver(curated):
    """Analysis workers keep their taps in Ray's object store and scorers fetch them: what the driver receives
    from analysis and sends to the scorers is refs and spans (before: 4.8 MB in, 4.3 MB to each of 5 scorer
    pools, 36x the clip bytes)."""
    run = json.loads((curated / "run.json").read_text())
    clip_bytes, received, sent = run["clip_bytes_written"], run["driver_bytes_received"], run["driver_bytes_sent"]
    scorers = [s for s in sent if s not in ("total", "analyze", "transcode", "caption", "finalize")]
    assert len(scorers) >= 4, sent
    taps_stages = received["analyze"] + sum(sent[s] for s in scorers)
    assert taps_stages < 0.5 * clip_bytes, (taps_stages, clip_bytes)
    assert received["total"] + sent["total"] < clip_bytes, (received, sent, clip_bytes)
