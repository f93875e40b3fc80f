"""Training's subcommands: `vidmill model info`, `vidmill latents`, `vidmill train`."""

from __future__ import annotations

import argparse
import json

import yaml


def _model_info(args: argparse.Namespace) -> int:
    from vidmill.model.sizes import describe

    print(json.dumps(describe(args.name), indent=2))
    return 0


def _latents(args: argparse.Namespace) -> int:
    from vidmill.training.data.encode import LatentsConfig
    from vidmill.training.data.latents import run_latents

    buckets = tuple(tuple(int(v) for v in b.lower().split("x")) for b in args.buckets.split(",")) if args.buckets \
        else ()
    config = LatentsConfig(vae=args.vae, size=args.size or (args.vae if args.vae in ("tiny", "small") else "tiny"),
                           buckets=buckets, max_chunks=args.max_chunks, text=args.text, text_path=args.text_path,
                           dtype=args.dtype, seed=args.seed)
    options = yaml.safe_load(args.storage_options) if args.storage_options else None
    if options is not None and not isinstance(options, dict):
        raise SystemExit(f"--storage-options must be a mapping, got {args.storage_options!r}")
    summary = run_latents(args.output, args.out, config, args.address, args.actors, options)
    print(json.dumps({k: summary[k] for k in ("clips", "ok", "errors", "shards", "shards_resumed", "wall_s", "vae")},
                     indent=2))
    return 0


def _add_latents(sub: argparse._SubParsersAction) -> None:
    latents = sub.add_parser("latents", help="VAE-encode the kept clips of a curated output into latent shards")
    latents.add_argument("output", help="curated output (manifest.parquet + shards/): a directory or an fsspec URL "
                                        "such as s3://bucket/curated")
    latents.add_argument("--storage-options", help="YAML mapping for the curated output's filesystem, e.g. "
                                                   "'{endpoint_url: \"http://minio:9000\"}' (s3fs)")
    latents.add_argument("--vae", required=True, help="a size name (random-init, untrained) or a .safetensors VAE")
    latents.add_argument("--out", required=True, help="latents output directory")
    latents.add_argument("--size", help="model size for chunk length / checkpoint config (default: the --vae size)")
    latents.add_argument("--buckets", help="resolution buckets HxW,HxW (default: the size's area in 1:1, 9:16, 16:9)")
    latents.add_argument("--max-chunks", type=int, default=8)
    latents.add_argument("--text", default="minilm", choices=("minilm", "t5"))
    latents.add_argument("--text-path", help="local text encoder directory (t5)")
    latents.add_argument("--dtype", default="float32", choices=("float32", "float16", "bfloat16"))
    latents.add_argument("--seed", type=int, default=0, help="seed of a random-init VAE")
    latents.add_argument("--actors", type=int, help="encoder actors (default: one per GPU, else CPUs - 1)")
    latents.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else local Ray)")
    latents.set_defaults(func=_latents)


def _train(args: argparse.Namespace) -> int:
    if args.ray:
        from vidmill.training.ray_train import run_on_ray

        run_on_ray(args.data, args.config, args.out, args.steps, args.resume, num_workers=args.ray_workers,
                   use_gpu=args.ray_gpu, cpus_per_worker=args.ray_cpus_per_worker,
                   address=None if args.ray == "local" else args.ray)
        return 0
    from vidmill.training.run import run_training

    run_training(args.data, args.config, args.out, args.steps, args.resume, progress=not args.no_progress)
    return 0


def _add_train(sub: argparse._SubParsersAction) -> None:
    train = sub.add_parser("train", help="train the DiT (and a VAE when none is given) on latents or a curated output",
                           description="Works as is on one CPU/GPU, under torchrun (DDP/FSDP2) and on Ray (--ray).")
    train.add_argument("--data", required=True, help="latents (*.pt or a folder with latents.pt) or a curated output")
    train.add_argument("--config", default="tiny", help="a size (tiny, small, 4.5B, 24B) or a YAML file")
    train.add_argument("--out", required=True, help="the RUN folder (checkpoints, metrics.jsonl, config.yaml)")
    train.add_argument("--steps", type=int, help="the run's total optimiser steps (a resumed run trains what is left)")
    train.add_argument("--resume", action="store_true", help="continue from the newest complete checkpoint in --out")
    train.add_argument("--no-progress", action="store_true", help="log lines instead of a progress bar")
    train.add_argument("--ray", metavar="ADDRESS", help="run on Ray Train: 'local' or a cluster address")
    train.add_argument("--ray-workers", type=int, default=2, help="Ray Train workers (one per GPU with --ray-gpu)")
    train.add_argument("--ray-gpu", action="store_true", help="one GPU per Ray Train worker")
    train.add_argument("--ray-cpus-per-worker", type=float, default=1.0)
    train.set_defaults(func=_train)


def add_commands(sub: argparse._SubParsersAction) -> None:
    model = sub.add_parser("model", help="model registry")
    model_sub = model.add_subparsers(dest="model_command", required=True)
    info = model_sub.add_parser("info", help="print a model size's configuration and parameter count")
    info.add_argument("name")
    info.set_defaults(func=_model_info)
    _add_latents(sub)
    _add_train(sub)
