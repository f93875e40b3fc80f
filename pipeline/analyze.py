"""Per-input analysis: probe, decode once, detect shots, tap frames, cut candidate clip spans."""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from pipeline.config import CurateConfig
from pipeline.decode import DecodeError, VideoReader, scaled_to
from pipeline.shots import DETECTION_LONG_SIDE, Shot, ShotDetector
from pipeline.sources import InputRef, open_input
from pipeline.spans import clip_spans
from pipeline.stage import InputError, Stage


@dataclass
class FrameTaps:
    """Frames sampled at a fixed rate from the decode pass, JPEG-compressed to bound memory."""

    times_s: list[float] = field(default_factory=list)
    jpegs: list[bytes] = field(default_factory=list)

    def add(self, time_s: float, image: np.ndarray) -> None:
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 92])
        if ok:
            self.times_s.append(time_s)
            self.jpegs.append(buf.tobytes())

    def subset(self, start_s: float, end_s: float) -> FrameTaps:
        lo, hi = bisect.bisect_left(self.times_s, start_s), bisect.bisect_left(self.times_s, end_s)
        return FrameTaps(self.times_s[lo:hi], self.jpegs[lo:hi])

    def between(self, start_s: float, end_s: float) -> list[tuple[float, np.ndarray]]:
        lo, hi = bisect.bisect_left(self.times_s, start_s), bisect.bisect_left(self.times_s, end_s)
        return [(self.times_s[i], cv2.imdecode(np.frombuffer(self.jpegs[i], np.uint8), cv2.IMREAD_COLOR))
                for i in range(lo, hi)]


@dataclass
class Analysis:
    """What one input yields: its inputs.parquet row, its shots, its candidate clips, its taps."""

    input: dict[str, Any]
    shots: list[Shot] = field(default_factory=list)
    clips: list[dict[str, Any]] = field(default_factory=list)
    taps: FrameTaps = field(default_factory=FrameTaps)


def input_row(ref: InputRef, **values: Any) -> dict[str, Any]:
    row = {"input_id": ref.input_id, "source_uri": ref.source_uri, "size_bytes": ref.size_bytes,
           "status": "ok", "error": None, "duration_s": None, "n_shots": 0, "n_clips": 0, "fps": None,
           "width": None, "height": None, "rotation": None, "codec": None, "video_start_s": None}
    row.update(values)
    return row


def error_analysis(ref: InputRef, message: str) -> Analysis:
    return Analysis(input_row(ref, status="error", error=message))


class AnalyzeInput(Stage):
    name = "analyze"

    def __init__(self, config: CurateConfig):
        super().__init__(config.ray.analyze)
        self.config = config

    def process(self, ref: InputRef) -> Analysis:
        try:
            return self.analyze(ref)
        except (DecodeError, InputError) as exc:
            return error_analysis(ref, str(exc))

    def analyze(self, ref: InputRef) -> Analysis:
        cfg = self.config
        if ref.size_bytes == 0:
            raise InputError("empty file (0 bytes)")
        source = open_input(ref.source_uri, cfg.source.storage_options)
        try:
            with VideoReader(source, threads=cfg.decode.threads) as reader:
                probe = reader.probe
                display = (probe.display_width, probe.display_height)
                detector = ShotDetector(cfg.shots, probe.time_base, probe.fps)
                detect_size = scaled_to(display, long_side=DETECTION_LONG_SIDE)
                tap_size = scaled_to(display, short_side=cfg.decode.tap_short_side)
                taps, next_tap, end_s = FrameTaps(), 0.0, 0.0
                last_time, step = None, 1.0 / cfg.decode.tap_fps
                for frame in reader.decoded():
                    detector.add(frame.index, frame.pts, frame.time_s, frame.image(detect_size, "FAST_BILINEAR"))
                    if frame.time_s >= next_tap - 1e-6:
                        taps.add(frame.time_s, frame.image(tap_size, "AREA"))
                        next_tap = frame.time_s + step
                    end_s = max(end_s, frame.time_s + (frame.duration_s or (1.0 / probe.fps if probe.fps else 0.0)))
                    last_time = frame.time_s
                if last_time is None:
                    raise InputError("no decodable video frames")
        finally:
            if not isinstance(source, str):
                source.close()
        shots = detector.finish(end_s)
        clips = self.candidate_clips(ref, shots, detector.time_of_frame, (probe.display_width,
                                                                           probe.display_height))
        row = input_row(ref, duration_s=round(end_s, 6), n_shots=len(shots), n_clips=len(clips),
                        fps=probe.fps, width=probe.display_width, height=probe.display_height,
                        rotation=probe.rotation, codec=probe.codec, video_start_s=probe.video_start_s)
        return Analysis(row, shots, clips, taps)

    def candidate_clips(self, ref: InputRef, shots: list[Shot], frame_times: list[float],
                        display: tuple[int, int]) -> list[dict[str, Any]]:
        too_small = min(display) < self.config.spans.min_short_side
        clips = []
        for span in clip_spans(shots, self.config.spans):
            n_frames = bisect.bisect_left(frame_times, span.end_s - 1e-6) - \
                bisect.bisect_left(frame_times, span.start_s - 1e-6)
            reasons = list(span.reject_reasons) + (["too_small"] if too_small else [])
            clips.append({
                "clip_id": f"{ref.input_id}_{span.shot_index:04d}_{span.piece:02d}",
                "input_id": ref.input_id, "source_uri": ref.source_uri, "shot_index": span.shot_index,
                "start_s": span.start_s, "end_s": span.end_s, "duration_s": round(span.duration_s, 6),
                "fps": round(n_frames / span.duration_s, 3) if span.duration_s > 0 else 0.0,
                "width": display[0], "height": display[1], "reject_reasons": reasons,
            })
        return clips
