"""``dbopt worker``: run the stream processor (ingest, windows, detector) and its web surface
(``/metrics``, ``/healthz``, ``/readyz``) in this process."""

from __future__ import annotations

import argparse
import logging

from streams.cli_args import add_logging_arguments
from streams.config import load_settings

HELP = (
    "run the stream worker: ingest, windowed latency statistics, detector; /metrics, /healthz and /readyz "
    "on DBOPT_WORKER_WEB_HOST:DBOPT_WORKER_WEB_PORT (Ctrl-C or SIGTERM stops it)"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_logging_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from faust.worker import Worker

    from streams.app.faust_app import create_app, data_dir, prepare_changelogs, prepare_topics

    settings = load_settings()
    partitions = prepare_topics(settings)
    data_dir(settings).mkdir(parents=True, exist_ok=True)
    app = create_app(settings, partitions)
    prepare_changelogs(app, settings, partitions)
    windows = settings.windows
    logging.getLogger(__name__).info(
        "worker %s: %d partitions, web on http://%s:%d", windows.app_id, partitions, windows.web_host, windows.web_port
    )
    # logging is already set up by `dbopt` (--log-level/--log-format): Faust must not replace it
    worker = Worker(app, quiet=True, override_logging=False)
    worker.spinner = None  # its terminal control characters would end up in log files
    try:
        worker.execute_from_commandline()  # returns only by SystemExit; SIGTERM/SIGINT stop it cleanly
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0
