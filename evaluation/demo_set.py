"""A small local set in the Physics-IQ directory layout, built from a curated output's own clips.

MACHINERY CHECK ONLY: these are not Physics-IQ scenarios and its scores are not benchmark numbers. It exists
so `make demo` can run the whole evaluation path (generate-first, masks, metrics, the three scores,
results.json) on data it has, without the benchmark download.

Each scenario takes three kept clips (the longest at the target fps) as its three views. A clip is played
forward then backward until it lasts 8 s (3 s conditioning + 5 s test, as the benchmark's takes); take 2 is
the same sequence started `shift` frames later (a slightly different "second take", so the physical variance
is not zero). Files follow physics_iq_layout.py exactly: split-videos/{testing,conditioning}/{fps}FPS/ and
switch-frames/ (the last conditioning frame of take 1), plus a README.txt saying what the set is.
"""

from __future__ import annotations

import tarfile
import tempfile
from pathlib import Path

import cv2
import numpy as np

from vidmill.evaluation.physics_iq_layout import VIEWS
from vidmill.evaluation.video_io import read_video, write_video

CONDITIONING_S, TEST_S = 3, 5
NOTE = ("machinery check on the demo's own curated clips, NOT the Physics-IQ benchmark: "
        "its scores are not comparable with published Physics-IQ numbers")


def _kept_clips(curated: Path, fps: float) -> list[tuple[str, str]]:
    """(key, shard) of kept clips at `fps`, longest first."""
    import duckdb

    manifest = curated / "manifest.parquet"  # a single file, or the dataset directory of parts
    if not manifest.exists():
        raise FileNotFoundError(f"not a curated output (no manifest.parquet): {curated}")
    source = str(manifest / "*.parquet") if manifest.is_dir() else str(manifest)
    rows = duckdb.execute(
        "SELECT key, shard FROM read_parquet(?) WHERE kept AND shard IS NOT NULL AND abs(fps - ?) < 0.01 "
        "ORDER BY duration_s DESC, key", [source, fps]).fetchall()
    return [(key, shard) for key, shard in rows]


def _decode(curated: Path, key: str, shard: str) -> np.ndarray:
    path = Path(shard) if Path(shard).is_absolute() else curated / "shards" / Path(shard).name
    with tarfile.open(path) as tar:
        data = tar.extractfile(f"{key}.mp4").read()
    with tempfile.NamedTemporaryFile(suffix=".mp4") as tmp:
        tmp.write(data)
        tmp.flush()
        return read_video(tmp.name).frames


def boomerang(frames: np.ndarray, n: int) -> np.ndarray:
    """Frames played forward, backward, forward ... until there are `n`."""
    if len(frames) < 2:
        raise ValueError("a clip needs at least 2 frames")
    cycle = np.concatenate([frames, frames[-2:0:-1]])
    reps = -(-n // len(cycle))
    return np.concatenate([cycle] * reps)[:n]


def build_demo_set(curated: str | Path, out: str | Path, fps: int, scenarios: int = 1, shift: int = 2) -> dict:
    """Write the set under `out`; returns {"note", "fps", "scenarios": [{name, clips}], "root"}."""
    curated, out = Path(curated), Path(out)
    clips = _kept_clips(curated, fps)
    if len(clips) < 3 * scenarios:
        raise ValueError(f"{curated}: {len(clips)} kept clips at {fps} fps, {3 * scenarios} needed "
                         f"({scenarios} scenario(s) x 3 views)")
    testing = out / "split-videos" / "testing" / f"{fps}FPS"
    conditioning = out / "split-videos" / "conditioning" / f"{fps}FPS"
    switch = out / "switch-frames"
    for folder in (testing, conditioning, switch):
        folder.mkdir(parents=True, exist_ok=True)
    n_cond, n_total = CONDITIONING_S * fps, (CONDITIONING_S + TEST_S) * fps
    made, file_no = [], 0
    for s in range(scenarios):
        scenario = f"demo-clips-{s + 1}.mp4"
        used = clips[3 * s: 3 * s + 3]
        for view, (key, shard) in zip(VIEWS, used, strict=True):
            sequence = boomerang(_decode(curated, key, shard), n_total + shift)
            for take, start in (("take-1", 0), ("take-2", shift)):
                file_no += 1
                file_id = f"{file_no:04d}"
                take_frames = sequence[start: start + n_total]
                write_video(testing / f"{file_id}_testing-videos_{fps}FPS_{view}_{take}_{scenario}",
                            take_frames[n_cond:], fps)
                write_video(conditioning / f"{file_id}_conditioning-videos_{fps}FPS_{view}_{take}_{scenario}",
                            take_frames[:n_cond], fps)
                if take == "take-1":
                    image = switch / f"{file_id}_switch-frames_anyFPS_{view}_{take}_{Path(scenario).stem}.jpg"
                    cv2.imwrite(str(image), take_frames[n_cond - 1])
        made.append({"name": scenario, "clips": [key for key, _ in used]})
    info = {"note": NOTE, "fps": fps, "root": str(out), "scenarios": made}
    (out / "README.txt").write_text(NOTE + "\n\nbuilt from " + str(curated) + "\n" +
                                    "\n".join(f"{m['name']}: views from {', '.join(m['clips'])}" for m in made) + "\n")
    return info
