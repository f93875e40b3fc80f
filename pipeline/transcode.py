"""Transcode clip spans to H.264 mp4 at a constant target frame rate and short side (PyAV).

A batch holds up to `clips_per_task` spans of one input: the input is opened and sought once, and
each output frame at time start + k / fps takes the latest source frame shown at that time.
Given a WorkDir, the worker publishes each clip file to OUTPUT itself (through its Store) and returns
only the sizes: no clip bytes travel back to the driver.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from fractions import Fraction

import av

from vidmill.pipeline.analysis.decode import DecodedFrame, DecodeError, VideoReader, scaled_to
from vidmill.pipeline.analysis.spans import ClipSpan
from vidmill.pipeline.config import CurateConfig
from vidmill.pipeline.output.workdir import WorkDir
from vidmill.pipeline.records import ClipRecord
from vidmill.pipeline.sources import open_input
from vidmill.pipeline.stage import Stage


@dataclass(frozen=True)
class ClipBatch:
    input_id: str
    source_uri: str
    clips: tuple[ClipSpan, ...]


@dataclass
class TranscodeResult:
    videos: dict[str, bytes] = field(default_factory=dict)  # only without a WorkDir (tests, tools)
    errors: dict[str, str] = field(default_factory=dict)
    frames_out: int = 0
    sizes: dict[str, int] = field(default_factory=dict)  # clip_id -> bytes of every clip made


def clip_batches(clips: list[ClipRecord], size: int) -> list[ClipBatch]:
    """Clips grouped by input, in batches of at most `size` spans (one seek per batch)."""
    by_input: dict[str, list[ClipRecord]] = {}
    for clip in clips:
        by_input.setdefault(clip.input_id, []).append(clip)
    batches = []
    for input_id, members in by_input.items():
        spans = [ClipSpan(c.clip_id, c.start_s, c.end_s) for c in sorted(members, key=lambda c: c.start_s)]
        batches += [ClipBatch(input_id, members[0].source_uri, tuple(spans[i:i + size]))
                    for i in range(0, len(spans), size)]
    return batches


class _ClipEncoder:
    def __init__(self, span: ClipSpan, size: tuple[int, int], fps: Fraction, cfg: CurateConfig,
                 audio: tuple[int, str] | None = None):
        self.span, self.fps = span, fps
        self.n_out = max(1, round((span.end_s - span.start_s) * fps))
        self.k = 0
        self.buffer = io.BytesIO()
        self.container = av.open(self.buffer, "w", format="mp4")
        self.stream = self.container.add_stream(cfg.transcode.codec, rate=fps)
        # Without an explicit codec time base PyAV rescales frame timestamps through an unset one, and
        # x264's rate control (mbtree) then sees different timestamps on every run: different bytes.
        self.stream.codec_context.time_base = 1 / fps
        self.stream.width, self.stream.height = size
        self.stream.pix_fmt = "yuv420p"
        self.stream.options = {"crf": str(cfg.transcode.crf), "preset": cfg.transcode.preset}
        self.audio = None  # (stream, fifo, samples written) when the clip keeps its audio
        if audio is not None:
            rate, layout = audio
            stream = self.container.add_stream("aac", rate=rate)
            stream.layout = layout
            self.audio = [stream, av.AudioFifo(), 0]

    def next_time(self) -> float:
        return self.span.start_s + self.k / float(self.fps)

    def done(self) -> bool:
        return self.k >= self.n_out

    def emit(self, frame: av.VideoFrame) -> None:
        frame.pts = self.k
        frame.time_base = 1 / self.fps
        self.container.mux(self.stream.encode(frame))
        self.k += 1

    def add_audio(self, frame: av.AudioFrame) -> None:
        """Samples of the span (fltp, the stream's layout and rate), encoded in the codec's frame size."""
        stream, fifo, _ = self.audio
        fifo.write(frame)
        while fifo.samples >= stream.codec_context.frame_size:
            self._encode_audio(fifo.read(stream.codec_context.frame_size))

    def _encode_audio(self, frame: av.AudioFrame) -> None:
        stream = self.audio[0]
        frame.pts, frame.time_base = self.audio[2], Fraction(1, stream.codec_context.sample_rate)
        self.audio[2] += frame.samples
        self.container.mux(stream.encode(frame))

    def close(self) -> bytes:
        self.container.mux(self.stream.encode(None))
        if self.audio is not None:
            rest = self.audio[1].read()
            if rest is not None:
                self._encode_audio(rest)
            self.container.mux(self.audio[0].encode(None))
        self.container.close()
        return self.buffer.getvalue()


class TranscodeClips(Stage):
    name = "transcode"

    def __init__(self, config: CurateConfig, work: WorkDir | None = None):
        super().__init__(config.ray.transcode)
        self.config, self.work = config, work

    def process(self, batch: ClipBatch) -> TranscodeResult:
        result = TranscodeResult()
        cfg = self.config
        fps = Fraction(cfg.transcode.fps).limit_denominator(1001)
        source = open_input(batch.source_uri, cfg.source.storage_options)
        try:
            with VideoReader(source, threads=cfg.decode.threads) as reader:
                probe = reader.probe
                size = scaled_to((probe.display_width, probe.display_height), cfg.transcode.short_side)
                audio = audio_format(reader.container) if cfg.transcode.audio == "aac" else None
                encoders = [_ClipEncoder(span, size, fps, cfg, audio) for span in batch.clips]
                start = min(s.start_s for s in batch.clips)
                end = max(s.end_s for s in batch.clips)
                shown: DecodedFrame | None = None
                for frame in reader.decoded(start_s=max(0.0, start - 1.0), end_s=end):
                    if shown is not None:
                        self._emit_until(encoders, frame.time_s, shown, size)
                    shown = frame
                if shown is not None:
                    self._emit_until(encoders, float("inf"), shown, size)
                if audio is not None:
                    copy_audio(reader.container, audio, [e for e in encoders if e.k], start, end)
                for enc in encoders:
                    if enc.k == 0:
                        result.errors[enc.span.clip_id] = "no frames in span"
                        enc.container.close()
                        continue
                    self._publish(result, batch.input_id, enc.span.clip_id, enc.close())
                    result.frames_out += enc.k
        except DecodeError as exc:
            for span in batch.clips:
                result.videos.pop(span.clip_id, None)
                if result.sizes.pop(span.clip_id, None) is not None and self.work is not None:
                    self.work.store.remove(self.work.clip_path(batch.input_id, span.clip_id))
                result.errors[span.clip_id] = f"transcode: {exc}"
        finally:
            if not isinstance(source, str):
                source.close()
        return result

    def _publish(self, result: TranscodeResult, input_id: str, clip_id: str, data: bytes) -> None:
        """A finished clip to OUTPUT (with a WorkDir) or into the result (without one)."""
        if self.work is not None:
            self.work.save_clip(input_id, clip_id, data)
        else:
            result.videos[clip_id] = data
        result.sizes[clip_id] = len(data)

    @staticmethod
    def _emit_until(encoders: list[_ClipEncoder], until_s: float, shown: DecodedFrame,
                    size: tuple[int, int]) -> None:
        """`shown` is on screen until `until_s`: it fills every output frame due before then."""
        frame = None
        for enc in encoders:
            while not enc.done() and enc.next_time() < until_s - 1e-6:
                if frame is None:
                    frame = shown.video_frame(size)
                enc.emit(frame)


def audio_format(container: av.container.InputContainer) -> tuple[int, str] | None:
    """(sample rate, layout) the clips' AAC track gets: the source's first audio stream's; None without one."""
    if not container.streams.audio:
        return None
    ctx = container.streams.audio[0].codec_context
    return ctx.sample_rate or 48000, "mono" if ctx.layout.nb_channels == 1 else "stereo"


def copy_audio(container: av.container.InputContainer, audio: tuple[int, str], encoders: list[_ClipEncoder],
               start: float, end: float) -> None:
    """Decode the source's audio over [start, end] once and hand each clip the samples of its span."""
    rate, layout = audio
    stream = container.streams.audio[0]
    resampler = av.AudioResampler(format="fltp", layout=layout, rate=rate)
    container.seek(max(0, int((start - 1.0) / stream.time_base)), stream=stream, backward=True)
    for packet_frame in container.decode(stream):
        if packet_frame.time is None:
            continue
        t0 = packet_frame.time
        if t0 > end:
            break
        for frame in resampler.resample(packet_frame):
            samples = frame.to_ndarray()  # [channels, n]
            for enc in encoders:
                lo = max(0, round((enc.span.start_s - t0) * rate))
                hi = min(samples.shape[1], round((enc.span.end_s - t0) * rate))
                if hi > lo:
                    part = av.AudioFrame.from_ndarray(samples[:, lo:hi].copy(), format="fltp", layout=layout)
                    part.sample_rate = rate
                    enc.add_audio(part)
            t0 += frame.samples / rate
