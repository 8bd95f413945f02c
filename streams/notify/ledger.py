"""The delivery ledger ``<schema>.dbopt_notify_ledger`` in PostgreSQL, beside the executor's audit
(``DBOPT_AUDIT_SCHEMA``, default ``dbopt``). Every statement names its schema.

One row per delivery: (notification_id, channel, target) is the primary key, so a redelivered
record, a restart or a rebalance finds its rows and never queues a notification twice. A row is
written ``pending`` (or ``suppressed``) before the source offset is committed; the channel's
worker moves it to ``delivered``, to ``held`` (rate limit) and then ``digested`` (inside a digest
row of its own), back to ``pending`` with a later ``next_attempt_at`` (retry), or to ``failed``
with the reason (given up). ``reported`` turns true once its NotificationResult is on Kafka.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterable

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from streams import db

from .model import Action, Notification
from .routing import Planned

TABLE = "dbopt_notify_ledger"
AUDIT_TABLE = "dbopt_audit"  # the executor's (streams/execute/audit.py)
STATUSES = ("pending", "held", "delivered", "failed", "suppressed", "digested")
FINAL = ("delivered", "failed", "suppressed", "digested")

_DDL = """
CREATE SCHEMA IF NOT EXISTS {schema};
CREATE TABLE IF NOT EXISTS {table} (
    notification_id text NOT NULL,
    channel         text NOT NULL,
    target          text NOT NULL DEFAULT '',
    status          text NOT NULL CHECK (status IN ({statuses})),
    reason          text NOT NULL DEFAULT '',
    kind            text NOT NULL,
    state           text NOT NULL,
    severity        text NOT NULL,
    condition_key   text NOT NULL,
    emergency       boolean NOT NULL,
    event_ms        bigint NOT NULL,
    notification    jsonb NOT NULL,
    attempts        integer NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL,
    next_attempt_at timestamptz NOT NULL,
    finished_at     timestamptz,
    digest_id       text,
    reported        boolean NOT NULL DEFAULT false,
    PRIMARY KEY (notification_id, channel, target)
);
CREATE INDEX IF NOT EXISTS dbopt_notify_ledger_due ON {table} (channel, next_attempt_at)
    WHERE status IN ('pending', 'held');
CREATE INDEX IF NOT EXISTS dbopt_notify_ledger_condition ON {table} (condition_key, event_ms);
CREATE INDEX IF NOT EXISTS dbopt_notify_ledger_unreported ON {table} (finished_at)
    WHERE NOT reported AND finished_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS dbopt_notify_ledger_sent ON {table} (channel, finished_at) WHERE status = 'delivered';
