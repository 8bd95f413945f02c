"""What ``dbopt collect`` makes of its reads (pure): ServerSnapshots from pg_stat_activity rows,
StatementStats deltas from two reads of pg_stat_statements, and statement alerts.

**Deltas.** pg_stat_statements counters only grow, until a reset: ``pg_stat_statements_reset()``
(all entries, or one), a server start without the saved stats file, or an entry evicted and
re-added. A delta is current minus previous per entry (userid, dbid, queryid, toplevel); it is
never negative: when the view's ``stats_reset`` time moved, every entry counts from zero since
then, and an entry whose calls or total time went down counts from zero on its own; both are
flagged ``reset``. An entry absent from the previous read is new since then (its counters are
its delta). Entries without a call in the interval produce no record. The first read only sets
the baseline.

**Statements over their SLO.** Per dbopt fingerprint (several queryids can share one: roles,
nesting), an interval with at least ``DBOPT_COLLECT_MIN_CALLS`` calls is judged: mean execution
time above the context's season-aware p95 SLO is a breach (the mean is all pg_stat_statements
has; a mean above a p95 target means the tail is far worse). Hysteresis over intervals
(``DBOPT_COLLECT_FIRE_AFTER`` / ``DBOPT_COLLECT_RESOLVE_AFTER``); a firing statement becomes an
Alert of kind ``statement`` with its fingerprint and normalized text, which the advisor handles
like a latency alert, so services without the SDK get advice too.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from streams.config import Settings
from streams.detect import hysteresis
from streams.detect.detector import severity
from streams.domain.contexts import classify
from streams.domain.slo import season, slo_ms
from streams.records import Alert, ConnectionGroup, ServerSnapshot, StatementStats
from streams.sql import SqlParseError, StatementCache

StatementKey = tuple[int, int, int, bool]  # userid, dbid, queryid, toplevel


@dataclass(frozen=True, slots=True)
class ActivityRow:
    """One client backend of pg_stat_activity."""

    database: str
    application_name: str
    state: str | None
    wait_event_type: str | None
    xact_age_ms: int | None


@dataclass(frozen=True, slots=True)
class ServerFacts:
    max_connections: int
    reserved_connections: int
    database: str
    databases: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class StatementRow:
    """One entry of pg_stat_statements: cumulative counters."""

    userid: int
    dbid: int
    queryid: int
    toplevel: bool
    query: str
    calls: int
    total_exec_ms: float
    max_exec_ms: float
    rows: int
    shared_blks_hit: int
    shared_blks_read: int

    @property
    def key(self) -> StatementKey:
        return (self.userid, self.dbid, self.queryid, self.toplevel)


@dataclass(frozen=True, slots=True)
class StatementRead:
    """One whole read of pg_stat_statements."""

    at_ms: int
    stats_reset_ms: int | None  # pg_stat_statements_info.stats_reset
    rows: tuple[StatementRow, ...]
    database_names: dict[int, str] = field(default_factory=dict)  # dbid -> name


_STATES = {"active": "active", "idle": "idle", "idle in transaction": "idle_in_transaction",
           "idle in transaction (aborted)": "idle_in_transaction"}


def server_snapshot(server: str, facts: ServerFacts, rows: Iterable[ActivityRow], at_ms: int) -> ServerSnapshot:
    """Connections per (database, application_name) by state, and the longest open transaction."""
    groups: dict[tuple[str, str], dict[str, int]] = {}
    longest: ActivityRow | None = None
    total = 0
    for row in rows:
        total += 1
        counts = groups.setdefault((row.database, row.application_name), {})
        state = _STATES.get(row.state or "", "other")
        counts[state] = counts.get(state, 0) + 1
        if state == "active" and row.wait_event_type == "Lock":
            counts["waiting_on_lock"] = counts.get("waiting_on_lock", 0) + 1
        if row.xact_age_ms is not None and (longest is None or row.xact_age_ms > (longest.xact_age_ms or 0)):
            longest = row
    return ServerSnapshot(
        server=server,
        database=facts.database,
        snapshot_time=at_ms,
        max_connections=facts.max_connections,
        reserved_connections=facts.reserved_connections,
        total_connections=total,
        databases=facts.databases,
        connections=tuple(ConnectionGroup(database=db, application_name=app, **counts)
                          for (db, app), counts in sorted(groups.items())),
        longest_transaction_ms=longest.xact_age_ms if longest else None,
        longest_transaction_application=longest.application_name if longest else None,
        longest_transaction_state=longest.state if longest else None,
    )


def down_snapshot(server: str, database: str, error: str, at_ms: int) -> ServerSnapshot:
    return ServerSnapshot(server=server, database=database, snapshot_time=at_ms, up=False, error=error)


@dataclass(frozen=True, slots=True)
class Delta:
    row: StatementRow  # the current counters
    calls: int
    total_exec_ms: float
    rows: int
    shared_blks_hit: int
    shared_blks_read: int
    reset: bool
    since_ms: int


def deltas(previous: StatementRead | None, current: StatementRead) -> list[Delta]:
    """What every entry did since ``previous`` (none for the first read), resets handled."""
    if previous is None:
        return []
    full_reset = current.stats_reset_ms is not None and current.stats_reset_ms != previous.stats_reset_ms
    before = {row.key: row for row in previous.rows}
    out = []
    for row in current.rows:
        old = None if full_reset else before.get(row.key)
        reset = full_reset
        if old is not None and (row.calls < old.calls or row.total_exec_ms < old.total_exec_ms):
            old, reset = None, True  # this entry alone was reset (or evicted and re-added)
        since = max(previous.at_ms, current.stats_reset_ms or 0) if full_reset else previous.at_ms
        delta = Delta(
            row=row,
            calls=row.calls - (old.calls if old else 0),
            total_exec_ms=max(0.0, row.total_exec_ms - (old.total_exec_ms if old else 0.0)),
            rows=row.rows - (old.rows if old else 0),
            shared_blks_hit=row.shared_blks_hit - (old.shared_blks_hit if old else 0),
            shared_blks_read=row.shared_blks_read - (old.shared_blks_read if old else 0),
            reset=reset,
            since_ms=min(since, current.at_ms),
        )
        if delta.calls > 0:
            out.append(delta)
    return out


class StatementStatsBuilder:
    """Turns deltas into StatementStats records (the text normalized once per distinct statement)."""

    def __init__(self, settings: Settings, server: str, cache_size: int = 4096) -> None:
        self.settings = settings
        self.server = server
        self.cache = StatementCache(cache_size)

    def build(self, delta: Delta, current: StatementRead) -> StatementStats:
        row = delta.row
        try:
            statement = self.cache.get(row.query)
            fingerprint, statement_type, tables = statement.fingerprint, statement.statement_type, statement.tables
            text = statement.query_text
        except SqlParseError:
            fingerprint, statement_type, tables, text = None, None, (), row.query
        classification = classify(tables, self.settings.domain)
        return StatementStats(
            server=self.server,
            database=current.database_names.get(row.dbid, str(row.dbid)),
            interval_start=delta.since_ms,
            interval_end=current.at_ms,
            queryid=row.queryid,
            userid=row.userid,
            toplevel=row.toplevel,
            fingerprint=fingerprint,
            query_text=text,
            statement_type=statement_type,
            tables=tuple(tables),
            context=classification.context,
            criticality=classification.criticality,
            calls=delta.calls,
            total_exec_ms=delta.total_exec_ms,
            mean_exec_ms=delta.total_exec_ms / delta.calls,
            max_exec_ms=row.max_exec_ms,
            rows=delta.rows,
            shared_blks_hit=delta.shared_blks_hit,
            shared_blks_read=delta.shared_blks_read,
            reset=delta.reset,
        )


def biggest(stats: list[StatementStats], limit: int) -> list[StatementStats]:
    """At most ``limit`` records, the largest total time first."""
    return sorted(stats, key=lambda s: s.total_exec_ms, reverse=True)[:limit]


class SloWatch:
    """Statements whose mean time is over their context's SLO, with hysteresis; the state is
    per fingerprint, in memory (collect restarts from a new baseline)."""

    def __init__(self, settings: Settings, server: str) -> None:
        self.settings = settings
        self.config = settings.collect
        self.server = server
        self.conditions: dict[str, dict[str, Any]] = {}

    def judge(self, stats: Iterable[StatementStats], now_ms: int) -> list[Alert]:
        by_fingerprint: dict[str, list[StatementStats]] = {}
        for s in stats:
            if s.fingerprint is not None:
                by_fingerprint.setdefault(s.fingerprint, []).append(s)
        alerts = []
        for fingerprint, group in sorted(by_fingerprint.items()):
            calls = sum(s.calls for s in group)
            mean = sum(s.total_exec_ms for s in group) / calls
            first = group[0]
            limit = slo_ms(first.context, first.interval_end, self.settings.domain, self.settings.timezone)
            breach = mean > limit if calls >= self.config.min_calls else None
            condition = self.conditions.get(fingerprint, hysteresis.fresh())
            condition, change = hysteresis.step(condition, breach, self.config.fire_after, self.config.resolve_after)
            if change == "firing":
                condition = {**condition, "severity": severity(first.criticality, mean, limit)}
            self.conditions[fingerprint] = condition
            if change is not None:
                alerts.append(self._alert(first, change, condition["severity"], calls, mean, limit, now_ms))
        return alerts

    def _alert(self, stat: StatementStats, change: hysteresis.Change, level: str, calls: int, mean: float,
               limit: float, now_ms: int) -> Alert:
        verb = "above" if change == "firing" else "back under"
        return Alert(
            alert_id=hysteresis.alert_id("statement", self.server, stat.context, stat.fingerprint, change,
                                         f"{self.server}@{stat.interval_end}"),
            state=change,
            severity=level,  # type: ignore[arg-type]
            kind="statement",
            service=self.server,
            context=stat.context,
            fingerprint=stat.fingerprint,
            p95_ms=mean,
            threshold_ms=limit,
            window_start=stat.interval_start,
            window_end=stat.interval_end,
            query_text=stat.query_text,
            message=(f"{self.server} ({stat.database}) {stat.context} query {stat.fingerprint}: mean {mean:.1f} ms over "
                     f"{calls} calls (pg_stat_statements) {verb} the SLO of {limit:.1f} ms"),
            created_at=now_ms,
            metric="mean_ms",
            season=season(stat.interval_end, self.settings.timezone),
        )
