"""Reading conditioning frames and writing a growing mp4 (PyAV).

`Mp4Writer` writes fragmented mp4 (empty moov, a fragment per frame, packets flushed), so a reader can play
the file while it grows: after `write(frames)` returns, every frame but the newest is on disk (an mp4
fragment closes when the next frame arrives), and `close` writes the rest.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import torch
import torch.nn.functional as F


class Mp4Writer:
    def __init__(self, path: str | Path, fps: int, width: int, height: int, codec: str = "libx264"):
        self.container = av.open(str(path), "w", options={
            "movflags": "frag_every_frame+empty_moov+default_base_moof", "flush_packets": "1"})
        self.stream = self.container.add_stream(codec, rate=fps, options={"tune": "zerolatency"})
        self.stream.width, self.stream.height, self.stream.pix_fmt = width, height, "yuv420p"
        self.frames = 0

    def write(self, frames: np.ndarray) -> None:
        """frames [n, H, W, 3] uint8 RGB."""
        for frame in frames:
            for packet in self.stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                self.container.mux(packet)
            self.frames += 1

    def close(self) -> None:
        for packet in self.stream.encode():
            self.container.mux(packet)
        self.container.close()


def read_frames(path: str | Path, max_frames: int | None = None) -> np.ndarray:
    """[n, H, W, 3] uint8 RGB frames of a video or image file (an image is one frame)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"conditioning file not found: {path}")
    try:
        with av.open(str(path)) as container:
            frames = []
            for frame in container.decode(video=0):
                frames.append(frame.to_ndarray(format="rgb24"))
                if max_frames is not None and len(frames) >= max_frames:
                    break
    except av.error.FFmpegError as exc:
        raise ValueError(f"cannot decode {path}: {exc}") from exc
    if not frames:
        raise ValueError(f"no video frames in {path}")
    return np.stack(frames)


def to_model_video(frames: np.ndarray, height: int, width: int) -> torch.Tensor:
    """[n, H, W, 3] uint8 -> [1, 3, n, height, width] in [-1, 1]: centre crop to the aspect, then resize."""
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 127.5 - 1  # [n, 3, H, W]
    h, w = x.shape[-2:]
    scale = min(h / height, w / width)
    ch, cw = round(height * scale), round(width * scale)
    top, left = (h - ch) // 2, (w - cw) // 2
    x = x[:, :, top:top + ch, left:left + cw]
    if (ch, cw) != (height, width):
        x = F.interpolate(x, size=(height, width), mode="bilinear", antialias=True, align_corners=False)
    return x.clamp(-1, 1).permute(1, 0, 2, 3)[None]


def to_uint8_frames(video: torch.Tensor) -> np.ndarray:
    """[3, n, H, W] in [-1, 1] -> [n, H, W, 3] uint8."""
    x = ((video.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(1, 2, 3, 0).cpu().numpy()
