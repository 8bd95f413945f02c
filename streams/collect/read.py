"""The I/O edge of ``dbopt collect``: read pg_stat_activity, the server's connection limits and
pg_stat_statements, as a read-only session with a statement timeout.

The role needs nothing but ``pg_monitor`` (``GRANT pg_monitor TO dbopt_collect``): it includes
``pg_read_all_stats``, without which other roles' rows show no state and their statement texts
read ``<insufficient privilege>``. Every session is read-only (``default_transaction_read_only``)
and bounded by ``statement_timeout`` (``DBOPT_COLLECT_STATEMENT_TIMEOUT_MS``).
"""

from __future__ import annotations

import time
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from streams import db
from streams.collect.core import ActivityRow, ServerFacts, StatementRead, StatementRow
from streams.config import Settings

APPLICATION_NAME = "dbopt-collect"

_ACTIVITY = """
SELECT coalesce(datname, ''), coalesce(application_name, ''), state, wait_event_type,
       (extract(epoch FROM clock_timestamp() - xact_start) * 1000)::bigint
FROM pg_stat_activity
WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()
"""
_FACTS = """
SELECT current_setting('max_connections')::int,
       current_setting('superuser_reserved_connections')::int
         + coalesce(nullif(current_setting('reserved_connections', true), '')::int, 0),
       current_database(),
       array(SELECT datname::text FROM pg_database WHERE datallowconn ORDER BY datname)
"""
_EXTENSION = """
SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
WHERE e.extname = 'pg_stat_statements'
"""


def collect_url(settings: Settings) -> str:
    url = settings.collect.database_url or settings.database_url
    return url.get_secret_value()


def target_database(settings: Settings) -> str:
    return str(conninfo_to_dict(collect_url(settings)).get("dbname") or "")


def server_name(settings: Settings) -> str:
    """``DBOPT_COLLECT_NAME``, else host:port/database of the URL collect reads."""
    if settings.collect.name:
        return settings.collect.name
    params = conninfo_to_dict(collect_url(settings))
    return f"{params.get('host', 'localhost')}:{params.get('port', 5432)}/{params.get('dbname', '')}"


class Reader:
    """One read-only session; :meth:`close` it when a read fails (the caller reconnects)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.conn: psycopg.Connection[Any] = db.connect(
            settings,
            url=collect_url(settings),
            application_name=APPLICATION_NAME,
            session={
                "statement_timeout": settings.collect.statement_timeout_ms,
                "default_transaction_read_only": "on",
            },
        )

    def facts(self) -> ServerFacts:
        row = self.conn.execute(_FACTS).fetchone()
        assert row is not None
        return ServerFacts(max_connections=row[0], reserved_connections=row[1], database=row[2],
                           databases=tuple(row[3]))

    def activity(self) -> list[ActivityRow]:
        return [ActivityRow(*row) for row in self.conn.execute(_ACTIVITY).fetchall()]

    def statements_schema(self) -> str | None:
        """The schema of the pg_stat_statements extension in this database (None: not installed)."""
        row = self.conn.execute(_EXTENSION).fetchone()
        return None if row is None else row[0]

    def statements(self, schema: str) -> StatementRead:
        """Every entry of pg_stat_statements (of this database only unless DBOPT_COLLECT_ALL_DATABASES)."""
        at_ms = int(time.time() * 1000)
        view = sql.Identifier(schema, "pg_stat_statements")
        info = sql.Identifier(schema, "pg_stat_statements_info")
        where = sql.SQL("") if self.settings.collect.all_databases else sql.SQL(
            "WHERE s.dbid = (SELECT oid FROM pg_database WHERE datname = current_database())"
        )
        query = sql.SQL(
            "SELECT s.userid::bigint, s.dbid::bigint, s.queryid, s.toplevel, s.query, s.calls, s.total_exec_time, "
            "s.max_exec_time, s.rows, s.shared_blks_hit, s.shared_blks_read "
            "FROM {view} s {where}"
        ).format(view=view, where=where)
        rows = tuple(StatementRow(*row) for row in self.conn.execute(query).fetchall() if row[2] is not None)
        reset = self.conn.execute(
            sql.SQL("SELECT (extract(epoch FROM stats_reset) * 1000)::bigint FROM {info}").format(info=info)
        ).fetchone()
        names = dict(self.conn.execute("SELECT oid::bigint, datname::text FROM pg_database").fetchall())
        return StatementRead(at_ms=at_ms, stats_reset_ms=reset[0] if reset else None, rows=rows, database_names=names)

    def close(self) -> None:
        self.conn.close()
