"""Create and fill the demo database (``dbopt demo-db init``): I/O around ``streams.demo.schema``.

The tables go to the target schema (:func:`streams.db.target_schema`, default ``public``), named
in every statement; the connection pins the configured search path like every dbopt connection.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import psycopg
from psycopg import sql

from streams import db
from streams.config import Settings
from streams.demo.schema import TABLE_NAMES, TABLES, chunks, plan_rows

CHUNK_ROWS = 250_000
SEED = 0.42  # same data on every run


class DemoDbError(RuntimeError):
    """The demo database could not be (re)created; the message says why."""


@dataclass(frozen=True)
class TableReport:
    name: str
    rows: int
    table_bytes: int  # heap + TOAST
    index_bytes: int  # the primary key


def _template(text: str, schema: str) -> sql.Composed:
    """A statement of ``streams.demo.schema`` with its ``{schema}`` filled in."""
    return sql.SQL(text).format(schema=sql.Identifier(schema))


def _tables(schema: str) -> sql.Composed:
    return sql.SQL(", ").join(sql.Identifier(schema, name) for name in TABLE_NAMES)


def _drop(conn: psycopg.Connection, schema: str) -> None:
    """Drop the demo tables (only those: no CASCADE, so nothing else can go with them)."""
    conn.execute("SET lock_timeout = '10s'")
    try:
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(_tables(schema)))
    except psycopg.errors.LockNotAvailable:
        raise DemoDbError("the demo tables are in use (is `dbopt simulate` running?); stop it and retry") from None
    except psycopg.errors.DependentObjectsStillExist as exc:
        raise DemoDbError(f"other objects depend on the demo tables, not dropping them: {exc.diag.message_detail}") from None
    finally:
        conn.execute("RESET lock_timeout")


def _fill(
    conn: psycopg.Connection, schema: str, counts: dict[str, int], chunk_rows: int, say: Callable[[str], None]
) -> None:
    total = sum(counts.values())
    done = 0
    started = time.monotonic()
    for table in TABLES:
        for lo, hi in chunks(counts[table.name], chunk_rows):
            conn.execute(_template(table.fill, schema), {**counts, "lo": lo, "hi": hi})
            done += hi - lo + 1
            say(
                f"  {table.name:<16} {hi:>10,}/{counts[table.name]:,} rows"
                f"   total {100 * done / total:5.1f}%  {time.monotonic() - started:6.1f}s"
            )
        conn.execute(
            sql.SQL("ALTER TABLE {} ALTER COLUMN id RESTART WITH {}").format(
                sql.Identifier(schema, table.name), sql.Literal(counts[table.name] + 1)
            )
        )


def _report(conn: psycopg.Connection, schema: str) -> list[TableReport]:
    reports = []
    for name in TABLE_NAMES:
        row = conn.execute(
            sql.SQL(
                "SELECT (SELECT count(*) FROM {}), pg_table_size(rel), pg_indexes_size(rel)"
                " FROM to_regclass(format('%%I.%%I', %s::text, %s::text)) rel"
            ).format(sql.Identifier(schema, name)),
            (schema, name),
        ).fetchone()
        assert row is not None
        reports.append(TableReport(name, int(row[0]), int(row[1]), int(row[2])))
    return reports


def init_demo_db(
    settings: Settings,
    url: str | None,
    bookings: int,
    chunk_rows: int = CHUNK_ROWS,
    say: Callable[[str], None] = print,
) -> list[TableReport]:
    """Drop and recreate the demo tables in ``url`` (default: the configured database); return their sizes."""
    counts = plan_rows(bookings)
    schema = db.target_schema(settings)
    with db.connect(settings, url=url, application_name="dbopt-demo-db") as conn:
        if conn.execute("SELECT to_regnamespace(%s)", (schema,)).fetchone() == (None,):
            raise DemoDbError(f"schema {schema} (DBOPT_DATABASE_SEARCH_PATH) does not exist in the database")
        _drop(conn, schema)
        # what dbopt's advisor needs in the target database (harmless when already there)
        for extension in ("hypopg", "pg_stat_statements"):
            conn.execute(
                sql.SQL("CREATE EXTENSION IF NOT EXISTS {} SCHEMA {}").format(sql.Identifier(extension), sql.Identifier(schema))
            )
        for table in TABLES:
            conn.execute(_template(table.ddl, schema))
        say(f"created {len(TABLES)} tables in schema {schema} (primary keys only); loading {sum(counts.values()):,} rows")
        conn.execute("SELECT setseed(%s)", (SEED,))
        _fill(conn, schema, counts, chunk_rows, say)
        say("adding foreign keys (no indexes behind them)")
        for table in TABLES:
            for statement in table.foreign_keys:
                conn.execute(_template(statement, schema))
        say("ANALYZE")
        conn.execute(sql.SQL("ANALYZE {}").format(_tables(schema)))
        return _report(conn, schema)


def format_report(reports: list[TableReport]) -> str:
    def mib(n: int) -> str:
        return f"{n / 2**20:,.1f} MiB"

    lines = [f"{'table':<16} {'rows':>12} {'table size':>12} {'pk size':>12}"]
    lines += [f"{r.name:<16} {r.rows:>12,} {mib(r.table_bytes):>12} {mib(r.index_bytes):>12}" for r in reports]
    lines.append(
        f"{'total':<16} {sum(r.rows for r in reports):>12,} {mib(sum(r.table_bytes for r in reports)):>12}"
        f" {mib(sum(r.index_bytes for r in reports)):>12}"
    )
    return "\n".join(lines)
