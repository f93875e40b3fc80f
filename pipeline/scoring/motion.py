"""Motion: dense optical flow between consecutive frame taps (2 fps, ~256 px).

OpenCV's DIS flow (preset `ultrafast`) by default: about 20x cheaper than Farneback on these frames,
and it follows large displacements (fast pans) that Farneback's pyramid underestimates. Farneback
(the Data-Juicer choice) is selectable with `scoring.motion.method: farneback`.

motion_score is the mean flow magnitude per tap interval divided by the frame diagonal. The camera
class comes from the flow field's global parts: mean translation (pan / tilt) and radial expansion
(zoom); translation that keeps changing direction is `shaky`. Names follow the camera: content moving
right means the camera pans left; content moving down means it tilts up; content growing is zoom_in.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import cv2
import numpy as np
import pyarrow as pa

from vidmill.pipeline.analysis.decode import scaled_to
from vidmill.pipeline.config import MotionScoring, Thresholds
from vidmill.pipeline.outcomes import Reason, ScoreStatus
from vidmill.pipeline.scoring.base import ClipScorer, Frames, above, below
from vidmill.pipeline.scoring.registry import register

TOO_STATIC = Reason("too_static", "mean optical flow below the minimum", "thresholds.motion_min")
TOO_SHAKY = Reason("too_shaky", "mean optical flow above the maximum, or camera class shaky", "thresholds.motion_max")

STILL = 0.002  # global motion per interval (fraction of the diagonal) below which the camera is still


def global_motion(flow: np.ndarray) -> tuple[float, float, float]:
    """(tx, ty, zoom) of a flow field: mean translation in pixels, and radial expansion rate."""
    h, w = flow.shape[:2]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    rx, ry = xs - (w - 1) / 2, ys - (h - 1) / 2
    tx, ty = float(flow[..., 0].mean()), float(flow[..., 1].mean())
    fx, fy = flow[..., 0] - tx, flow[..., 1] - ty
    zoom = float((rx * fx + ry * fy).sum() / (rx * rx + ry * ry).sum())
    return tx, ty, zoom


def camera_class(moves: list[tuple[float, float, float]], diag: float, mean_r: float) -> str:
    tx = np.array([m[0] for m in moves]) / diag
    ty = np.array([m[1] for m in moves]) / diag
    zoom = np.array([m[2] for m in moves]) * mean_r / diag  # typical radial displacement, diag units
    step = np.hypot(tx, ty)
    translation = float(np.hypot(tx.mean(), ty.mean()))
    if max(float(step.mean()), abs(float(zoom.mean()))) < STILL:
        return "static"
    consistency = translation / float(step.mean()) if step.mean() > 0 else 1.0
    if abs(float(zoom.mean())) > translation:
        return "zoom_in" if zoom.mean() > 0 else "zoom_out"
    if consistency < 0.5:
        return "shaky"
    if abs(tx.mean()) >= abs(ty.mean()):
        return "pan_left" if tx.mean() > 0 else "pan_right"
    return "tilt_up" if ty.mean() > 0 else "tilt_down"


@register
class MotionScorer(ClipScorer):
    name = "motion"
    status_column = "motion_status"
    settings = MotionScoring
    columns = {"motion_score": pa.float64(), "camera_motion": pa.string(), "motion_status": pa.string()}
    gives = (TOO_STATIC, TOO_SHAKY)
    manifest_order = 20

    @classmethod
    def reasons(cls, row: Mapping[str, Any], th: Thresholds) -> list[str]:
        score = row.get("motion_score")
        out = [TOO_STATIC.name] if below(score, th.motion_min) else []
        if above(score, th.motion_max) or row.get("camera_motion") == "shaky":
            out.append(TOO_SHAKY.name)
        return out

    @property
    def cfg(self):
        return self.config.scoring.motion

    def flow_fn(self):
        if self.cfg.method == "dis":
            preset = getattr(cv2, f"DISOPTICAL_FLOW_PRESET_{self.cfg.dis_preset.upper()}", None)
            if preset is None:
                raise ValueError(f"unknown DIS preset {self.cfg.dis_preset!r}; choose ultrafast, fast or medium")
            dis = cv2.DISOpticalFlow_create(preset)
            return lambda prev, cur: dis.calc(prev, cur, None)
        if self.cfg.method == "farneback":
            levels = self.cfg.pyramid_levels
            return lambda prev, cur: cv2.calcOpticalFlowFarneback(prev, cur, None, 0.5, levels, 15, 3, 5, 1.2, 0)
        raise ValueError(f"unknown motion method {self.cfg.method!r}; choose 'dis' or 'farneback'")

    def score(self, frames: Frames) -> dict[str, Any]:
        h, w = frames[0][1].shape[:2]
        size = scaled_to((w, h), short_side=self.cfg.short_side)
        grays = [cv2.cvtColor(cv2.resize(img, size, interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2GRAY)
                 for _, img in frames]
        if len(grays) < 2:
            return {"motion_score": None, "camera_motion": None,
                    "motion_status": str(ScoreStatus.error("fewer than 2 taps"))}
        diag = float(np.hypot(*size))
        ys, xs = np.mgrid[0:size[1], 0:size[0]]
        mean_r = float(np.hypot(xs - (size[0] - 1) / 2, ys - (size[1] - 1) / 2).mean())
        magnitudes, moves, flow_of = [], [], self.flow_fn()
        for prev, cur in zip(grays, grays[1:], strict=False):
            flow = flow_of(prev, cur)
            magnitudes.append(float(np.hypot(flow[..., 0], flow[..., 1]).mean()) / diag)
            moves.append(global_motion(flow))
        return {"motion_score": round(float(np.mean(magnitudes)), 6),
                "camera_motion": camera_class(moves, diag, mean_r)}
