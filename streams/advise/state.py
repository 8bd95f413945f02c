"""The advisor's durable state: one JSON document per consumer group, next to the executor's audit.

The advisor's firing fingerprints, pending verifications, the evidence of its commands and the
window history behind its verdicts are saved here after every loop turn whose output the broker
acknowledged, before the turn's offsets are committed (``Stage.checkpoint``). A restarted advisor
loads the document and resumes from the committed offsets, so an index applied before the restart
still gets its verdict. Saving is idempotent: replaying a batch after a crash feeds the same records
into state that may already contain them, and every part of the state is keyed (fingerprint,
command id, window start), so nothing is counted twice.
"""

from __future__ import annotations

from typing import Any, Callable

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

TABLE = "dbopt_advisor_state"
# serializes dbopt's CREATE ... IF NOT EXISTS (which race with each other in PostgreSQL) across processes
DDL_LOCK = 0x6462_6F70_7464_646C  # "dboptddl"


class StateStore:
    """Reads and writes ``<schema>.dbopt_advisor_state`` in the target database."""

    def __init__(self, connect: Callable[[], psycopg.Connection[Any]], schema: str, group_id: str) -> None:
        self.connect = connect  # an autocommit connection to the target database
        self.table = sql.Identifier(schema, TABLE)
        self.schema = sql.Identifier(schema)
        self.group_id = group_id
        self._conn: psycopg.Connection[Any] | None = None

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = self.connect()
            with self._conn.transaction():  # the executor may create the same schema at the same moment
                self._conn.execute(f"SELECT pg_advisory_xact_lock({DDL_LOCK})")
                self._conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(self.schema))
                self._conn.execute(sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {} (group_id text PRIMARY KEY, state jsonb NOT NULL, "
                    "saved_at timestamptz NOT NULL DEFAULT now())").format(self.table))
        return self._conn

    def load(self) -> dict[str, Any] | None:
        row = self._connection().execute(
            sql.SQL("SELECT state FROM {} WHERE group_id = %s").format(self.table), (self.group_id,)
        ).fetchone()
        return None if row is None else dict(row[0])

    def save(self, state: dict[str, Any]) -> None:
        self._connection().execute(
            sql.SQL("INSERT INTO {} (group_id, state) VALUES (%s, %s) ON CONFLICT (group_id) "
                    "DO UPDATE SET state = EXCLUDED.state, saved_at = now()").format(self.table),
            (self.group_id, Jsonb(state)),
        )

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
