"""``dbopt worker``: run the stream processor (ingest, windows, detector, /metrics) in this process."""

from __future__ import annotations

import argparse
import logging

from streams.config import load_settings

HELP = "run the stream worker: ingest, windowed latency statistics, detector, /metrics (Ctrl-C or SIGTERM stops it)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--loglevel",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="log level (default: info)",
    )


def run(args: argparse.Namespace) -> int:
    from faust.worker import Worker

    from streams.app.faust_app import create_app, data_dir, prepare_changelogs, prepare_topics

    settings = load_settings()
    partitions = prepare_topics(settings)
    data_dir(settings).mkdir(parents=True, exist_ok=True)
    app = create_app(settings, partitions)
    prepare_changelogs(app, settings, partitions)
    logging.getLogger(__name__).info("worker %s: %d partitions", settings.windows.app_id, partitions)
    worker = Worker(app, loglevel=args.loglevel.upper(), quiet=True)
    try:
        worker.execute_from_commandline()  # returns only by SystemExit; SIGTERM/SIGINT stop it cleanly
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0
