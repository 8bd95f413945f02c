"""``dbopt executor``: apply signed commands from the commands topic (see streams.execute.executor)."""

from __future__ import annotations

import argparse

from streams.cli_args import add_logging_arguments, positive_float, positive_int
from streams.config import load_settings
from streams.kafka.health import Health, serve
from streams.kafka.loop import stop_on_signals

from .agent import run_executor
from .executor import Executor

HELP = "apply signed, allowlisted commands safely (audit, results, freeze days, advisory lock)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--once", action="store_true", help="exit when no command arrived for --idle-timeout seconds")
    parser.add_argument("--idle-timeout", type=positive_float, default=5.0, help="seconds without a command before --once exits")
    parser.add_argument("--max-commands", type=positive_int, default=None, help="exit after this many commands")
    parser.add_argument("--database", default=None, metavar="NAME",
                        help="serve the database DBOPT_DATABASES names NAME (default: DBOPT_DATABASE_URL); one executor "
                             "per database, each with its own advisory lock and consumer group (<group>-NAME)")
    add_logging_arguments(parser)


def run(args: argparse.Namespace) -> int:
    settings = load_settings()
    if args.database:
        settings = settings.with_overrides(executor=settings.executor.with_overrides(database=args.database))
    executor = Executor(settings)
    stop_on_signals(executor.stop)  # finish the current command, commit, exit
    health = Health("executor")
    if settings.executor.probe_port:
        serve(health, settings.executor.probe_host, settings.executor.probe_port)
    report = run_executor(executor, once=args.once, max_commands=args.max_commands,
                          idle_timeout=args.idle_timeout, health=health)
    statuses = ", ".join(f"{n} {s}" for s, n in sorted(report.statuses.items())) or "no results"
    print(f"executor {executor.executor_id}: {report.processed} command(s); {statuses}")
    for index in report.dropped_invalid_indexes:
        print(f"dropped invalid index {index} (left by an interrupted CREATE INDEX CONCURRENTLY)")
    return 0
