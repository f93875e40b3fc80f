"""Synthetic per-input records (no video) for finalize tests and bench/scale.py: about `clips` clips an
input with realistic score dicts (64-bit pHashes, quality / motion / OCR scores, statuses), a share of
near and exact duplicates of earlier clips (across parts too), optional CLIP embeddings."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator

from vidmill.pipeline.finalize.layout import Layout, ListingWriter
from vidmill.pipeline.records import ClipRecord, InputRecord, InputResult, Shot
from vidmill.pipeline.sources import InputRef, input_id_for

CAMERA = ["static", "pan_left", "pan_right", "tilt_up", "zoom_in", "zoom_out"]


def synthetic_results(n_inputs: int, clips: int = 10, duplicates: float = 0.05, embeddings: bool = False,
                      seed: int = 0, prefix: str = "s3://bucket/raw", start: int = 0) -> Iterator[InputResult]:
    """Inputs number `start` .. `start + n_inputs - 1`, in source_uri order; about `duplicates` of the clips copy
    the hashes of a recent clip or of a pool shared by every `start` (so parts made apart share duplicates):
    a third of them exactly, the rest with two pHash bits flipped."""
    shared = random.Random(seed)
    recent = [(f"{shared.getrandbits(160):040x}", [shared.getrandbits(64) for _ in range(3)]) for _ in range(200)]
    rng = random.Random(seed * 1_000_003 + start)
    for number in range(start, start + n_inputs):
        uri = f"{prefix}/{number:09d}.mp4"
        input_id = input_id_for(uri)
        n = max(1, clips + rng.randint(-2, 2))
        record = InputRecord(input_id, uri, rng.randint(10**6, 10**8), duration_s=10.0 * n, n_shots=n, n_clips=n,
                             fps=24.0, width=1280, height=720, rotation=0, codec="h264", video_start_s=0.0,
                             source_version=f"size:{number}:mtime:0")
        result = InputResult(record)
        for shot in range(n):
            start = 10.0 * shot
            result.shots.append(Shot(shot, start, start + 10.0, 240 * shot, 240 * shot + 240))
            clip = ClipRecord(f"{input_id}_{shot:04d}_00", input_id, uri, shot, start + 0.25, start + 9.75, 9.5,
                              24.0, 1280, 720)
            if rng.random() < 0.03:
                clip.reject("too_short")
            content, phashes = f"{rng.getrandbits(160):040x}", [rng.getrandbits(64) for _ in range(3)]
            if recent and rng.random() < duplicates:
                content, phashes = rng.choice(recent)
                if rng.random() > 1 / 3:
                    content = f"{rng.getrandbits(160):040x}"
                    phashes = [h ^ (1 << rng.randrange(64)) ^ (1 << rng.randrange(64)) for h in phashes]
            if len(recent) < 1000:
                recent.append((content, phashes))
            else:
                recent[rng.randrange(1000)] = (content, phashes)
            clip.scores = {
                "hash_status": "scored", "content_hash": content, "phash": f"{phashes[1]:016x}",
                "phashes": [f"{h:016x}" for h in phashes],
                "aesthetic_status": "not_scored: no weights (scoring.aesthetic.clip_weights is not set)",
                "quality_status": "scored", "sharpness": round(rng.uniform(5, 400), 3),
                "brightness": round(rng.uniform(0.05, 0.95), 5), "colourfulness": round(rng.uniform(0, 150), 4),
                "motion_status": "scored", "motion_score": round(rng.expovariate(50), 6),
                "camera_motion": rng.choice(CAMERA), "ocr_status": "scored",
                "text_area_max": round(rng.expovariate(40), 5), "text_area_mean": round(rng.expovariate(80), 5),
                "text_persistent_area": round(rng.expovariate(100), 5)}
            if embeddings:
                vector = [rng.gauss(0, 1) for _ in range(16)]
                norm = sum(v * v for v in vector) ** 0.5
                clip.scores["clip_embedding"] = [v / norm for v in vector]
            result.clips.append(clip)
        yield result


def write_records(layout: Layout, fingerprint: str, results: Iterator[InputResult], per_part: int) -> ListingWriter:
    """Each result as its _work/inputs/{input_id}.json marker, and the listing parts; returns the writer."""
    listed = ListingWriter(layout, per_part)
    layout.fs.makedirs(f"{layout.output}/_work/inputs", exist_ok=True)
    for result in results:
        record = result.input
        layout.fs.pipe_file(layout.record(record.input_id),
                            json.dumps({"fingerprint": fingerprint, **result.work_json()}).encode())
        listed.add(InputRef(record.input_id, record.source_uri, record.size_bytes, record.source_version or ""))
    listed.flush()
    return listed
