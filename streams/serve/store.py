"""What ``dbopt serve`` keeps in PostgreSQL, beside the executor's audit (``DBOPT_AUDIT_SCHEMA``).

* It **reads** the executor's audit table ``<schema>.dbopt_audit`` (``streams.execute.audit``):
  the history of every command, also of those older than the commands topic still holds, and the
  executor's own word on each (applied, deferred as a recommendation, rejected and why).
* It **writes** one table of its own, ``<schema>.dbopt_serve_decisions``: one row per decided
  recommendation (approved or dismissed, by whom, when, and the operator command an approval
  sent). The primary key is the recommendation's id, so the first decision wins, also across
  several serve processes, and a restarted serve shows the decisions again.

Every statement names its schema. A connection per call: decisions are rare and the audit is read
every ``DBOPT_SERVE_HISTORY_REFRESH_S``, so no session is kept open between them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from psycopg import sql
from psycopg.rows import dict_row

from streams import db
from streams.config import Settings
from streams.execute.audit import TABLE as AUDIT_TABLE
from streams.records import OptimizationCommand

from .view import AuditEntry, OperatorDecision

TABLE = "dbopt_serve_decisions"

_DDL = """
CREATE SCHEMA IF NOT EXISTS {schema};
CREATE TABLE IF NOT EXISTS {table} (
    recommendation_id text PRIMARY KEY,
    decision          text NOT NULL CHECK (decision IN ('approved', 'dismissed')),
    decided_by        text NOT NULL,
    decided_at        timestamptz NOT NULL DEFAULT now(),
    command_id        text,
    note              text NOT NULL DEFAULT ''
)
"""


def _ms(at: datetime | None) -> int | None:
    return None if at is None else int(at.timestamp() * 1000)


class Store:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.schema = settings.executor.audit_schema
        self.decisions_table = sql.Identifier(self.schema, TABLE)

    def _connect(self) -> Any:
        return db.connect(self.settings, application_name="dbopt-serve")

    def ensure(self) -> None:
        ddl = sql.SQL(_DDL).format(schema=sql.Identifier(self.schema), table=self.decisions_table)
        with self._connect() as conn, conn.transaction():
            conn.execute(ddl)

    def audit(self, limit: int) -> list[AuditEntry]:
        """The newest ``limit`` audit rows (none while the executor never created its table)."""
        query = sql.SQL(
            "SELECT command, status, reason, table_name, index_name, rollback_sql, duration_ms, received_at, "
            "finished_at, executor_id FROM {} ORDER BY received_at DESC LIMIT %s"
        ).format(sql.Identifier(self.schema, AUDIT_TABLE))
        with self._connect() as conn:
            if not db.table_exists(conn, self.schema, AUDIT_TABLE):
                return []
            with conn.cursor(row_factory=dict_row) as cur:
                rows = cur.execute(query, (limit,)).fetchall()
        return [
            AuditEntry(
                command=OptimizationCommand.from_avro(row["command"]), status=row["status"], reason=row["reason"],
                table_name=row["table_name"], index_name=row["index_name"], rollback_sql=row["rollback_sql"],
                duration_ms=row["duration_ms"], received_at=_ms(row["received_at"]) or 0,
                finished_at=_ms(row["finished_at"]), executor_id=row["executor_id"],
            )
            for row in rows
        ]

    def decisions(self) -> list[OperatorDecision]:
        query = sql.SQL("SELECT * FROM {} ORDER BY decided_at").format(self.decisions_table)
        with self._connect() as conn, conn.cursor(row_factory=dict_row) as cur:
            return [self._decision(row) for row in cur.execute(query).fetchall()]

    @staticmethod
    def _decision(row: dict[str, Any]) -> OperatorDecision:
        return OperatorDecision(row["recommendation_id"], row["decision"], row["decided_by"], _ms(row["decided_at"]) or 0,
                        row["command_id"], row["note"])

    def decide(self, recommendation_id: str, decision: str, decided_by: str, command_id: str | None,
               note: str) -> tuple[OperatorDecision, bool]:
        """Record a decision; returns it and True, or the earlier decision and False (the first wins)."""
        insert = sql.SQL(
            "INSERT INTO {} (recommendation_id, decision, decided_by, command_id, note) "
            "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (recommendation_id) DO NOTHING RETURNING *"
        ).format(self.decisions_table)
        select = sql.SQL("SELECT * FROM {} WHERE recommendation_id = %s").format(self.decisions_table)
        with self._connect() as conn, conn.cursor(row_factory=dict_row) as cur:
            row = cur.execute(insert, (recommendation_id, decision, decided_by, command_id, note)).fetchone()
            if row is not None:
                return self._decision(row), True
            earlier = cur.execute(select, (recommendation_id,)).fetchone()
        assert earlier is not None
        return self._decision(earlier), False

    def withdraw(self, recommendation_id: str) -> None:
        """Forget a decision whose command could not be sent, so it can be taken again."""
        with self._connect() as conn:
            conn.execute(sql.SQL("DELETE FROM {} WHERE recommendation_id = %s").format(self.decisions_table),
                         (recommendation_id,))
