"""Per-input analysis: probe, decode once, detect shots, tap frames, cut candidate clip spans.

A long input is analysed in time ranges by several actors and joined (`InputRange`, `assemble`); one
range covering the whole input is the ordinary case.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from vidmill.pipeline.analysis.decode import DecodeError, Probe, VideoReader, scaled_to
from vidmill.pipeline.analysis.shots import ShotDetector, shots_from_cuts
from vidmill.pipeline.analysis.small_text import DetailTapper, detail_size
from vidmill.pipeline.analysis.spans import clip_spans
from vidmill.pipeline.config import CurateConfig
from vidmill.pipeline.outcomes import TOO_SMALL
from vidmill.pipeline.records import ClipRecord, InputRecord, InputResult, Shot
from vidmill.pipeline.sources import InputRef, open_input
from vidmill.pipeline.stage import InputError, Stage


@dataclass
class FrameTaps:
    """Frames sampled at a fixed rate from the decode pass, JPEG-compressed to bound memory.

    `details`: larger copies of the taps likely to hold small text, by tap time (see small_text.py)."""

    times_s: list[float] = field(default_factory=list)
    jpegs: list[bytes] = field(default_factory=list)
    details: dict[float, bytes] = field(default_factory=dict)

    def add(self, time_s: float, image: np.ndarray) -> None:
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 92])
        if ok:
            self.times_s.append(time_s)
            self.jpegs.append(buf.tobytes())

    def subset(self, start_s: float, end_s: float) -> FrameTaps:
        lo, hi = bisect.bisect_left(self.times_s, start_s), bisect.bisect_left(self.times_s, end_s)
        times = self.times_s[lo:hi]
        return FrameTaps(times, self.jpegs[lo:hi], {t: self.details[t] for t in times if t in self.details})

    def detail(self, time_s: float) -> np.ndarray | None:
        jpeg = self.details.get(time_s)
        return None if jpeg is None else cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)

    def between(self, start_s: float, end_s: float) -> list[tuple[float, np.ndarray]]:
        lo, hi = bisect.bisect_left(self.times_s, start_s), bisect.bisect_left(self.times_s, end_s)
        return [(self.times_s[i], cv2.imdecode(np.frombuffer(self.jpegs[i], np.uint8), cv2.IMREAD_COLOR))
                for i in range(lo, hi)]


@dataclass(frozen=True)
class StoredTaps:
    """Taps left in the object store by the analysis workers that put them: one `(ref, first, last tap time)`
    part per analysed range, and the time window `[start_s, end_s)` of the taps wanted.

    The driver only narrows the window (`subset`) and forwards the refs; a scorer worker `fetch`es the parts
    that overlap the window and gets the same FrameTaps as `FrameTaps.subset` would give.
    """

    parts: tuple[tuple[Any, float, float], ...] = ()
    start_s: float = -math.inf
    end_s: float = math.inf

    def subset(self, start_s: float, end_s: float) -> StoredTaps:
        start, end = max(start_s, self.start_s), min(end_s, self.end_s)
        return StoredTaps(tuple(p for p in self.parts if p[1] < end and p[2] >= start), start, end)

    def fetch(self, get: Callable[[list[Any]], list[FrameTaps]]) -> FrameTaps:
        """The window's taps; `get`: the object store's fetch of a list of refs (ray.get)."""
        joined = join_taps(get([p[0] for p in self.parts])) if self.parts else FrameTaps()
        return joined.subset(self.start_s, self.end_s)


def join_taps(parts: Sequence[FrameTaps | StoredTaps]) -> FrameTaps | StoredTaps:
    """The taps of an input's ranges (in time order) as one: FrameTaps in process, StoredTaps from workers."""
    stored = [p for p in parts if isinstance(p, StoredTaps)]
    if stored:
        if any(isinstance(p, FrameTaps) and p.times_s for p in parts):
            raise ValueError("an input's ranges mix taps in the object store with taps in memory")
        return StoredTaps(tuple(part for p in stored for part in p.parts))
    return FrameTaps([t for p in parts for t in p.times_s], [j for p in parts for j in p.jpegs],
                     {t: d for p in parts for t, d in p.details.items()})


