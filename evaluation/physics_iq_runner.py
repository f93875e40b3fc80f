"""Physics-IQ over a real benchmark folder and a folder of generated videos: one row per scenario, a summary.

Each scenario row has a status: `ok` (all three views scored), `missing` (a generated or real file is absent)
or `error` (a file failed to decode, or a generated video is not 5 s at the benchmark fps). Only `ok`
scenarios enter the scores; the summary says how many scenarios that is (a partial set is not comparable
with published numbers). Every video is decoded once and streamed: only quarter-size frames and masks of
the first 5 s are kept.
"""

from __future__ import annotations

import json
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vidmill.evaluation import physics_iq as piq
from vidmill.evaluation.physics_iq_layout import VIEWS, RealSet, ViewFiles, attach_generated, read_real
from vidmill.evaluation.physics_iq_score import all_scores
from vidmill.evaluation.video_io import read_video, stream_video

DURATION_TOLERANCE_S = 0.001


@dataclass
class PhysicsIQOptions:
    fps: int | None = None  # benchmark fps; None: taken from the generated videos (all must agree)
    mask_round_trip: bool = False  # upstream's lossy mp4v write + read of every mask
    workers: int = 2


def generated_fps(paths: list[Path]) -> int:
    import cv2

    rates = set()
    for p in paths:
        cap = cv2.VideoCapture(str(p))
        if cap.isOpened() and cap.get(cv2.CAP_PROP_FPS) > 0:  # unreadable files become error rows later
            rates.add(cap.get(cv2.CAP_PROP_FPS))
        cap.release()
    if len(rates) != 1:
        raise ValueError(f"generated videos must share one fps, found {sorted(rates)}")
    return int(round(rates.pop()))


def real_frames(path: Path, folder_fps: int, fps: int):
    """A real take's frames at the benchmark fps: streamed as stored, or converted in memory from 30 fps."""
    if folder_fps == fps:
        return stream_video(path)[1]
    video = read_video(path)
    return iter(piq.change_fps(video.frames, video.fps, fps))


def score_view(vf: ViewFiles, real: RealSet, fps: int, round_trip: bool) -> piq.ViewMetrics:
    """Decode the three videos of one view once each and compute every metric (raises ValueError on bad input)."""
    n = piq.SECONDS * fps
    gen_fps, gen_frames = stream_video(vf.generated)
    if abs(gen_fps - fps) > 1e-3:
        raise ValueError(f"generated video {vf.generated.name} is at {gen_fps:g} fps, not {fps}")
    real1 = piq.prepare_stream(real_frames(vf.take1, real.fps, fps), fps, n, None, round_trip)
    gen = piq.prepare_stream(gen_frames, fps, n, real1.size, round_trip)
    if not math.isclose(gen.n_read / gen_fps, piq.SECONDS, abs_tol=DURATION_TOLERANCE_S):
        raise ValueError(f"generated video {vf.generated.name} is {gen.n_read} frames at {gen_fps:g} fps "
                         f"({gen.n_read / gen_fps:.3f} s); it must last 5 s at {fps} fps")
    real2 = piq.prepare_stream(real_frames(vf.take2, real.fps, fps), fps, n, real1.size, round_trip)
    return piq.view_metrics(gen.frames, real1.frames, real2.frames, gen.masks, real1.masks, real2.masks)


def _view_job(vf: ViewFiles, real: RealSet, fps: int, round_trip: bool) -> dict:
    missing = [k for k in ("take1", "take2", "generated") if getattr(vf, k) is None]
    if missing:
        return {"status": "missing", "error": f"missing {', '.join(missing)}"}
    try:
        return {"status": "ok", "metrics": score_view(vf, real, fps, round_trip)}
    except ValueError as exc:
        return {"status": "error", "error": str(exc)}


def _scenario_row(name: str, views: dict[str, dict]) -> dict:
    statuses = [views[v]["status"] for v in VIEWS]
    status = "ok" if all(s == "ok" for s in statuses) else ("error" if "error" in statuses else "missing")
    row = {"scenario": name, "status": status, "views": {}}
    errors = [f"{v}: {views[v]['error']}" for v in VIEWS if views[v]["status"] != "ok"]
    if errors:
        row["error"] = "; ".join(errors)
    for v in VIEWS:
        entry = {"status": views[v]["status"]}
        if "metrics" in views[v]:
            vm = views[v]["metrics"]
            entry.update(vm.to_dict())
            entry["means"] = {"spatiotemporal_iou": float(np.mean(vm.spatiotemporal_iou)),
                              "mse": float(np.mean(vm.mse)),
                              "var_spatiotemporal_iou": float(np.mean(vm.var_spatiotemporal_iou)),
                              "var_mse": float(np.mean(vm.var_mse))}
        row["views"][v] = entry
    return row


def evaluate_physics_iq(real: str | Path, generated: str | Path, options: PhysicsIQOptions | None = None) -> dict:
    """Score every scenario found in `real` against `generated`; returns the results.json document."""
    options = options or PhysicsIQOptions()
    start = time.perf_counter()
    gen_files = sorted(Path(generated).glob("*.mp4"))
    if not gen_files:
        raise FileNotFoundError(f"no generated .mp4 files in {generated}")
    fps = options.fps or generated_fps(gen_files)
    real_set = read_real(Path(real), fps)
    if not real_set.scenarios:
        raise FileNotFoundError(f"no real testing videos found under {real}")
    unmatched = attach_generated(real_set, Path(generated))
    jobs = [(sc.scenario, v, sc.views.get(v, ViewFiles(v, ""))) for sc in real_set.scenarios.values() for v in VIEWS]
    with ThreadPoolExecutor(max(1, options.workers)) as pool:
        results = list(pool.map(lambda j: _view_job(j[2], real_set, fps, options.mask_round_trip), jobs))
    per_scenario: dict[str, dict[str, dict]] = {}
    for (name, view, _), res in zip(jobs, results, strict=False):
        per_scenario.setdefault(name, {})[view] = res
    rows = [_scenario_row(name, views) for name, views in per_scenario.items()]
    scored = [{v: per_scenario[r["scenario"]][v]["metrics"] for v in VIEWS} for r in rows if r["status"] == "ok"]
    summary = {"n_scenarios": len(rows), "n_ok": len(scored),
               "n_missing": sum(r["status"] == "missing" for r in rows),
               "n_error": sum(r["status"] == "error" for r in rows), "complete": len(scored) == len(rows),
               "unmatched_generated": unmatched}
    if scored:
        summary["scores"] = all_scores(scored)
    else:
        summary["scores"] = None
        summary["not_computed"] = "no scenario has all three views scored"
    elapsed = time.perf_counter() - start
    return {"benchmark": "physics-iq", "fps": fps, "real": str(real), "generated": str(generated),
            "options": {"mask_round_trip": options.mask_round_trip},
            "rows": rows, "summary": summary,
            "timing": {"seconds": elapsed, "videos": 3 * sum(len(s) for s in per_scenario.values())}}


def _finite(value):
    """Strict JSON: inf / nan (a zero physical variance) become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def write_results(doc: dict, out: str | Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(_finite(doc), indent=1, allow_nan=False))
    return out
