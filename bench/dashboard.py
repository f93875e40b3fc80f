"""Dashboard at scale: a synthetic N-row manifest (the real manifest schema, reasons from the pipeline's
own filter_reasons), served by `vidmill dashboard`; prints the time of the main page, a histogram, a
what-if move, a gallery page and the server's memory.

    .venv/bin/python bench/dashboard.py [--rows 1000000] [--out bench-out/dashboard]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from vidmill.pipeline.config import CurateConfig
from vidmill.pipeline.decide import filter_reasons
from vidmill.pipeline.records import inputs_schema, manifest_schema, shots_schema

CAMERA = np.array(["static", "pan_left", "pan_right", "tilt_up", "tilt_down", "zoom_in", "zoom_out", "shaky"])
CAPTIONS = [f"the camera {verb}; something moves in the {where}; the scene is {light}"
            for verb in ("holds still", "pans left", "tilts up") for where in ("top left", "centre", "bottom right")
            for light in ("evenly lit, mostly blue", "dark", "bright and warm")]


def write_synthetic(out: Path, n: int, seed: int = 0) -> Path:
    """A curation output with `n` candidate clips: manifest, inputs, shots and run.json (no shards)."""
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    th = CurateConfig().thresholds
    n_inputs = max(1, n // 10)
    input_of = np.sort(rng.integers(0, n_inputs, n))
    duration = np.round(rng.uniform(1.0, 10.0, n), 3)
    start = np.round(rng.uniform(0, 600, n), 3)
    cols: dict[str, object] = {
        "sharpness": rng.lognormal(4.0, 1.0, n), "brightness": rng.beta(5, 5, n),
        "colourfulness": rng.gamma(4.0, 10.0, n), "motion_score": rng.lognormal(-5.5, 1.2, n),
        "text_area_max": rng.exponential(0.02, n), "text_area_mean": rng.exponential(0.01, n),
        "text_persistent_area": rng.exponential(0.008, n),
    }
    camera = CAMERA[rng.choice(len(CAMERA), n, p=[.5, .08, .08, .07, .07, .07, .07, .06])]
    status = np.where(rng.random(n) < 0.001, "error: synthetic failure", "scored")
    columns = [np.asarray(c).tolist() for c in cols.values()]
    rows_for_rule = [dict(zip(cols, vals, strict=True)) for vals in zip(*columns, strict=True)]
    reasons: list[list[str]] = []
    too_short = duration < 2.0
    dup = rng.random(n) < 0.02
    for k, row in enumerate(rows_for_rule):
        if too_short[k]:
            reasons.append(["too_short"])
            continue
        row.update(camera_motion=str(camera[k]), quality_status=str(status[k]), motion_status="scored",
                   ocr_status="scored", hash_status="scored",
                   aesthetic_status="not_scored: no weights (scoring.aesthetic.clip_weights is not set)")
        got = filter_reasons(row, th)
        if not got and dup[k]:
            got = ["duplicate"]
        reasons.append(got)
    for name in cols:  # spans rejected as too short were never scored
        arr = np.asarray(cols[name], dtype=float)
        arr[too_short] = np.nan
        cols[name] = arr
    kept = np.array([not r for r in reasons])
    ids = [f"{i:016x}_{k % 10000:04d}_00" for k, i in enumerate(input_of)]
    shard = np.where(kept, [f"shard-{k // 1000:06d}.tar" for k in range(n)], None)
    n_caps = np.ceil(duration).astype(int)
    offsets = np.concatenate([[0], np.cumsum(np.where(kept, n_caps, 0))])
    cap_values = pa.array(np.array(CAPTIONS, dtype=object)[rng.integers(0, len(CAPTIONS), int(offsets[-1]))])
    captions_ps = pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), cap_values, mask=pa.array(~kept))
    data = {
        "clip_id": ids, "input_id": [f"{i:016x}" for i in input_of],
        "source_uri": [f"s3://bucket/raw/video-{i:08d}.mp4" for i in input_of], "shot_index": rng.integers(0, 50, n),
        "start_s": start, "end_s": start + duration, "duration_s": duration,
        "fps": rng.choice([24.0, 25.0, 29.97, 30.0, 60.0], n), "width": rng.choice([640, 1280, 1920], n),
        "height": rng.choice([360, 720, 1080], n), "kept": kept, "reject_reasons": reasons,
        "clip_bytes": np.where(kept, rng.integers(200_000, 3_000_000, n), 0), "shard": shard,
        "key": np.where(kept, ids, None), **cols, "quality_status": np.where(too_short, None, status),
        "camera_motion": np.where(too_short, None, camera), "motion_status": np.where(too_short, None, "scored"),
        "ocr_status": np.where(too_short, None, "scored"),
        "aesthetic_status": np.where(too_short, None, "not_scored: no weights (scoring.aesthetic.clip_weights "
                                                      "is not set)"),
        "hash_status": np.where(too_short, None, "scored"),
        "dup_group": np.where(dup & ~too_short, [f"dup-{k // 3:012x}" for k in range(n)], None),
        "caption": np.where(kept, "A short synthetic shot.", None), "captions_per_second": captions_ps,
        "captioner": np.where(kept, "signals", None),
    }
    arrays = []
    for field in manifest_schema():
        value = data.get(field.name)
        if value is None:
            arrays.append(pa.nulls(n, field.type))
        elif isinstance(value, pa.Array):
            arrays.append(value.cast(field.type))
        elif isinstance(value, np.ndarray) and value.dtype.kind == "f":
            arrays.append(pa.array(value, field.type, from_pandas=True))
        else:
            arrays.append(pa.array(value.tolist() if isinstance(value, np.ndarray) else value, field.type))
    pq.write_table(pa.Table.from_arrays(arrays, schema=manifest_schema()), out / "manifest.parquet")
    inputs = {"input_id": [f"{i:016x}" for i in range(n_inputs)],
              "source_uri": [f"s3://bucket/raw/video-{i:08d}.mp4" for i in range(n_inputs)],
              "status": ["ok"] * n_inputs, "duration_s": rng.uniform(30, 900, n_inputs).tolist()}
    pq.write_table(pa.table({f.name: pa.array(inputs.get(f.name, [None] * n_inputs), f.type)
                             for f in inputs_schema()}), out / "inputs.parquet")
    shots = {"input_id": [ids[k][:16] for k in range(0, n, 2)], "shot_index": list(range(0, n, 2)),
             "start_s": [0.0] * len(range(0, n, 2)), "end_s": [8.0] * len(range(0, n, 2))}
    pq.write_table(pa.table({f.name: pa.array(shots.get(f.name, [None] * len(shots["start_s"])), f.type)
                             for f in shots_schema()}), out / "shots.parquet")
    run = {"config": dataclasses.asdict(CurateConfig()), "counts": {"clips": n}, "stages": {}, "wall_s": None}
    (out / "run.json").write_text(json.dumps(run))
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _timed(client, url: str) -> tuple[float, int]:
    t = time.perf_counter()
    r = client.get(url)
    r.raise_for_status()
    return time.perf_counter() - t, len(r.content)


def main() -> int:
    import httpx
    import psutil

    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--out", default="bench-out/dashboard")
    args = ap.parse_args()
    out = Path(args.out) / f"synthetic-{args.rows}"
    t = time.perf_counter()
    if not (out / "manifest.parquet").exists():
        write_synthetic(out, args.rows)
        print(f"wrote {args.rows:,}-row synthetic output in {time.perf_counter() - t:.1f}s "
              f"(manifest {os.path.getsize(out / 'manifest.parquet') / 1e6:.0f} MB)")
    port = _free_port()
    vidmill = Path(sys.executable).parent / "vidmill"
    t = time.perf_counter()
    proc = subprocess.Popen([str(vidmill), "dashboard", str(out), "--port", str(port)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base, timeout=120) as client:
            while True:
                try:
                    client.get("/static/app.css")
                    break
                except httpx.HTTPError:
                    if proc.poll() is not None:
                        print(proc.stdout.read())
                        return 1
                    time.sleep(0.2)
            print(f"server ready in {time.perf_counter() - t:.2f}s (manifest loaded, what-if arrays and page "
                  f"aggregates computed once)")
            rows = [("main page", "/"), ("main page (again)", "/"),
                    ("histogram sharpness (computed at start)", "/api/hist?column=sharpness"),
                    ("histogram motion_score", "/api/hist?column=motion_score"),
                    ("histogram text_area_max, not cached (57 bins)", "/api/hist?column=text_area_max&bins=57"),
                    ("what-if: sharpness_min 10 -> 30", "/api/whatif?sharpness_min=30"),
                    ("what-if: motion_min + text_area_max", "/api/whatif?motion_min=0.001&text_area_max=0.02"),
                    ("gallery page 10 (24 tiles, HTML)", "/gallery?page=10"),
                    ("gallery rejected+blurry page 3 (JSON)", "/api/gallery?status=rejected&reason=blurry&page=3"),
                    ("gallery caption search (JSON)", "/api/gallery?text=tilts%20up&page=2"),
                    ("clip row (wide columns from Parquet)", "/api/clip/" + "0" * 16 + "_0000_00?run=0")]
            for label, url in rows:
                seconds, size = _timed(client, url)
                extra = ""
                if "whatif" in url:
                    got = client.get(url).json()
                    extra = f"  kept {got['kept_now']:,} -> {got['kept_new']:,}, {got['groups']} classes"
                print(f"{label:45s} {seconds * 1000:8.1f} ms  {size / 1024:7.1f} KiB{extra}")
            rss = sum(p.memory_info().rss for p in [psutil.Process(proc.pid)] +
                      psutil.Process(proc.pid).children(recursive=True))
            print(f"server RSS {rss / 2**20:.0f} MiB")
    finally:
        proc.terminate()
        proc.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
