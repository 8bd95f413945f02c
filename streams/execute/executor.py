"""The executor: consumes signed commands, gates them, applies them safely, audits and reports.

For each record on the commands topic (delivered by the shared loop, see :mod:`.agent`):

1. decode it (undecodable -> ``rejected``) and verify its HMAC signature (unsigned/forged ->
   ``rejected``). Such a message is not trusted with an audit row under the id it claims, since
   that would let a forger pre-empt a real command; its result is keyed
   ``unverified:<topic>/<partition>/<offset>`` and its reason names the claimed id;
2. look the command up in the audit table: already final -> ``duplicate``, never run twice;
3. allowlist (pure, pglast), catalog checks, policy (aggressiveness, index cap, one operation
   per table, freeze days);
4. run the re-deparsed statement on an autocommit session (CONCURRENTLY cannot run in a
   transaction) with ``lock_timeout``/``statement_timeout``, while holding a session advisory
   lock so that two executors never act at once;
5. record the outcome in the audit table and return the OptimizationResult; once the broker has
   acknowledged it, the audit row is marked emitted and only then is the command's offset committed.

PostgreSQL unavailable: the command is retried with backoff (the offset stays uncommitted), so it
is applied once the database is back. Each (re)connection first takes the advisory lock, marks
rows left ``running`` as ``failed`` (interrupted), drops INVALID indexes dbopt created (left by an
interrupted CREATE INDEX CONCURRENTLY), re-sends results that never reached Kafka, and
re-examines deferred commands whose time has come.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, TypeVar

import prometheus_client
import psycopg
from psycopg import sql

from streams import db
from streams.commands import command_id, command_key, normalized_sql, signature_problem
from streams.config import ConfigError, Settings, settings_database
from streams.domain.calendar import Calendar
from streams.domain.contexts import classify
from streams.domain.slo import slo_ms
from streams.kafka.loop import Incoming, Stopped
from streams.records import OptimizationCommand, OptimizationResult
from streams.serde import DecodeError

from . import catalog
from .allowlist import Refused, ValidatedStatement, check_statement
from .audit import Audit, AuditRow
from .policy import Request, decide
from .results import from_row, unverified
from .sequence import Due, Sequencer, Tiers, plan
from .watch import WindowWatch

log = logging.getLogger("dbopt.executor")
T = TypeVar("T")
RESULTS = prometheus_client.Counter("dbopt_executor_results", "Results the executor sent (acknowledged), by status.",
                                    ["status"])
ROLLBACKS = prometheus_client.Counter("dbopt_executor_rollbacks", "Rollback commands the executor ran.")
DB_UP = prometheus_client.Gauge("dbopt_executor_db_up", "1 while the executor has its PostgreSQL session, 0 while it "
                                "waits for the database.")
RAN = ("applied", "failed", "rolled_back")  # a statement ran: the sequence's pause starts


def age_text(ms: int) -> str:
    """``3 d 4 h``, ``2 h 5 min``, ``40 s``: a command's age for people."""
    s = ms // 1000
    d, h, m = s // 86_400, s % 86_400 // 3600, s % 3600 // 60
    return f"{d} d {h} h" if d else f"{h} h {m} min" if h else f"{m} min {s % 60} s" if m else f"{s} s"


@dataclass(frozen=True)
class ResultToSend:
    """A result for the results topic, keyed by ``key``."""

    key: str
    result: OptimizationResult
    audited: bool  # the result stands for an audit row (marked emitted once the broker has it)


@dataclass
class RunReport:
    processed: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    dropped_invalid_indexes: list[str] = field(default_factory=list)
    interrupted: list[str] = field(default_factory=list)


