"""``dbopt worker``: run the stream processor (ingest, windows, detector) and its web surface
(``/metrics``, ``/healthz``, ``/readyz``) in this process; ``--stage`` runs one half of it."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading

from streams.cli_args import add_logging_arguments
from streams.config import load_settings

HELP = (
    "run the stream worker: ingest, windowed latency statistics, detector; /metrics, /healthz and /readyz "
    "on DBOPT_WORKER_WEB_HOST:DBOPT_WORKER_WEB_PORT (Ctrl-C or SIGTERM stops it)"
)


STOP_GRACE_S = 60.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_logging_arguments(parser)
    parser.add_argument(
        "--stage", choices=("all", "windows", "agents"), default="all",
        help="all: everything in this process (default); windows: only the windows stage (scaled by "
        "partitions, with its own probes); agents: only the Faust agents (detector, traffic, pools)",
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from faust.worker import Worker

    from streams.allocator import fix_mmap_threshold
    from streams.app.faust_app import create_app, data_dir, prepare_changelogs, prepare_topics
    from streams.kafka.health import Health
    from streams.windows.agent import run_windows_stage

    settings = load_settings()
    fix_mmap_threshold()  # before the state grows: the allocator must not hoard beside it
    partitions = prepare_topics(settings)
    windows = settings.windows
    log = logging.getLogger(__name__)
    health = Health("windows")
    if args.stage == "windows":
        from streams.kafka.health import serve
        from streams.kafka.loop import stop_on_signals

        stop = threading.Event()
        stop_on_signals(stop)
        server = serve(health, windows.web_host, windows.web_port)
        log.info("worker %s (windows stage): %d partitions, probes on http://%s:%d", windows.app_id, partitions,
                 windows.web_host, windows.web_port)  # fmt: skip
        try:
            run_windows_stage(settings, health, stop)
        finally:
            server.shutdown()
        return 0
    data_dir(settings).mkdir(parents=True, exist_ok=True)
    app = create_app(settings, partitions, None if args.stage == "agents" else health)
    prepare_changelogs(app, settings, partitions)
    log.info("worker %s: %d partitions, web on http://%s:%d", windows.app_id, partitions, windows.web_host,
             windows.web_port)  # fmt: skip
    # the windows stage (confluent-kafka) runs in a thread beside the Faust app (detector, traffic, pools);
    # when it fails (other than by records the broker did not take: then it starts again by itself), the
    # process stops with status 1 (Faust's SIGTERM handling ends the app)
    stop = threading.Event()
    failed: list[BaseException] = []

    def windows_stage() -> None:
        try:
            run_windows_stage(settings, health, stop)
        except BaseException as exc:
            failed.append(exc)
            log.exception("the windows stage failed; stopping the worker")
            os.kill(os.getpid(), signal.SIGTERM)
            # Faust's clean stop can wait on a broker that is gone: do not outlive the stage for long
            deadline = threading.Timer(STOP_GRACE_S, os._exit, args=(1,))
            deadline.daemon = True  # a clean stop within the grace ends the process without it
            deadline.start()

    thread = threading.Thread(target=windows_stage, name="windows", daemon=True)
    if args.stage == "all":
        thread.start()
    # logging is already set up by `dbopt` (--log-level/--log-format): Faust must not replace it
    worker = Worker(app, quiet=True, override_logging=False)
    worker.spinner = None  # its terminal control characters would end up in log files
    code = 0
    try:
        worker.execute_from_commandline()  # returns only by SystemExit; SIGTERM/SIGINT stop it cleanly
    except SystemExit as exc:
        code = int(exc.code or 0)
    finally:
        stop.set()  # the stage checkpoints, commits and leaves the group
        if thread.is_alive():
            thread.join(timeout=120)
    return 1 if failed else code
