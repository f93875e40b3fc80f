"""Scoring cascade (scoring.cascade): OCR and aesthetic skip clips that quality / motion already reject."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from vidmill.pipeline.config import CurateConfig
from vidmill.pipeline.curate import Curation
from vidmill.pipeline.executor.runner import init_ray
from vidmill.pipeline.output.report import format_summary

EXPENSIVE = ("ocr_status", "aesthetic_status")


def rows(out: Path) -> dict[str, dict]:
    return {r["clip_id"]: r for r in pq.read_table(out / "manifest.parquet").to_pylist()}


def cascade_config(**thresholds: float) -> CurateConfig:
    config = CurateConfig()
    config.scoring.cascade = True
    for key, value in thresholds.items():
        setattr(config.thresholds, key, value)
    return config


@pytest.fixture(scope="module")
def cascaded(samples: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    init_ray(None)
    out = tmp_path_factory.mktemp("cascaded")
    Curation(str(samples), out, cascade_config(), progress=False).run()
    return out


def test_off_stores_every_score(curated: Path):
    scored = [r for r in rows(curated).values() if "too_short" not in r["reject_reasons"]]
    assert scored
    assert all(r["ocr_status"] == "scored" and r["text_area_max"] is not None for r in scored)
    assert not any("skipped" in (r["aesthetic_status"] or "") for r in scored)


def test_on_and_off_keep_the_same_clips(curated: Path, cascaded: Path):
    off, on = rows(curated), rows(cascaded)
    assert off.keys() == on.keys()
    assert {k for k, r in on.items() if r["kept"]} == {k for k, r in off.items() if r["kept"]}
    assert {k: r["reject_reasons"] for k, r in on.items()} == {k: r["reject_reasons"] for k, r in off.items()}


def test_on_records_skipped_statuses_with_the_reason(curated: Path, cascaded: Path):
    on = rows(cascaded)
    static = [r for r in on.values() if "too_static" in r["reject_reasons"]]
    assert static, "the sample bucket should hold clips the motion floor rejects"
    for row in static:
        assert row["ocr_status"].startswith("not_scored: skipped: rejected by ")
        assert "motion (too_static" in row["ocr_status"]
        assert row["text_area_max"] is None and row["text_persistent_area"] is None  # never 0
        assert row["aesthetic_status"] == row["ocr_status"]
    cheap_pass = [r for r in on.values() if r["kept"]]
    assert cheap_pass and all(r["ocr_status"] == "scored" for r in cheap_pass)
    off = rows(curated)  # the scores the cascade did compute equal the full run's
    assert all(r["text_area_max"] == off[r["clip_id"]]["text_area_max"] for r in cheap_pass)
    printed = format_summary(json.loads((cascaded / "run.json").read_text()))
    n_skipped = sum((r["ocr_status"] or "").startswith("not_scored: skipped: ") for r in on.values())
    assert f"ocr: skipped for {n_skipped} clips that a cheaper filter rejects" in printed


def test_threshold_only_rerun_scores_newly_eligible_clips(samples: Path, curated: Path, cascaded: Path,
                                                          tmp_path: Path):
    out = tmp_path / "rerun"
    shutil.copytree(cascaded, out)
    before = rows(out)
    skipped = {k for k, r in before.items() if (r["ocr_status"] or "").startswith("not_scored: skipped")
               and "too_static" in r["reject_reasons"] and set(r["reject_reasons"]) == {"too_static"}}
    assert skipped
    summary = Curation(str(samples), out, cascade_config(motion_min=0.0), progress=False).run()
    assert summary["stages"]["rescore"]["extra"]["clips"] >= len(skipped)
    after, off = rows(out), rows(curated)
    for clip_id in skipped:
        assert after[clip_id]["ocr_status"] == "scored"
        assert after[clip_id]["text_area_max"] == off[clip_id]["text_area_max"]
        assert "too_static" not in after[clip_id]["reject_reasons"]
    still = [r for r in after.values() if (r["ocr_status"] or "").startswith("not_scored: skipped")]
    assert all(r["reject_reasons"] for r in still)  # what stays skipped is still rejected by a cheap score
