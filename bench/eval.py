"""Physics-IQ throughput: vidmill's evaluator against a straightforward frame-by-frame implementation, one run.

The baseline does what the upstream scripts do: every mask video is computed frame by frame and written to
disk as mp4v, then each video and mask is re-opened and read frame by frame (the first real frame once more for
the target size), and the metrics loop over frames in Python. vidmill decodes each video once, keeps masks in
memory (or, with --round-trip, reproduces the mp4v write/read) and computes metrics over whole arrays.
With --round-trip both paths must give identical per-view metrics; the script checks it.

    .venv/bin/python bench/eval.py --scenarios 4 --size 320x240 --fps 16
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from vidmill.evaluation import physics_iq as piq
from vidmill.evaluation.physics_iq_layout import VIEWS, attach_generated, read_real
from vidmill.evaluation.physics_iq_runner import PhysicsIQOptions, evaluate_physics_iq
from vidmill.evaluation.physics_iq_score import all_scores
from vidmill.evaluation.video_io import write_video


def synthetic_video(t: int, w: int, h: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    frames = np.empty((t, h, w, 3), np.uint8)
    frames[:] = rng.integers(30, 60, (1, h, w, 3), dtype=np.uint8)
    x0, y0, vx, vy = int(rng.integers(0, w // 2)), int(rng.integers(0, h // 2)), rng.uniform(1, 4), rng.uniform(0, 3)
    s = max(8, min(w, h) // 6)
    for i in range(t):
        x, y = int(x0 + vx * i) % (w - s), int(y0 + vy * i) % (h - s)
        frames[i, y:y + s, x:x + s] = (200, 180, 160)
    return frames


def make_dataset(root: Path, scenarios: int, w: int, h: int, fps: int) -> tuple[Path, Path]:
    bench, gen = root / "physics-IQ-benchmark", root / "generated"
    folder = bench / "split-videos" / "testing" / f"{fps}FPS"
    n = 0
    for s in range(scenarios):
        for view in VIEWS:
            ids = {}
            for take in ("take-1", "take-2"):
                n += 1
                ids[take] = f"{n:04d}"
                name = f"{ids[take]}_testing-videos_{fps}FPS_{view}_{take}_trimmed-s{s}.mp4"
                write_video(folder / name, synthetic_video(5 * fps, w, h, seed=n), fps)
            generated = synthetic_video(5 * fps, w, h, seed=10_000 + n)
            write_video(gen / f"{ids['take-1']}_{view}_trimmed-s{s}.mp4", generated, fps)
    return bench, gen


# The straightforward implementation --------------------------------------------------------------------------

def write_mask_video(src: Path, dst: Path) -> None:
    cap = cv2.VideoCapture(str(src))
    fps = round(cap.get(cv2.CAP_PROP_FPS))
    w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    out = cv2.VideoWriter(str(dst), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w - w % 2, h - h % 2), isColor=False)
    ok, frame = cap.read()
    gray = cv2.GaussianBlur(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY), (5, 5), 0)
    avg = gray.astype("float")
    out.write(np.zeros_like(gray))
    kernel = np.ones((5, 5), np.uint8)
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        gray = cv2.GaussianBlur(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY), (5, 5), 0)
        cv2.accumulateWeighted(gray, avg, 0.3)
        _, mask = cv2.threshold(cv2.absdiff(gray, cv2.convertScaleAbs(avg)), 10, 255, cv2.THRESH_BINARY)
        mask = cv2.morphologyEx(cv2.morphologyEx(mask, cv2.MORPH_OPEN, kernel), cv2.MORPH_CLOSE, kernel)
        out.write(mask)
    cap.release()
    out.release()


def load_frames(path: Path, end: int, size=None, normalize=True) -> list:
    cap = cv2.VideoCapture(str(path))
    frames, i = [], 0
    while cap.isOpened():
        ok, frame = cap.read()
        if not ok:
            break
        if i < end:
            if size:
                frame = cv2.resize(frame, size)
            frames.append(frame / 255.0 if normalize else frame)
        i += 1
    cap.release()
    return frames


def iou_loop(a, b) -> list[float]:
    out = []
    for m1, m2 in zip(a, b, strict=False):
        union = np.logical_or(m1, m2).sum()
        out.append(1.0 if union == 0 else float(np.logical_and(m1, m2).sum() / union))
    return out


def mse_loop(a, b) -> list[float]:
    return [float(np.mean((f1.astype(np.float32) - f2.astype(np.float32)) ** 2)) for f1, f2 in zip(a, b, strict=False)]


def wsp_loop(a, b) -> float:
    w1, w2 = np.sum(a, axis=0, dtype=np.uint16) / len(a), np.sum(b, axis=0, dtype=np.uint16) / len(b)
    inter, union = np.minimum(w1, w2), np.maximum(w1, w2)
    valid = union > 0
    return 1.0 if valid.sum() == 0 else float(np.sum(inter[valid]) / np.sum(union[valid]))


def baseline(bench: Path, gen: Path, fps: int, work: Path) -> dict:
    real = read_real(bench, fps)
    attach_generated(real, gen)
    n = 5 * fps
    scenarios = []
    for sc in real.scenarios.values():
        views = {}
        for view, vf in sc.views.items():
            paths = {"g": vf.generated, "r1": vf.take1, "r2": vf.take2}
            for key, src in paths.items():
                write_mask_video(src, work / f"{src.stem}-{key}-mask.mp4")
            size = (load_frames(vf.take1, 1, normalize=False)[0].shape[1] // 4,
                    load_frames(vf.take1, 1, normalize=False)[0].shape[0] // 4)
            v = {k: load_frames(p, n, size) for k, p in paths.items()}
            m = {k: [(x > 127).astype(np.uint8) for x in load_frames(work / f"{p.stem}-{k}-mask.mp4", n, size, False)]
                 for k, p in paths.items()}

            def spatial(ms):
                return (np.max(ms, axis=0) > 0).astype(np.uint8) * 255

            views[view] = piq.ViewMetrics(
                iou_loop(m["r1"], m["g"]), iou_loop([spatial(m["r1"])], [spatial(m["g"])])[0],
                wsp_loop(m["r1"], m["g"]),
                mse_loop(v["r1"], v["g"]), iou_loop(m["r1"], m["r2"]),
                iou_loop([spatial(m["r1"])], [spatial(m["r2"])])[0], wsp_loop(m["r1"], m["r2"]),
                mse_loop(v["r1"], v["r2"]))
        scenarios.append(views)
    return {"scenarios": scenarios, "scores": all_scores(scenarios)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenarios", type=int, default=4)
    parser.add_argument("--size", default="320x240")
    parser.add_argument("--fps", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    w, h = map(int, args.size.split("x"))
    root = Path(tempfile.mkdtemp(prefix="bench-eval-"))
    try:
        bench, gen = make_dataset(root, args.scenarios, w, h, args.fps)
        videos = args.scenarios * 3 * 3  # generated + two takes per view
        print(f"{args.scenarios} scenarios x 3 views, {videos} videos of {w}x{h}, {5 * args.fps} frames; "
              f"cores: {os.cpu_count()}, load avg: {os.getloadavg()[0]:.1f}")
        work = root / "masks"
        work.mkdir()
        t0 = time.perf_counter()
        base = baseline(bench, gen, args.fps, work)
        t_base = time.perf_counter() - t0
        runs = {}
        for label, rt, workers in (("vidmill round-trip, 1 worker", True, 1), ("vidmill default, 1 worker", False, 1),
                                   (f"vidmill default, {args.workers} workers", False, args.workers)):
            t0 = time.perf_counter()
            runs[label] = (evaluate_physics_iq(bench, gen, PhysicsIQOptions(fps=args.fps, mask_round_trip=rt,
                                                                            workers=workers)),
                           time.perf_counter() - t0)
        print(f"{'frame-by-frame baseline':34s} {t_base:7.2f} s  {videos / t_base:6.2f} videos/s  1.00x")
        for label, (_, secs) in runs.items():
            print(f"{label:34s} {secs:7.2f} s  {videos / secs:6.2f} videos/s  {t_base / secs:4.2f}x")
        rt_doc = runs["vidmill round-trip, 1 worker"][0]
        fields = list(piq.ViewMetrics.__dataclass_fields__)
        ours = [[{f: row["views"][v][f] for f in fields} for v in VIEWS] for row in rt_doc["rows"]]
        theirs = [[base["scenarios"][i][v].to_dict() for v in VIEWS] for i in range(len(base["scenarios"]))]
        print(f"  per-view metrics, round trip vs baseline: {'identical' if ours == theirs else 'DIFFERENT'}")
        if ours != theirs:
            return 1
        same = rt_doc["summary"]["scores"]
        for variant in ("original", "stable", "verified"):
            ok = same[variant]["score"] == base["scores"][variant]["score"]
            print(f"  {variant:9s} baseline {base['scores'][variant]['score']:6.2f}  vidmill round-trip "
                  f"{same[variant]['score']:6.2f}  {'identical' if ok else 'DIFFERENT'}")
            if not ok:
                return 1
        default = runs["vidmill default, 1 worker"][0]["summary"]["scores"]
        print("  without the round trip: " + ", ".join(f"{v} {default[v]['score']:.2f}"
                                                       for v in ("original", "stable", "verified")))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
