"""Scheduled sweeps, and the check of every maintenance command after it ran.

Besides the alert-driven advice, the advisor's ``tick`` runs a sweep over every table of the
target schemas (``DBOPT_DATABASE_SEARCH_PATH``) of every target database (the default one and each
of ``DBOPT_DATABASES``) every ``DBOPT_SWEEP_INTERVAL_S`` seconds — by default 14400 (4 h) in peak
season and 43200 (12 h) otherwise; setting it overrides both. A sweep proposes maintenance from
evidence (:mod:`streams.advise.maintenance`) and reports unused and prefix-duplicate indexes
(:mod:`streams.advise.unused`). It never runs on a freeze day (a wedding day, ``DBOPT_FREEZE_WEEKDAYS``
in ``DBOPT_TIMEZONE``) nor in ceremony hours (08:00-22:00) on a wedding day: a sweep that falls due
then waits until the day is over. The first sweep comes one interval after the advisor started.

Every command carries its evidence and a priority (:mod:`streams.advise.priority`). When the
executor reports an advisor VACUUM, REINDEX or ANALYZE ``applied``, the same figures are read again
``maintenance_verify_delay_s`` later and a ``kept`` result says whether they moved as promised
(dead tuples halved, the index smaller, modifications since ANALYZE down) — maintenance cannot be
rolled back, so the verdict is a statement of fact, not a decision.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any, Callable, Mapping
from zoneinfo import ZoneInfo

import psycopg

from streams import db
from streams.advise import maintenance, priority, unused
from streams.advise.candidates import drop_index_statement
from streams.advise.evaluate import Proposal
from streams.commands import build_command, sign
from streams.config import Settings, database_url_of, settings_database
from streams.domain.calendar import Calendar
from streams.execute.allowlist import Refused, check_statement
from streams.records import OptimizationCommand, OptimizationResult

log = logging.getLogger("dbopt.advisor")

PEAK_INTERVAL_S = 14_400
OFF_PEAK_INTERVAL_S = 43_200
MAINTENANCE = ("vacuum", "reindex", "analyze")

Connect = Callable[[str | None], psycopg.Connection[Any]]


@dataclass(frozen=True, slots=True)
class PendingCheck:
    """An applied maintenance command waiting for its verification."""

    command_id: str
    action: str
    schema: str
    table: str
    index: str | None
    database: str | None
    due_ms: int
    sql: str
    evidence: tuple[tuple[str, float], ...]


def interval_s(settings: Settings, calendar: Calendar, at: datetime) -> int:
    """Seconds between sweeps: the setting, else by season."""
    if settings.advise.sweep_interval_s is not None:
        return settings.advise.sweep_interval_s
    return PEAK_INTERVAL_S if calendar.season(at) == "peak" else OFF_PEAK_INTERVAL_S


def blocked(calendar: Calendar, at: datetime) -> str | None:
    """Why no sweep may run at ``at`` (a wedding day), or None."""
    if calendar.is_freeze_day(at):
        hours = " in ceremony hours" if calendar.in_ceremony_hours(at) else ""
        day = at.astimezone(ZoneInfo(calendar.timezone)).strftime("%A")
        return f"{day} is a freeze day (wedding day{hours}, {calendar.timezone}): no sweep"
    return None


class Sweeper:
    """Sweep schedule, sweep commands and maintenance verification (state saved with the advisor's)."""

    def __init__(self, settings: Settings, key: bytes, connect: Connect | None = None,
                 calendar: Calendar | None = None) -> None:
        self.settings = settings
        self.key = key
        self.calendar = calendar or Calendar.from_settings(settings)
        self.connect = connect or self._connect
        self.last_sweep_ms: int | None = None
        self.commands: dict[str, PendingCheck] = {}  # advisor maintenance commands seen, not yet applied
        self.pending: dict[str, PendingCheck] = {}  # applied, waiting for their check
        self._blocked_logged: str | None = None

    def _connect(self, database: str | None) -> psycopg.Connection[Any]:
        target = self.settings.with_overrides(database_url=database_url_of(self.settings, database))
        conn = db.connect(target, application_name="dbopt-advisor-sweep")
        conn.autocommit = True
        return conn

    # --- durable state -----------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        def plain(p: PendingCheck) -> dict[str, Any]:
            return {**{k: getattr(p, k) for k in PendingCheck.__slots__}, "evidence": [list(e) for e in p.evidence]}

        return {"last_sweep_ms": self.last_sweep_ms,
                "commands": {k: plain(v) for k, v in self.commands.items()},
                "pending": {k: plain(v) for k, v in self.pending.items()}}

    def restore(self, state: Mapping[str, Any]) -> None:
        def load(d: Mapping[str, Any]) -> PendingCheck:
            return PendingCheck(**{**d, "evidence": tuple((str(n), float(v)) for n, v in d["evidence"])})

        self.last_sweep_ms = state.get("last_sweep_ms")
        self.commands = {k: load(v) for k, v in state.get("commands", {}).items()}
        self.pending = {k: load(v) for k, v in state.get("pending", {}).items()}

    # --- input ---------------------------------------------------------------------------------------

    def on_command(self, command: OptimizationCommand) -> None:
        """Remember an advisor maintenance command with evidence, to check it once applied."""
        if command.origin != "advisor" or command.action not in MAINTENANCE or not command.evidence:
            return
        try:
            target = check_statement(command.sql).target
        except Refused:
            return
        schema, _, table = (command.table or "").rpartition(".")
        self.commands[command.command_id] = PendingCheck(
            command.command_id, command.action, target.schema or schema, table or target.name,
            target.name if command.action == "reindex" else None, settings_database(self.settings, command.database),
            0, command.sql, tuple((f.name, f.value) for f in command.evidence))

    def on_result(self, result: OptimizationResult) -> None:
        check = self.commands.pop(result.command_id, None)
        if check is None:
            return
        if result.status == "applied":
            due = result.finished_at + int(self.settings.advise.maintenance_verify_delay_s * 1000)
            self.pending[result.command_id] = replace(check, due_ms=due)
        elif result.status not in ("applied", "kept"):
            self.commands[result.command_id] = check  # deferred: its final result comes later

    # --- work ------------------------------------------------------------------------------------------

    def tick(self, now_ms: int) -> tuple[list[OptimizationCommand], list[OptimizationResult]]:
        """Due verifications (``kept`` results) and, when a sweep is due and allowed, its commands."""
        results = self._verify_due(now_ms)
        commands: list[OptimizationCommand] = []
        at = datetime.fromtimestamp(now_ms / 1000, timezone.utc)
        if self.last_sweep_ms is None:
            self.last_sweep_ms = now_ms  # the first sweep comes one interval after the start
        elif now_ms - self.last_sweep_ms >= interval_s(self.settings, self.calendar, at) * 1000:
            why = blocked(self.calendar, at)
            if why is not None:
                if why != self._blocked_logged:
                    log.info("sweep due but %s", why)
                    self._blocked_logged = why
            else:
                commands = self.sweep_all(now_ms)
                self.last_sweep_ms = now_ms
        return commands, results

    def sweep_all(self, now_ms: int) -> list[OptimizationCommand]:
        commands = []
        for database in [None, *sorted(self.settings.databases)]:
            try:
                commands += self.sweep(database, now_ms)
            except psycopg.Error as exc:
                log.error("sweep of %s failed: %s", database or "the default database", str(exc).strip().splitlines()[0])
        return commands

    def sweep(self, database: str | None, now_ms: int) -> list[OptimizationCommand]:
        """The commands one sweep of ``database`` proposes (maintenance, unused and duplicate indexes)."""
        schemas = list(self.settings.database_search_path)
        advise = self.settings.advise
        with self.connect(database) as conn:
            conn.execute("SELECT pg_stat_clear_snapshot()")
            tables = maintenance.read_tables(conn, schemas)
            indexes = maintenance.read_indexes(conn, schemas, advise.reindex_min_bytes)
            uses = unused.read_index_use(conn, schemas, self.settings.executor.audit_schema)
        commands = [self._maintenance_command(m, database, now_ms) for m in maintenance.plan(tables, indexes, advise)]
        findings = unused.unused(uses, advise.unused_min_age_days)
        reported = {f.index.qualified for f in findings}
        findings += [f for f in unused.prefix_duplicates(uses) if f.index.qualified not in reported]
        commands += [self._drop_command(f, database, now_ms) for f in findings]
        log.info("sweep of %s: %d table(s), %d command(s)", database or "the default database", len(tables), len(commands))
        return commands

    def _maintenance_command(self, m: maintenance.Maintenance, database: str | None, now_ms: int) -> OptimizationCommand:
        rank, context = priority.of_tables(self.settings, [m.table], m.gain)
        return sign(build_command(
            "advisor", m.action, m.sql, table=m.qualified_table, context=context, reason=f"sweep: {m.reason}",
            created_at=now_ms, priority=rank, evidence=m.evidence, database=database), self.key)

    def _drop_command(self, f: unused.Finding, database: str | None, now_ms: int) -> OptimizationCommand:
        i = f.index
        rank, context = priority.of_tables(self.settings, [i.table], priority.HOUSEKEEPING)
        human = not i.dbopt_created
        why = f"sweep: {f.reason}" + ("; dbopt did not create it: a recommendation for a human" if human else "")
        return sign(build_command(
            "advisor", "drop_index", drop_index_statement(i.schema, i.index), table=f"{i.schema}.{i.table}", context=context,
            reason=why, created_at=now_ms, priority=rank, evidence=i.figures(), recommendation=human,
            database=database), self.key)

    def _verify_due(self, now_ms: int) -> list[OptimizationResult]:
        results = []
        for command_id, check in sorted(self.pending.items()):
            if check.due_ms > now_ms:
                continue
            try:
                with self.connect(check.database) as conn:
                    after = maintenance.current_figures(conn, check.action, check.schema, check.table, check.index)
            except psycopg.Error as exc:
                log.warning("cannot check %s now: %s", command_id, str(exc).strip().splitlines()[0])
                continue
            ok, figures = maintenance.verify(check.action, dict(check.evidence), after)
            del self.pending[command_id]
            verdict = "verified" if ok else "not verified"
            log.info("%s %s: %s", check.action, verdict, figures)
            results.append(OptimizationResult(
                command_id=command_id, status="kept", reason=f"{verdict}: {figures}",
                table=f"{check.schema}.{check.table}", sql=check.sql, finished_at=now_ms, executor_id="verifier",
            ))
        return results

    # --- advice commands ------------------------------------------------------------------------------

    def index_priority(self, proposal: Proposal) -> int:
        return priority.of_tables(self.settings, [proposal.candidate.table], proposal.gain)[0]

    def extension_command(self, extension: str, why: str, database: str | None) -> OptimizationCommand:
        """A recommendation for a human: CREATE EXTENSION (dbopt never creates one)."""
        return sign(build_command(
            "advisor", "create_extension", f"CREATE EXTENSION IF NOT EXISTS {extension}",
            reason=f"{why}; install it to let dbopt validate and propose such indexes", recommendation=True,
            requires=(extension,), database=database), self.key)

