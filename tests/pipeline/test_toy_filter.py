"""A filter added in one file, with its own config sections, without editing any other file: registered
from this module, it runs on Ray, its columns land in the manifest and its reason in reject_reasons."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from ray import cloudpickle

from vidmill.pipeline.outcomes import REASONS, Reason
from vidmill.pipeline.scoring import register, unregister
from vidmill.pipeline.scoring.base import ClipScorer, Frames

TOO_RED = Reason("too_red", "mean red level above the maximum", "thresholds.redness.max")


@dataclass
class RednessSettings:  # scoring.redness
    enabled: bool = True


@dataclass
class RednessThresholds:  # thresholds.redness
    max: float = 1.0


class Redness(ClipScorer):
    name = "redness"
    status_column = "redness_status"
    columns = {"redness": pa.float64(), "redness_status": pa.string()}
    gives = (TOO_RED,)
    settings = RednessSettings
    thresholds = RednessThresholds

    @classmethod
    def reasons(cls, row: Mapping[str, Any], th: Any) -> list[str]:
        value = row.get("redness")
        return [TOO_RED.name] if value is not None and value > th.redness.max else []

    def score(self, frames: Frames) -> dict[str, Any]:
        return {"redness": round(float(sum(f[..., 2].mean() for _, f in frames) / len(frames) / 255), 5)}


@pytest.fixture()
def redness():
    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray workers cannot import test modules
    register(Redness)
    yield Redness
    unregister(Redness.name)


def test_toy_filter_runs_and_its_reason_reaches_the_manifest(redness, samples, tmp_path, local_ray):
    from vidmill.pipeline.config import load_config
    from vidmill.pipeline.curate import Curation
    from vidmill.pipeline.decide import filter_reasons

    assert "too_red" in REASONS
    config = load_config(None, ["thresholds.redness.max=0.5", "captions.enabled=false"])
    assert config.thresholds.redness.max == 0.5 and config.to_dict()["scoring"]["redness"] == {"enabled": True}
    assert filter_reasons({"redness": 0.6}, config.thresholds) == ["too_red"]
    Curation(str(samples / "cuts.mp4"), tmp_path / "out", config, progress=False).run()
    rows = pq.read_table(tmp_path / "out" / "manifest.parquet").to_pylist()
    assert rows and all(r["redness_status"] == "scored" for r in rows)
    assert all(("too_red" in r["reject_reasons"]) == (r["redness"] > 0.5) for r in rows)
    assert any(r["redness"] > 0.5 for r in rows) and any(r["redness"] <= 0.5 for r in rows)
    with pytest.raises(ValueError, match="unknown config key"):
        load_config(None, ["thresholds.nosuch.max=1"])


def test_unregistered_filter_leaves_config_and_manifest_as_before():
    from vidmill.pipeline.config import CurateConfig
    from vidmill.pipeline.records import manifest_schema

    assert "redness" not in CurateConfig().to_dict()["scoring"]
    assert "redness" not in manifest_schema().names