class Executor:
    def __init__(self, settings: Settings, *, calendar: Calendar | None = None) -> None:
        name = settings.executor.database or None
        if name is not None and name not in settings.databases:
            raise ConfigError(f"DBOPT_EXECUTOR_DATABASE={name!r} is not a name in DBOPT_DATABASES "
                              f"({', '.join(sorted(settings.databases)) or 'empty'})")
        # several databases: this executor serves the commands of DBOPT_DATABASES[name] only (None: the default)
        self.database = name
        self.settings = settings if name is None else settings.with_overrides(database_url=settings.databases[name])
        self.cfg = settings.executor
        self.key = command_key(settings)
        self.calendar = calendar or Calendar.from_settings(settings)
        self.executor_id = self.cfg.executor_id or f"{socket.gethostname()}:{os.getpid()}"
        self.report = RunReport()
        self.stop = threading.Event()
        self.outbox: list[ResultToSend] = []  # results found on (re)connection, for the next turn
        self.tiers = Tiers.from_settings(self.cfg)
        self.sequencer = Sequencer(self.cfg.sequence_hold_max_s)
        self.watch = WindowWatch(settings, self.database)
        self._queued = True  # due deferred commands may be waiting for their turn (looked at on start)
        self._conn: psycopg.Connection[Any] | None = None
        self._audit: Audit | None = None

    # -- database session ------------------------------------------------------------

    @property
    def conn(self) -> psycopg.Connection[Any]:
        assert self._conn is not None
        return self._conn

    @property
    def audit(self) -> Audit:
        assert self._audit is not None
        return self._audit

    def _connected(self) -> bool:
        return self._conn is not None and not self._conn.closed and not self._conn.broken

    def _connect(self) -> None:
        conn = db.connect(self.settings, application_name="dbopt-executor")
        waiting_logged = False
        while not conn.execute("SELECT pg_try_advisory_lock(%s)", (self.cfg.advisory_lock_key,)).fetchone()[0]:  # type: ignore[index]
            if not waiting_logged:
                log.info("another executor holds the executor lock; waiting")
                waiting_logged = True
            if self.stop.wait(1.0):
                conn.close()
                raise Stopped()
        self._conn, self._audit = conn, Audit(conn, self.cfg.audit_schema, self.database)
        self.audit.ensure()
        interrupted = self.audit.fail_interrupted(self.executor_id)
        for row in interrupted:
            log.warning("command %s was interrupted while running (%s): marked failed", row.command_id, row.sql)
        self.report.interrupted += [row.command_id for row in interrupted]
        self._drop_invalid_indexes()
        self.outbox += [ResultToSend(r.command_id, from_row(r, self.executor_id), True) for r in self.audit.pending_results()]
        log.info("executor %s connected and holds the executor lock", self.executor_id)
        DB_UP.set(1)

    def _with_db(self, work: Callable[[], T]) -> T:
        """Run ``work`` with a healthy session; while PostgreSQL is unavailable, retry with backoff."""
        delay = 0.5
        while True:
            try:
                if not self._connected():
                    self._connect()
                return work()
            except psycopg.OperationalError as exc:
                if self._connected():
                    raise
                DB_UP.set(0)
                log.warning("PostgreSQL unavailable (%s); retrying in %.1fs", str(exc).strip().splitlines()[0], delay)
                self._close_db()
                if self.stop.wait(delay):
                    raise Stopped() from None
                delay = min(delay * 2, self.cfg.db_retry_max_s)

    def _close_db(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn = self._audit = None

    def _timed(self, statement: sql.Composed | str) -> float:
        """Run one statement under the executor's lock and statement timeouts; its duration in ms."""
        self.conn.execute("SELECT set_config('lock_timeout', %s, false)", (f"{self.cfg.lock_timeout_ms}ms",))
        self.conn.execute("SELECT set_config('statement_timeout', %s, false)", (f"{self.cfg.statement_timeout_ms}ms",))
        started = time.perf_counter()
        try:
            self.conn.execute(statement if isinstance(statement, sql.Composed) else sql.SQL(statement))
        finally:
            if self._connected():
                self.conn.execute("RESET lock_timeout; RESET statement_timeout")
        return (time.perf_counter() - started) * 1000

    def _drop_invalid_indexes(self) -> None:
        for schema, name in self.audit.invalid_own_indexes():
            statement = sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(sql.Identifier(schema, name))
            try:
                self._timed(statement)
            except psycopg.Error as exc:
                if not self._connected():
                    raise
                log.warning("could not drop invalid index %s.%s yet: %s", schema, name, exc.diag.message_primary)
                continue
            log.warning("dropped invalid index %s.%s left by an interrupted CREATE INDEX CONCURRENTLY", schema, name)
            self.report.dropped_invalid_indexes.append(f"{schema}.{name}")

    # -- one command ---------------------------------------------------------------------

    def handle(self, incoming: Incoming) -> list[ResultToSend]:
        record = incoming.record
        if not isinstance(record, OptimizationCommand):
            return [self.unverified(incoming, f"not an OptimizationCommand but a {type(record).__name__}", "")]
        problem = signature_problem(record, self.key)
        if problem:
            return [self.unverified(incoming, f"{problem}; claimed command_id {record.command_id!r}", record.sql)]
        if settings_database(self.settings, record.database) != self.database:
            return []  # another database's command: its own executor answers it
        return self._with_db(lambda: self._process(record))

    def undecodable(self, incoming: Incoming, error: DecodeError) -> ResultToSend:
        return self.unverified(incoming, f"undecodable command ({error.reason}): {error.detail}", "")

    def unverified(self, incoming: Incoming, reason: str, sql_text: str) -> ResultToSend:
        key = f"unverified:{incoming.topic}/{incoming.partition}/{incoming.offset}"
        log.warning("rejected %s: %s", key, reason)
        return ResultToSend(key, unverified(key, reason, sql_text, self.executor_id), False)

    def _process(self, record: OptimizationCommand) -> list[ResultToSend]:
        row = self.audit.get(record.command_id)
        if row is not None and row.status != "deferred":
            if not row.result_emitted:  # final, but its result never reached Kafka
                return [self._outcome(row)]
            reason = f"already {row.status}{' at ' + row.finished_at.isoformat() if row.finished_at else ''}: not run again"
            return [ResultToSend(f"{row.command_id}#duplicate", from_row(row, self.executor_id, status="duplicate", reason=reason), False)]
        age = self._now_ms() - record.created_at
        if row is None and age > self.cfg.max_command_age_s * 1000:
            return self._finish(record, "expired", (
                f"expired: created {age_text(age)} ago ({age} ms), older than DBOPT_EXECUTOR_MAX_COMMAND_AGE="
                f"{self.cfg.max_command_age_s:.0f} s; not applied (an old command is history, not an instruction)"))
        return self._evaluate(record)

    def _now_ms(self) -> int:
        return int(self.calendar.now().timestamp() * 1000)

    def _outcome(self, row: AuditRow) -> ResultToSend:
        return ResultToSend(row.command_id, from_row(row, self.executor_id), True)

    def _finish(self, record: OptimizationCommand, status: str, reason: str, **fields: Any) -> list[ResultToSend]:
        fields.setdefault("sql_text", record.sql)
        self.audit.save(record, status, reason, self.executor_id, **fields)
        row = self.audit.get(record.command_id)
        assert row is not None
        log.info("command %s %s: %s", row.command_id, status, reason)
        return [self._outcome(row)]

    def _evaluate(self, record: OptimizationCommand, *, sequenced: bool = False) -> list[ResultToSend]:
        """Gate and run one command; ``sequenced``: its turn in the sequence has come (never queued again)."""
        if record.recommendation:  # recorded for a human, never run (e.g. CREATE EXTENSION, DROP of an index dbopt did not make)
            return self._finish(record, "rejected", f"recommendation for a human, never run by dbopt: {record.reason}")
        try:
            stmt, facts, original = self._check(record)
        except Refused as exc:
            return self._finish(record, "rejected", exc.reason)
        decision = decide(
            Request(
                origin=record.origin,
                action=stmt.action,
                table=facts.table,
                emergency=record.emergency,
                is_rollback=original is not None,
                index_count=facts.index_count,
            ),
            aggressiveness=self.cfg.aggressiveness,
            max_indexes_per_table=self.cfg.max_indexes_per_table,
            busy_tables=self.audit.busy_tables(),
            calendar=self.calendar,
        )
        where: dict[str, Any] = {"sql_text": stmt.sql_to_run, "table": facts.table, "index_name": facts.index}
        if decision.verdict == "reject":
            return self._finish(record, "rejected", decision.reason, **where)
        if decision.verdict == "defer":
            return self._finish(record, "deferred", decision.reason, deferred_until=decision.until, **where)
        step = plan([self._due(record, facts.table)], self.tiers)[0]
        if not sequenced and original is None and not record.emergency:
            waiting = self._waiting()
            if waiting:
                return self._finish(record, "deferred", (
                    f"queued ({waiting}): runs in the wedding-aware order (critical, then support, then the rest; "
                    f"this is a {step.tier_name} table), one table at a time"), deferred_until=self.calendar.now(), **where)
        rollback_sql = facts.rollback_sql
        self.audit.save(record, "running", decision.reason, self.executor_id, started=True, rollback_sql=rollback_sql, **where)
        try:
            duration = self._timed(stmt.sql_to_run)
        except psycopg.Error as exc:
            if not self._connected():
                raise
            reason = f"{type(exc).__name__} (SQLSTATE {exc.sqlstate}): {exc.diag.message_primary}"
            if stmt.action == "create_index":
                reason += "; an INVALID index left behind is dropped at the executor's next start"
            self.sequencer.ran(step, time.monotonic())
            return self._finish(record, "failed", reason, rollback_sql=rollback_sql, **where)
        self.sequencer.ran(step, time.monotonic())
        outcomes: list[ResultToSend] = []
        status, reason = "applied", f"applied in {duration:.0f} ms ({decision.reason})"
        if original is not None:
            status, reason = "rolled_back", f"rolled back command {original.command_id} in {duration:.0f} ms"
            ROLLBACKS.inc()
        undone = original or facts.creator
        if undone is not None:
            self.audit.mark_undone(undone.command_id, f"undone by command {record.command_id}")
            undone_row = self.audit.get(undone.command_id)
            assert undone_row is not None
            outcomes.append(self._outcome(undone_row))
        return self._finish(record, status, reason, rollback_sql=rollback_sql, duration_ms=duration, **where) + outcomes

    def _check(self, record: OptimizationCommand) -> tuple[ValidatedStatement, catalog.Facts, AuditRow | None]:
        expected = command_id(record.origin, record.action, record.sql, record.rollback_of, record.created_at,
                              record.database)
        if expected != record.command_id:
            raise Refused("command_id does not match the command's origin, action and statement")
        if record.emergency and record.origin != "operator":
            raise Refused(f"only an operator may mark a command as emergency (origin {record.origin!r})")
        stmt = check_statement(record.sql, protected_schemas=(self.cfg.audit_schema,))
        if record.action != stmt.action:
            raise Refused(f"the command says {record.action!r} but its statement is {stmt.action!r}")
        facts = catalog.check(self.conn, stmt, self.audit)
        original = None
        if record.rollback_of:
            original = self._rollback_target(record, stmt, facts)
        return stmt, facts, original

    def _rollback_target(self, record: OptimizationCommand, stmt: ValidatedStatement, facts: catalog.Facts) -> AuditRow:
        assert record.rollback_of is not None
        original = self.audit.get(record.rollback_of)
        if original is None or original.status not in ("applied", "kept"):
            state = "unknown" if original is None else original.status
            raise Refused(f"rollback_of {record.rollback_of} is not an applied command (it is {state})")
        if original.action == "create_index":
            if facts.creator is None or facts.creator.command_id != original.command_id:
                raise Refused(f"this statement does not drop the index command {original.command_id} created")
        elif not original.rollback_sql or normalized_sql(original.rollback_sql) != stmt.sql_to_run:
            raise Refused(f"this statement is not the rollback recorded for command {original.command_id}")
        return original

    # -- deferred commands ------------------------------------------------------------------

    def recheck(self) -> list[ResultToSend]:
        """Periodic work: drop INVALID indexes left behind; look at the due deferred commands again."""
        self._with_db(self._drop_invalid_indexes)
        self._queued = True
        return []

    def sequence_turn(self) -> list[ResultToSend]:
        """Called every loop turn: when due deferred commands wait (a freeze ended, a burst was
        queued, the database came back) and the sequence allows it, run the next step of
        :func:`~.sequence.plan` — one table's commands — and nothing more this turn."""
        if not self._queued:
            return []
        latest = self.watch.poll()  # read on every turn while commands wait, so the check sees the newest windows
        ok, _why = self.sequencer.may_start(time.monotonic(), lambda: latest, self._slo_ms,
                                            self.settings.detect.min_samples)
        if not ok:
            return []
        return self._with_db(self._next_step)

    def _next_step(self) -> list[ResultToSend]:
        """The first step whose commands run; steps whose commands are only deferred again (a freeze
        still on, a busy table) or rejected are passed over. Nothing ran: wait for the next recheck."""
        rows = {row.command_id: row for row in self.audit.due_deferred(self.calendar.now())}
        outcomes: list[ResultToSend] = []
        for step in plan([self._due(row.command, row.table_name) for row in rows.values()], self.tiers):
            log.info("sequence: %s step on %s: %s", step.tier_name, step.table, ", ".join(step.command_ids))
            for cid in step.command_ids:
                command = rows[cid].command
                problem = signature_problem(command, self.key)
                if problem:
                    outcomes += self._finish(command, "rejected", f"stored deferred command: {problem}")
                else:
                    outcomes += self._evaluate(command, sequenced=True)
            if any(item.result.status in RAN for item in outcomes):
                return outcomes
        self._queued = False
        return outcomes

    def _waiting(self) -> str:
        """Why a command that may run must queue instead (empty: it runs now)."""
        if self.sequencer.busy(time.monotonic()):
            return f"the last change is stabilizing for {self.sequencer.next_at - time.monotonic():.0f} s more"
        if self._queued and self.audit.due_deferred(self.calendar.now()):
            return "other commands are due before it"
        return ""

    def _due(self, record: OptimizationCommand, table: str | None) -> Due:
        context = record.context or (classify((table,), self.settings.domain).context if table else None)
        return Due(record.command_id, table, context, record.service, record.priority, record.created_at,
                   record.emergency)

    def _slo_ms(self, context: str, at_ms: int) -> float:
        return slo_ms(context, at_ms, self.settings.domain, self.settings.timezone)

    def mark_emitted(self, sent: list[ResultToSend]) -> None:
        """The broker has these results: count them, and mark the audited ones emitted."""
        for item in sent:
            self.report.statuses[item.result.status] += 1
            RESULTS.labels(item.result.status).inc()
        audited = [item.result.command_id for item in sent if item.audited]
        if audited:
            def mark() -> None:
                for cid in audited:
                    self.audit.mark_result_emitted(cid)

            self._with_db(mark)

    def close(self) -> None:
        self._close_db()
        self.watch.close()
