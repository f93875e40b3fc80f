"""Evaluation as a tail task of a training run: one checkpoint in, one metrics row out.

    evaluate_checkpoint(checkpoint, run_dir, step, physics_iq=PhysicsIQTail(...), vbench=VBenchTail(...),
                        generate=None, device="cpu", steps=None) -> dict

It generates with `generate` (default: `vidmill generate` on `device`, see physics_iq_generate.py), scores,
writes RUN/eval/step-{step}/{physics-iq,vbench}/results.json, and logs one row (`log_eval_row`): a line in
RUN/metrics.jsonl and TensorBoard scalars under RUN/tensorboard/eval/ with the same names:
{"step": N, "kind": "eval", "eval/physics_iq/original": ..., "eval/physics_iq/stable": ...,
 "eval/physics_iq/verified": ..., "eval/vbench/total": ..., "eval/vbench/<dimension>": ..., ...}.
A value that could not be computed is null (never a number, never a TensorBoard point) and its reason is in
"eval/<benchmark>/status" and, per VBench dimension, "eval/vbench/not_computed". A benchmark that raises is
recorded as "eval/<benchmark>/status": "failed: ..." and listed in "eval/failed"; the other one still runs.
The training side (when and where this runs) is evaluation/tail_schedule.py.
"""

from __future__ import annotations

import json
import shutil
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from vidmill.evaluation.physics_iq_generate import GenerateFn, GenerationUnavailable, checkpoint_run

PHYSICS_IQ_VARIANTS = ("original", "stable", "verified")


@dataclass
class PhysicsIQTail:
    real: str  # the physics-IQ-benchmark folder
    fps: int | None = None  # benchmark fps; None: the checkpoint's own fps (it must be one the benchmark has)
    mode: str = "v2v"  # i2v: from the switch frame; v2v: from the 3 s clip
    limit: int | None = None  # first N views only (a quick signal; not comparable with published scores)
    mask_round_trip: bool = False


@dataclass
class VBenchTail:
    images: str  # conditioning images; one video is generated per image, named like it
    config: dict[str, Any] | str | None = None  # evaluation config dict or YAML path (config.load_eval_config)
    seconds: float = 2.0
    fps: float | None = None  # None: the checkpoint's own fps


def due(step: int, every: int | None, final: bool = False) -> bool:
    """True at every `every`-th step and at the end of the run."""
    return final or bool(every and step > 0 and step % every == 0)


def checkpoint_fps(checkpoint: str | Path) -> float:
    """The frame rate a run's checkpoint generates at (RUN/config.yaml `fps`, else its size preset's)."""
    from vidmill.training.generate import size_from_config

    run, _ = checkpoint_run(str(checkpoint))
    config_path = run / "config.yaml"
    if not config_path.is_file():
        raise FileNotFoundError(f"not a training run (no config.yaml): {run}")
    return float(size_from_config(yaml.safe_load(config_path.read_text()) or {}).fps)


