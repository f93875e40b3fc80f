"""Transcoded clips show the source picture as displayed: upright, SAR applied, at the right times."""

from __future__ import annotations

import io

import av
import numpy as np
import pytest

from vidmill.pipeline.analysis.decode import VideoReader
from vidmill.pipeline.analysis.spans import ClipSpan
from vidmill.pipeline.config import CurateConfig
from vidmill.pipeline.transcode import ClipBatch, TranscodeClips


def source_images(path: str, times: list[float], size: tuple[int, int]) -> list[np.ndarray]:
    """The source frame on screen at each time, as displayed, scaled to `size` (BGR)."""
    with VideoReader(path) as reader:
        frames = list(reader.decoded())
    return [next(f for f in reversed(frames) if f.time_s <= t + 1e-6).image(size) for t in times]


@pytest.mark.parametrize("name", ["cuts.mp4", "rotated.mp4", "anamorphic.mp4", "vfr.mp4"])
def test_clip_frames_match_the_source_as_displayed(samples, name):
    config = CurateConfig()
    path = str(samples / name)
    span = ClipSpan("clip", 0.5, 2.0)
    result = TranscodeClips(config).process(ClipBatch("input", path, (span,)))
    assert not result.errors
    with av.open(io.BytesIO(result.videos["clip"])) as container:
        stream = container.streams.video[0]
        out = [f.to_ndarray(format="bgr24") for f in container.decode(stream)]
        size = (stream.width, stream.height)
    assert len(out) == round(1.5 * config.transcode.fps)
    with VideoReader(path) as reader:
        display = (reader.probe.display_width, reader.probe.display_height)
    assert (size[0] > size[1]) == (display[0] > display[1])
    picks = [0, len(out) // 2, len(out) - 1]
    times = [span.start_s + k / config.transcode.fps for k in picks]
    expected = source_images(path, times, size)
    later = source_images(path, [t + 0.25 for t in times], size)  # the content moves: a wrong time shows
    for k, want, other in zip(picks, expected, later, strict=True):
        diff = np.abs(out[k].astype(np.int16) - want.astype(np.int16)).mean()
        assert diff < 6.0, (name, k, diff)  # H.264 at crf 23 on busy synthetic frames; a flip gives ~70
        assert diff < np.abs(out[k].astype(np.int16) - other.astype(np.int16)).mean()


def test_audio_is_dropped_by_default_and_kept_as_aac_on_request(samples):
    """A source with audio (late_start.mp4: its audio starts 1 s before its video): clips are video-only
    by default; `transcode.audio=aac` gives each clip its span's audio, as long as the video (AAC priming
    and frame size allow one 1024-sample frame more)."""
    from vidmill.pipeline.config import load_config

    spans = (ClipSpan("a", 0.25, 2.25), ClipSpan("b", 2.75, 5.75))
    batch = ClipBatch("x", str(samples / "late_start.mp4"), spans)
    plain = TranscodeClips(CurateConfig()).process(batch)
    assert [s.type for s in av.open(io.BytesIO(plain.videos["a"])).streams] == ["video"]
    kept = TranscodeClips(load_config(None, ["transcode.audio=aac"])).process(batch)
    for span in spans:
        container = av.open(io.BytesIO(kept.videos[span.clip_id]))
        assert [s.type for s in container.streams] == ["video", "audio"]
        rate = container.streams.audio[0].codec_context.sample_rate
        samples_out = sum(f.samples for f in container.decode(audio=0))
        assert abs(samples_out - (span.end_s - span.start_s) * rate) <= 1024 + 16
