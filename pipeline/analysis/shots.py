"""Shot detection: PySceneDetect's own detectors, fed frames from vidmill's single decode pass.

Frames carry their true PTS (PySceneDetect's `Timecode`), so cuts are placed by timestamp and stay
right on variable-frame-rate inputs. By default (`frame_scaling: exact`) frames are prepared exactly as
PySceneDetect's SceneManager prepares them: the full-resolution BGR picture (no sample aspect ratio,
rotation undone, as OpenCV reads it) shrunk by its own factor max(w, h) / 256 with cv2.resize
INTER_LINEAR, so cut lists equal `scenedetect.detect`'s on the same video and settings, frame for frame.
`frame_scaling: fast` scales with swscale FAST_BILINEAR straight to that size: cheaper, but its pixels
differ (swscale and OpenCV sample different source points), so a frame scored near a threshold can flip.
"""

from __future__ import annotations

import bisect
from fractions import Fraction

import cv2
import numpy as np
from scenedetect import AdaptiveDetector, ContentDetector, FrameTimecode, SceneDetector
from scenedetect.common import Timecode
from scenedetect.scene_manager import compute_downscale_factor

from vidmill.pipeline.analysis.decode import DecodedFrame
from vidmill.pipeline.config import ShotConfig
from vidmill.pipeline.records import Shot

__all__ = ["DETECTION_LONG_SIDE", "Shot", "ShotDetector", "make_detector", "shots_from_cuts"]

DETECTION_LONG_SIDE = 256  # scenedetect.scene_manager.DEFAULT_MIN_WIDTH


def detection_size(width: int, height: int) -> tuple[int, int]:
    """PySceneDetect's processing size for an upright picture of this size (SceneManager's auto
    downscale: factor max(w, h) / 256, each side rounded; no scaling at or under 256)."""
    factor = compute_downscale_factor(max(width, height))
    if factor <= 1.0:
        return width, height
    return max(1, round(width / factor)), max(1, round(height / factor))


def detection_image(frame: DecodedFrame, scaling: str = "exact") -> np.ndarray:
    """One decoded frame as the detector sees it; see the module docstring for `scaling`."""
    w, h = frame.frame.width, frame.frame.height
    size = detection_size(*((h, w) if frame.probe.rotation in (90, 270) else (w, h)))
    if scaling == "exact":
        picture = frame.picture()
        if (picture.shape[1], picture.shape[0]) == size:
            return picture
        return cv2.resize(picture, size, interpolation=cv2.INTER_LINEAR)
    if scaling == "fast":
        return frame.image(size, "FAST_BILINEAR")
    raise ValueError(f"unknown shots.frame_scaling {scaling!r}; choose 'exact' or 'fast'")


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
        self.frame_scaling = config.frame_scaling
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

    def add_frame(self, frame: DecodedFrame) -> None:
        """Prepare a decoded frame as PySceneDetect does (or the fast way) and feed it."""
        self.add(frame.pts, frame.time_s, detection_image(frame, self.frame_scaling))

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
