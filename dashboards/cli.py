"""`vidmill dashboard OUTPUT [OUTPUT2 ...] [--host 127.0.0.1] [--port N] [--export report.html]`."""

from __future__ import annotations

import argparse
import sys

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _dashboard(args: argparse.Namespace) -> int:
    if args.export:
        from vidmill.dashboards.export import write_report

        path = write_report(args.outputs, args.export)
        print(f"wrote {path} (self-contained: open it in a browser, no server or network needed)")
        return 0
    import uvicorn

    from vidmill.dashboards.app import create_app

    if args.host not in LOOPBACK:
        print(f"vidmill dashboard: warning: serving on {args.host}, not loopback: anyone who can reach this "
              f"machine on port {args.port} can read these outputs' manifests, captions and clips "
              f"(the dashboard has no authentication)", file=sys.stderr)
    app = create_app(args.outputs, args.train_run)
    print(f"vidmill dashboard: http://{args.host}:{args.port}/  ({', '.join(args.outputs)}; Ctrl-C stops)", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dashboard", help="browse curation outputs: funnel, distributions, what-if, gallery, compare")
    p.add_argument("outputs", nargs="+", metavar="OUTPUT", help="curation output folder(s); two or more: compared")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; others warn)")
    p.add_argument("--port", type=int, default=8765, help="port (default 8765)")
    p.add_argument("--export", metavar="REPORT.html", help="write a self-contained static report and exit")
    p.add_argument("--log-level", default="warning", help="uvicorn log level")
    p.add_argument("--train-run", action="append", default=[], metavar="RUN",
                   help="a training run to show on the Training page (loss, evaluations); repeatable")
    p.set_defaults(func=_dashboard)
