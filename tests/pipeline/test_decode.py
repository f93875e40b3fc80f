"""Decode once: true timestamps on VFR, rotation and SAR applied, late-starting streams, bad files."""

from __future__ import annotations

import numpy as np
import pytest

from vidmill.pipeline.analysis.decode import DecodeError, VideoReader, scaled_to


def frames(path, short_side=None):
    with VideoReader(str(path)) as reader:
        probe = reader.probe
        size = scaled_to((probe.display_width, probe.display_height), short_side)
        return probe, [(f.time_s, f.image(size)) for f in reader.decoded()]


def test_vfr_keeps_true_timestamps(samples):
    probe, got = frames(samples / "vfr.mp4")
    times = np.array([t for t, _ in got])
    gaps = np.diff(times)
    # 30 fps in even seconds, 12 fps in odd seconds: both intervals occur (PTS are in ms here)
    assert np.sum(np.abs(gaps - 1 / 30) < 1e-3) >= 80 and np.sum(np.abs(gaps - 1 / 12) < 1e-3) >= 30
    assert len(times) == 3 * 30 + 3 * 12
    assert times[30 + 12] == pytest.approx(2.0, abs=1e-3)  # first frame of second 2


def test_rotation_metadata_gives_upright_display_frames(samples, truth):
    probe, got = frames(samples / "rotated.mp4")
    assert probe.rotation == 90
    assert (probe.display_width, probe.display_height) == tuple(truth["rotated.mp4"]["display_size"])
    image = got[0][1]
    assert image.shape[:2] == (448, 256)  # height, width of the upright picture
    # the stored (landscape) frame, turned 90 degrees counter-clockwise, is what we return
    with VideoReader(str(samples / "rotated.mp4")) as reader:
        raw = next(reader.decoded()).frame.to_ndarray(format="bgr24")
    assert np.abs(np.rot90(raw).astype(int) - image.astype(int)).mean() < 2


def test_non_square_pixels_are_stretched_to_display_aspect(samples):
    probe, got = frames(samples / "anamorphic.mp4")
    assert (probe.width, probe.height) == (336, 256)
    assert (probe.display_width, probe.display_height) == (448, 256)
    assert got[0][1].shape[:2] == (256, 448)


def test_late_start_stream_times_are_on_the_container_timeline(samples):
    probe, got = frames(samples / "late_start.mp4")
    assert probe.video_start_s == pytest.approx(1.0, abs=1e-3)
    assert got[0][0] == pytest.approx(1.0, abs=1e-3)


def test_short_side_scaling_never_upscales(samples):
    _, got = frames(samples / "portrait.mp4", short_side=128)
    assert got[0][1].shape[:2] == (224, 128)
    assert scaled_to((448, 256), short_side=512) == (448, 256)


class LateSeeks:
    """A container whose every seek past the start lands `ticks` late, like one without an index."""

    def __init__(self, container, ticks: int):
        self.container, self.ticks = container, ticks

    def seek(self, pts: int, **kwargs):
        return self.container.seek(pts + self.ticks if pts > 0 else pts, **kwargs)

    def __getattr__(self, name: str):
        return getattr(self.container, name)


def test_a_seek_that_lands_late_falls_back_to_decoding_from_the_start(samples):
    def frames_from(start_s: float, overshoot_s: float) -> list[float]:
        with VideoReader(str(samples / "cuts.mp4")) as reader:
            reader.container = LateSeeks(reader.container, round(overshoot_s / reader.probe.time_base))
            return [f.time_s for f in reader.decoded(start_s=start_s, end_s=start_s + 1.0)]

    exact = frames_from(5.0, 0.0)
    assert exact[0] == 5.0 and len(exact) == 24
    assert frames_from(5.0, 4.0) == exact  # lands on the keyframe at the 8.5 s cut


@pytest.mark.parametrize("name", ["corrupt.mp4", "empty.mp4", "notes.mp4"])
def test_bad_files_raise_decode_error(samples, name):
    with pytest.raises(DecodeError):
        frames(samples / name)
