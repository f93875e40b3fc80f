"""A deterministic sample bucket of small synthetic videos with a ground-truth JSON.

Every file exercises one thing the pipeline must get right: hard cuts at known times, static and
moving shots, camera pans / tilts / zooms, burned-in text and a corner logo, a re-encoded near
duplicate, broken inputs, a too-short clip, portrait, variable frame rate, rotation metadata,
non-square pixels and a video stream that starts after the audio.

Camera-move names follow the camera: in `pan_left` the camera turns left, so scene content moves
right across the frame; in `zoom_in` content grows from the centre.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

W, H, FPS = 448, 256, 24
GROUND_TRUTH = "ground_truth.json"


@dataclass
class Sample:
    name: str
    status: str = "ok"  # ok | error
    duration_s: float = 0.0
    cuts_s: list[float] = field(default_factory=list)
    display_size: tuple[int, int] | None = None  # (width, height) after rotation and SAR
    traits: list[str] = field(default_factory=list)
    duplicate_of: str | None = None
    extra: dict = field(default_factory=dict)


def texture(seed: int, height: int, width: int) -> np.ndarray:
    """A smooth random colour field with some hard-edged shapes (BGR uint8)."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (max(2, height // 24), max(2, width // 24), 3), dtype=np.uint8)
    image = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    for _ in range(max(6, width * height // 6000)):
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        size = int(rng.integers(6, 30))
        if rng.random() < 0.5:
            cv2.rectangle(image, (x, y), (x + size, y + size), colour, -1)
        else:
            cv2.circle(image, (x, y), size // 2, colour, -1)
    return image


def ball(frame: np.ndarray, t: float, speed: float = 60.0, radius: int = 18) -> np.ndarray:
    """Draw a ball moving left to right (and bouncing vertically) at time t."""
    h, w = frame.shape[:2]
    x = int((20 + speed * t) % (w - 40)) + 20
    y = int(h / 2 + (h / 4) * np.sin(2 * np.pi * t / 2.0))
    out = frame.copy()
    cv2.circle(out, (x, y), radius, (255, 255, 255), -1)
    cv2.circle(out, (x, y), radius // 2, (0, 0, 200), -1)
    return out


def shot_frames(seed: int, start: float, end: float, fps: float = FPS, moving: bool = True,
                size: tuple[int, int] = (W, H)) -> Iterator[tuple[float, np.ndarray]]:
    background = texture(seed, size[1], size[0])
    for i in range(round((end - start) * fps)):
        t = start + i / fps
        yield t, ball(background, t - start) if moving else background


def camera_move_frames(seed: int, kind: str, seconds: float, start: float = 0.0,
                       size: tuple[int, int] = (W, H)) -> Iterator[tuple[float, np.ndarray]]:
    """A crop window moving over a large texture: pans, tilts and zooms at a steady rate."""
    w, h = size
    big = texture(seed, h * 3, w * 3)
    cx, cy = w * 1.5, h * 1.5
    n = round(seconds * FPS)
    for i in range(n):
        f = i / max(1, n - 1)
        scale, dx, dy = 1.0, 0.0, 0.0
        if kind == "pan_left":
            dx = w * 0.5 * (0.5 - f)  # window moves left -> content moves right
        elif kind == "pan_right":
            dx = w * 0.5 * (f - 0.5)
        elif kind == "tilt_up":
            dy = h * 0.5 * (0.5 - f)
        elif kind == "tilt_down":
            dy = h * 0.5 * (f - 0.5)
        elif kind == "zoom_in":
            scale = 1.6 - 0.8 * f  # window shrinks -> content grows
        elif kind == "zoom_out":
            scale = 0.8 + 0.8 * f
        ww, hh = w * scale, h * scale
        x0, y0 = cx + dx - ww / 2, cy + dy - hh / 2
        matrix = np.array([[ww / w, 0, x0], [0, hh / h, y0]], dtype=np.float64)
        frame = cv2.warpAffine(big, matrix, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
        yield start + i / FPS, frame


def with_subtitles(frames: Iterator[tuple[float, np.ndarray]]) -> Iterator[tuple[float, np.ndarray]]:
    lines = ["THE QUICK BROWN FOX", "JUMPS OVER THE DOG", "SUBTITLES ON SCREEN"]
    for t, frame in frames:
        out = frame.copy()
        text = lines[int(t // 2) % len(lines)]
        cv2.rectangle(out, (40, H - 62), (W - 40, H - 18), (0, 0, 0), -1)
        cv2.putText(out, text, (52, H - 30), cv2.FONT_HERSHEY_SIMPLEX, 0.9, (255, 255, 255), 2, cv2.LINE_AA)
        yield t, out


def with_logo(frames: Iterator[tuple[float, np.ndarray]]) -> Iterator[tuple[float, np.ndarray]]:
    for t, frame in frames:
        out = frame.copy()
        cv2.rectangle(out, (W - 118, 10), (W - 10, 52), (255, 255, 255), -1)
        cv2.putText(out, "LOGO", (W - 110, 44), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (30, 30, 160), 3, cv2.LINE_AA)
        yield t, out


def write_video(path: Path, frames: Iterator[tuple[float, np.ndarray]], *, fps: float = FPS,
                size: tuple[int, int] | None = None, crf: int = 20, rotation: int = 0,
                sar: Fraction | None = None, video_offset_s: float = 0.0,
                audio_seconds: float = 0.0, vfr: bool = False) -> None:
    """Encode (time, BGR frame) pairs to H.264 mp4 with PyAV; times become exact PTS."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        time_base = Fraction(1, 1000) if vfr or video_offset_s else Fraction(1, round(fps))
        stream.codec_context.time_base = time_base
        stream.time_base = time_base
        stream.pix_fmt = "yuv420p"
        # one thread and no macroblock tree: byte-identical output on every run (x264's mbtree path
        # gave different bytes for the same frames now and then, even on one thread)
        stream.options = {"crf": str(crf), "preset": "veryfast", "x264-params": "mbtree=0"}
        stream.codec_context.thread_count = 1
        if rotation:
            stream.set_display_rotation(rotation)
        if sar:
            stream.codec_context.sample_aspect_ratio = sar
        audio = None
        if audio_seconds:
            audio = container.add_stream("aac", rate=48000)
            audio.layout = "mono"
        first = True
        for t, image in frames:
            if size is not None and (image.shape[1], image.shape[0]) != size:
                image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
            if first:
                stream.width, stream.height = image.shape[1], image.shape[0]
                first = False
            frame = av.VideoFrame.from_ndarray(image, format="bgr24")
            frame.pts = round((t + video_offset_s) / time_base)
            frame.time_base = time_base
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
        if audio is not None:
            _write_silence(container, audio, audio_seconds)


def _write_silence(container: av.container.OutputContainer, audio: av.AudioStream, seconds: float) -> None:
    samples_per_frame, rate = 1024, 48000
    total = int(seconds * rate)
    for start in range(0, total, samples_per_frame):
        tone = 0.05 * np.sin(2 * np.pi * 440 * (np.arange(samples_per_frame) + start) / rate)
        frame = av.AudioFrame.from_ndarray(tone.astype(np.float32)[None, :], format="fltp", layout="mono")
        frame.sample_rate, frame.pts = rate, start
        container.mux(audio.encode(frame))
    container.mux(audio.encode(None))


def concat(*parts: Iterator[tuple[float, np.ndarray]]) -> Iterator[tuple[float, np.ndarray]]:
    for part in parts:
        yield from part


def vfr_frames() -> Iterator[tuple[float, np.ndarray]]:
    """6 s whose rate alternates between 30 and 12 fps each second; a hard cut at 3.0 s."""
    scenes = (texture(501, H, W), texture(502, H, W))
    for second in range(6):
        rate = 30 if second % 2 == 0 else 12
        for k in range(rate):
            t = second + k / rate
            yield t, ball(scenes[0] if t < 3.0 else scenes[1], t % 3.0)


def _make(root: Path, name: str, write: Callable[[Path], None], sample: Sample, table: dict) -> None:
    write(root / name)
    table[name] = sample


def write_samples(root: str | Path) -> dict:
    """Write the sample bucket into `root` and return its ground truth (also saved as JSON)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    truth: dict[str, Sample] = {}

    def add(name: str, frames_fn: Callable[[], Iterator[tuple[float, np.ndarray]]], sample: Sample,
            **kwargs) -> None:
        _make(root, name, lambda p: write_video(p, frames_fn(), **kwargs), sample, truth)

    add("cuts.mp4", lambda: concat(shot_frames(11, 0, 4), shot_frames(12, 4, 8.5), shot_frames(13, 8.5, 12)),
        Sample("cuts.mp4", duration_s=12.0, cuts_s=[4.0, 8.5], display_size=(W, H), traits=["moving"]))
    add("static.mp4", lambda: shot_frames(21, 0, 5, moving=False),
        Sample("static.mp4", duration_s=5.0, display_size=(W, H), traits=["static"]))
    add("moving_subject.mp4", lambda: shot_frames(31, 0, 6),
        Sample("moving_subject.mp4", duration_s=6.0, display_size=(W, H), traits=["moving"]))
    add("moving_subject_reencoded.mp4", lambda: shot_frames(31, 0, 6),
        Sample("moving_subject_reencoded.mp4", duration_s=6.0, display_size=(672, 384), traits=["moving"],
               duplicate_of="moving_subject.mp4"), size=(672, 384), crf=34)
    for i, kind in enumerate(["pan_left", "pan_right", "tilt_up", "tilt_down", "zoom_in", "zoom_out"]):
        add(f"{kind}.mp4", lambda k=kind, s=41 + i: camera_move_frames(s, k, 4.0),
            Sample(f"{kind}.mp4", duration_s=4.0, display_size=(W, H), traits=[kind]))
    add("subtitles.mp4", lambda: with_subtitles(shot_frames(51, 0, 6)),
        Sample("subtitles.mp4", duration_s=6.0, display_size=(W, H), traits=["text"]))
    add("logo.mp4", lambda: with_logo(shot_frames(52, 0, 6)),
        Sample("logo.mp4", duration_s=6.0, display_size=(W, H), traits=["logo"]))
    add("short.mp4", lambda: shot_frames(61, 0, 1.5),
        Sample("short.mp4", duration_s=1.5, display_size=(W, H), traits=["too_short"]))
    add("portrait.mp4", lambda: shot_frames(71, 0, 5, size=(H, W)),
        Sample("portrait.mp4", duration_s=5.0, display_size=(H, W), traits=["portrait"]))
    add("vfr.mp4", vfr_frames,
        Sample("vfr.mp4", duration_s=6.0, cuts_s=[3.0], display_size=(W, H), traits=["vfr"]), vfr=True)
    add("rotated.mp4", lambda: concat(shot_frames(81, 0, 3), shot_frames(82, 3, 6)),
        Sample("rotated.mp4", duration_s=6.0, cuts_s=[3.0], display_size=(H, W), traits=["rotated"]),
        rotation=90)
    add("anamorphic.mp4", lambda: shot_frames(91, 0, 5, size=(336, H)),
        Sample("anamorphic.mp4", duration_s=5.0, display_size=(W, H), traits=["non_square_pixels"]),
        sar=Fraction(4, 3))
    add("late_start.mp4", lambda: concat(shot_frames(101, 0, 2.5), shot_frames(102, 2.5, 6)),
        Sample("late_start.mp4", duration_s=7.0, cuts_s=[3.5], display_size=(W, H), traits=["late_start"],
               extra={"video_start_s": 1.0}),
        video_offset_s=1.0, audio_seconds=7.0)

    valid = (root / "static.mp4").read_bytes()
    (root / "corrupt.mp4").write_bytes(valid[:1500] + np.random.default_rng(7).bytes(40_000))
    truth["corrupt.mp4"] = Sample("corrupt.mp4", status="error")
    (root / "empty.mp4").write_bytes(b"")
    truth["empty.mp4"] = Sample("empty.mp4", status="error")
    (root / "notes.mp4").write_text("This is a text file with a video extension.\n" * 20)
    truth["notes.mp4"] = Sample("notes.mp4", status="error")
    (root / "README.txt").write_text("Not an input: the extension filter skips it.\n")

    data = {"note": "times in seconds on the container timeline; display_size is (width, height)",
            "files": {name: s.__dict__ for name, s in sorted(truth.items())}}
    (root / GROUND_TRUTH).write_text(json.dumps(data, indent=2))
    return data
