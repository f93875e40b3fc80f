"""Shot detection: PySceneDetect's own detectors, fed frames from vidmill's single decode pass.

Frames carry their true PTS (PySceneDetect's `Timecode`), so cuts are placed by timestamp and stay
right on variable-frame-rate inputs. Frames are scaled like PySceneDetect's SceneManager does
(long side 256), so results match `scenedetect.detect` on the same video and settings.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np
from scenedetect import AdaptiveDetector, ContentDetector, FrameTimecode, SceneDetector
from scenedetect.common import Timecode

from pipeline.config import ShotConfig

DETECTION_LONG_SIDE = 256  # scenedetect.scene_manager.DEFAULT_MIN_WIDTH


@dataclass(frozen=True)
class Shot:
    shot_index: int
    start_s: float
    end_s: float  # exclusive: the next shot's first frame time, or the end of the last frame
    start_frame: int
    end_frame: int  # exclusive


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
    """Feed frames in order with `add`, then `finish` to get the shot list."""

    def __init__(self, config: ShotConfig, time_base: Fraction, fps: float):
        self.detector = make_detector(config)
        self.time_base = time_base
        self.fps = Fraction(fps).limit_denominator(1001) if fps > 0 else Fraction(24)
        self.cuts: list[FrameTimecode] = []
        self.frame_of_pts: dict[int, int] = {}
        self.time_of_frame: list[float] = []
        self.last: FrameTimecode | None = None

    def timecode(self, pts: int) -> FrameTimecode:
        return FrameTimecode(Timecode(pts=pts, time_base=self.time_base), fps=self.fps)

    def add(self, index: int, pts: int, time_s: float, image: np.ndarray) -> None:
        self.last = self.timecode(pts)
        self.frame_of_pts[pts] = index
        self.time_of_frame.append(time_s)
        self.cuts += self.detector.process_frame(self.last, image)

    def finish(self, end_s: float) -> list[Shot]:
        if self.last is None:
            return []
        self.cuts += self.detector.post_process(self.last)
        starts = sorted({self.frame_of_pts[cut.pts] for cut in self.cuts if cut.pts in self.frame_of_pts} | {0})
        n = len(self.time_of_frame)
        bounds = [*starts, n]
        shots = []
        for i, (first, stop) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
            shot_end = self.time_of_frame[stop] if stop < n else end_s
            shots.append(Shot(i, self.time_of_frame[first], shot_end, first, stop))
        return shots
