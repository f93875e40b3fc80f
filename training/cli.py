"""Training's subcommands: `vidmill model info`."""

from __future__ import annotations

import argparse
import json


def _model_info(args: argparse.Namespace) -> int:
    from vidmill.model.sizes import describe

    print(json.dumps(describe(args.name), indent=2))
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    model = sub.add_parser("model", help="model registry")
    model_sub = model.add_subparsers(dest="model_command", required=True)
    info = model_sub.add_parser("info", help="print a model size's configuration and parameter count")
    info.add_argument("name")
    info.set_defaults(func=_model_info)