def input_record(ref: InputRef, **values: Any) -> InputRecord:
    return InputRecord(ref.input_id, ref.source_uri, ref.size_bytes, source_version=ref.version, **values)


def error_result(ref: InputRef, message: str) -> InputResult:
    """An input that yields no clips: its row says why."""
    return InputResult(input_record(ref, status="error", error=message), taps=FrameTaps())


@dataclass(frozen=True)
class InputRange:
    """A time range of one input to analyse; `end_s` None: to the end of the stream.

    `split`: this is the first call on the input; when the probed duration is long, analyse only the
    first `decode.segment_s` and return the other ranges, so several actors share one long input.
    """

    ref: InputRef
    start_s: float = 0.0
    end_s: float | None = None
    split: bool = False


@dataclass
class RangeAnalysis:
    """What one range yields: its frames' times, the shot cuts and taps inside it, the ranges left."""

    range: InputRange
    probe: Probe | None = None
    frame_times: list[float] = field(default_factory=list)
    cut_times: list[float] = field(default_factory=list)
    taps: FrameTaps | StoredTaps = field(default_factory=FrameTaps)
    end_s: float = 0.0  # end of the last frame shown in the range
    rest: list[InputRange] = field(default_factory=list)
    error: str | None = None
    transient: bool = False  # the error's cause is outside the file (permissions, I/O): retried next run


