"""The advisor's decisions: which fingerprints need help, which commands to send, which applied
indexes to keep. Pure but for the evaluator (HypoPG, through ``connect``); the Kafka side is
``streams.advise.agent``.

* a firing SLO/regression/statement alert with a fingerprint and query text marks the fingerprint
  as needing help; a resolved one clears it;
* latency windows are the history behind call rates, write rates and verification;
* commands carry the evidence (fingerprints) of every index command, for the verifier;
* an ``applied`` CREATE INDEX result starts a verification.

:meth:`Advisor.tick` evaluates the fingerprints that fired since the last turn together (HypoPG,
see ``evaluate``), emits one signed command per chosen index and per stale table, and judges due
verifications: keep (a ``kept`` result) or roll back (a signed ``drop_index`` command from origin
``verifier``). Command ids are deterministic, so a replayed turn repeats nothing harmful.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, Mapping

import psycopg
from prometheus_client import Counter

from streams.advise.analysis import analyze_sql
from streams.advise.candidates import created_index_name
from streams.advise.evaluate import EvaluationError, Evaluator, QueryInput
from streams.advise.records import analyze_command, index_command, kept_result, rollback_command
from streams.advise.sweep import Sweeper
from streams.advise.verify import Verifier
from streams.commands import command_key
from streams.config import Settings, database_url_of, settings_database
from streams.kafka.loop import Emit
from streams.records import Alert, OptimizationCommand, OptimizationResult, WindowStats

log = logging.getLogger("dbopt.advisor")
COMMANDS = Counter("dbopt_advisor_commands", "Commands the advisor sent, by origin (advisor, verifier) and action.",
                   ["origin", "action"])
VERDICTS = Counter("dbopt_advisor_verdicts", "Verification verdicts on applied indexes: keep or rollback.", ["verdict"])
ACTIONABLE_KINDS = frozenset({"slo", "regression", "statement"})
_RETRY_MS = 10_000


class Advisor:
    """The advisor's state and decisions. Records to produce collect in ``outbox`` (drained by
    the agent); the database is reached only through the evaluator factory ``connect``."""

    def __init__(self, settings: Settings, connect: Callable[[], Evaluator] | None = None) -> None:
        self.settings = settings
        self.key = command_key(settings)
        self.outbox: list[Emit] = []
        self.connect = connect or (lambda: Evaluator.connect(settings))
        self.verifier = Verifier(settings.advise)
        self.firing: dict[str, Alert] = {}  # fingerprint -> latest firing alert
        self.waiting: set[str] = set()  # firing fingerprints not evaluated yet
        self.proposed: set[str] = set()  # command ids sent by this process
        self.retry_at_ms = 0  # after a database failure, evaluation waits until then
        self.sweeper = Sweeper(settings, self.key)  # scheduled sweeps, checks of applied maintenance

    # --- durable state (see streams.advise.state) ---------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        return {
            "firing": {fp: alert.to_avro() for fp, alert in self.firing.items()},
            "waiting": sorted(self.waiting),
            "proposed": sorted(self.proposed),
            "verifier": self.verifier.snapshot(),
            "sweeper": self.sweeper.snapshot(),
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        self.firing = {fp: Alert.from_avro(alert) for fp, alert in state.get("firing", {}).items()}
        self.waiting = set(state.get("waiting", ()))
        self.proposed = set(state.get("proposed", ()))
        self.verifier.restore(state.get("verifier", {}))
        self.sweeper.restore(state.get("sweeper", {}))

    # --- input -----------------------------------------------------------------------------------

    def on_alert(self, alert: Alert) -> None:
        fp = alert.fingerprint
        if not fp or alert.kind not in ACTIONABLE_KINDS:
            return
        if alert.state == "resolved":
            self.firing.pop(fp, None)
            self.waiting.discard(fp)
        elif alert.query_text:
            if fp not in self.firing:
                self.waiting.add(fp)
            self.firing[fp] = alert

    def on_window(self, window: WindowStats) -> None:
        self.verifier.history.add(window)

    def on_command(self, command: OptimizationCommand) -> None:
        self.verifier.on_command(command)
        self.sweeper.on_command(command)

    def on_result(self, result: OptimizationResult) -> None:
        self.sweeper.on_result(result)
        created = created_index_name(result.sql)  # only CREATE INDEX results are verified
        pending = self.verifier.on_result(result, created and (result.index_name or created))
        if pending is not None:
            log.info("verifying %s on %s (applied at %d)", pending.index_name, pending.table, pending.applied_at)

    # --- work ------------------------------------------------------------------------------------

    def tick(self, now_ms: int | None = None) -> None:
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        if self.waiting and now_ms >= self.retry_at_ms and not self._advise():
            self.retry_at_ms = now_ms + _RETRY_MS
        for pending, verdict in self.verifier.due(now_ms):
            VERDICTS.labels("keep" if verdict.keep else "rollback").inc()
            if verdict.keep:
                log.info("keeping %s: %s", pending.index_name, verdict.reason)
                self.outbox.append(Emit(self.settings.topics.results, pending.command_id,
                                        kept_result(pending, verdict, now_ms)))
            else:
                command = rollback_command(pending, verdict, self.key)
                log.warning("rolling back %s: %s (command %s)", pending.index_name, verdict.reason, command.command_id)
                self._send_command(command)
        commands, checked = self.sweeper.tick(now_ms)
        for command in commands:
            self._send_command(command)
        self.outbox += [Emit(self.settings.topics.results, r.command_id, r) for r in checked]

    def _send_command(self, command: OptimizationCommand) -> None:
        if command.command_id in self.proposed:
            return
        self.proposed.add(command.command_id)
        COMMANDS.labels(command.origin, command.action).inc()
        self.outbox.append(Emit(self.settings.topics.commands, command.command_id, command))

    def _advise(self) -> bool:
        """Evaluate the waiting fingerprints, each against the database its alert names (several
        databases: DBOPT_DATABASES), and send commands; False when a database failed."""
        by_database: dict[str | None, list[str]] = {}
        for fp in sorted(self.waiting):
            by_database.setdefault(settings_database(self.settings, self.firing[fp].database), []).append(fp)
        return all([self._advise_database(database, fps) for database, fps in by_database.items()])

    def _advise_database(self, database: str | None, fingerprints: list[str]) -> bool:
        history = self.verifier.history
        queries = [QueryInput.from_alert(self.firing[fp], history.calls_per_s(fp)) for fp in fingerprints]
        try:
            evaluator = self.connect() if database is None else Evaluator.connect(
                self.settings.with_overrides(database_url=database_url_of(self.settings, database)))
        except (psycopg.Error, EvaluationError) as exc:
            log.error("cannot evaluate %d fingerprint(s) now, will retry: %s", len(queries), exc)
            return False
        try:
            tables = {t for q in queries for t in self._tables_of(q.fingerprint)}
            rates = {t: r for t in tables if (r := history.write_rate(t)) is not None}
            decision, _ = evaluator.advise(queries, write_rates=rates)
        except psycopg.OperationalError as exc:
            log.error("database unavailable during evaluation, will retry: %s", exc)
            return False
        finally:
            evaluator.close()
        self.waiting.difference_update(fingerprints)
        for proposal in decision.proposals:
            alert = self.firing.get(proposal.fingerprints[0])
            self._send_command(index_command(proposal, alert, self.key, self.sweeper.index_priority(proposal)))
            log.info("proposed %s for %s", proposal.candidate.describe(), ", ".join(proposal.fingerprints))
        served = tuple(fingerprints)
        for stats, why in decision.analyze:
            self._send_command(analyze_command(stats, why, served, self.key, database))
        for extension, why in decision.extensions:
            self._send_command(self.sweeper.extension_command(extension, why, database))
        for fp, why in decision.unserved:
            log.info("no index for %s: %s", fp, why)
        return True

    def _tables_of(self, fingerprint: str) -> list[str]:
        try:
            return [t.table for t in analyze_sql(self.firing[fingerprint].query_text or "").tables]
        except ValueError:
            return []
