"""The `vidmill` command line: each area adds its own subcommands; this file only dispatches.

An area module exposes `add_commands(subparsers)`; it imports nothing heavy at module level, so
`vidmill --help` stays fast. Handlers return an exit code.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from vidmill import __version__

# The modules that own subcommands, in the order of the data flow.
AREAS = (
    "vidmill.pipeline.cli",  # curate, samples, config
    "vidmill.training.cli",  # model info (and the training commands)
    "vidmill.training.generate_cli",  # generate, distill
    "vidmill.dashboards.cli",  # dashboard
    "vidmill.evaluation.cli",  # eval physics-iq, eval vbench
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vidmill", description="Curate raw video and train a MAGI-1 style model.")
    parser.add_argument("--version", action="version", version=f"vidmill {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in AREAS:
        importlib.import_module(name).add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, PermissionError, NotADirectoryError, FileExistsError) as exc:
        for line in getattr(exc, "problems", None) or [str(exc)]:  # a ConfigError lists every problem
            print(f"vidmill: error: {line}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
