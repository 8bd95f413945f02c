"""Logging of every dbopt command: one root handler on stderr, text or one JSON object per line.

The long-running commands take ``--log-level`` and ``--log-format``
(:func:`streams.cli_args.add_logging_arguments`); ``streams.cli`` calls :func:`configure` before
any command runs, so library loggers (Faust, aiokafka, psycopg) and Python warnings come out in
the same format. Settings are never logged unmasked: their repr hides secrets.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import TextIO

from pythonjsonlogger.json import JsonFormatter

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
FORMATS = ("text", "json")
DEFAULT_LEVEL = "INFO"
# commands without the flags (short, one-shot ones) only show warnings and errors
QUIET_LEVEL = "WARNING"

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# JSON keys: time (ISO-8601 UTC), level, logger, message, plus exc_info and any `extra=` fields
JSON_FIELDS = ("levelname", "name", "message")
JSON_RENAMES = {"levelname": "level", "name": "logger"}


def formatter(fmt: str) -> logging.Formatter:
    if fmt == "json":
        return JsonFormatter(list(JSON_FIELDS), rename_fields=JSON_RENAMES, timestamp="time")
    if fmt == "text":
        return logging.Formatter(TEXT_FORMAT)
    raise ValueError(f"unknown log format {fmt!r}; choose from {', '.join(FORMATS)}")


def configure(args: argparse.Namespace, stream: TextIO | None = None) -> None:
    """Set up the root logger from ``args.log_level``/``args.log_format`` (quiet text without them)."""
    level = getattr(args, "log_level", QUIET_LEVEL)
    handler = logging.StreamHandler(sys.stderr if stream is None else stream)
    handler.setFormatter(formatter(getattr(args, "log_format", "text")))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.captureWarnings(True)


def debugging() -> bool:
    """The root logger shows DEBUG records (tracebacks of unexpected errors are shown then)."""
    return logging.getLogger().isEnabledFor(logging.DEBUG)
