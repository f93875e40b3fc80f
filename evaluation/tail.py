"""Evaluation as a tail task of a training run: a plain function the trainer (or a script) calls.

    evaluate_checkpoint(checkpoint, run_dir, step, physics_iq=PhysicsIQTail(...), vbench=VBenchTail(...),
                        generate=None) -> dict

It generates with `generate` (default: `vidmill generate`, see physics_iq_generate.py), scores, writes
RUN/eval/step-{step}/{physics-iq,vbench}/results.json, and appends one line to RUN/metrics.jsonl:
{"step": N, "kind": "eval", "eval/physics_iq/original": ..., "eval/physics_iq/stable": ...,
 "eval/physics_iq/verified": ..., "eval/vbench/total": ..., ...}; a value that could not be computed is null
and its reason is under "eval/<benchmark>/status". `due(step, every, final)` says when to call it.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vidmill.evaluation.physics_iq_generate import GenerateFn, GenerationUnavailable


@dataclass
class PhysicsIQTail:
    real: str  # the physics-IQ-benchmark folder
    fps: int = 16
    mode: str = "v2v"  # i2v: from the switch frame; v2v: from the 3 s clip
    limit: int | None = None  # first N views only (a quick signal; not comparable with published scores)
    mask_round_trip: bool = False


@dataclass
class VBenchTail:
    images: str  # conditioning images; one video is generated per image, named like it
    config: dict[str, Any] = field(default_factory=dict)  # evaluation config (config.load_eval_config)
    seconds: float = 2.0
    fps: float = 16.0


def due(step: int, every: int | None, final: bool = False) -> bool:
    """True at every `every`-th step and at the end of the run."""
    return final or bool(every and step > 0 and step % every == 0)


def _append_metrics(run_dir: Path, row: dict) -> None:
    with open(run_dir / "metrics.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")


def _physics_iq(cfg: PhysicsIQTail, checkpoint: str, out: Path, generate: GenerateFn | None) -> dict:
    from vidmill.evaluation.physics_iq_generate import generate_physics_iq
    from vidmill.evaluation.physics_iq_runner import PhysicsIQOptions, evaluate_physics_iq, write_results

    gen_dir = out / "generated"
    generate_physics_iq(cfg.real, gen_dir, checkpoint, cfg.mode, cfg.fps, generate, cfg.limit)
    doc = evaluate_physics_iq(cfg.real, gen_dir, PhysicsIQOptions(fps=cfg.fps, mask_round_trip=cfg.mask_round_trip))
    write_results(doc, out / "results.json")
    scores = doc["summary"]["scores"]
    row = {f"eval/physics_iq/{k}": (scores[k]["score"] if scores else None) for k in ("original", "stable", "verified")}
    row["eval/physics_iq/status"] = "ok" if doc["summary"]["complete"] else (
        f"partial: {doc['summary']['n_ok']}/{doc['summary']['n_scenarios']} scenarios")
    return row


def _vbench(cfg: VBenchTail, checkpoint: str, out: Path, generate: GenerateFn) -> dict:
    from vidmill.evaluation.config import load_eval_config
    from vidmill.evaluation.physics_iq_runner import write_results
    from vidmill.evaluation.vbench_models import build_probes
    from vidmill.evaluation.vbench_runner import IMAGE_SUFFIXES, evaluate_vbench

    videos = out / "videos"
    videos.mkdir(parents=True, exist_ok=True)
    for image in sorted(p for p in Path(cfg.images).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
        generate(checkpoint, image, "i2v", cfg.seconds, cfg.fps, videos / f"{image.stem}.mp4")
    config = cfg.config or load_eval_config()
    doc = evaluate_vbench(videos, cfg.images, build_probes(config))
    write_results(doc, out / "results.json")
    row = {f"eval/vbench/{k}": v["score"] for k, v in doc["totals"].items()}
    row |= {f"eval/vbench/{k}": v["score"] for k, v in doc["dimensions"].items()}
    row["eval/vbench/status"] = "ok" if doc["totals"]["total"]["complete"] else (
        "partial: missing " + ", ".join(doc["totals"]["total"]["missing"]))
    return row


def evaluate_checkpoint(checkpoint: str | Path, run_dir: str | Path, step: int, *,
                        physics_iq: PhysicsIQTail | None = None, vbench: VBenchTail | None = None,
                        generate: GenerateFn | None = None, keep_videos: bool = True) -> dict:
    """Generate with `checkpoint`, score the configured benchmarks, append the row to RUN/metrics.jsonl, return it."""
    run_dir = Path(run_dir)
    base = run_dir / "eval" / f"step-{step}"
    row: dict[str, Any] = {"step": step, "kind": "eval", "checkpoint": str(checkpoint)}
    if generate is None:
        from vidmill.evaluation.physics_iq_generate import default_generator

        try:
            generate = default_generator()
        except GenerationUnavailable as exc:
            for name, cfg in (("physics_iq", physics_iq), ("vbench", vbench)):
                if cfg is not None:
                    row[f"eval/{name}/status"] = f"not computed: {exc}"
            _append_metrics(run_dir, row)
            return row
    if physics_iq is not None:
        row |= _physics_iq(physics_iq, str(checkpoint), base / "physics-iq", generate)
        if not keep_videos:
            shutil.rmtree(base / "physics-iq" / "generated", ignore_errors=True)
    if vbench is not None:
        row |= _vbench(vbench, str(checkpoint), base / "vbench", generate)
        if not keep_videos:
            shutil.rmtree(base / "vbench" / "videos", ignore_errors=True)
    _append_metrics(run_dir, row)
    return row
