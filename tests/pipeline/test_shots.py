"""Shot detection: cut accuracy against the sample ground truth, and agreement with PySceneDetect."""

from __future__ import annotations

import pytest
import scenedetect

from vidmill.pipeline.analysis.decode import VideoReader, scaled_to
from vidmill.pipeline.analysis.shots import DETECTION_LONG_SIDE, ShotDetector, shots_from_cuts
from vidmill.pipeline.config import ShotConfig


def detect(path, config: ShotConfig):
    with VideoReader(str(path)) as reader:
        probe = reader.probe
        detector = ShotDetector(config, probe.time_base, probe.fps)
        size = scaled_to((probe.display_width, probe.display_height), long_side=DETECTION_LONG_SIDE)
        end, times = 0.0, []
        for frame in reader.decoded():
            detector.add(frame.pts, frame.time_s, frame.image(size, "FAST_BILINEAR"))
            times.append(frame.time_s)
            end = frame.time_s + 1 / probe.fps
        return shots_from_cuts(times, detector.cut_times(), end), probe


@pytest.mark.parametrize("name", ["cuts.mp4", "vfr.mp4", "rotated.mp4", "late_start.mp4"])
def test_cuts_within_one_frame_of_ground_truth(samples, truth, name):
    shots, probe = detect(samples / name, ShotConfig())
    found = [s.start_s for s in shots[1:]]
    expected = truth[name]["cuts_s"]
    assert len(found) == len(expected), (found, expected)
    # compared by timestamp; one frame is the longest frame interval around the cut (VFR: 1/12 s)
    for got, want in zip(found, expected, strict=True):
        assert abs(got - want) <= 1 / 12 + 1e-6, (name, got, want)
    assert shots[0].start_s == pytest.approx(probe.video_start_s, abs=1e-6)


def test_shots_tile_the_video_without_gaps(samples):
    shots, _ = detect(samples / "cuts.mp4", ShotConfig())
    assert [s.shot_index for s in shots] == [0, 1, 2]
    for a, b in zip(shots, shots[1:], strict=False):
        assert a.end_s == b.start_s and a.end_frame == b.start_frame
    assert shots[-1].end_s == pytest.approx(12.0, abs=1e-6)
    assert shots[-1].end_frame == 288


@pytest.mark.parametrize("name", ["cuts.mp4", "vfr.mp4", "rotated.mp4", "late_start.mp4", "pan_left.mp4"])
@pytest.mark.parametrize("kind", ["adaptive", "content"])
def test_agrees_with_pyscenedetect_api(samples, name, kind):
    """Same video, same settings: our stage's cuts equal scenedetect.detect's (its PyAV backend).

    PySceneDetect counts time from the video stream's first frame; ours from the container start,
    so its times are shifted by the stream's start offset before comparing.
    """
    config = ShotConfig(detector=kind)
    ours, probe = detect(samples / name, config)
    if kind == "adaptive":
        ref_detector = scenedetect.AdaptiveDetector(adaptive_threshold=config.adaptive_threshold,
                                                    min_scene_len=config.min_scene_len,
                                                    min_content_val=config.min_content_val,
                                                    window_width=config.window_width)
    else:
        ref_detector = scenedetect.ContentDetector(threshold=config.content_threshold,
                                                   min_scene_len=config.min_scene_len)
    reference = scenedetect.detect(str(samples / name), ref_detector, backend="pyav")
    ref_cuts = [start.seconds + probe.video_start_s for start, _ in reference[1:]]
    our_cuts = [s.start_s for s in ours[1:]]
    assert len(our_cuts) == len(ref_cuts), (our_cuts, ref_cuts)
    for got, want in zip(our_cuts, ref_cuts, strict=True):
        assert abs(got - want) <= 1 / 12 + 1e-6
