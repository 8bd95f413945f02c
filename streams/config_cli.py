"""``dbopt config``: the effective settings, one ``NAME=value`` line per variable, secrets masked.

Each line says where its value comes from: ``# environment``, ``# <path of .run/env>`` or
``# default``. An invalid or unknown ``DBOPT_*`` variable is reported like in every command
(exit 2).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from streams.config import VARIABLES, Environment, Settings, load_settings, value_at

HELP = "print the effective settings (DBOPT_* variables, secrets masked) and where each comes from"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--json", action="store_true", help="one JSON object: name -> value, source and description"
    )


def shown_values(settings: Settings) -> dict[str, Any]:
    """Variable name -> value as JSON data; a secret as its masked text (a URL keeps all but its password)."""
    dumped = settings.model_dump(mode="json")
    shown: dict[str, Any] = {}
    for name, variable in VARIABLES.items():
        if variable.secret:
            secret = value_at(settings, variable)
            shown[name] = None if secret is None else str(secret)
            continue
        data: Any = dumped
        for part in variable.path:
            data = data[part]
        shown[name] = data
    return shown


def as_variable(value: Any) -> str:
    """How the value is written in its variable: lists comma-separated, objects as JSON."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return ",".join(map(str, value))
    if isinstance(value, dict):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def run(args: argparse.Namespace) -> int:
    environment = Environment.current()
    values = shown_values(load_settings(environment))
    sources = {name: environment.origins.get(name, "default") for name in VARIABLES}
    if args.json:
        report = {
            name: {"value": value, "source": sources[name], "description": VARIABLES[name].field.description}
            for name, value in values.items()
        }
        print(json.dumps(report, indent=2))
    else:
        for name, value in values.items():
            print(f"{name}={as_variable(value)}  # {sources[name]}")
    return 0
