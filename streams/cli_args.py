"""argparse pieces shared by the dbopt commands: value types (a wrong value gets a message
saying why) and the logging options every long-running command takes."""

from __future__ import annotations

import argparse

from streams.logs import DEFAULT_LEVEL, FORMATS, LEVELS


def _whole_number(raw: str, minimum: int) -> int:
    try:
        value = int(raw.replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a whole number") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"{value} must be at least {minimum}")
    return value


def positive_int(raw: str) -> int:
    return _whole_number(raw, 1)


def non_negative_int(raw: str) -> int:
    return _whole_number(raw, 0)


def positive_float(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a number") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{raw} must be a positive finite number")
    return value


def log_level(raw: str) -> str:
    level = raw.upper()
    if level not in LEVELS:
        raise argparse.ArgumentTypeError(f"{raw!r} is not one of {', '.join(LEVELS)} (any case)")
    return level


def add_logging_arguments(parser: argparse.ArgumentParser) -> None:
    """``--log-level`` and ``--log-format``; ``streams.cli`` applies them (:func:`streams.logs.configure`)."""
    group = parser.add_argument_group("logging")
    group.add_argument("--log-level", type=log_level, default=DEFAULT_LEVEL, metavar="LEVEL",
                       help=f"{', '.join(LEVELS)}, any case (default {DEFAULT_LEVEL}); DEBUG also shows the "
                       "traceback of an unexpected error")
    group.add_argument("--log-format", choices=FORMATS, default="text",
                       help="text lines, or one JSON object per line with time, level, logger, message (default text)")


def logging_argv(args: argparse.Namespace) -> list[str]:
    """The logging options of ``args`` as arguments for a child ``dbopt`` process."""
    return ["--log-level", args.log_level, "--log-format", args.log_format]
