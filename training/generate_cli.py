"""`vidmill generate` and `vidmill distill` (listed in vidmill/cli.py AREAS)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _generate(args: argparse.Namespace) -> int:
    from vidmill.training.generate import GenerateRequest, generate, load_run, progress_to_stderr

    lines = None
    if args.prompts_per_second:
        path = Path(args.prompts_per_second)
        if not path.is_file():
            raise FileNotFoundError(f"prompts file not found: {path}")
        lines = [line.strip() or None for line in path.read_text().splitlines()]
        if not any(lines):
            raise ValueError(f"no prompts in {path}")
    models = load_run(args.checkpoint, step=args.step, ema=not args.no_ema, device=args.device)
    request = GenerateRequest(prompt=args.prompt, prompts_per_second=lines, seconds=args.seconds, steps=args.steps,
                              image=args.image, video=args.video, seed=args.seed,
                              guidance=None if args.guidance == "auto" else args.guidance == "on")
    on_frames = None
    if args.raw_stdout:
        def on_frames(frames, _first):
            sys.stdout.buffer.write(frames.tobytes())
            sys.stdout.buffer.flush()
    progress = None if args.quiet else progress_to_stderr
    summary = generate(models, request, args.out, on_frames=on_frames, on_progress=progress)
    print(json.dumps(summary), file=sys.stderr if args.raw_stdout else sys.stdout)
    return 0


def _distill(args: argparse.Namespace) -> int:
    from vidmill.training.distill import distill
    from vidmill.training.objectives.shortcut import ShortcutConfig

    shortcut = ShortcutConfig(bootstrap_fraction=args.bootstrap_fraction, guidance=args.guidance,
                              w_prev=args.w_prev, w_text=args.w_text)
    summary = distill(args.teacher, args.data, args.out, steps=args.steps, shortcut=shortcut,
                      only_step_embed=args.only_step_embed, resume=args.resume, progress=not args.no_progress)
    print(json.dumps({k: v for k, v in summary.items() if isinstance(v, (int, float, str, type(None)))}))
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    gen = sub.add_parser("generate", help="generate a video from a training run's checkpoint (T2V, I2V, V2V)")
    gen.add_argument("--checkpoint", required=True, help="RUN directory (config.yaml + checkpoints/step-N/)")
    cond = gen.add_mutually_exclusive_group()
    cond.add_argument("--image", help="I2V: the first frame (any image PyAV decodes)")
    cond.add_argument("--video", help="V2V: a prefix video to continue")
    gen.add_argument("--prompt", help="caption for every chunk")
    gen.add_argument("--prompts-per-second", help="text file: line i is the prompt of second i (last repeats)")
    gen.add_argument("--seconds", type=float, default=2.0, help="length of the output, prefix included")
    gen.add_argument("--steps", type=int, choices=(8, 12, 16, 32, 64),
                     help="denoising steps (12: MAGI's distilled 8,16,16 grid); default 8 distilled, else the size's")
    gen.add_argument("--out", required=True, help="output mp4 (fragmented: playable while it grows)")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--step", type=int, help="checkpoint step (default: the newest complete one)")
    gen.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA")
    gen.add_argument("--guidance", choices=("auto", "on", "off"), default="auto",
                     help="MAGI guidance passes; auto: off for a distilled model, on otherwise")
    gen.add_argument("--device", default="cpu")
    gen.add_argument("--raw-stdout", action="store_true",
                     help="also stream raw rgb24 frames to stdout as they are decoded (summary goes to stderr)")
    gen.add_argument("--quiet", action="store_true", help="no per-chunk progress on stderr")
    gen.set_defaults(func=_generate)

    dis = sub.add_parser("distill", help="shortcut-distil a trained run into an 8-16 step model")
    dis.add_argument("--teacher", required=True, help="RUN directory of the teacher")
    dis.add_argument("--data", required=True,
                     help="the teacher's latents: a `vidmill latents` output, a latents .pt, or TEACHER/latents.pt")
    dis.add_argument("--out", required=True, help="new RUN directory (checkpoints, metrics.jsonl, config.yaml)")
    dis.add_argument("--steps", type=int, help="total distillation steps (default: the teacher config's train.steps)")
    dis.add_argument("--resume", action="store_true", help="continue from the newest complete checkpoint in --out")
    dis.add_argument("--only-step-embed", action="store_true",
                     help="train only the step-size embedder (no drift of an unconverged teacher)")
    dis.add_argument("--no-progress", action="store_true")
    dis.add_argument("--bootstrap-fraction", type=float, default=1 / 8)
    dis.add_argument("--guidance", action="store_true", help="fold classifier-free guidance into the targets")
    dis.add_argument("--w-prev", type=float, default=1.5)
    dis.add_argument("--w-text", type=float, default=7.5)
    dis.set_defaults(func=_distill)
