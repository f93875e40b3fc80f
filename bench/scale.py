"""Finalize at bucket scale, without video: synthetic per-input records (about 10 clips an input, realistic
score dicts with 64-bit pHashes, a share of duplicates, CLIP embeddings off unless --embeddings) are written
as _work record files, then pushed through finalize (decide, global dedup, shard plan, tables) on local Ray.
Each size runs in a fresh driver process; printed per size: driver peak RSS (psutil, sampled in a thread),
wall time, clips/s; and the driver RSS ratio of the largest size to the one before it.

    python bench/scale.py                      # 10k and 100k inputs
    python bench/scale.py --sizes 10000,100000,1000000

Needs about 40 KB of disk per input under --workdir (records plus finalize's parts; a 1M-input run needs more than
40 GB free; deleted at the end unless --keep). Shards are planned,
not written (no clip bytes: every kept clip counts as --clip-bytes); writing them is the worker shard stage.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

FINGERPRINT = "bench-scale"


def make_part(args: tuple[str, int, int, int, float, bool, int]) -> int:
    """Records and the listing part of one part (run in a worker process)."""

    from vidmill.pipeline.finalize.layout import Layout, ListingWriter
    from vidmill.pipeline.finalize.synthetic import synthetic_results
    from vidmill.pipeline.sources import InputRef

    out, part, per_part, clips, duplicates, embeddings, seed = args
    layout = Layout.of(out)
    listed = ListingWriter(layout, per_part)
    listed.parts = part
    os.makedirs(f"{out}/_work/inputs", exist_ok=True)
    for result in synthetic_results(per_part, clips, duplicates, embeddings, seed, start=part * per_part):
        record = result.input
        with open(layout.record(record.input_id), "w") as handle:
            json.dump({"fingerprint": FINGERPRINT, **result.work_json()}, handle)
        listed.add(InputRef(record.input_id, record.source_uri, record.size_bytes, record.source_version or ""))
    listed.flush()
    return per_part


def generate(out: str, inputs: int, per_part: int, clips: int, duplicates: float, embeddings: bool) -> int:
    parts = (inputs + per_part - 1) // per_part
    jobs = [(out, p, min(per_part, inputs - p * per_part), clips, duplicates, embeddings, 0) for p in range(parts)]
    with ProcessPoolExecutor(max_workers=2) as pool:
        list(pool.map(make_part, jobs))
    return parts


def finalize_once(out: str, parts: int, args: argparse.Namespace) -> dict:
    """The measured run (in its own process): finalize over the records, RSS sampled every 50 ms."""
    import psutil

    from vidmill.pipeline.config import CurateConfig, ShardConfig, StageResources
    from vidmill.pipeline.executor.runner import StageRunner, init_ray
    from vidmill.pipeline.finalize import Finalize, Layout
    from vidmill.pipeline.finalize.run import bucket_partitions
    from vidmill.pipeline.finalize.stages import Settings

    process, peak, stop = psutil.Process(), [0], threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], process.memory_info().rss)
            time.sleep(0.05)

    threading.Thread(target=sample, daemon=True).start()
    init_ray(None)
    config = CurateConfig()
    config.thresholds.lsh_bands = args.lsh_bands
    layout = Layout.of(out)
    settings = Settings(layout, FINGERPRINT, config.thresholds, ShardConfig(), bucket_partitions(parts),
                        f"{out}/_work/clips", assumed_clip_bytes=args.clip_bytes, write_shards=False)
    finalize = Finalize(settings, parts, StageRunner(),
                        StageResources(num_cpus=0.5, concurrency=args.concurrency), inline_parts=0)
    rss_start = process.memory_info().rss
    started = time.perf_counter()
    finalize.decide_and_dedup()
    handed = sum(len(kept) for _, kept in finalize.kept_clips())  # what transcode / caption get, a part at a time
    dedup_s = time.perf_counter() - started
    counts = finalize.write()
    wall = time.perf_counter() - started
    stop.set()
    return {"inputs": counts["inputs"], "clips": counts["clips"], "kept": counts["clips_kept"],
            "handed_to_transcode": handed,
            "duplicates": counts["reject_reasons"].get("duplicate", 0), "shards": finalize.stats.get("shards"),
            "wall_s": round(wall, 1), "decide_dedup_s": round(dedup_s, 1),
            "clips_per_s": round(counts["clips"] / wall), "rss_after_ray_init_mb": round(rss_start / 2**20),
            "peak_rss_mb": round(max(peak[0], process.memory_info().rss) / 2**20)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000", help="numbers of inputs, comma separated")
    parser.add_argument("--clips", type=int, default=10, help="clips per input (±2)")
    parser.add_argument("--duplicates", type=float, default=0.05, help="share of clips copying another's hashes")
    parser.add_argument("--embeddings", action="store_true", help="16-d CLIP embeddings in every record")
    parser.add_argument("--per-part", type=int, default=1000, help="inputs per finalize part")
    parser.add_argument("--lsh-bands", type=int, default=4, help="thresholds.lsh_bands (see docs/scale.md)")
    parser.add_argument("--concurrency", type=int, default=2, help="finalize actors")
    parser.add_argument("--clip-bytes", type=int, default=2_000_000)
    parser.add_argument("--workdir", default="/tmp/vidmill-bench-scale")
    parser.add_argument("--keep", action="store_true", help="keep the synthetic records")
    parser.add_argument("--_measure", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._measure:
        print(json.dumps(finalize_once(args._measure[0], int(args._measure[1]), args)), flush=True)
        return
    free = shutil.disk_usage(Path(args.workdir).parent).free
    rows = []
    for size in [int(s) for s in args.sizes.split(",")]:
        need = size * (12_000 if args.embeddings else 4_000)
        if need > free * 0.5:
            print(f"{size} inputs: skipped, needs about {need / 1e9:.0f} GB of {free / 1e9:.0f} GB free")
            continue
        out = f"{args.workdir}/n{size}"
        shutil.rmtree(out, ignore_errors=True)
        started = time.perf_counter()
        parts = generate(out, size, args.per_part, args.clips, args.duplicates, args.embeddings)
        made = time.perf_counter() - started
        command = [sys.executable, __file__, "--_measure", out, str(parts), "--lsh-bands", str(args.lsh_bands),
                   "--concurrency", str(args.concurrency), "--clip-bytes", str(args.clip_bytes)]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
        if result.returncode or not lines:
            print(result.stdout[-2000:], result.stderr[-4000:])
            raise SystemExit(f"{size} inputs: finalize failed")
        row = {"size": size, "parts": parts, "records_made_s": round(made, 1), **json.loads(lines[-1])}
        rows.append(row)
        print(json.dumps(row), flush=True)
        if not args.keep:
            shutil.rmtree(out, ignore_errors=True)
    print(f"\n{'inputs':>9} {'clips':>10} {'kept':>10} {'dups':>8} {'wall s':>8} {'clips/s':>8} {'peak RSS MB':>12}")
    for r in rows:
        print(f"{r['inputs']:>9} {r['clips']:>10} {r['kept']:>10} {r['duplicates']:>8} {r['wall_s']:>8} "
              f"{r['clips_per_s']:>8} {r['peak_rss_mb']:>12}")
    if len(rows) >= 2:
        a, b = rows[-2], rows[-1]
        print(f"driver peak RSS {b['inputs']}/{a['inputs']} inputs: {b['peak_rss_mb'] / a['peak_rss_mb']:.3f}; "
              f"wall per clip {b['inputs']}/{a['inputs']}: "
              f"{(b['wall_s'] / b['clips']) / (a['wall_s'] / a['clips']):.3f}")
    if not args.keep:
        shutil.rmtree(args.workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
