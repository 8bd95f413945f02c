"""``dbopt serve``: the live page and HTTP API (see docs/serve.md and :mod:`streams.serve`)."""

from __future__ import annotations

import argparse

from streams.cli_args import add_logging_arguments
from streams.config import load_settings

from .server import run as run_server

HELP = "the live page and HTTP API: every context against its SLO, alerts, optimizations, approvals, pools"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default=None, help="address to listen on (default DBOPT_SERVE_HOST, 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, help="port (default DBOPT_SERVE_PORT, 8080; 0: any free)")
    add_logging_arguments(parser)


def run(args: argparse.Namespace) -> int:
    settings = load_settings()
    host = args.host or settings.serve.host
    port = settings.serve.port if args.port is None else args.port
    run_server(settings, host, port)
    return 0