class AnalyzeInput(Stage):
    name = "analyze"

    def __init__(self, config: CurateConfig):
        super().__init__(config.ray.analyze)
        self.config = config

    def process(self, item: InputRef | InputRange) -> InputResult | RangeAnalysis:
        """An InputRef is analysed whole into an InputResult; an InputRange gives a RangeAnalysis."""
        if isinstance(item, InputRange):
            return self.analyze_range(item)
        return self.assemble(item, [self.analyze_range(InputRange(item))])

    def offload(self, value: InputResult | RangeAnalysis, put: Callable[[Any], Any]) -> InputResult | RangeAnalysis:
        """In a worker: the taps go to the object store (`put`: ray.put, this actor owns them) and the driver
        gets a StoredTaps, so it forwards refs to the scorers instead of frames (issue 18)."""
        taps = value.taps
        if isinstance(taps, FrameTaps) and taps.times_s:
            value.taps = StoredTaps(((put(taps), taps.times_s[0], taps.times_s[-1]),))
        return value

    def analyze_range(self, rng: InputRange) -> RangeAnalysis:
        try:
            return self._analyze_range(rng)
        except (DecodeError, InputError) as exc:
            return RangeAnalysis(rng, error=str(exc), transient=getattr(exc, "transient", False))

    def _analyze_range(self, rng: InputRange) -> RangeAnalysis:
        cfg = self.config
        if rng.ref.problem:
            raise InputError(rng.ref.problem)
        if rng.ref.size_bytes == 0:
            raise InputError("empty file (0 bytes)")
        source = open_input(rng.ref.source_uri, cfg.source.storage_options)
        try:
            with VideoReader(source, threads=cfg.decode.threads) as reader:
                probe, rest = reader.probe, []
                if rng.split:
                    rng, rest = self.split(rng, probe)
                out = RangeAnalysis(rng, probe, rest=rest)
                self._decode(reader, rng, out)
        finally:
            if not isinstance(source, str):
                source.close()
        return out

    def split(self, rng: InputRange, probe: Probe) -> tuple[InputRange, list[InputRange]]:
        """[0, S) now and the rest as ranges on the tap grid; the last one open-ended (durations lie)."""
        step = self.config.decode.segment_s
        if not step or probe.duration_s <= 1.5 * step:
            return rng, []
        grid = self.config.decode.tap_fps
        bounds = [round(k * step * grid) / grid for k in range(round(probe.duration_s / step))]
        ends: list[float | None] = [*bounds[1:], None]
        ranges = [InputRange(rng.ref, a, b) for a, b in zip(bounds, ends, strict=True)]
        return ranges[0], ranges[1:]

    def _decode(self, reader: VideoReader, rng: InputRange, out: RangeAnalysis) -> None:
        """Decode the range plus a margin each side that only warms up and settles the detector, so
        cuts near the range's edges are found as in one pass over the whole input."""
        cfg, probe = self.config, out.probe
        fps = probe.fps or 24.0
        warm_s = (cfg.shots.min_scene_len + 2 * cfg.shots.window_width + 4) / fps + 1.0 if rng.start_s > 0 else 0.0
        settle_s = (2 * cfg.shots.window_width + 4) / fps + 1.0
        display = (probe.display_width, probe.display_height)
        detector = ShotDetector(cfg.shots, probe.time_base, probe.fps)
        tap_size = scaled_to(display, short_side=cfg.decode.tap_short_side)
        ocr = cfg.scoring.ocr
        details = DetailTapper(detail_size(display, tap_size, ocr.detail_short_side) if ocr.enabled else None,
                               ocr.detail_line_min, ocr.unchanged_max)
        tap_fps, next_tap = cfg.decode.tap_fps, rng.start_s
        start, end = rng.start_s - 1e-6, math.inf if rng.end_s is None else rng.end_s - 1e-6
        stop = None if rng.end_s is None else rng.end_s + settle_s
        for frame in reader.decoded(start_s=max(0.0, rng.start_s - warm_s), end_s=stop):
            detector.add_frame(frame)
            if not start <= frame.time_s < end:  # warm-up or settle margin: for the detector only
                continue
            out.frame_times.append(frame.time_s)
            if frame.time_s >= next_tap - 1e-6:  # first frame at or after each point of a fixed grid
                tap = frame.image(tap_size, "AREA")
                out.taps.add(frame.time_s, tap)
                detail = details.detail(tap, lambda size, f=frame: f.image(size, "AREA"))
                if detail is not None:
                    out.taps.details[frame.time_s] = detail
                next_tap = (math.floor(frame.time_s * tap_fps + 1e-6) + 1) / tap_fps
            out.end_s = max(out.end_s, frame.time_s + (frame.duration_s or (1.0 / probe.fps if probe.fps else 0.0)))
        out.cut_times = [t for t in detector.cut_times(final=rng.end_s is None) if start <= t < end]

    def assemble(self, ref: InputRef, parts: list[RangeAnalysis]) -> InputResult:
        """One input's result from its ranges (any order): shots across range edges are joined."""
        errors = [p.error for p in parts if p.error]
        if errors:
            return error_result(ref, errors[0])
        parts = sorted(parts, key=lambda p: p.range.start_s)
        frame_times = [t for p in parts for t in p.frame_times]
        if not frame_times:
            return error_result(ref, "no decodable video frames")
        taps = join_taps([p.taps for p in parts])
        end_s = max(p.end_s for p in parts)
        probe = parts[0].probe
        shots = shots_from_cuts(frame_times, [t for p in parts for t in p.cut_times], end_s)
        clips = self.candidate_clips(ref, shots, frame_times, (probe.display_width, probe.display_height))
        row = input_record(ref, duration_s=round(end_s, 6), n_shots=len(shots), n_clips=len(clips),
                           fps=probe.fps, width=probe.display_width, height=probe.display_height,
                           rotation=probe.rotation, codec=probe.codec, video_start_s=probe.video_start_s)
        return InputResult(row, shots, clips, taps)

    def candidate_clips(self, ref: InputRef, shots: list[Shot], frame_times: list[float],
                        display: tuple[int, int]) -> list[ClipRecord]:
        """A clip record per span: where a clip is born (its id, span, size, and span-level rejections)."""
        too_small = min(display) < self.config.spans.min_short_side
        clips = []
        for span in clip_spans(shots, self.config.spans):
            n_frames = bisect.bisect_left(frame_times, span.end_s - 1e-6) - \
                bisect.bisect_left(frame_times, span.start_s - 1e-6)
            reasons = list(span.reject_reasons) + ([TOO_SMALL.name] if too_small else [])
            clips.append(ClipRecord(
                clip_id=f"{ref.input_id}_{span.shot_index:04d}_{span.piece:02d}",
                input_id=ref.input_id, source_uri=ref.source_uri, shot_index=span.shot_index,
                start_s=span.start_s, end_s=span.end_s, duration_s=round(span.duration_s, 6),
                fps=round(n_frames / span.duration_s, 3) if span.duration_s > 0 else 0.0,
                width=display[0], height=display[1], kept=not reasons, reject_reasons=reasons))
        return clips
