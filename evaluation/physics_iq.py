"""Physics-IQ metrics, exact to the public benchmark (google-deepmind/physics-IQ-benchmark).

Pure functions over uint8 frame arrays, no model inside:
- `change_fps`: the benchmark's linear-blend frame-rate changer (float32 blend, truncating uint8 cast);
- `motion_masks`: running-average background subtraction (blur 5x5, alpha 0.3, diff > 10, open + close 5x5);
  `mask_round_trip` reproduces upstream's mp4v write + read of every mask (off by default, see docs/eval.md);
- `prepare_frames` / `prepare_masks`: bilinear resize to a quarter of the first real take, frames / 255,
  masks > 127, first 5 s only;
- the four metrics (`spatiotemporal_iou`, `spatial_iou`, `weighted_spatial_iou`, `mse_per_frame`) and
  `view_metrics`, which computes generated-vs-take-1 values and the take-1-vs-take-2 physical variance.

The score variants over many views live in `physics_iq_score.py`.
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from vidmill.evaluation.video_io import read_video, write_video

SECONDS = 5
BLUR_KERNEL = (5, 5)
ACCUMULATE_ALPHA = 0.3
DIFF_THRESHOLD = 10
MORPH_KERNEL = np.ones((5, 5), np.uint8)
MASK_BINARY_CUT = 127
DOWNSCALE = 4


def change_fps(frames: np.ndarray, fps: float, fps_new: float, seconds: float = SECONDS) -> np.ndarray:
    """Frames at `fps_new` from the first min(seconds, duration) s of `frames` by blending neighbours.

    N source frames (those read from the first min(5, duration) s) -> M = int(min(5, duration) * fps_new);
    frame j blends idx = int(alpha) and min(idx + 1, N - 1) with alpha = j (N - 1) / (M - 1), in float32,
    then `astype(uint8)` truncates, as upstream does.
    """
    duration = len(frames) / fps
    sub = min(seconds, duration)
    src = frames[: int(sub * fps)]
    n, m = len(src), int(sub * fps_new)
    if n == 0 or m == 0:
        raise ValueError(f"nothing to resample: {n} source frames, {m} target frames")
    out = np.empty((m,) + src.shape[1:], np.uint8)
    for j in range(m):
        alpha = j * (n - 1) / (m - 1) if m > 1 else 0.0
        idx = int(alpha)
        w = alpha - idx
        a = src[idx].astype(np.float32)
        b = src[min(idx + 1, n - 1)].astype(np.float32)
        # Python-float * float32 array stays float32 (upstream's NumPy promotion).
        out[j] = ((1 - w) * a + w * b).astype(np.uint8)
    return out


def motion_masks(frames: np.ndarray) -> np.ndarray:
    """Binary motion masks {0, 255} (T, H, W) of BGR frames (T, H, W, 3); the first mask is all zeros."""
    masks = np.zeros(frames.shape[:3], np.uint8)
    gray = cv2.GaussianBlur(cv2.cvtColor(frames[0], cv2.COLOR_BGR2GRAY), BLUR_KERNEL, 0)
    avg = gray.astype("float")
    for t in range(1, len(frames)):
        gray = cv2.GaussianBlur(cv2.cvtColor(frames[t], cv2.COLOR_BGR2GRAY), BLUR_KERNEL, 0)
        cv2.accumulateWeighted(gray, avg, ACCUMULATE_ALPHA)
        diff = cv2.absdiff(gray, cv2.convertScaleAbs(avg))
        _, mask = cv2.threshold(diff, DIFF_THRESHOLD, 255, cv2.THRESH_BINARY)  # strictly greater than 10
        mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, MORPH_KERNEL)
        masks[t] = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, MORPH_KERNEL)
    return masks


def mask_round_trip(masks: np.ndarray, fps: float, workdir: str | Path | None = None) -> np.ndarray:
    """Upstream's lossy path: write the masks as mp4v at round(fps) (even width/height) and read them back (BGR)."""
    h, w = masks.shape[1] - masks.shape[1] % 2, masks.shape[2] - masks.shape[2] % 2
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        path = write_video(Path(tmp) / "mask.mp4", np.ascontiguousarray(masks[:, :h, :w]), round(fps), "mp4v")
        return read_video(path).frames


def target_size(first_real_frame: np.ndarray) -> tuple[int, int]:
    """(width, height) of the metric grid: a quarter of the first real take's first frame."""
    return first_real_frame.shape[1] // DOWNSCALE, first_real_frame.shape[0] // DOWNSCALE


