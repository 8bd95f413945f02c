"""``dbopt demo-db init``: (re)create the wedding-platform demo database."""

from __future__ import annotations

import argparse
import sys
import time

import psycopg

from streams.cli_args import positive_int
from streams.config import load_settings
from streams.demo.load import CHUNK_ROWS, DemoDbError, format_report, init_demo_db
from streams.demo.schema import DEFAULT_BOOKINGS

HELP = "create the wedding-platform demo database (primary keys only, no secondary indexes)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION")
    sub.required = True
    init = sub.add_parser(
        "init",
        help="drop and recreate the demo tables and load them",
        description="Drop the demo tables (only those) and recreate them with realistic data: "
        "weddings, vendors (14 categories), bookings, payments, timeline_events, guests, notifications. "
        "Primary keys only, so a query without a matching index scans whole tables. "
        "The tables go to the first schema of DBOPT_DATABASE_SEARCH_PATH (default public).",
    )
    init.add_argument("--bookings", type=positive_int, default=DEFAULT_BOOKINGS,
                      help=f"number of bookings; the other tables scale with it (default {DEFAULT_BOOKINGS:,})")
    init.add_argument("--database-url", help="target database (default: DBOPT_DATABASE_URL)")
    init.add_argument("--chunk-rows", type=positive_int, default=CHUNK_ROWS,
                      help=f"rows per INSERT ... SELECT (default {CHUNK_ROWS:,})")


def run(args: argparse.Namespace) -> int:
    started = time.monotonic()
    try:
        reports = init_demo_db(
            load_settings(), args.database_url, args.bookings, args.chunk_rows, say=lambda line: print(line, flush=True)
        )
    except (DemoDbError, psycopg.OperationalError) as exc:
        print(f"dbopt demo-db: {exc}", file=sys.stderr)
        return 1
    print(format_report(reports))
    print(f"demo database ready in {time.monotonic() - started:.1f}s")
    return 0
