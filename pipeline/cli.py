"""Curation's subcommands: `vidmill curate`, `vidmill samples`, `vidmill config`."""

from __future__ import annotations

import argparse
import os
import sys


def keep_ray_on_loopback(address: str | None) -> None:
    """Local Ray, or a head on 127.0.0.1, must stay on loopback; runs before Ray is imported.

    Ray swaps 127.0.0.1 for this machine's outward address unless its single-machine mode is on.
    """
    host = (address or "").split("://")[-1].rsplit(":", 1)[0]
    if not address or host in ("127.0.0.1", "localhost"):
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


def _curate(args: argparse.Namespace) -> int:
    keep_ray_on_loopback(args.address or os.environ.get("RAY_ADDRESS"))
    import psutil

    from vidmill.pipeline.config import load_config
    from vidmill.pipeline.curate import Curation
    from vidmill.pipeline.lock import OutputLocked
    from vidmill.pipeline.output.report import format_summary

    started = psutil.Process().create_time()  # wall time counts from the command's start, Ray's start included
    config = load_config(args.config, args.set)
    try:
        curation = Curation(args.input, args.output, config, progress=not args.no_progress, force=args.force)
        summary = curation.run(args.address, started=started)
    except OutputLocked as exc:
        print(f"vidmill: error: {exc}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print("\ninterrupted: finished inputs are kept; run the same command again to resume", file=sys.stderr)
        return 130
    print(format_summary(summary))
    return 0


def _samples(args: argparse.Namespace) -> int:
    from vidmill.pipeline.samples import GROUND_TRUTH, write_samples

    truth = write_samples(args.dir)
    print(f"wrote {len(truth['files'])} sample inputs and {GROUND_TRUTH} to {args.dir}")
    return 0


def _config(args: argparse.Namespace) -> int:
    from vidmill.pipeline.config import dump_config, load_config

    print(dump_config(load_config(args.config, args.set)), end="")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:

    curate = sub.add_parser("curate", help="curate a bucket of raw videos into shards and a manifest")
    curate.add_argument("input", help="a directory, file, file://, s3:// or gs:// URI")
    curate.add_argument("output", help="output directory")
    curate.add_argument("--config", help="YAML file overriding configs/curate.yaml defaults")
    curate.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override one config value, e.g. --set shots.detector=content")
    curate.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else local Ray)")
    curate.add_argument("--no-progress", action="store_true", help="no progress bars")
    curate.add_argument("--force", action="store_true",
                        help="break a lock held by a run on another host (only when that run is known dead)")
    curate.set_defaults(func=_curate)

    samples = sub.add_parser("samples", help="write the synthetic sample bucket with ground truth")
    samples.add_argument("dir")
    samples.set_defaults(func=_samples)

    config = sub.add_parser("config", help="print the effective curation config as YAML")
    config.add_argument("--config")
    config.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    config.set_defaults(func=_config)

