"""Curation benchmark: ratios measured side by side in one run on the same inputs.

What holds where users run (warm clusters, many cores):
A. CPU-seconds of the full pipeline per CPU-second of a plain decode (target <= 2.0), with local Ray started
   BEFORE timing. Pipeline CPU = the driver and every process under it (gcs, raylet, Ray workers and actors:
   all are descendants of the driver when it starts local Ray). Each live process's user + system is
   sampled with psutil every 0.1 s and its last sample counts (Raylet does not reap its workers into its
   own children_* times, so getrusage / children_* would miss every actor); the driver's reaped
   subprocesses are added from its children_* times. An actor loses only what it used after its last
   sample (it is idle then: pools shut down after their work drains). Machine-wide CPU from /proc/stat over
   the same run is printed too: an upper bound that includes the other users of a shared machine. Plain-decode CPU:
   this process's own user + system (getrusage), decode threads included. Ray's idle background CPU on the
   warm cluster (measured over an idle window) is shown so its share is visible.
B. wall time on a local cluster (ray.cluster_utils.Cluster, this machine) of 1, 2 and 4 worker nodes of
   `--node-cpus` CPUs each (head with 0 CPUs; Ray needs whole CPUs per node). Every size runs the same
   actors (pool sizes come from config) on the same physical cores, so the ideal here is flat (T1): the
   ratio to it is what spreading the work over nodes costs (placement, object transfer between node
   stores). The ideal on real nodes (T1 / n) is printed beside it; 2 cores cannot show a speed-up.

Earlier ratios, kept:
1. full pipeline (`vidmill curate`, default config, local Ray, cold start included) wall time over a
   plain PyAV decode of every frame of the inputs (target <= 1.5x); also the pipeline with the scorers
   and captions off (decode, shots, spans, transcode of every candidate, shards) and, alone, what
   starting and stopping local Ray costs, so the fixed part of the ratio is visible;
2. PySceneDetect's own CLI (`scenedetect -i VIDEO detect-adaptive`) wall time over vidmill's shot stage
   (decode once + AdaptiveDetector, same settings; target >= 1.5x faster);
3. video-seconds processed per CPU-second (machine-wide CPU time from /proc/stat during the run).

    python bench/curate.py                     # synthetic 640x360 inputs made here
    python bench/curate.py --inputs DIR        # or any directory of videos (e.g. ../shared/realclips)
    python bench/curate.py --inputs ../shared/realclips --min-short-side 720   # real footage, 720p or more
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_DISABLE_USAGE_STATS", "1")

import resource  # noqa: E402

import av  # noqa: E402
import psutil  # noqa: E402
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


class TreeCPU:
    """CPU-s of this process and every descendant while it runs (see A above), sampled every `every_s`.

    Raylet does not collect its workers' CPU when they exit (their times never reach its children_*), so
    each process's user + system is sampled while it lives and its last sample counts; a process only
    loses the CPU it used after its last sample (actors are idle when their pool shuts them down).
    """

    def __init__(self, every_s: float = 0.1):
        self.every_s, self.last, self.base, self.names = every_s, {}, {}, {}
        self._stop = threading.Event()

    def _sample(self) -> dict[tuple[int, float], float]:
        me = psutil.Process()
        seen = {}
        for proc in [me, *me.children(recursive=True)]:
            try:
                t = proc.cpu_times()
                key = (proc.pid, proc.create_time())
                seen[key] = t.user + t.system
                name = proc.name()
                if name != "ray::IDLE":  # an actor's name appears once its class is loaded
                    self.names[key] = name.split(".")[0]
            except psutil.Error:
                continue
        return seen

    def _loop(self) -> None:
        while not self._stop.wait(self.every_s):
            self.last.update(self._sample())

    def __enter__(self) -> TreeCPU:
        self.base = self._sample()
        self.last = dict(self.base)
        self._children0 = psutil.Process().cpu_times()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.last.update(self._sample())
        t0, t1 = self._children0, psutil.Process().cpu_times()  # the driver's own reaped subprocesses
        reaped = t1.children_user + t1.children_system - t0.children_user - t0.children_system
        used = {k: v - self.base.get(k, 0.0) for k, v in self.last.items()}
        self.seconds = sum(used.values()) + reaped
        self.by_name: dict[str, float] = {}
        for key, seconds in used.items():
            name = "driver" if key[0] == os.getpid() else self.names.get(key, "ray::IDLE")
            self.by_name[name] = self.by_name.get(name, 0.0) + seconds


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def decode_cpu(paths: list[str]) -> tuple[float, float]:
    """(wall s, CPU-s of this process) of a plain decode."""
    cpu0 = own_cpu_seconds()
    wall = plain_decode(paths)
    return wall, own_cpu_seconds() - cpu0


def warm_curate(inputs: Path, out: Path, config: CurateConfig) -> tuple[dict, float, float]:
    """The pipeline on an already started local Ray: (summary, wall s, CPU-s of driver + Ray tree)."""
    init_ray(None)
    machine0 = machine_cpu_seconds()
    with TreeCPU() as cpu:
        start = time.perf_counter()
        summary = Curation(str(inputs), out, config, progress=False).run()
        wall = time.perf_counter() - start
    summary["machine_cpu_s"] = machine_cpu_seconds() - machine0
    summary["cpu_by_process"] = {k: round(v, 1) for k, v in sorted(cpu.by_name.items(), key=lambda kv: -kv[1])
                                 if v >= 0.05}
    return summary, wall, cpu.seconds


def idle_ray_cpu_per_s(seconds: float = 5.0) -> float:
    init_ray(None)
    with TreeCPU() as cpu:
        time.sleep(seconds)
    return cpu.seconds / seconds


def cluster_wall(inputs: Path, out: Path, config: CurateConfig, nodes: int, node_cpus: int) -> float:
    """Wall time of the pipeline on a local cluster of `nodes` worker nodes (started before timing)."""
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    try:
        for _ in range(nodes):
            cluster.add_node(num_cpus=node_cpus)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, logging_level="WARNING")
        start = time.perf_counter()
        Curation(str(inputs), out, config, progress=False).run(address=cluster.address)
        return time.perf_counter() - start
    finally:
        ray.shutdown()
        cluster.shutdown()


def select_inputs(inputs: Path, work: Path, min_short_side: int) -> Path:
    """A folder of links to the inputs whose short side is at least `min_short_side`."""
    if not min_short_side:
        return inputs
    chosen = work / "selected"
    chosen.mkdir(parents=True, exist_ok=True)
    for ref in list_inputs(str(inputs), CurateConfig().source):
        with av.open(ref.source_uri) as container:
            stream = container.streams.video[0]
            if min(stream.width, stream.height) >= min_short_side:
                (chosen / Path(ref.source_uri).name).symlink_to(Path(ref.source_uri).resolve())
    return chosen


def print_scaling(nodes: list[int], walls: dict[int, float], node_cpus: int) -> None:
    """Measured wall times against two ideals: on this machine (the same actors share the same physical
    cores at every cluster size: flat at T1) and on real nodes that each bring their cores (T1 x n1 / n)."""
    cores = os.cpu_count() or 1
    t1 = walls[nodes[0]]
    print(f"B. local cluster on this machine (head 0 CPUs, worker nodes of {node_cpus} CPU each, {cores} physical "
          "cores shared by all nodes)")
    print("   nodes   wall s   ideal here   ideal on real nodes   wall / ideal here")
    for n in nodes:
        print(f"   {n:5d}  {walls[n]:7.2f}  {t1:11.2f}  {t1 * nodes[0] / n:20.2f}  {walls[n] / t1:18.2f}", flush=True)


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
    found = shutil.which("scenedetect") or str(Path(sys.executable).parent / "scenedetect")
    cli = [found] if Path(found).exists() else [sys.executable, "-m", "scenedetect"]
    start = time.perf_counter()
    for path in paths:
        subprocess.run([*cli, "-q", "-i", path, "-o", str(out), "detect-adaptive"], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--inputs", help="directory of videos (default: make synthetic ones)")
    parser.add_argument("--videos", type=int, default=6)
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--repeat", type=int, default=3, help="runs of the short timings; the median is shown")
    parser.add_argument("--min-short-side", type=int, default=0, help="only inputs at least this tall (720: 720p+)")
    parser.add_argument("--nodes", default="1,2,4", help="worker nodes of the local clusters (B)")
    parser.add_argument("--node-cpus", type=int, default=1, help="CPUs of each worker node (B)")
    parser.add_argument("--parts", default="ABC", help="A: warm CPU ratio, B: cluster scaling, C: earlier ratios")
    parser.add_argument("--set", action="append", default=[], help="config key=value for every pipeline run")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="vidmill-bench-"))
    inputs = Path(args.inputs) if args.inputs else work / "inputs"
    if not args.inputs:
        make_inputs(inputs, args.videos, args.seconds)
    inputs = select_inputs(inputs, work, args.min_short_side)
    from vidmill.pipeline.config import load_config

    config = load_config(None, args.set)
    refs = list_inputs(str(inputs), config.source)
    paths = [r.source_uri for r in refs]
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs "
          "(a shared machine: timings under contention are noisy)", flush=True)

    # A: warm local Ray, CPU of the whole process tree
    decode_runs = [decode_cpu(paths) for _ in range(max(1, args.repeat))]
    decode_wall, decode_cpu_s = (statistics.median(x) for x in zip(*decode_runs, strict=True))
    idle_cpu = idle_ray_cpu_per_s()
    warm, warm_wall, warm_cpu = warm_curate(inputs, work / "out-warm", config)
    ray.shutdown()
    print(f"A. plain decode: {decode_wall:.2f} s wall, {decode_cpu_s:.2f} CPU-s (median of {len(decode_runs)})")
    print(f"   full pipeline on warm local Ray: {warm_wall:.2f} s wall, {warm_cpu:.2f} CPU-s (driver + Ray tree; "
          f"machine-wide {warm['machine_cpu_s']:.1f} CPU-s, other users included)")
    print(f"   CPU ratio pipeline / decode: {warm_cpu / decode_cpu_s:5.2f}   (target <= 2.0); of which Ray idle "
          f"background {idle_cpu:.2f} CPU-s/s x {warm_wall:.1f} s = {idle_cpu * warm_wall:.1f} CPU-s", flush=True)
    busy = {name: round(stage["busy_s"], 1) for name, stage in warm["stages"].items() if stage["busy_s"]}
    print(f"   stage busy seconds: {busy}", flush=True)
    print(f"   CPU-s by process: {warm['cpu_by_process']}", flush=True)
    if "B" not in args.parts and "C" not in args.parts:
        return

    # B: local clusters of 1, 2, 4 worker nodes
    nodes = [] if "B" not in args.parts else [int(n) for n in args.nodes.split(",")]
    walls = {n: cluster_wall(inputs, work / f"out-cluster-{n}", config, n, args.node_cpus) for n in nodes}
    if nodes:
        print_scaling(nodes, walls, args.node_cpus)
    if "C" not in args.parts:
        return
    decode_s = decode_wall
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