"""


def _ts(epoch_s: float) -> datetime:
    return datetime.fromtimestamp(epoch_s, timezone.utc)


@dataclass(frozen=True)
class Delivery:
    """One row of the ledger."""

    notification: Notification
    channel: str
    target: str
    status: str
    reason: str
    attempts: int
    created_at: float  # epoch seconds
    finished_at: float | None
    digest_id: str | None

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.notification.notification_id, self.channel, self.target)

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> "Delivery":
        return cls(
            notification=Notification.from_json(row["notification"]),
            channel=row["channel"], target=row["target"], status=row["status"], reason=row["reason"],
            attempts=row["attempts"], created_at=row["created_at"].timestamp(),
            finished_at=row["finished_at"].timestamp() if row["finished_at"] else None, digest_id=row["digest_id"],
        )


class Ledger:
    """The ledger on one connection (autocommit; multi-row changes in explicit transactions)."""

    def __init__(self, conn: psycopg.Connection[Any], schema: str) -> None:
        self.conn = conn
        self.schema = schema
        self.table = sql.Identifier(schema, TABLE)
        self.audit = sql.Identifier(schema, AUDIT_TABLE)

    def ensure(self) -> None:
        statuses = sql.SQL(", ").join(sql.Literal(s) for s in STATUSES)
        ddl = sql.SQL(_DDL).format(schema=sql.Identifier(self.schema), table=self.table, statuses=statuses)
        with self.conn.transaction():
            self.conn.execute(ddl)

    def _q(self, text: str) -> sql.Composed:
        return sql.SQL(text).format(t=self.table, audit=self.audit)

    def _rows(self, text: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        with self.conn.cursor(row_factory=dict_row) as cur:
            return cur.execute(self._q(text), params).fetchall()

    # -- the agent: queueing --------------------------------------------------------------------

    def known(self, notification_id: str) -> bool:
        return bool(self._rows("SELECT 1 FROM {t} WHERE notification_id = %(id)s LIMIT 1", {"id": notification_id}))

    def enqueue(self, notification: Notification, planned: Iterable[Planned], now: float) -> None:
        """Queue every planned delivery of ``notification`` at once (a replay inserts nothing)."""
        rows = [
            {"id": notification.notification_id, "channel": p.channel, "target": p.target, "status": p.status,
             "reason": p.reason, "kind": notification.kind, "state": notification.state,
             "severity": notification.severity, "condition": notification.condition_key,
             "emergency": notification.emergency, "event_ms": notification.event_ms,
             "notification": Jsonb(notification.to_json()), "now": _ts(now),
             "finished": _ts(now) if p.status != "pending" else None}
            for p in planned
        ]
        query = self._q(
            "INSERT INTO {t} (notification_id, channel, target, status, reason, kind, state, severity, condition_key,"
            " emergency, event_ms, notification, created_at, next_attempt_at, finished_at)"
            " VALUES (%(id)s, %(channel)s, %(target)s, %(status)s, %(reason)s, %(kind)s, %(state)s, %(severity)s,"
            " %(condition)s, %(emergency)s, %(event_ms)s, %(notification)s, %(now)s, %(now)s, %(finished)s)"
            " ON CONFLICT DO NOTHING"
        )
        with self.conn.transaction(), self.conn.cursor() as cur:
            cur.executemany(query, rows)

    def firing_channels(self, condition_key: str, before_ms: int) -> tuple[str, ...] | None:
        """Channels the latest firing notification of the condition went to (None: no such firing)."""
        rows = self._rows(
            "SELECT channel, status FROM {t} WHERE notification_id = ("
            "  SELECT notification_id FROM {t} WHERE condition_key = %(key)s AND state = 'firing'"
            "  AND event_ms <= %(before)s ORDER BY event_ms DESC, created_at DESC LIMIT 1)",
            {"key": condition_key, "before": before_ms},
        )
        if not rows:
            return None
        return tuple(dict.fromkeys(r["channel"] for r in rows if r["channel"] != "none" and r["status"] != "suppressed"))

    def resolved_after(self, condition_key: str, event_ms: int) -> bool:
        """A resolution of the condition later than ``event_ms`` is already queued (the firing came late)."""
        return bool(self._rows(
            "SELECT 1 FROM {t} WHERE condition_key = %(key)s AND state = 'resolved' AND event_ms > %(at)s LIMIT 1",
            {"key": condition_key, "at": event_ms},
        ))

    def _audit_exists(self) -> bool:
        return db.table_exists(self.conn, self.schema, AUDIT_TABLE)

    def actions_for(self, fingerprint: str | None, limit: int = 3) -> list[Action]:
        """The latest commands dbopt made for a fingerprint, from the executor's audit table."""
        if not fingerprint or not self._audit_exists():
            return []
        rows = self._rows(
            "SELECT command_id, action, status, index_name, command FROM {audit}"
            " WHERE command->'fingerprints' ? %(fp)s ORDER BY received_at DESC LIMIT %(limit)s",
            {"fp": fingerprint, "limit": limit},
        )
        return [_action(r) for r in rows]

    def command(self, command_id: str) -> Action | None:
        if not self._audit_exists():
            return None
        rows = self._rows("SELECT command_id, action, status, index_name, command FROM {audit}"
                          " WHERE command_id = %(id)s", {"id": command_id})
        return _action(rows[0]) if rows else None

    # -- a channel's worker: delivering -----------------------------------------------------------

    def next_due(self, channel: str, now: float) -> Delivery | None:
        """The next pending delivery whose time has come: emergencies first, then in time order,
        never before an earlier pending notification of the same condition to the same target
        (a PagerDuty resolve never overtakes its trigger)."""
        rows = self._rows(
            "SELECT * FROM {t} l WHERE l.channel = %(channel)s AND l.status = 'pending'"
            " AND l.next_attempt_at <= %(now)s AND NOT EXISTS ("
            "  SELECT 1 FROM {t} e WHERE e.channel = l.channel AND e.target = l.target"
            "  AND e.condition_key = l.condition_key AND e.status = 'pending'"
            "  AND (e.event_ms, e.notification_id) < (l.event_ms, l.notification_id))"
            " ORDER BY l.emergency DESC, l.next_attempt_at, l.event_ms LIMIT 1",
            {"channel": channel, "now": _ts(now)},
        )
        return Delivery.from_row(rows[0]) if rows else None

    def next_attempt_at(self, channel: str) -> float | None:
        row = self.conn.execute(self._q("SELECT min(next_attempt_at) FROM {t} WHERE channel = %s AND status = 'pending'"),
                                [channel]).fetchone()
        return row[0].timestamp() if row and row[0] else None

    def held(self, channel: str) -> dict[str, list[Delivery]]:
        """Held deliveries of the channel, by target."""
        out: dict[str, list[Delivery]] = {}
        for row in self._rows("SELECT * FROM {t} WHERE channel = %(c)s AND status = 'held' ORDER BY event_ms",
                              {"c": channel}):
            delivery = Delivery.from_row(row)
            out.setdefault(delivery.target, []).append(delivery)
        return out

    def recent_sends(self, channel: str, since: float) -> dict[str, list[float]]:
        """When each target of the channel got something since ``since`` (restores rate limiters)."""
        out: dict[str, list[float]] = {}
        for row in self._rows("SELECT target, finished_at FROM {t} WHERE channel = %(c)s AND status = 'delivered'"
                              " AND finished_at >= %(since)s", {"c": channel, "since": _ts(since)}):
            out.setdefault(row["target"], []).append(row["finished_at"].timestamp())
        return out

    def _update(self, delivery: Delivery, sets: str, params: dict[str, Any]) -> None:
        notification_id, channel, target = delivery.key
        self.conn.execute(
            self._q(f"UPDATE {{t}} SET {sets} WHERE notification_id = %(id)s AND channel = %(channel)s"
                    " AND target = %(target)s"),
            {**params, "id": notification_id, "channel": channel, "target": target},
        )

    def hold(self, delivery: Delivery, reason: str) -> None:
        self._update(delivery, "status = 'held', reason = %(reason)s", {"reason": reason})

    def retry(self, delivery: Delivery, attempts: int, at: float, reason: str) -> None:
        self._update(delivery, "attempts = %(attempts)s, next_attempt_at = %(at)s, reason = %(reason)s",
                     {"attempts": attempts, "at": _ts(at), "reason": reason})

    def finish(self, delivery: Delivery, status: str, attempts: int, now: float, reason: str = "") -> None:
        self._update(delivery, "status = %(status)s, attempts = %(attempts)s, finished_at = %(now)s, reason = %(reason)s",
                     {"status": status, "attempts": attempts, "now": _ts(now), "reason": reason})

    def make_digest(self, digest: Notification, channel: str, target: str, members: list[Delivery], now: float) -> None:
        """Queue the digest and mark its members ``digested``, in one transaction."""
        with self.conn.transaction():
            self.enqueue(digest, [Planned(channel, target, "pending", "")], now)
            for member in members:
                self._update(member, "status = 'digested', digest_id = %(digest)s, finished_at = %(now)s",
                             {"digest": digest.notification_id, "now": _ts(now)})

    # -- the agent: reporting -------------------------------------------------------------------

    def unreported(self, limit: int) -> list[Delivery]:
        return [Delivery.from_row(r) for r in self._rows(
            "SELECT * FROM {t} WHERE NOT reported AND finished_at IS NOT NULL ORDER BY finished_at LIMIT %(limit)s",
            {"limit": limit},
        )]

    def mark_reported(self, keys: list[tuple[str, str, str]]) -> None:
        if not keys:
            return
        with self.conn.transaction(), self.conn.cursor() as cur:
            cur.executemany(self._q("UPDATE {t} SET reported = true WHERE notification_id = %s AND channel = %s"
                                    " AND target = %s"), keys)

    def counts(self) -> dict[tuple[str, str], int]:
        """(channel, status) -> rows (for tests and ``--check``-style summaries)."""
        return {(r["channel"], r["status"]): r["n"] for r in self._rows(
            "SELECT channel, status, count(*) AS n FROM {t} GROUP BY channel, status", {})}


def _action(row: dict[str, Any]) -> Action:
    command = row["command"] or {}
    return Action(command_id=row["command_id"], action=row["action"], status=row["status"],
                  index_name=row["index_name"], service=command.get("service"), context=command.get("context"),
                  fingerprints=tuple(command.get("fingerprints") or ()))
