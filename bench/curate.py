"""Curation benchmark: ratios measured side by side in one run on the same inputs.

1. full pipeline (`vidmill curate`, default config, local Ray, cold start included) wall time over a
   plain PyAV decode of every frame of the inputs (target <= 1.5x); also the pipeline with the scorers
   and captions off (decode, shots, spans, transcode of every candidate, shards) and, alone, what
   starting and stopping local Ray costs, so the fixed part of the ratio is visible;
2. PySceneDetect's own CLI (`scenedetect -i VIDEO detect-adaptive`) wall time over vidmill's shot stage
   (decode once + AdaptiveDetector, same settings; target >= 1.5x faster);
3. video-seconds processed per CPU-second (machine-wide CPU time from /proc/stat during the run).

    python bench/curate.py                     # synthetic 640x360 inputs made here
    python bench/curate.py --inputs DIR        # or any directory of videos (e.g. ../shared/realclips)
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_DISABLE_USAGE_STATS", "1")

import av  # noqa: E402
import ray  # noqa: E402

from vidmill.pipeline.analysis.analyze import AnalyzeInput  # noqa: E402
from vidmill.pipeline.config import CurateConfig  # noqa: E402
from vidmill.pipeline.curate import Curation  # noqa: E402
from vidmill.pipeline.executor.runner import init_ray  # noqa: E402
from vidmill.pipeline.samples import camera_move_frames, concat, shot_frames, write_video  # noqa: E402
from vidmill.pipeline.sources import list_inputs  # noqa: E402

MOVES = ["pan_left", "zoom_in", "tilt_up", "pan_right", "zoom_out", "tilt_down"]


def machine_cpu_seconds() -> float:
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system = (int(x) for x in fields[:3])
    return (user + nice + system) / os.sysconf("SC_CLK_TCK")


def make_inputs(root: Path, n: int, seconds: int) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        shots = [shot_frames(1000 + 10 * i + k, 5 * k, 5 * k + 5, size=(640, 360)) if k % 2 == 0 else
                 camera_move_frames(1000 + 10 * i + k, MOVES[(i + k) % len(MOVES)], 5, 5 * k, size=(640, 360))
                 for k in range(seconds // 5)]  # moving-subject shots and camera moves, alternating
        write_video(root / f"bench_{i:02d}.mp4", concat(*shots), crf=23)


def median_of(n: int, run: Callable[[], float]) -> float:
    return statistics.median(run() for _ in range(max(1, n)))


def plain_decode(paths: list[str]) -> float:
    start = time.perf_counter()
    for path in paths:
        with av.open(path) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for _ in container.decode(stream):
                pass
    return time.perf_counter() - start


def curate(inputs: Path, out: Path, config: CurateConfig) -> tuple[dict, float]:
    """Run the pipeline in a fresh local Ray (as `vidmill curate` does); (summary, machine CPU-s)."""
    cpu0 = machine_cpu_seconds()
    try:
        summary = Curation(str(inputs), out, config, progress=False).run()
    finally:
        ray.shutdown()
    return summary, machine_cpu_seconds() - cpu0


def ray_start_stop() -> float:
    start = time.perf_counter()
    init_ray(None)
    ray.shutdown()
    return time.perf_counter() - start


def without_scoring() -> CurateConfig:
    config = CurateConfig()
    for name in ("quality", "motion", "ocr", "aesthetic"):
        getattr(config.scoring, name).enabled = False
    config.captions.enabled = False
    config.thresholds.dedup = False
    return config


def our_shot_stage(paths: list[str], config: CurateConfig) -> float:
    stage = AnalyzeInput(config)
    refs = list_inputs(paths[0], config.source)[:0]
    for path in paths:
        refs += list_inputs(path, config.source)
    start = time.perf_counter()
    for ref in refs:
        stage.process(ref)
    return time.perf_counter() - start


def scenedetect_cli(paths: list[str], out: Path) -> float:
    cli = shutil.which("scenedetect") or str(Path(sys.executable).parent / "scenedetect")
    start = time.perf_counter()
    for path in paths:
        subprocess.run([cli, "-q", "-i", path, "-o", str(out), "detect-adaptive"], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--inputs", help="directory of videos (default: make synthetic ones)")
    parser.add_argument("--videos", type=int, default=6)
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--repeat", type=int, default=3, help="runs of the short timings; the median is shown")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="vidmill-bench-"))
    inputs = Path(args.inputs) if args.inputs else work / "inputs"
    if not args.inputs:
        make_inputs(inputs, args.videos, args.seconds)
    config = CurateConfig()
    refs = list_inputs(str(inputs), config.source)
    paths = [r.source_uri for r in refs]

    decode_s = median_of(args.repeat, lambda: plain_decode(paths))
    summary, cpu_s = curate(inputs, work / "out", config)
    pipeline_s = summary["wall_s"]
    core, _ = curate(inputs, work / "out-core", without_scoring())
    ray_s = ray_start_stop()
    shots_s = median_of(args.repeat, lambda: our_shot_stage(paths, config))
    cli_s = median_of(args.repeat, lambda: scenedetect_cli(paths, work / "scenedetect-out"))
    video_s = summary["counts"]["video_seconds"]

    print(f"inputs: {len(paths)} files, {video_s:.1f} video-s, {summary['counts']['clips_kept']} clips kept "
          f"({inputs})")
    print(f"plain PyAV decode of every frame      {decode_s:8.2f} s   (decode, shot stage, CLI: median of "
          f"{args.repeat} runs; pipelines: one run each)")
    print(f"vidmill curate (full pipeline, Ray)    {pipeline_s:8.2f} s   ratio {pipeline_s / decode_s:5.2f}x "
          f"decode (target <= 1.5x)")
    print(f"  same, scorers + captions off         {core['wall_s']:8.2f} s   ratio {core['wall_s'] / decode_s:5.2f}x "
          f"decode ({core['counts']['clips_kept']} clips transcoded)")
    print(f"  of which local Ray start + stop      {ray_s:8.2f} s   ({ray_s / decode_s:5.2f}x decode)")
    busy = {name: round(stage["busy_s"], 1) for name, stage in summary["stages"].items() if stage["busy_s"]}
    print(f"  stage busy seconds (full pipeline)   {busy}")
    print(f"vidmill shot stage (decode + detect)  {shots_s:8.2f} s")
    print(f"scenedetect CLI detect-adaptive       {cli_s:8.2f} s   ours is {cli_s / shots_s:5.2f}x faster "
          f"(target >= 1.5x)")
    print(f"video-seconds per CPU-second           {video_s / cpu_s:8.2f}     ({cpu_s:.1f} CPU-s machine-wide)")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
