"""Open and probe a video once, then decode it once into a reduced, upright analysis stream.

Times are seconds on the container's presentation timeline (0 = container start), taken from each
frame's PTS, so variable frame rate and video streams that start after the audio keep true times.
Frames come out as displayed: sample aspect ratio applied, rotation metadata undone.
"""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import IO

import av
import numpy as np
from av.video.reformatter import VideoReformatter


class DecodeError(RuntimeError):
    """An input that cannot be opened or decoded; the message goes into its error row.

    `transient`: the cause lies outside the file's content (permissions, I/O, a vanished file), so a
    later run retries the input instead of resuming its error row.
    """

    def __init__(self, message: str, transient: bool = False):
        super().__init__(message)
        self.transient = transient


TRANSIENT_ERRNOS = {errno.EACCES, errno.EPERM, errno.ENOENT, errno.EIO, errno.ETIMEDOUT, errno.ECONNRESET,
                    errno.EAGAIN, errno.ESTALE}


def _environmental(exc: BaseException) -> bool:
    """An OS-level failure to reach the file (permission, I/O, network), not a fault of its content."""
    return isinstance(exc, (PermissionError, FileNotFoundError, ConnectionError, TimeoutError)) or \
        getattr(exc, "errno", None) in TRANSIENT_ERRNOS


@dataclass(frozen=True)
class Probe:
    width: int  # coded size
    height: int
    display_width: int  # after SAR and rotation
    display_height: int
    rotation: int  # degrees counter-clockwise the stored picture must turn to display
    sar: Fraction
    fps: float  # average rate (VFR: frames / duration)
    duration_s: float
    video_start_s: float  # first video PTS on the container timeline
    time_base: Fraction
    codec: str


def _rotation_of(stream: av.video.stream.VideoStream, first: av.VideoFrame | None) -> int:
    if first is not None and first.rotation:
        return int(first.rotation) % 360
    with contextlib.suppress(Exception):
        return int(stream.metadata.get("rotate", 0)) % 360
    return 0


def display_size(width: int, height: int, sar: Fraction, rotation: int) -> tuple[int, int]:
    w = round(width * sar) if sar and sar != 1 else width
    w -= w % 2
    return (height, w) if rotation in (90, 270) else (w, height)


def scaled_to(size: tuple[int, int], short_side: int | None = None,
              long_side: int | None = None) -> tuple[int, int]:
    """(w, h) scaled down so the short (or long) side is at most the given length, both even."""
    w, h = size
    side = min(w, h) if short_side else max(w, h)
    limit = short_side or long_side
    if limit and side > limit:
        factor = limit / side
        w, h = round(w * factor), round(h * factor)
    return max(2, w - w % 2), max(2, h - h % 2)


