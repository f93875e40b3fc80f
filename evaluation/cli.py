"""Evaluation's subcommands: `vidmill eval physics-iq`, `vbench`, `checkpoint` (a run's tail task), `demo-set`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _print_physics_iq(doc: dict) -> None:
    s = doc["summary"]
    print(f"physics-iq @ {doc['fps']} fps: {s['n_ok']}/{s['n_scenarios']} scenarios scored "
          f"({s['n_missing']} missing, {s['n_error']} error)")
    if s["scores"]:
        for name in ("original", "stable", "verified"):
            print(f"  {name:9s} {s['scores'][name]['score']:6.2f}")
    if not s["complete"]:
        print("  partial set: not comparable with published numbers", file=sys.stderr)


def _physics_iq(args: argparse.Namespace) -> int:
    from vidmill.evaluation.physics_iq_runner import PhysicsIQOptions, evaluate_physics_iq, write_results

    if args.checkpoint:
        from vidmill.evaluation.physics_iq_generate import (
            GenerationUnavailable,
            check_checkpoint,
            generate_physics_iq,
            vidmill_generator,
        )
        from vidmill.evaluation.tail import checkpoint_fps

        check_checkpoint(args.checkpoint)
        _set_threads(args.threads)
        args.fps = args.fps or round(checkpoint_fps(args.checkpoint))
        try:
            generate = vidmill_generator(device=args.device, steps=args.steps)
        except GenerationUnavailable as exc:
            print(f"vidmill: generating mode not available: {exc}", file=sys.stderr)
            return 3
        rows = generate_physics_iq(args.real, args.generated, args.checkpoint, args.mode, args.fps, generate)
        print(f"generated {sum(r['status'] == 'ok' for r in rows)}/{len(rows)} videos at {args.fps} fps "
              f"into {args.generated}")
        for r in rows:
            if r["status"] != "ok":
                print(f"  {Path(r['output']).name}: {r['error']}", file=sys.stderr)
    options = PhysicsIQOptions(fps=args.fps, mask_round_trip=args.mask_round_trip, workers=args.workers)
    doc = evaluate_physics_iq(args.real, args.generated, options)
    write_results(doc, args.out)
    _print_physics_iq(doc)
    return 0


def _vbench(args: argparse.Namespace) -> int:
    from vidmill.evaluation.config import load_eval_config
    from vidmill.evaluation.physics_iq_runner import write_results
    from vidmill.evaluation.vbench_models import build_probes
    from vidmill.evaluation.vbench_runner import evaluate_vbench

    config = load_eval_config(args.config, args.set)
    doc = evaluate_vbench(args.videos, args.images, build_probes(config))
    write_results(doc, args.out)
    for name, dim in doc["dimensions"].items():
        value = f"{dim['score']:.4f}" if dim["score"] is not None else dim["status"]
        print(f"  {name:24s} {value}")
    for name, total in doc["totals"].items():
        value = "n/a" if total["score"] is None else f"{100 * total['score']:.2f}"
        note = "complete" if total["complete"] else "missing " + ", ".join(total["missing"])
        print(f"  {name:24s} {value}  ({note})")
    return 0


def _set_threads(threads: int) -> None:
    """torch CPU threads; 1 is far faster than the default on a loaded machine (no oversubscribed spinning)."""
    if threads > 0:
        import torch

        torch.set_num_threads(threads)


def _checkpoint(args: argparse.Namespace) -> int:
    from vidmill.evaluation.physics_iq_generate import check_checkpoint, checkpoint_run
    from vidmill.evaluation.tail import PhysicsIQTail, VBenchTail, evaluate_checkpoint
    from vidmill.training.generate import complete_steps

    check_checkpoint(args.checkpoint)
    _set_threads(args.threads)
    run, step = checkpoint_run(args.checkpoint)
    step = step if step is not None else complete_steps(run)[-1]
    if not (args.physics_iq_real or args.vbench_images):
        raise ValueError("nothing to evaluate: give --physics-iq-real and/or --vbench-images")
    piq = PhysicsIQTail(args.physics_iq_real, args.physics_iq_fps, args.physics_iq_mode, args.physics_iq_limit,
                        args.mask_round_trip) if args.physics_iq_real else None
    vb = VBenchTail(args.vbench_images, args.vbench_config, args.vbench_seconds, args.vbench_fps) \
        if args.vbench_images else None
    row = evaluate_checkpoint(args.checkpoint, args.run or run, step if args.step is None else args.step,
                              physics_iq=piq, vbench=vb, keep_videos=args.keep_videos, device=args.device,
                              steps=args.steps)
    base = Path(args.run or run) / "eval" / f"step-{row['step']}"
    doc = summary_doc(row, base, args.note)
    if args.summary:
        Path(args.summary).parent.mkdir(parents=True, exist_ok=True)
        Path(args.summary).write_text(json.dumps(doc, indent=1))
    print_summary(doc)
    return 1 if row.get("eval/failed") else 0


def summary_doc(row: dict, base: Path, note: str | None) -> dict:
    """The eval row plus each benchmark's summary (read back from its results.json)."""
    doc: dict = {"note": note, "step": row["step"], "checkpoint": row["checkpoint"], "row": row}
    piq, vb = base / "physics-iq" / "results.json", base / "vbench" / "results.json"
    if "eval/physics_iq/status" in row:
        doc["physics_iq"] = {"status": row["eval/physics_iq/status"], "results": str(piq) if piq.is_file() else None}
        if piq.is_file():
            full = json.loads(piq.read_text())
            doc["physics_iq"] |= {"fps": full["fps"], "summary": full["summary"],
                                  "rows": [{"scenario": r["scenario"], "status": r["status"]} for r in full["rows"]]}
    if "eval/vbench/status" in row:
        doc["vbench"] = {"status": row["eval/vbench/status"], "results": str(vb) if vb.is_file() else None}
        if vb.is_file():
            full = json.loads(vb.read_text())
            doc["vbench"] |= {"dimensions": {k: v["status"] if v["score"] is None else v["score"]
                                             for k, v in full["dimensions"].items()},
                              "totals": full["totals"]}
    return doc


