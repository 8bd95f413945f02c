"""The ``dbopt`` command line.

Each sub-command lives in the module of its stage and exposes::

    HELP: str                                   # one line for `dbopt --help`
    def add_arguments(parser: argparse.ArgumentParser) -> None
    def run(args: argparse.Namespace) -> int    # the exit status

Modules are imported only when their command runs, so ``dbopt tail`` does not pay
for importing Faust.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from types import ModuleType

from streams.config import ConfigError

# command name -> module implementing it (see the module docstring for the protocol)
COMMANDS: dict[str, str] = {
    "topics": "streams.kafka.topics_cli",
    "produce": "streams.tools.produce",
    "tail": "streams.tools.tail",
    "demo-db": "streams.demo.db_cli",
    "simulate": "streams.demo.simulate",
    "demo": "streams.demo.run",
    "worker": "streams.app.worker",
    "analyze": "streams.advise.cli",
    "advisor": "streams.advise.agent",
    "command": "streams.execute.command_cli",
    "executor": "streams.execute.cli",
}


def _load(name: str) -> ModuleType | None:
    try:
        return importlib.import_module(COMMANDS[name])
    except ModuleNotFoundError as exc:
        if exc.name and COMMANDS[name].startswith(exc.name):
            return None  # command not built yet
        raise


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dbopt",
        description="Streaming database optimization: windowed query latency, alerts and safe "
        "automatic indexing for PostgreSQL. Reads DBOPT_* variables (and .run/env).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        if only is not None and name != only:
            continue
        module = _load(name)
        if module is None:
            continue
        command = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(command)
        command.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    first = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(only=first if first in COMMANDS else None)
    args = parser.parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except ConfigError as exc:
        parser.exit(2, f"dbopt: configuration error: {exc}\n")
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
