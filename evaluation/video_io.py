"""Video files in and out, the way the public benchmark scripts read them (OpenCV, BGR uint8).

Physics-IQ's scripts read every video with `cv2.VideoCapture`; reading with the same decoder keeps
the frames identical to upstream. VBench reads RGB; callers convert with `bgr_to_rgb`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np


@dataclass
class Video:
    frames: np.ndarray  # (T, H, W, 3) uint8 BGR, or (T, H, W) for single-channel masks
    fps: float

    @property
    def duration_s(self) -> float:
        return len(self.frames) / self.fps if self.fps else 0.0


def read_video(path: str | Path, max_frames: int | None = None) -> Video:
    """Decode `path` with OpenCV (BGR uint8). Raises ValueError when nothing can be decoded."""
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise ValueError(f"cannot open video {path}")
    fps = float(cap.get(cv2.CAP_PROP_FPS))
    frames = []
    while max_frames is None or len(frames) < max_frames:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    if not frames:
        raise ValueError(f"no frames decoded from {path}")
    return Video(np.stack(frames), fps)


def stream_video(path: str | Path) -> tuple[float, Iterator[np.ndarray]]:
    """(fps, frames one at a time): decode without holding the whole video. Raises ValueError if unopenable."""
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise ValueError(f"cannot open video {path}")

    def frames() -> Iterator[np.ndarray]:
        try:
            while True:
                ok, frame = cap.read()
                if not ok:
                    return
                yield frame
        finally:
            cap.release()

    return float(cap.get(cv2.CAP_PROP_FPS)), frames()


def write_video(path: str | Path, frames: np.ndarray, fps: float, fourcc: str = "mp4v") -> Path:
    """Write uint8 frames (T, H, W, 3) BGR or (T, H, W) gray with OpenCV's writer."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    color = frames.ndim == 4
    h, w = frames.shape[1:3]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (w, h), isColor=color)
    if not writer.isOpened():
        raise ValueError(f"cannot open a {fourcc} writer for {path}")
    for frame in frames:
        writer.write(np.ascontiguousarray(frame))
    writer.release()
    return path


def bgr_to_rgb(frames: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(frames[..., ::-1])
