"""What an operator does from the page or the API: approve or dismiss a recommendation, send an
emergency command; and what anyone may ask: the advisor's analysis of one statement.

An approval is a new **operator** command for the recommended statement (its rollback, table,
database, evidence and ``rollback_of`` carried over), signed with ``DBOPT_COMMAND_KEY`` and sent to the
commands topic like ``dbopt command submit`` does. Its ``reason`` names the person and the
recommendation (``approved by NAME in dbopt serve (recommendation ID): ...``); the executor keeps
the signed command in its audit row, so the audit names who decided. The executor stays the gate:
it checks the signature, the allowlist, the catalog and the freeze days as for any command.

The decision is recorded first (:class:`~streams.serve.store.Store`: the first decision wins), then
the command is sent; when the broker does not take it, the decision is withdrawn and the operator
is told to try again.
"""

from __future__ import annotations

import logging
from typing import Any

import psycopg
from confluent_kafka import KafkaException
from prometheus_client import Counter

from streams.advise.analysis import UnsupportedStatement, analyze_sql
from streams.advise.cli import analysis_document
from streams.advise.evaluate import AdvisorDecision, EvaluationError, Evaluator, QueryEvaluation, QueryInput
from streams.commands import CommandKeyError, build_command, command_key, sign
from streams.config import Settings
from streams.execute.allowlist import action_of
from streams.execute.command_cli import send_command
from streams.records import OptimizationCommand
from streams.sql import SqlParseError, normalize

from .auth import User
from .store import Store
from .view import OperatorDecision, View

log = logging.getLogger("dbopt.serve")
DECISIONS = Counter("dbopt_serve_decisions", "Recommendations decided in dbopt serve, by decision.", ["decision"])
EMERGENCIES = Counter("dbopt_serve_emergency_commands", "Emergency commands sent from dbopt serve.")
MAX_NOTE = 500


class ActionError(Exception):
    """An action that cannot be done, with the HTTP status that says why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Actions:
    def __init__(self, settings: Settings, view: View, store: Store) -> None:
        self.settings, self.view, self.store = settings, view, store

    def _key(self) -> bytes:
        try:
            return command_key(self.settings)
        except CommandKeyError as exc:
            raise ActionError(503, str(exc)) from None

    def _send(self, record: OptimizationCommand) -> None:
        try:
            send_command(self.settings, record)
        except (RuntimeError, KafkaException) as exc:
            raise ActionError(503, f"the command was not sent, try again: {exc}") from None
        self.view.add(record)

    def _pending(self, rec_id: str) -> OptimizationCommand:
        rec = self.view.recommendation(rec_id)
        command = self.view.command(rec_id)
        if rec is None or command is None:
            raise ActionError(404, f"no recommendation {rec_id}")
        if rec.state != "pending":
            who = f" by {rec.decision.decided_by}" if rec.decision else ""
            raise ActionError(409, f"recommendation {rec_id} is already {rec.state}{who}")
        return command

    def _decide(self, rec_id: str, decision: str, user: User, command_id: str | None, note: str) -> OperatorDecision:
        try:
            taken, fresh = self.store.decide(rec_id, decision, user.name, command_id, note)
        except psycopg.OperationalError as exc:
            raise ActionError(503, f"the decision could not be recorded (database unavailable): {exc}") from None
        if not fresh:
            self.view.add_decision(taken)
            raise ActionError(409, f"recommendation {rec_id} is already {taken.decision} by {taken.decided_by}")
        return taken

    def approve(self, rec_id: str, user: User, note: str = "") -> tuple[OperatorDecision, OptimizationCommand]:
        """Send the recommended statement as ``user``'s signed operator command."""
        note = note.strip()[:MAX_NOTE]
        command = self._pending(rec_id)
        if command.recommendation:
            raise ActionError(409, "dbopt never runs this one: a person carries it out by hand "
                              "(dismiss it once done)")
        key = self._key()
        said = f": {note}" if note else ""
        record = sign(
            build_command(
                "operator", command.action, command.sql, rollback_sql=command.rollback_sql, table=command.table,
                rollback_of=command.rollback_of, service=command.service, context=command.context,
                fingerprints=command.fingerprints, p95_before_ms=command.p95_before_ms,
                cost_before=command.cost_before, cost_after=command.cost_after, priority=command.priority,
                evidence={f.name: f.value for f in command.evidence}, requires=command.requires,
                database=command.database,
                reason=f"approved by {user.name} in dbopt serve (recommendation {rec_id}){said}; {command.reason}",
            ),
            key,
        )
        decision = self._decide(rec_id, "approved", user, record.command_id, note)
        try:
            self._send(record)
        except ActionError:
            self.store.withdraw(rec_id)
            raise
        self.view.add_decision(decision)
        DECISIONS.labels("approved").inc()
        log.info("%s approved recommendation %s: command %s", user.name, rec_id, record.command_id)
        return decision, record

    def dismiss(self, rec_id: str, user: User, note: str = "") -> OperatorDecision:
        self._pending(rec_id)
        decision = self._decide(rec_id, "dismissed", user, None, note.strip()[:MAX_NOTE])
        self.view.add_decision(decision)
        DECISIONS.labels("dismissed").inc()
        log.info("%s dismissed recommendation %s", user.name, rec_id)
        return decision

    def emergency(self, sql: str, reason: str, user: User) -> OptimizationCommand:
        """An operator's emergency command (passes the freeze-day rule; the executor still checks the rest)."""
        sql, reason = sql.strip(), reason.strip()[:MAX_NOTE]
        if not sql:
            raise ActionError(422, "the statement is empty")
        if not reason:
            raise ActionError(422, "an emergency command needs a reason")
        key = self._key()
        record = sign(build_command("operator", action_of(sql), sql, emergency=True,
                                    reason=f"emergency by {user.name} in dbopt serve: {reason}"), key)
        self._send(record)
        EMERGENCIES.inc()
        log.warning("%s sent emergency command %s: %s", user.name, record.command_id, reason)
        return record


def analyze(settings: Settings, sql: str) -> dict[str, Any]:
    """The advisor's analysis of ``sql``: its literals are replaced by ``$n`` first (never kept)."""
    try:
        normalized = normalize(sql)
        shape = analyze_sql(normalized.query_text)
    except (SqlParseError, UnsupportedStatement) as exc:
        raise ActionError(422, str(exc)) from None
    ev: QueryEvaluation | None = None
    decision: AdvisorDecision | None = None
    error: str | None = None
    try:
        evaluator = Evaluator.connect(settings)
        try:
            decision, (ev,) = evaluator.advise([QueryInput(normalized.fingerprint, normalized.query_text)])
        finally:
            evaluator.close()
    except (psycopg.Error, EvaluationError) as exc:
        error = f"cannot evaluate against the database: {str(exc).strip().splitlines()[0]}"
    document = analysis_document(shape, ev, decision, error)
    return {"fingerprint": normalized.fingerprint, "normalized_sql": normalized.query_text, **document}
