"""The executor's audit table ``<schema>.dbopt_audit`` in the target database.

One row per verified command, keyed by ``command_id`` (PRIMARY KEY): a redelivered command
finds its row and is never run twice. The row keeps what ran, its rollback, timings, the
status and, for deferred commands, the signed command itself so that it can be re-examined
later. ``result_emitted`` turns true once the OptimizationResult has been flushed to Kafka, so
a command whose result was lost in a crash gets that same result again, not "duplicate".
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from streams.advise.state import DDL_LOCK
from streams.records import OptimizationCommand

TABLE = "dbopt_audit"
STATUSES = ("running", "applied", "rejected", "deferred", "failed", "rolled_back", "kept", "expired")
# statuses of an index creation whose index dbopt still owns
LIVE_INDEX_STATUSES = ("applied", "kept")

_DDL = """
CREATE SCHEMA IF NOT EXISTS {schema};
CREATE TABLE IF NOT EXISTS {table} (
    command_id      text PRIMARY KEY,
    origin          text NOT NULL,
    action          text NOT NULL,
    status          text NOT NULL CHECK (status IN ({statuses})),
    reason          text NOT NULL DEFAULT '',
    table_name      text,
    index_name      text,
    sql             text NOT NULL,
    rollback_sql    text,
    rollback_of     text,
    emergency       boolean NOT NULL DEFAULT false,
    executor_id     text NOT NULL,
    received_at     timestamptz NOT NULL DEFAULT now(),
    started_at      timestamptz,
    finished_at     timestamptz,
    duration_ms     double precision,
    deferred_until  timestamptz,
    result_emitted  boolean NOT NULL DEFAULT false,
    command         jsonb NOT NULL,
    database        text
);
ALTER TABLE {table} ADD COLUMN IF NOT EXISTS database text
"""
# a table made by an older dbopt has a status CHECK without the newer statuses (expired)
_STATUS_CHECK = "dbopt_audit_status_check"


@dataclass(frozen=True)
class AuditRow:
    command_id: str
    origin: str
    action: str
    status: str
    reason: str
    table_name: str | None
    index_name: str | None
    sql: str
    rollback_sql: str | None
    rollback_of: str | None
    emergency: bool
    executor_id: str
    received_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    duration_ms: float | None
    deferred_until: datetime | None
    result_emitted: bool
    command: OptimizationCommand  # the signed command as received (stored as its Avro-shaped JSON)
    database: str | None = None  # the DBOPT_DATABASES name the executor serves (None: the default database)


class Audit:
    def __init__(self, conn: psycopg.Connection[Any], schema: str, database: str | None = None) -> None:
        self.conn = conn
        self.schema = schema
        self.database = database
        self.table = sql.Identifier(schema, TABLE)

    def ensure(self) -> None:
        statuses = sql.SQL(", ").join(sql.Literal(s) for s in STATUSES)
        ddl = sql.SQL(_DDL).format(schema=sql.Identifier(self.schema), table=self.table, statuses=statuses)
        with self.conn.transaction():
            # the advisor may create the same schema at the same moment (CREATE ... IF NOT EXISTS races)
            self.conn.execute(f"SELECT pg_advisory_xact_lock({DDL_LOCK})")
            self.conn.execute(ddl)
            check = self.conn.execute(
                "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = %s::regclass AND conname = %s",
                (f"{self.schema}.{TABLE}", _STATUS_CHECK),
            ).fetchone()
            if check is None or not all(f"'{status}'" in check[0] for status in STATUSES):
                self.conn.execute(sql.SQL("ALTER TABLE {t} DROP CONSTRAINT IF EXISTS {c}, ADD CONSTRAINT {c} "
                                          "CHECK (status IN ({s}))").format(
                    t=self.table, c=sql.Identifier(_STATUS_CHECK), s=statuses))

    def _rows(self, where: str, params: dict[str, Any]) -> list[AuditRow]:
        query = sql.SQL("SELECT * FROM {} WHERE " + where + " ORDER BY received_at").format(self.table)
        with self.conn.cursor(row_factory=dict_row) as cur:
            return [
                AuditRow(**{**row, "command": OptimizationCommand.from_avro(row["command"])})
                for row in cur.execute(query, params).fetchall()
            ]

    def get(self, command_id: str) -> AuditRow | None:
        rows = self._rows("command_id = %(id)s", {"id": command_id})
        return rows[0] if rows else None

    def save(
        self,
        command: OptimizationCommand,
        status: str,
        reason: str,
        executor_id: str,
        *,
        sql_text: str,
        table: str | None = None,
        index_name: str | None = None,
        rollback_sql: str | None = None,
        started: bool = False,
        duration_ms: float | None = None,
        deferred_until: datetime | None = None,
    ) -> None:
        """Insert or update the command's row (status transitions of one command)."""
        query = sql.SQL(
            """
            INSERT INTO {t} (command_id, origin, action, status, reason, table_name, index_name, sql,
                             rollback_sql, rollback_of, emergency, executor_id, started_at, finished_at,
                             duration_ms, deferred_until, command, database)
            VALUES (%(id)s, %(origin)s, %(action)s, %(status)s, %(reason)s, %(table)s, %(index)s, %(sql)s,
                    %(rollback_sql)s, %(rollback_of)s, %(emergency)s, %(executor)s,
                    CASE WHEN %(started)s THEN now() END,
                    CASE WHEN %(status)s <> 'running' THEN now() END,
                    %(duration)s, %(until)s, %(command)s, %(database)s)
            ON CONFLICT (command_id) DO UPDATE SET
                status = EXCLUDED.status, reason = EXCLUDED.reason, table_name = EXCLUDED.table_name,
                index_name = EXCLUDED.index_name, sql = EXCLUDED.sql, rollback_sql = EXCLUDED.rollback_sql,
                executor_id = EXCLUDED.executor_id,
                started_at = COALESCE(EXCLUDED.started_at, {t}.started_at),
                finished_at = EXCLUDED.finished_at, duration_ms = EXCLUDED.duration_ms,
                deferred_until = EXCLUDED.deferred_until, result_emitted = false
            """
        ).format(t=self.table)
        self.conn.execute(
            query,
            {
                "id": command.command_id,
                "origin": command.origin,
                "action": command.action,
                "status": status,
                "reason": reason,
                "table": table,
                "index": index_name,
                "sql": sql_text,
                "rollback_sql": rollback_sql,
                "rollback_of": command.rollback_of,
                "emergency": command.emergency,
                "executor": executor_id,
                "started": started,
                "duration": duration_ms,
                "until": deferred_until,
                "command": Jsonb(command.to_avro()),
                "database": self.database,
            },
        )

    def mark_result_emitted(self, command_id: str) -> None:
        self.conn.execute(
            sql.SQL("UPDATE {} SET result_emitted = true WHERE command_id = %s").format(self.table), (command_id,)
        )

    def mark_undone(self, command_id: str, reason: str) -> None:
        """The change ``command_id`` made was undone (its index dropped by a later command)."""
        self.conn.execute(
            sql.SQL("UPDATE {} SET status = 'rolled_back', reason = %s WHERE command_id = %s").format(self.table),
            (reason, command_id),
        )

    def fail_interrupted(self, executor_id: str) -> list[AuditRow]:
        """Rows left ``running`` by an executor that stopped mid-statement become ``failed``.

        Only called while holding the executor advisory lock, so nothing else is running."""
        rows = self._rows("status = 'running'", {})
        self.conn.execute(
            sql.SQL(
                "UPDATE {} SET status = 'failed', finished_at = now(), result_emitted = false, "
                "reason = 'interrupted: the executor or its database session stopped while the statement ran "
                "(found by ' || %s || ')' WHERE status = 'running'"
            ).format(self.table),
            (executor_id,),
        )
        return rows

    def busy_tables(self) -> frozenset[str]:
        return frozenset(r.table_name for r in self._rows("status = 'running'", {}) if r.table_name)

    def index_creator(self, qualified_index: str) -> AuditRow | None:
        """The live create_index row that made ``schema.index``, if dbopt made it."""
        rows = self._rows(
            "action = 'create_index' AND index_name = %(index)s AND status = ANY(%(live)s)",
            {"index": qualified_index, "live": list(LIVE_INDEX_STATUSES)},
        )
        return rows[-1] if rows else None

    def due_deferred(self, now: datetime) -> list[AuditRow]:
        """Deferred rows whose time has come by ``now`` (the platform calendar's clock, which set them)."""
        return self._rows("status = 'deferred' AND deferred_until <= %(now)s", {"now": now})

    def pending_results(self) -> list[AuditRow]:
        """Final rows whose result never reached Kafka (deferred re-examinations, crashes)."""
        return self._rows("status <> 'running' AND NOT result_emitted", {})

    def invalid_own_indexes(self) -> list[tuple[str, str]]:
        """(schema, name) of INVALID indexes (pg_index.indisvalid = false) an audited create_index made.

        (No query parameters here, so ``%`` reaches PostgreSQL's format() unescaped.)"""
        query = sql.SQL(
            """
            SELECT n.nspname, c.relname
            FROM pg_index i
            JOIN pg_class c ON c.oid = i.indexrelid
            JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE NOT i.indisvalid
              AND format('%I.%I', n.nspname, c.relname) IN (
                  SELECT index_name FROM {} WHERE action = 'create_index' AND index_name IS NOT NULL)
            ORDER BY 1
            """
        ).format(self.table)
        return [(row[0], row[1]) for row in self.conn.execute(query).fetchall()]
