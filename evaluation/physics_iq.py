"""Physics-IQ metrics, exact to the public benchmark (google-deepmind/physics-IQ-benchmark).

Pure functions over uint8 frame arrays, no model inside:
- `change_fps`: the benchmark's linear-blend frame-rate changer (float32 blend, truncating uint8 cast);
- `motion_masks`: running-average background subtraction (blur 5x5, alpha 0.3, diff > 10, open + close 5x5);
  `mask_round_trip` reproduces upstream's mp4v write + read of every mask (off by default, see docs/eval.md);
- `prepare_frames` / `prepare_masks`: bilinear resize to a quarter of the first real take (frames stay uint8;
  the MSE divides by 255 as upstream), masks > 127, first 5 s only (`prepare_stream`: one pass over a video);
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


class MotionMasker:
    """Running-average motion masks, one BGR frame at a time: {0, 255} uint8 (H, W); the first mask is empty."""

    def __init__(self):
        self.avg: np.ndarray | None = None

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        gray = cv2.GaussianBlur(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY), BLUR_KERNEL, 0)
        if self.avg is None:
            self.avg = gray.astype("float")
            return np.zeros_like(gray, dtype=np.uint8)
        cv2.accumulateWeighted(gray, self.avg, ACCUMULATE_ALPHA)
        diff = cv2.absdiff(gray, cv2.convertScaleAbs(self.avg))
        _, mask = cv2.threshold(diff, DIFF_THRESHOLD, 255, cv2.THRESH_BINARY)  # strictly greater than 10
        mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, MORPH_KERNEL)
        return cv2.morphologyEx(mask, cv2.MORPH_CLOSE, MORPH_KERNEL)


def motion_masks(frames: np.ndarray) -> np.ndarray:
    """Binary motion masks {0, 255} (T, H, W) of BGR frames (T, H, W, 3); the first mask is all zeros."""
    masker = MotionMasker()
    return np.stack([masker(f) for f in frames])


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
    """First `n_frames` frames resized (bilinear) to `size`, kept uint8 (the metrics divide by 255.0)."""
    return np.stack([cv2.resize(f, size) for f in frames[:n_frames]])


def prepare_masks(masks: np.ndarray, size: tuple[int, int], n_frames: int) -> np.ndarray:
    """First `n_frames` masks resized (bilinear) to `size` and binarised at > 127 to {0, 1} uint8."""
    return (np.stack([cv2.resize(m, size) for m in masks[:n_frames]]) > MASK_BINARY_CUT).astype(np.uint8)


@dataclass
class Prepared:
    """A video reduced to what the metrics read: quarter-size uint8 frames and {0, 1} masks, first 5 s."""

    frames: np.ndarray
    masks: np.ndarray
    size: tuple[int, int]
    n_read: int  # frames decoded


def prepare_stream(frames, fps: float, n_frames: int, size: tuple[int, int] | None = None,
                   round_trip: bool = False, workdir: str | Path | None = None) -> Prepared:
    """One pass over an iterable of BGR frames: masks at full size, then resize; nothing full-size is kept.

    `size` None takes a quarter of the first frame (the first real take sets it for its view). With
    `round_trip` the full-size masks are written as mp4v (at round(fps), even width/height) and read back.
    """
    masker, small, masks, writer, n = MotionMasker(), [], [], None, 0
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        mask_path = Path(tmp) / "mask.mp4"
        for frame in frames:
            if size is None:
                size = target_size(frame)
            if n >= n_frames and not round_trip:  # masks are causal: later frames change nothing kept
                n += 1
                continue
            mask = masker(frame)
            if round_trip:
                if writer is None:
                    h, w = mask.shape[0] - mask.shape[0] % 2, mask.shape[1] - mask.shape[1] % 2
                    writer = cv2.VideoWriter(str(mask_path), cv2.VideoWriter_fourcc(*"mp4v"), round(fps), (w, h),
                                             isColor=False)
                writer.write(np.ascontiguousarray(mask[:h, :w]))
            else:
                masks.append(cv2.resize(mask, size) > MASK_BINARY_CUT)
            if n < n_frames:
                small.append(cv2.resize(frame, size))
            n += 1
        if n == 0:
            raise ValueError("no frames decoded")
        if writer is not None:
            writer.release()
            masks = [cv2.resize(m, size) > MASK_BINARY_CUT for m in read_video(mask_path, n_frames).frames]
    return Prepared(np.stack(small), np.stack(masks).astype(np.uint8), size, n)


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
    """Per-frame mean over H x W x 3 of (f1 - f2)^2 in float32 on [0, 1] pixels (zipped: the shorter truncates).

    uint8 inputs are scaled as upstream does (`frame / 255.0` in float64, then float32), one frame at a time.
    """
    out = []
    for f1, f2 in zip(v1, v2, strict=False):
        a = (f1 / 255.0 if f1.dtype == np.uint8 else f1).astype(np.float32)
        b = (f2 / 255.0 if f2.dtype == np.uint8 else f2).astype(np.float32)
        out.append(float(np.mean((a - b) ** 2)))
    return out


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
    """All metrics of one view from prepared frames (uint8 or [0, 1] floats) and prepared masks ({0, 1})."""
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
