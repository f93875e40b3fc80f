"""A long input analysed in ranges by several actors gives what one pass over it gives."""

from __future__ import annotations

import pytest
from transcoded_columns import without_transcode_dependent

from vidmill.pipeline.analysis.analyze import AnalyzeInput, InputRange
from vidmill.pipeline.config import CurateConfig
from vidmill.pipeline.sources import list_inputs


def in_ranges(config: CurateConfig, ref) -> tuple:
    """Analyse like the driver does: the first call splits, the other ranges run on their own."""
    stage = AnalyzeInput(config)
    first = stage.process(InputRange(ref, split=True))
    parts = [first, *(stage.process(rng) for rng in reversed(first.rest))]  # any order
    return stage.assemble(ref, parts), len(parts)


@pytest.mark.parametrize("segment_s", [1.5, 2.0])  # cuts.mp4 has cuts at 4 and 8 s: with 2 s ranges on the edges
@pytest.mark.parametrize("name", ["cuts.mp4", "vfr.mp4", "late_start.mp4", "rotated.mp4", "pan_left.mp4"])
def test_ranges_join_into_the_whole_input_analysis(samples, name, segment_s):
    whole_config, split_config = CurateConfig(), CurateConfig()
    whole_config.decode.segment_s = 0
    split_config.decode.segment_s = segment_s
    (ref,) = list_inputs(str(samples / name), whole_config.source)
    whole = AnalyzeInput(whole_config).process(ref)
    joined, n_parts = in_ranges(split_config, ref)
    assert n_parts >= 2
    assert joined.shots == whole.shots and len(whole.shots) >= 1
    assert joined.clips == whole.clips
    assert joined.input == whole.input
    assert joined.taps.times_s == whole.taps.times_s
    assert joined.taps.jpegs == whole.taps.jpegs


def test_short_input_is_not_split(samples):
    config = CurateConfig()
    (ref,) = list_inputs(str(samples / "cuts.mp4"), config.source)
    assert AnalyzeInput(config).process(InputRange(ref, split=True)).rest == []


def test_a_bad_range_makes_the_input_an_error_row(samples):
    config = CurateConfig()
    (ref,) = list_inputs(str(samples / "corrupt.mp4"), config.source)
    stage = AnalyzeInput(config)
    analysis = stage.assemble(ref, [stage.process(InputRange(ref, split=True))])
    assert analysis.input.status == "error" and "cannot open" in analysis.input.error


def test_split_inputs_on_ray_give_the_same_tables(samples, curated, tmp_path, local_ray):
    import pyarrow.parquet as pq

    from vidmill.pipeline.curate import Curation

    config = CurateConfig()
    config.decode.segment_s = 2.0  # every sample longer than 3 s is analysed in 2 s ranges
    summary = Curation(str(samples), tmp_path / "out", config, progress=False).run()
    assert summary["stages"]["analyze"]["items"] > summary["counts"]["inputs"]  # ranges were used
    for name in ["inputs.parquet", "shots.parquet", "manifest.parquet"]:
        split = pq.read_table(tmp_path / "out" / name).to_pylist()
        whole = pq.read_table(curated / name).to_pylist()
        assert without_transcode_dependent(split) == without_transcode_dependent(whole), name
