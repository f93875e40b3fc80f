"""VBench I2V: the nine dimensions' formulas, the published normalisation, weights and totals. No model inside.

Models hand in features, flows, interpolated frames, scores or tracks (see vbench_models.py); the formulas
here follow the public VBench code (constants in shared/reference/evaluation.md).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from math import ceil

import cv2
import numpy as np
import torch
import torch.nn.functional as F

DIMENSIONS = ("i2v_subject", "i2v_background", "subject_consistency", "background_consistency", "motion_smoothness",
              "dynamic_degree", "aesthetic_quality", "imaging_quality", "camera_motion")
QUALITY = ("subject_consistency", "background_consistency", "motion_smoothness", "dynamic_degree",
           "aesthetic_quality", "imaging_quality")
I2V = ("camera_motion", "i2v_subject", "i2v_background")
NORMALISATION = {"camera_motion": (0.0, 1.0), "i2v_subject": (0.1462, 1.0), "subject_consistency": (0.1462, 1.0),
                 "i2v_background": (0.2615, 1.0), "background_consistency": (0.2615, 1.0),
                 "motion_smoothness": (0.7060, 0.9975), "dynamic_degree": (0.0, 1.0), "aesthetic_quality": (0.0, 1.0),
                 "imaging_quality": (0.0, 1.0)}
WEIGHTS = {d: 1.0 for d in DIMENSIONS} | {"camera_motion": 0.1, "dynamic_degree": 0.5}
I2V_WEIGHTS = (0.4, 0.3, 0.3)  # max conformity to the image, mean and min of consecutive similarity


def _cos(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """Row-wise cosine similarity clamped at 0 (upstream: max(0.0, F.cosine_similarity(...).item()))."""
    return np.maximum(F.cosine_similarity(a, b, dim=-1).double().numpy(), 0.0)


def i2v_consistency(image_feature: torch.Tensor, frame_features: torch.Tensor) -> float:
    """0.4 max_i cos(img, f_i) + 0.3 mean_i cos(f_{i-1}, f_i) + 0.3 min_i cos(f_{i-1}, f_i) on normalised features."""
    img = F.normalize(image_feature.reshape(1, -1).float(), dim=-1, p=2)
    f = F.normalize(frame_features.float(), dim=-1, p=2)
    conformity = _cos(img.expand_as(f), f)
    consec = _cos(f[:-1], f[1:])
    w_max, w_mean, w_min = I2V_WEIGHTS
    return float(w_max * np.max(conformity) + w_mean * np.mean(consec) + w_min * np.min(consec))


def frame_consistency(frame_features: torch.Tensor) -> tuple[float, int]:
    """(sum over frames i >= 1 of (cos(f_{i-1}, f_i) + cos(f_0, f_i))/2, count): frame-weighted aggregation."""
    f = F.normalize(frame_features.float(), dim=-1, p=2)
    prev, first = _cos(f[:-1], f[1:]), _cos(f[:1].expand(len(f) - 1, -1), f[1:])
    return float(sum((p + q) / 2 for p, q in zip(prev.tolist(), first.tolist(), strict=False))), len(f) - 1


def motion_smoothness(frames: np.ndarray, interpolate: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> float:
    """(255 - mean abs diff)/255 between odd frames and their interpolation from even neighbours (uint8 RGB)."""
    even = frames[0::2]
    if len(even) < 2:
        raise ValueError("motion smoothness needs at least 3 frames")
    predicted = [interpolate(a, b) for a, b in zip(even[:-1], even[1:], strict=False)]
    odd = frames[1::2]
    diffs = [float(np.mean(cv2.absdiff(odd[i], predicted[i]))) for i in range(len(predicted))]
    return (255.0 - float(np.mean(diffs))) / 255.0


def sample_interval(fps: float) -> int:
    """Every max(1, round(fps / 8)) frames (Python's round: half to even)."""
    return max(1, round(fps / 8))


def top5_flow_magnitude(flow: np.ndarray) -> float:
    """Mean of the top 5 % flow magnitudes of a (2, H, W) flow: int(H W 0.05) largest values."""
    rad = np.sqrt(np.square(flow[0]) + np.square(flow[1]))
    cut = int(rad.size * 0.05)
    return float(np.mean(np.abs(np.sort(-rad.ravel()))[:cut]))


def is_dynamic(pair_scores: Sequence[float], n_sampled: int, min_hw: int) -> bool:
    """Dynamic if at least round(4 N / 16) pairs have a top-5 % magnitude strictly above 6 min(H, W) / 256."""
    thres = 6.0 * (min_hw / 256.0)
    count_num = round(4 * (n_sampled / 16.0))
    count = 0
    for score in pair_scores:
        if score > thres:
            count += 1
        if count >= count_num:
            return True
    return False


def longer_side_size(h: int, w: int, limit: int = 512) -> tuple[int, int]:
    """Imaging quality's 'longer' preprocessing: scale the long side to `limit` if larger (int truncation)."""
    if max(h, w) <= limit:
        return h, w
    scale = limit / max(h, w)
    return int(scale * h), int(scale * w)


# Camera motion (CoTracker2 grid 10, one mid point per edge)
GRID = 10
_TOP_DOWN = {"left_left": "pan_right", "right_right": "pan_left", "down_down": "tilt_up", "up_up": "tilt_down",
             "up_down": "zoom_in", "down_up": "zoom_out", "static_static": "static"}
_LEFT_RIGHT = {"left_left": "pan_right", "right_right": "pan_left", "down_down": "tilt_up", "up_up": "tilt_down",
               "left_right": "zoom_in", "right_left": "zoom_out", "static_static": "static"}
CAMERA_TYPES = {"camera pans left": "pan_left", "camera pans right": "pan_right", "camera tilts up": "tilt_up",
                "camera tilts down": "tilt_down", "camera zooms in": "zoom_in", "camera zooms out": "zoom_out",
                "camera static": "static"}


def _direction(vector: Sequence[float], min_hw: int, factor: float = 0.005) -> list[str]:
    scale = min_hw * factor
    x, y = vector
    out = []
    if x > scale:
        out.append("right")
    elif x < -scale:
        out.append("left")
    if y > scale:
        out.append("down")
    elif y < -scale:
        out.append("up")
    return out or ["static"]


def _edge_points(track: np.ndarray, number: int = 1) -> list[np.ndarray]:
    middle, half = GRID // 2, number / 2.0
    idx = range(ceil(middle - half), ceil(middle + half))
    return [np.array([track[0, i] for i in idx]), np.array([track[GRID - 1, i] for i in idx]),
            np.array([track[i, 0] for i in idx]), np.array([track[i, GRID - 1] for i in idx])]


def classify_camera(first: np.ndarray, last: np.ndarray, min_hw: int) -> list[str]:
    """Camera motion classes from integer grid tracks (GRID, GRID, 2) (x, y) of the first and last frame."""
    dirs = []
    for p1, p2 in zip(_edge_points(first), _edge_points(last), strict=False):
        v = (p2 - p1).astype(np.float64)
        dirs.append(_direction([float(np.mean(v[:, 0])), float(np.mean(v[:, 1]))], min_hw))
    top, down, left, right = dirs
    td = [_TOP_DOWN[f"{a}_{b}"] for a in top for b in down if f"{a}_{b}" in _TOP_DOWN] or ["None"]
    lr = [_LEFT_RIGHT[f"{a}_{b}"] for a in left for b in right if f"{a}_{b}" in _LEFT_RIGHT] or ["None"]
    results = sorted(set(td + lr))
    for drop in ("static", "None"):
        if drop in results and len(results) > 1:
            results.remove(drop)
    return results


def camera_type(name: str) -> str | None:
    """The prompted camera motion from a video's file name (upstream matches the prompt text in the name)."""
    for text, kind in CAMERA_TYPES.items():
        if text in name:
            return kind
    return None


def normalise(dimension: str, value: float) -> float:
    lo, hi = NORMALISATION[dimension]
    return (value - lo) / (hi - lo)


def totals(scores: dict[str, float | None]) -> dict:
    """Quality, I2V and Total from the dimensions that were computed; each says what it includes.

    With every dimension present these are the published formulas (Quality / 5.5, I2V / 2.1, Total the mean).
    A missing dimension is left out and the weights renormalised over those present (upstream scores it 0).
    """
    def group(dims: tuple[str, ...]) -> dict:
        present = [d for d in dims if scores.get(d) is not None]
        missing = [d for d in dims if scores.get(d) is None]
        if not present:
            return {"score": None, "includes": [], "missing": missing, "complete": False}
        num = sum(WEIGHTS[d] * normalise(d, scores[d]) for d in present)
        return {"score": num / sum(WEIGHTS[d] for d in present), "includes": present, "missing": missing,
                "complete": not missing}

    quality, i2v = group(QUALITY), group(I2V)
    total = None if quality["score"] is None or i2v["score"] is None else (quality["score"] + i2v["score"]) / 2
    return {"quality": quality, "i2v": i2v,
            "total": {"score": total, "includes": quality["includes"] + i2v["includes"],
                      "missing": quality["missing"] + i2v["missing"],
                      "complete": quality["complete"] and i2v["complete"]}}
