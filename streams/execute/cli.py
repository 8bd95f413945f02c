"""``dbopt executor``: apply signed commands from the commands topic (see streams.execute.executor)."""

from __future__ import annotations

import argparse
import signal
import sys

from streams.cli_args import add_logging_arguments, positive_float, positive_int
from streams.config import load_settings

from .executor import DeliveryError, Executor

HELP = "apply signed, allowlisted commands safely (audit, results, freeze days, advisory lock)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--once", action="store_true", help="exit when no command arrived for --idle-timeout seconds")
    parser.add_argument("--idle-timeout", type=positive_float, default=5.0, help="seconds without a command before --once exits")
    parser.add_argument("--max-commands", type=positive_int, default=None, help="exit after this many commands")
    add_logging_arguments(parser)


def run(args: argparse.Namespace) -> int:
    executor = Executor(load_settings())
    signal.signal(signal.SIGTERM, lambda *_: executor.stop.set())  # finish the current command, commit, exit
    try:
        report = executor.run(once=args.once, max_commands=args.max_commands, idle_timeout=args.idle_timeout)
    except DeliveryError as exc:
        print(f"dbopt executor: {exc}; the command will be processed again on the next start", file=sys.stderr)
        return 1
    statuses = ", ".join(f"{n} {s}" for s, n in sorted(report.statuses.items())) or "no results"
    print(f"executor {executor.executor_id}: {report.processed} command(s); {statuses}")
    for index in report.dropped_invalid_indexes:
        print(f"dropped invalid index {index} (left by an interrupted CREATE INDEX CONCURRENTLY)")
    return 0