def upright(image: np.ndarray, rotation: int) -> np.ndarray:
    """Undo the display matrix: rotation is counter-clockwise degrees, as PyAV reports it."""
    turns = (rotation // 90) % 4
    return np.ascontiguousarray(np.rot90(image, k=turns)) if turns else image


class VideoReader:
    """One open input. Use as a context manager; `probe` is filled on open."""

    def __init__(self, source: str | IO[bytes], threads: int = 0):
        self.source = source
        self.threads = threads
        self.container: av.container.InputContainer | None = None
        self.probe: Probe | None = None
        self.scalers: dict[tuple, VideoReformatter] = {}  # one cached swscale context per size and filter

    def __enter__(self) -> VideoReader:
        try:
            self.container = av.open(self.source, "r", metadata_errors="ignore")
        except (av.FFmpegError, OSError, ValueError) as exc:
            raise DecodeError(f"cannot open: {exc}", transient=_environmental(exc)) from exc
        if not self.container.streams.video:
            raise DecodeError("no video stream")
        self.stream = self.container.streams.video[0]
        self.stream.thread_type = "AUTO"
        if self.threads:
            self.stream.codec_context.thread_count = self.threads
        self.probe = self._probe()
        self._learn_rotation()
        return self

    def _learn_rotation(self) -> None:
        """Newer FFmpeg reports the display matrix on frames only: decode one, then rewind."""
        try:
            first = next(self.container.decode(self.stream), None)
        except av.FFmpegError as exc:
            raise DecodeError(f"cannot decode: {exc}") from exc
        if first is None:
            raise DecodeError("no decodable video frames")
        if first.rotation and int(first.rotation) % 360 != self.probe.rotation:
            self.probe = _replace_rotation(self.probe, int(first.rotation) % 360)
        self.container.seek(self.stream.start_time or 0, stream=self.stream, backward=True, any_frame=False)

    def __exit__(self, *exc: object) -> None:
        if self.container is not None:
            self.container.close()

    def _container_start(self) -> Fraction:
        start = self.container.start_time  # microseconds, may be None
        return Fraction(start or 0, 1_000_000)

    def _probe(self) -> Probe:
        stream = self.stream
        ctx = stream.codec_context
        if not ctx.width or not ctx.height:
            raise DecodeError("video stream has no frame size")
        time_base = Fraction(stream.time_base or Fraction(1, 90000))
        rate = stream.average_rate or stream.guessed_rate
        duration = None
        if stream.duration:
            duration = float(stream.duration * time_base)
        elif self.container.duration:
            duration = self.container.duration / 1_000_000
        video_start = 0.0
        if stream.start_time is not None:
            video_start = float(stream.start_time * time_base - self._container_start())
        sar = Fraction(ctx.sample_aspect_ratio or 1) or Fraction(1)
        rotation = _rotation_of(stream, None)
        dw, dh = display_size(ctx.width, ctx.height, sar, rotation)
        return Probe(width=ctx.width, height=ctx.height, display_width=dw, display_height=dh,
                     rotation=rotation, sar=sar, fps=float(rate) if rate else 0.0,
                     duration_s=float(duration or 0.0), video_start_s=max(0.0, video_start),
                     time_base=time_base, codec=ctx.name)

    def _seek_before(self, start_s: float, offset: Fraction, offset_pts: int) -> None:
        """Seek to a keyframe at or before `start_s`. A container without a usable index can land
        after it, which would silently lose frames: then decode from the start instead."""
        target = int((Fraction(start_s) + offset) / self.probe.time_base)
        self.container.seek(target, stream=self.stream, backward=True, any_frame=False)
        try:
            first = next((f for f in self.container.decode(self.stream) if f.pts is not None), None)
        except av.FFmpegError as exc:
            raise DecodeError(f"cannot decode after seeking to {start_s:.3f}s: {exc}") from exc
        landed = None if first is None else (first.pts - offset_pts) * float(self.probe.time_base)
        if landed is None or landed <= start_s + 1e-6:  # None: nothing after it, as asked
            self.container.seek(target, stream=self.stream, backward=True, any_frame=False)
        else:
            self.container.seek(self.stream.start_time or 0, stream=self.stream, backward=True, any_frame=False)

    def decoded(self, start_s: float = 0.0, end_s: float | None = None) -> Iterator[DecodedFrame]:
        """Every frame whose time lies in [start_s, end_s), in presentation order, not yet converted."""
        assert self.probe is not None
        offset = self._container_start()
        offset_pts = int(offset / self.probe.time_base)
        seconds_per_tick = float(self.probe.time_base)
        if start_s > 0:
            self._seek_before(start_s, offset, offset_pts)
        index, time_s = 0, start_s
        try:
            for frame in self.container.decode(self.stream):
                if frame.pts is None:
                    continue
                pts = frame.pts - offset_pts
                time_s = pts * seconds_per_tick
                if time_s < start_s - 1e-6:
                    continue
                if end_s is not None and time_s >= end_s - 1e-6:
                    break
                yield DecodedFrame(index, time_s, pts, frame, self.probe, self.scalers)
                index += 1
        except av.FFmpegError as exc:
            if index == 0:
                raise DecodeError(f"cannot decode: {exc}") from exc
            raise DecodeError(f"decode failed after {index} frames at {time_s:.3f}s: {exc}") from exc


@dataclass(frozen=True)
class DecodedFrame:
    index: int
    time_s: float
    pts: int  # in Probe.time_base, relative to container start
    frame: av.VideoFrame
    probe: Probe
    scalers: dict[tuple, VideoReformatter]

    @property
    def duration_s(self) -> float:
        return self.frame.duration * float(self.probe.time_base) if self.frame.duration else 0.0

    def image(self, size: tuple[int, int], interpolation: str = "BILINEAR") -> np.ndarray:
        """The frame as displayed, scaled to `size` = (width, height) of the upright picture (BGR).

        BILINEAR (swscale's, whose filter widens with the downscale factor) for output clips; AREA for
        analysis frames; FAST_BILINEAR (fixed two taps) for the opt-in fast shot-detection path
        (`shots.frame_scaling: fast`; the default prepares frames as PySceneDetect does, see shots.py).
        """
        rotation = self.probe.rotation
        coded = size if rotation not in (90, 270) else (size[1], size[0])
        return upright(self._scaled(coded, "bgr24", interpolation).to_ndarray(), rotation)

    def picture(self) -> np.ndarray:
        """The stored picture at full resolution, upright, BGR, sample aspect ratio not applied: the
        frame exactly as OpenCV's reader (and PyAV's `to_ndarray`) gives it, so as PySceneDetect sees it."""
        size = (self.frame.width, self.frame.height)
        return upright(self._scaled(size, "bgr24", "BILINEAR").to_ndarray(), self.probe.rotation)

    def video_frame(self, size: tuple[int, int], interpolation: str = "BILINEAR") -> av.VideoFrame:
        """The frame as displayed at `size`, in yuv420p for an encoder. An upright input is scaled in
        one swscale call with no BGR round trip (about 40 % cheaper per transcoded frame from 1080p)."""
        if self.probe.rotation % 360 == 0:
            return self._scaled(size, "yuv420p", interpolation)
        return av.VideoFrame.from_ndarray(self.image(size, interpolation), format="bgr24")

    def _scaled(self, size: tuple[int, int], pix_fmt: str, interpolation: str) -> av.VideoFrame:
        scaler = self.scalers.setdefault((*size, pix_fmt, interpolation), VideoReformatter())
        return scaler.reformat(self.frame, width=size[0], height=size[1], format=pix_fmt,
                               interpolation=interpolation)


def _replace_rotation(probe: Probe, rotation: int) -> Probe:
    dw, dh = display_size(probe.width, probe.height, probe.sar, rotation)
    return Probe(**{**probe.__dict__, "rotation": rotation, "display_width": dw, "display_height": dh})
