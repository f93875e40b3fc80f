"""Evaluation's subcommands: `vidmill eval physics-iq` and `vidmill eval vbench`."""

from __future__ import annotations

import argparse
import sys


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
        from vidmill.evaluation.physics_iq_generate import GenerationUnavailable, generate_physics_iq

        if not args.fps:
            raise ValueError("--checkpoint needs --fps (the benchmark fps to generate at)")
        try:
            rows = generate_physics_iq(args.real, args.generated, args.checkpoint, args.mode, args.fps)
        except GenerationUnavailable as exc:
            print(f"vidmill: generating mode not available: {exc}", file=sys.stderr)
            return 3
        print(f"generated {sum(r['status'] == 'ok' for r in rows)}/{len(rows)} videos into {args.generated}")
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
    piq.set_defaults(func=_physics_iq)

    vbench = ev_sub.add_parser("vbench", help="VBench I2V dimensions, normalised totals")
    vbench.add_argument("--videos", required=True, help="folder of generated .mp4 videos")
    vbench.add_argument("--images", help="folder of conditioning images named like the videos")
    vbench.add_argument("--out", required=True, help="results.json to write")
    vbench.add_argument("--config", help="YAML with vbench.weights.* paths (see docs/eval.md)")
    vbench.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set vbench.weights.raft=/w/raft.pth")
    vbench.set_defaults(func=_vbench)
