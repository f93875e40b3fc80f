"""Shot detection: PySceneDetect's own detectors, fed frames from vidmill's single decode pass.

Frames carry their true PTS (PySceneDetect's `Timecode`), so cuts are placed by timestamp and stay
right on variable-frame-rate inputs. Frames are scaled like PySceneDetect's SceneManager does
(long side 256), so results match `scenedetect.detect` on the same video and settings.
"""

from __future__ import annotations

import bisect
from fractions import Fraction

import numpy as np
from scenedetect import AdaptiveDetector, ContentDetector, FrameTimecode, SceneDetector
from scenedetect.common import Timecode

from vidmill.pipeline.config import ShotConfig
from vidmill.pipeline.records import Shot

__all__ = ["DETECTION_LONG_SIDE", "Shot", "ShotDetector", "make_detector", "shots_from_cuts"]

DETECTION_LONG_SIDE = 256  # scenedetect.scene_manager.DEFAULT_MIN_WIDTH


def make_detector(config: ShotConfig) -> SceneDetector:
    if config.detector == "adaptive":
        return AdaptiveDetector(adaptive_threshold=config.adaptive_threshold,
                                min_scene_len=config.min_scene_len, window_width=config.window_width,
                                min_content_val=config.min_content_val, luma_only=config.luma_only)
    if config.detector == "content":
        return ContentDetector(threshold=config.content_threshold, min_scene_len=config.min_scene_len,
                               luma_only=config.luma_only)
    raise ValueError(f"unknown shot detector {config.detector!r}; choose 'adaptive' or 'content'")


class ShotDetector:
    """Feed frames in order with `add`; `cut_times` gives the times of frames that start a new shot."""

    def __init__(self, config: ShotConfig, time_base: Fraction, fps: float):
        self.detector = make_detector(config)
        self.time_base = time_base
        self.fps = Fraction(fps).limit_denominator(1001) if fps > 0 else Fraction(24)
        self.cuts: list[FrameTimecode] = []
        self.time_of_pts: dict[int, float] = {}
        self.last: FrameTimecode | None = None

    def timecode(self, pts: int) -> FrameTimecode:
        return FrameTimecode(Timecode(pts=pts, time_base=self.time_base), fps=self.fps)

    def add(self, pts: int, time_s: float, image: np.ndarray) -> None:
        self.last = self.timecode(pts)
        self.time_of_pts[pts] = time_s
        self.cuts += self.detector.process_frame(self.last, image)

    def cut_times(self, final: bool = True) -> list[float]:
        """`final`: the stream ended, so the detector may flush its window (not when a range of the
        input stops early and the next range goes on from there)."""
        if final and self.last is not None:
            self.cuts += self.detector.post_process(self.last)
            self.last = None
        return sorted({self.time_of_pts[cut.pts] for cut in self.cuts if cut.pts in self.time_of_pts})


def shots_from_cuts(frame_times: list[float], cut_times: list[float], end_s: float) -> list[Shot]:
    """Shots tiling the frames: each cut time is the first frame of a new shot (frame 0 starts one)."""
    n = len(frame_times)
    if not n:
        return []
    starts = sorted({bisect.bisect_left(frame_times, t) for t in cut_times} - {n} | {0})
    bounds = [*starts, n]
    return [Shot(i, frame_times[first], frame_times[stop] if stop < n else end_s, first, stop)
            for i, (first, stop) in enumerate(zip(bounds[:-1], bounds[1:], strict=True))]
