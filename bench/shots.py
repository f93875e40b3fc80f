"""Shot-stage benchmark: frame preparation as PySceneDetect does it (default) against the opt-in fast path.

Side by side in one run on the same inputs (median of --repeat runs each, wall and CPU seconds; CPU time
is the steadier measure on a shared machine): plain PyAV decode of every frame; vidmill's analyze stage
(decode once, shots, taps) with `shots.frame_scaling` exact and fast; PySceneDetect's CLI `detect-adaptive`.

    python bench/shots.py --inputs ../shared/realclips
"""

from __future__ import annotations

import argparse
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from curate import plain_decode  # noqa: E402  (the same plain decode as bench/curate.py)

from vidmill.pipeline.analysis.analyze import AnalyzeInput
from vidmill.pipeline.config import CurateConfig
from vidmill.pipeline.sources import list_inputs


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (decode threads included)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def median_of(n: int, run: Callable[[], None]) -> tuple[float, float]:
    """Median (wall s, CPU s) of n runs."""
    walls, cpus = [], []
    for _ in range(max(1, n)):
        wall, cpu = time.perf_counter(), cpu_seconds()
        run()
        walls.append(time.perf_counter() - wall)
        cpus.append(cpu_seconds() - cpu)
    return statistics.median(walls), statistics.median(cpus)


def shot_stage(refs: list, scaling: str) -> None:
    config = CurateConfig()
    config.shots.frame_scaling = scaling
    stage = AnalyzeInput(config)
    for ref in refs:
        stage.process(ref)


def scenedetect_cli(paths: list[str], out: Path) -> None:
    cli = [shutil.which("scenedetect")] if shutil.which("scenedetect") else [sys.executable, "-m", "scenedetect"]
    for path in paths:
        subprocess.run([*cli, "-q", "-i", path, "-o", str(out), "detect-adaptive"], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--inputs", required=True, help="directory of videos")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    refs = list_inputs(args.inputs, CurateConfig().source)
    paths = [r.source_uri for r in refs]
    out = Path(tempfile.mkdtemp(prefix="vidmill-bench-shots-"))
    rows = [("plain PyAV decode of every frame", median_of(args.repeat, lambda: plain_decode(paths))),
            ("shot stage, frame_scaling=exact (default)", median_of(args.repeat, lambda: shot_stage(refs, "exact"))),
            ("shot stage, frame_scaling=fast (opt-in)", median_of(args.repeat, lambda: shot_stage(refs, "fast"))),
            ("scenedetect CLI detect-adaptive", median_of(args.repeat, lambda: scenedetect_cli(paths, out)))]
    shutil.rmtree(out, ignore_errors=True)
    (_, decode_c), (cli_w, cli_c) = rows[0][1], rows[3][1]
    print(f"inputs: {len(paths)} files ({args.inputs}); median of {args.repeat} runs each")
    print(f"{'':44s} {'wall s':>8s} {'CPU s':>8s} {'CPU/decode':>11s} {'CLI/this wall':>14s} {'CLI/this CPU':>13s}")
    for name, (wall, cpu) in rows:
        print(f"{name:44s} {wall:8.2f} {cpu:8.2f} {cpu / decode_c:10.2f}x {cli_w / wall:13.2f}x {cli_c / cpu:12.2f}x")
    (exact_w, exact_c), (fast_w, fast_c) = rows[1][1], rows[2][1]
    print(f"exact over fast: wall {exact_w / fast_w:.2f}x, CPU {exact_c / fast_c:.2f}x")


if __name__ == "__main__":
    main()
