"""The ``dbopt`` command line.

Each sub-command lives in the module of its stage and exposes::

    HELP: str                                   # one line for `dbopt --help`
    def add_arguments(parser: argparse.ArgumentParser) -> None
    def run(args: argparse.Namespace) -> int    # the exit status

Modules are imported only when their command runs, so ``dbopt tail`` does not pay
for importing Faust. A long-running command also calls
:func:`streams.cli_args.add_logging_arguments`; :func:`main` configures logging from those
options (:mod:`streams.logs`) before ``run`` and turns every outcome into one of the
documented exit statuses (:data:`EXIT_STATUSES`).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from importlib.metadata import PackageNotFoundError, version
from types import ModuleType

from confluent_kafka import KafkaException

from streams import logs
from streams.config import ConfigError

DISTRIBUTION = "dbopt-streams"  # [project].name; the command stays `dbopt`

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
EXIT_STATUSES = f"""exit status:
  {EXIT_OK}    success
  {EXIT_FAILURE}    runtime failure: broker or database unreachable, a record that does not decode,
       an unexpected error (one line on stderr; its traceback with --log-level DEBUG)
  {EXIT_USAGE}    usage or configuration error: a wrong argument, an invalid or unknown DBOPT_*
       setting, a topic that does not exist
  {EXIT_INTERRUPTED}  interrupted (Ctrl-C)"""

log = logging.getLogger(__name__)

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
    "notify": "streams.notify.agent",
    "otlp": "streams.otlp.cli",
    "collect": "streams.collect.agent",
    "pools": "streams.pools.cli",
    "config": "streams.config_cli",
    "serve": "streams.serve.cli",
    "ui": "streams.serve.ui_cli",
}


class NeedsEngine:
    """Stands in for a command whose libraries are not installed: the slim distribution (the SDK)
    has no ``[engine]`` extra. It takes any arguments and says what to install."""

    def __init__(self, name: str, missing: str) -> None:
        self.name, self.missing = name, missing
        self.HELP = f"(not installed: pip install '{DISTRIBUTION}[engine]')"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)

    def run(self, args: argparse.Namespace) -> int:
        print(f"dbopt {self.name}: needs the engine, which is not installed (no module {self.missing!r}): "
              f"pip install '{DISTRIBUTION}[engine]'", file=sys.stderr)
        return EXIT_USAGE


def _load(name: str) -> ModuleType | NeedsEngine | None:
    try:
        return importlib.import_module(COMMANDS[name])
    except ModuleNotFoundError as exc:
        if exc.name and COMMANDS[name].startswith(exc.name):
            return None  # command not built yet
        if exc.name and exc.name.split(".")[0] != "streams":
            return NeedsEngine(name, exc.name)  # a library of the [engine] extra is missing
        raise


def installed_version() -> str:
    """The installed distribution's version (``unknown`` when run from a tree that is not installed)."""
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        return "unknown (not installed)"


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dbopt",
        description="Streaming database optimization: windowed query latency, alerts and safe "
        "automatic indexing for PostgreSQL. Reads DBOPT_* variables (and .run/env). "
        "Long-running commands take --log-level and --log-format.",
        epilog=EXIT_STATUSES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {installed_version()}")
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
    args = parser.parse_args(argv)  # a usage error exits 2 here
    logs.configure(args)
    try:
        return int(args._run(args) or 0)
    except ConfigError as exc:
        print(f"dbopt {args.command}: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - the last resort: one line, the traceback at DEBUG
        first_line = next(iter(str(exc).strip().splitlines()), "")
        print(f"dbopt {args.command}: {type(exc).__name__}: {first_line}", file=sys.stderr)
        if isinstance(exc, KafkaException):  # a refused login or TLS handshake says which setting to fix
            from streams.config import load_settings
            from streams.kafka.clients import diagnose

            problem = diagnose(load_settings())
            if problem is not None:
                print(f"dbopt {args.command}: {problem}", file=sys.stderr)
        log.debug("%s failed", args.command, exc_info=True)
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