def prepare_frames(frames: np.ndarray, size: tuple[int, int], n_frames: int) -> np.ndarray:
    """First `n_frames` frames resized (bilinear) to `size` and scaled to [0, 1] (float64, like `frame / 255.0`)."""
    return np.stack([cv2.resize(f, size) for f in frames[:n_frames]]) / 255.0


def prepare_masks(masks: np.ndarray, size: tuple[int, int], n_frames: int) -> np.ndarray:
    """First `n_frames` masks resized (bilinear) to `size` and binarised at > 127 to {0, 1} uint8."""
    return (np.stack([cv2.resize(m, size) for m in masks[:n_frames]]) > MASK_BINARY_CUT).astype(np.uint8)


def spatiotemporal_iou(m1: np.ndarray, m2: np.ndarray) -> list[float]:
    """Per-frame IoU of two mask sequences (zipped: the shorter one truncates); 1.0 when the union is empty."""
    t = min(len(m1), len(m2))
    a, b = m1[:t].reshape(t, -1).astype(bool), m2[:t].reshape(t, -1).astype(bool)
    inter = np.logical_and(a, b).sum(axis=1)
    union = np.logical_or(a, b).sum(axis=1)
    return [1.0 if u == 0 else float(i / u) for i, u in zip(inter, union, strict=False)]


def spatial_iou(m1: np.ndarray, m2: np.ndarray) -> float:
    """IoU of the 'ever moved' maps (max over each sequence's own frames > 0)."""
    return spatiotemporal_iou(m1.max(axis=0)[None] > 0, m2.max(axis=0)[None] > 0)[0]


def weighted_mask(masks: np.ndarray) -> np.ndarray:
    """Per-pixel fraction of frames that moved: sum_t mask_t / T (uint16 sum, like upstream)."""
    return np.sum(masks, axis=0, dtype=np.uint16) / len(masks)


def weighted_spatial_iou(m1: np.ndarray, m2: np.ndarray) -> float:
    """sum(min(W1, W2)) / sum(max(W1, W2)) over pixels where max > 0; 1.0 if none."""
    w1, w2 = weighted_mask(m1), weighted_mask(m2)
    union = np.maximum(w1, w2)
    valid = union > 0
    if not valid.any():
        return 1.0
    return float(np.sum(np.minimum(w1, w2)[valid]) / np.sum(union[valid]))


def mse_per_frame(v1: np.ndarray, v2: np.ndarray) -> list[float]:
    """Per-frame mean over H x W x 3 of (f1 - f2)^2 in float32 (zipped: the shorter video truncates)."""
    t = min(len(v1), len(v2))
    d = v1[:t].astype(np.float32) - v2[:t].astype(np.float32)
    return [float(x) for x in (d * d).reshape(t, -1).mean(axis=1)]


@dataclass
class ViewMetrics:
    """One scenario view: generated vs take 1 (what enters the score) and take 1 vs take 2 (physical variance)."""

    spatiotemporal_iou: list[float]
    spatial_iou: float
    weighted_spatial_iou: float
    mse: list[float]
    var_spatiotemporal_iou: list[float]
    var_spatial_iou: float
    var_weighted_spatial_iou: float
    var_mse: list[float]

    def to_dict(self) -> dict:
        return asdict(self)


def view_metrics(gen: np.ndarray, real1: np.ndarray, real2: np.ndarray, gen_masks: np.ndarray,
                 real1_masks: np.ndarray, real2_masks: np.ndarray) -> ViewMetrics:
    """All metrics of one view from prepared frames ([0, 1] floats) and prepared masks ({0, 1})."""
    return ViewMetrics(
        spatiotemporal_iou=spatiotemporal_iou(real1_masks, gen_masks),
        spatial_iou=spatial_iou(real1_masks, gen_masks),
        weighted_spatial_iou=weighted_spatial_iou(real1_masks, gen_masks),
        mse=mse_per_frame(real1, gen),
        var_spatiotemporal_iou=spatiotemporal_iou(real1_masks, real2_masks),
        var_spatial_iou=spatial_iou(real1_masks, real2_masks),
        var_weighted_spatial_iou=weighted_spatial_iou(real1_masks, real2_masks),
        var_mse=mse_per_frame(real1, real2),
    )


def masks_for(frames: np.ndarray, fps: float, round_trip: bool = False) -> np.ndarray:
    """Full-resolution motion masks of BGR frames, optionally through upstream's mp4v round trip."""
    masks = motion_masks(frames)
    return mask_round_trip(masks, fps) if round_trip else masks