def print_summary(doc: dict) -> None:
    print(f"evaluation of {doc['checkpoint']} (step {doc['step']})")
    if doc.get("note"):
        print(f"NOTE: {doc['note']}")
    if "physics_iq" in doc:
        p = doc["physics_iq"]
        if "summary" in p:
            _print_physics_iq({"fps": p["fps"], "summary": p["summary"]})
        print(f"  physics-iq status: {p['status']}")
    if "vbench" in doc:
        v = doc["vbench"]
        print(f"vbench-i2v: {v['status']}")
        for name, value in (v.get("dimensions") or {}).items():
            print(f"  {name:24s} {value if isinstance(value, str) else f'{value:.4f}'}")
        for name, total in (v.get("totals") or {}).items():
            score = "not computed" if total["score"] is None else f"{100 * total['score']:.2f}"
            n_in, n_all = len(total["includes"]), len(total["includes"]) + len(total["missing"])
            listed = ": " + ", ".join(total["includes"]) if total["includes"] else ""
            print(f"  {name:24s} {score}  (includes {n_in}/{n_all} dimensions{listed})")


def _demo_set(args: argparse.Namespace) -> int:
    from vidmill.evaluation.demo_set import build_demo_set

    if not args.fps and not args.run:
        raise ValueError("give --fps or --run (a training run whose fps the set takes)")
    if not args.fps:
        from vidmill.evaluation.tail import checkpoint_fps

        args.fps = round(checkpoint_fps(args.run))
    info = build_demo_set(args.curated, args.out, args.fps, args.scenarios)
    print(f"wrote a Physics-IQ-layout set of {len(info['scenarios'])} scenario(s) at {args.fps} fps to {args.out}")
    print(f"NOTE: {info['note']}")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    ev = sub.add_parser("eval", help="evaluate generated videos: Physics-IQ, VBench I2V")
    ev_sub = ev.add_subparsers(dest="eval_command", required=True)

    piq = ev_sub.add_parser("physics-iq", help="Physics-IQ scores (original, stable, verified) of generated videos")
    piq.add_argument("--real", required=True, help="the physics-IQ-benchmark folder (or a folder of testing videos)")
    piq.add_argument("--generated", required=True, help="folder of generated 5 s videos ({id}_{view}_{scenario})")
    piq.add_argument("--out", required=True, help="results.json to write")
    piq.add_argument("--fps", type=int, help="benchmark fps (default: the generated videos' fps)")
    piq.add_argument("--mask-round-trip", action="store_true",
                     help="write and re-read every mask as mp4v, like upstream (lossy; off by default)")
    piq.add_argument("--workers", type=int, default=2, help="views decoded and scored in parallel")
    piq.add_argument("--checkpoint", help="generate the videos first with this vidmill checkpoint")
    piq.add_argument("--mode", choices=("i2v", "v2v"), default="v2v",
                     help="with --checkpoint: condition on the switch frame (i2v) or the 3 s clip (v2v)")
    piq.add_argument("--device", default="cpu", help="with --checkpoint: where to generate")
    piq.add_argument("--steps", type=int, help="with --checkpoint: sampling steps (default: the model's)")
    piq.add_argument("--threads", type=int, default=0, help="with --checkpoint: torch CPU threads (0: torch's default)")
    piq.set_defaults(func=_physics_iq)

    vbench = ev_sub.add_parser("vbench", help="VBench I2V dimensions, normalised totals")
    vbench.add_argument("--videos", required=True, help="folder of generated .mp4 videos")
    vbench.add_argument("--images", help="folder of conditioning images named like the videos")
    vbench.add_argument("--out", required=True, help="results.json to write")
    vbench.add_argument("--config", help="YAML with vbench.weights.* paths (see docs/eval.md)")
    vbench.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set vbench.weights.raft=/w/raft.pth")
    vbench.set_defaults(func=_vbench)

    ck = ev_sub.add_parser("checkpoint", help="evaluate a training checkpoint (a run's tail task): generate, score, "
                                              "log to RUN/metrics.jsonl and TensorBoard")
    ck.add_argument("checkpoint", help="RUN (its newest complete checkpoint) or RUN/checkpoints/step-N")
    ck.add_argument("--run", help="run folder that receives eval/ and the metrics row (default: the checkpoint's)")
    ck.add_argument("--step", type=int, help="step the row is logged at (default: the checkpoint's)")
    ck.add_argument("--device", default="cpu", help="where to generate")
    ck.add_argument("--steps", type=int, help="sampling steps (default: the model's)")
    ck.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ck.add_argument("--no-keep-videos", dest="keep_videos", action="store_false", help="delete generated videos")
    ck.add_argument("--physics-iq-real", help="Physics-IQ benchmark folder (upstream layout)")
    ck.add_argument("--physics-iq-mode", choices=("i2v", "v2v"), default="v2v")
    ck.add_argument("--physics-iq-fps", type=int, help="benchmark fps (default: the checkpoint's fps)")
    ck.add_argument("--physics-iq-limit", type=int, help="first N views only (quick signal, not comparable)")
    ck.add_argument("--mask-round-trip", action="store_true", help="upstream's lossy mp4v mask round trip")
    ck.add_argument("--vbench-images", help="folder of conditioning images: one I2V video per image")
    ck.add_argument("--vbench-config", help="evaluation YAML with vbench.weights.* (default: no weights)")
    ck.add_argument("--vbench-seconds", type=float, default=2.0, help="length of each VBench video")
    ck.add_argument("--vbench-fps", type=float, help="fps of the VBench videos (default: the checkpoint's)")
    ck.add_argument("--summary", help="also write the row and each benchmark's summary to this JSON file")
    ck.add_argument("--note", help="a caveat recorded in --summary and printed (e.g. 'demo data, not benchmark')")
    ck.set_defaults(func=_checkpoint)

    demo = ev_sub.add_parser("demo-set", help="build a small Physics-IQ-layout set from a curated output's clips "
                                              "(a machinery check, not the benchmark)")
    demo.add_argument("curated", help="a curated output (manifest.parquet + shards/)")
    demo.add_argument("out", help="folder to write the set to")
    demo.add_argument("--fps", type=int, help="fps of the set (the model's fps)")
    demo.add_argument("--run", help="a training run: the set takes its fps")
    demo.add_argument("--scenarios", type=int, default=1, help="scenarios (3 clips each)")
    demo.set_defaults(func=_demo_set)