def log_eval_row(run_dir: str | Path, row: dict[str, Any]) -> None:
    """Append the row to RUN/metrics.jsonl; numbers also go to TensorBoard (RUN/tensorboard/eval), statuses as text."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / "metrics.jsonl", "a") as f:  # one write per line: safe beside the trainer's appends
        f.write(json.dumps(row) + "\n")
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard missing: the jsonl line is the record
        return
    tb = SummaryWriter(str(run_dir / "tensorboard" / "eval"))
    try:
        texts = []
        for key, value in row.items():
            if isinstance(value, bool) or key == "step":
                continue
            if isinstance(value, (int, float)):
                tb.add_scalar(key, value, row["step"])
            elif key.endswith("status") or key.endswith("not_computed") or key == "eval/failed":
                texts.append(f"- {key}: {json.dumps(value)}")
        if texts:
            tb.add_text("eval/status", "\n".join(texts), row["step"])
    finally:
        tb.close()


def _physics_iq(cfg: PhysicsIQTail, checkpoint: str, out: Path, generate: GenerateFn) -> dict:
    from vidmill.evaluation.physics_iq_generate import generate_physics_iq
    from vidmill.evaluation.physics_iq_runner import PhysicsIQOptions, evaluate_physics_iq, write_results

    fps = cfg.fps or round(checkpoint_fps(checkpoint))
    gen_dir = out / "generated"
    gen_rows = generate_physics_iq(cfg.real, gen_dir, checkpoint, cfg.mode, fps, generate, cfg.limit)
    failed = [r for r in gen_rows if r["status"] != "ok"]
    if len(failed) == len(gen_rows):
        reason = failed[0]["error"] if failed else f"no take-1 testing video under {cfg.real}"
        raise RuntimeError(f"no video generated: {reason}")
    doc = evaluate_physics_iq(cfg.real, gen_dir, PhysicsIQOptions(fps=fps, mask_round_trip=cfg.mask_round_trip))
    doc["generation"] = {"mode": cfg.mode, "checkpoint": checkpoint, "rows": gen_rows}
    write_results(doc, out / "results.json")
    summary = doc["summary"]
    scores = summary["scores"]
    row: dict[str, Any] = {f"eval/physics_iq/{k}": (scores[k]["score"] if scores else None)
                           for k in PHYSICS_IQ_VARIANTS}
    row["eval/physics_iq/scenarios_ok"] = summary["n_ok"]
    row["eval/physics_iq/scenarios"] = summary["n_scenarios"]
    if not scores:
        row["eval/physics_iq/status"] = f"not computed: {summary['not_computed']}"
    elif summary["complete"]:
        row["eval/physics_iq/status"] = "ok"
    else:
        row["eval/physics_iq/status"] = f"partial: {summary['n_ok']}/{summary['n_scenarios']} scenarios"
    return row


def _vbench(cfg: VBenchTail, checkpoint: str, out: Path, generate: GenerateFn) -> dict:
    from vidmill.evaluation.config import load_eval_config
    from vidmill.evaluation.physics_iq_runner import write_results
    from vidmill.evaluation.vbench_models import build_probes
    from vidmill.evaluation.vbench_runner import IMAGE_SUFFIXES, evaluate_vbench

    fps = cfg.fps or checkpoint_fps(checkpoint)
    videos = out / "videos"
    videos.mkdir(parents=True, exist_ok=True)
    images = sorted(p for p in Path(cfg.images).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise FileNotFoundError(f"no conditioning images (*.png, *.jpg) in {cfg.images}")
    for image in images:
        generate(checkpoint, image, "i2v", cfg.seconds, fps, videos / f"{image.stem}.mp4")
    config = cfg.config if isinstance(cfg.config, dict) else load_eval_config(cfg.config)
    doc = evaluate_vbench(videos, cfg.images, build_probes(config))
    write_results(doc, out / "results.json")
    row: dict[str, Any] = {f"eval/vbench/{k}": v["score"] for k, v in doc["totals"].items()}
    row |= {f"eval/vbench/{k}": v["score"] for k, v in doc["dimensions"].items()}
    row |= {f"eval/vbench/{k}/includes": v["includes"] for k, v in doc["totals"].items()}
    not_computed = {k: v["status"] for k, v in doc["dimensions"].items() if v["score"] is None}
    if not_computed:
        row["eval/vbench/not_computed"] = not_computed
    total = doc["totals"]["total"]
    if total["complete"]:
        row["eval/vbench/status"] = "ok"
    elif total["score"] is None:
        row["eval/vbench/status"] = "not computed: no dimension has its models (see eval/vbench/not_computed)"
    else:
        row["eval/vbench/status"] = "partial: missing " + ", ".join(total["missing"])
    return row


def evaluate_checkpoint(checkpoint: str | Path, run_dir: str | Path, step: int, *,
                        physics_iq: PhysicsIQTail | None = None, vbench: VBenchTail | None = None,
                        generate: GenerateFn | None = None, keep_videos: bool = True, device: str = "cpu",
                        steps: int | None = None) -> dict:
    """Generate with `checkpoint`, score the configured benchmarks, log the row (metrics.jsonl, TensorBoard), return it.

    Never raises for a benchmark's failure: it is recorded in the row ("eval/failed" lists the benchmarks).
    """
    run_dir = Path(run_dir)
    base = run_dir / "eval" / f"step-{step}"
    row: dict[str, Any] = {"step": step, "kind": "eval", "checkpoint": str(checkpoint)}
    suites = [(name, cfg) for name, cfg in (("physics_iq", physics_iq), ("vbench", vbench)) if cfg is not None]
    if generate is None:
        from vidmill.evaluation.physics_iq_generate import vidmill_generator

        try:
            generate = vidmill_generator(device=device, steps=steps)
        except GenerationUnavailable as exc:
            row |= {f"eval/{name}/status": f"not computed: {exc}" for name, _ in suites}
            log_eval_row(run_dir, row)
            return row
    failed = []
    for name, cfg in suites:
        out = base / name.replace("_", "-")
        try:
            row |= (_physics_iq if name == "physics_iq" else _vbench)(cfg, str(checkpoint), out, generate)
        except Exception as exc:  # noqa: BLE001 (a benchmark's failure is recorded, the run goes on)
            failed.append(name)
            row[f"eval/{name}/status"] = f"failed: {type(exc).__name__}: {exc}"
            out.mkdir(parents=True, exist_ok=True)
            (out / "error.txt").write_text(traceback.format_exc())
        if not keep_videos:
            shutil.rmtree(out / ("generated" if name == "physics_iq" else "videos"), ignore_errors=True)
    if failed:
        row["eval/failed"] = failed
    log_eval_row(run_dir, row)
    return row
