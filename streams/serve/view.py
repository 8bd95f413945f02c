"""The bounded in-memory view behind the page and the API (pure: no I/O, the clock injected).

Fed one record at a time (:meth:`View.add`) from the topics, plus the executor's audit rows
(:meth:`View.add_audit`, history older than the topics hold) and the operators' decisions
(:meth:`View.set_decisions`). Queries return frozen snapshots, so the ASGI thread never sees a
half-applied record; one lock guards both sides.

What is kept, and for how long:

* **windows** (tumbling only: the detector's and the charts' unit), per series = (service,
  context, fingerprint) with the fingerprint null on context rows: the last
  ``DBOPT_SERVE_RETENTION_S`` by window end, at most ``DBOPT_SERVE_MAX_WINDOWS_PER_KEY``, at most
  ``DBOPT_SERVE_MAX_KEYS`` series (the least recently updated go first); first record per
  ``window_id`` wins, as everywhere in dbopt;
* **alerts**: the newest ``DBOPT_SERVE_MAX_RECORDS`` by id; per condition (kind, service,
  context, fingerprint, pool) the latest state by window end decides firing or resolved;
* **notification outcomes**: per notification id (the alert id, ``result:<command>:<status>``)
  the latest outcome per channel and target;
* **optimizations**: the newest ``DBOPT_SERVE_MAX_RECORDS`` commands, each joined with its results
  and its audit row; the status is the newest of them;
* **pools**: the same pure monitor as the worker and ``dbopt pools`` (:class:`PoolMonitor`).

Colours (:func:`status_colour`): red when the last window's p95 is above its SLO or a critical
alert fires; amber at ``DBOPT_SERVE_WARN_RATIO`` x SLO or while any alert fires; grey when the
series had no window for ``DBOPT_SERVE_STALE_S`` (and nothing fires); green otherwise.

Recommendations (:func:`recommendation_reason`): a command not from an operator that the
executor's policy would not run by itself at the configured aggressiveness and the current season
(``streams.execute.policy.needs_approval``), or one the advisor marked for a person only. It is
pending until an operator approves or dismisses it, or until it ran anyway.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Callable, Iterable, Literal, Mapping

from streams.config import Settings
from streams.domain.calendar import Calendar
from streams.domain.slo import slo_ms
from streams.execute.policy import Request, needs_approval
from streams.pools.monitor import CLOCK, BudgetView, PoolMonitor, PoolView
from streams.records import (
    Alert,
    NotificationResult,
    OptimizationCommand,
    OptimizationResult,
    PoolSnapshot,
    Record,
    ServerSnapshot,
    WindowStats,
)

Colour = Literal["red", "amber", "green", "grey"]
COLOUR_ORDER: dict[str, int] = {"red": 0, "amber": 1, "green": 2, "grey": 3}
Kind = Literal["windows", "alerts", "notifications", "optimizations", "pools"]
SeriesKey = tuple[str, str, str | None]  # service, context, fingerprint (None: the context row)
ConditionKey = tuple[str, str, str, str | None, str | None]  # kind, service, context, fingerprint, pool
# statuses after which a recommendation is no longer waiting: the command ran (or is running)
RAN = frozenset({"applied", "kept", "rolled_back", "failed", "running"})
AFTER_WINDOWS = 5  # windows after an applied index whose median p95 is the observed "after"


def now_ms() -> int:
    return int(time.time() * 1000)


def status_colour(
    p95_ms: float | None,
    slo: float | None,
    firing: Iterable[str],
    last_end_ms: int | None,
    now: int,
    *,
    warn_ratio: float,
    stale_ms: float,
) -> Colour:
    """The colour of one series now (see the module docstring); ``firing`` are severities."""
    severities = list(firing)
    if (p95_ms is not None and slo is not None and p95_ms > slo) or "critical" in severities:
        return "red"
    if severities:
        return "amber"
    if last_end_ms is None or p95_ms is None or now - last_end_ms > stale_ms:
        return "grey"
    if slo is not None and p95_ms >= warn_ratio * slo:
        return "amber"
    return "green"


def recommendation_reason(command: OptimizationCommand, aggressiveness: str, season: str) -> str | None:
    """Why ``command`` waits for a person, or None when the executor may run it by itself."""
    if command.origin == "operator":
        return None
    if command.recommendation:  # the advisor's: for a person only
        return "recommended for a person: the executor records it and never runs it by itself"
    request = Request(command.origin, command.action, command.table, command.emergency,
                      is_rollback=command.rollback_of is not None)
    return needs_approval(request, aggressiveness, season)


# --- what the queries return -------------------------------------------------------------------


@dataclass(frozen=True)
class AlertBrief:
    alert_id: str
    kind: str
    severity: str
    fingerprint: str | None
    message: str


@dataclass(frozen=True)
class ContextRow:
    """One (service, context) now: its last closed window against its SLO."""

    service: str
    context: str
    criticality: str
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    slo_ms: float
    count: int
    per_s: float
    error_share: float
    window_start: int | None
    window_end: int | None
    colour: Colour
    firing: list[AlertBrief]


@dataclass(frozen=True)
class FingerprintRow:
    fingerprint: str
    context: str
    statement_type: str | None
    query_text: str | None
    p95_ms: float
    p99_ms: float
    count: int
    slo_ms: float
    window_end: int
    colour: Colour


@dataclass(frozen=True)
class WindowPoint:
    """One closed tumbling window of a series, with the SLO that applied to it."""

    window_id: str
    window_start: int
    window_end: int
    count: int
    errors: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    slo_ms: float


@dataclass(frozen=True)
class Marker:
    """A change on a chart: an index applied, kept or rolled back."""

    at_ms: int
    status: str
    command_id: str
    label: str


@dataclass(frozen=True)
class Chart:
    title: str
    service: str
    context: str
    fingerprint: str | None
    query_text: str | None
    slo_ms: float
    points: list[WindowPoint]
    markers: list[Marker]


@dataclass(frozen=True)
class ServiceDetail:
    service: str
    contexts: list[ContextRow]
    fingerprints: list[FingerprintRow]
    charts: list[Chart]
    selected: str | None  # the fingerprint asked for


@dataclass(frozen=True)
class NotificationLine:
    notification_id: str
    channel: str
    target: str
    status: str
    reason: str
    attempts: int
    finished_at: int


@dataclass(frozen=True)
class AlertEntry:
    """The latest state of one alert condition, with what people were told about it."""

    alert_id: str
    state: str
    severity: str
    kind: str
    service: str
    context: str
    fingerprint: str | None
    pool_name: str | None
    p95_ms: float
    threshold_ms: float
    metric: str | None
    window_start: int
    window_end: int
    message: str
    fired_at: int | None  # window end of the firing alert of this condition
    query_text: str | None
    notifications: list[NotificationLine]


@dataclass(frozen=True)
class AlertsView:
    firing: list[AlertEntry]
    resolved: list[AlertEntry]


@dataclass(frozen=True)
class ResultLine:
    status: str
    reason: str
    finished_at: int
    executor_id: str


@dataclass(frozen=True)
class AuditEntry:
    """One row of the executor's audit table (``streams.execute.audit``), as serve reads it."""

    command: OptimizationCommand
    status: str
    reason: str
    table_name: str | None
    index_name: str | None
    rollback_sql: str | None
    duration_ms: float | None
    received_at: int
    finished_at: int | None
    executor_id: str


@dataclass(frozen=True)
class OperatorDecision:
    """An operator's decision on a recommendation (``streams.serve.store``)."""

    recommendation_id: str
    decision: Literal["approved", "dismissed"]
    decided_by: str
    decided_at: int
    command_id: str | None  # the operator command an approval sent
    note: str = ""


@dataclass(frozen=True)
class Optimization:
    """One command joined with its results and audit row."""

    command_id: str
    created_at: int
    origin: str
    action: str
    sql: str
    rollback_sql: str | None
    table: str | None
    index_name: str | None
    service: str | None
    context: str | None
    fingerprints: list[str]
    emergency: bool
    rollback_of: str | None
    reason: str  # the command's own reason (an operator command's names its person)
    status: str  # "sent" until a result or audit row says more
    status_reason: str
    finished_at: int | None  # of the newest result or audit row
    applied_at: int | None
    rolled_back_at: int | None  # when its rollback command ran
    duration_ms: float | None
    p95_before_ms: float | None
    p95_after_ms: float | None
    p95_after_source: str | None  # "verifier" (its verdict) or "observed" (the view's windows)
    cost_before: float | None
    cost_after: float | None
    verdict: str | None  # kept | rolled_back
    rolled_back_by: str | None
    results: list[ResultLine]
    audited: bool


@dataclass(frozen=True)
class Recommendation:
    id: str  # the recommended command's id
    why: str
    state: Literal["pending", "approved", "dismissed", "done"]
    decision: OperatorDecision | None
    optimization: Optimization
    by_hand: bool  # dbopt never runs it (the advisor's recommendation flag): approving sends nothing


@dataclass(frozen=True)
class CalendarState:
    local_time: str
    timezone: str
    weekday: str
    season: str
    freeze_day: bool
    ceremony_hours: bool
    criticality: int
    criticality_name: str
    freeze_ends: str | None
    aggressiveness: str


# --- the view -----------------------------------------------------------------------------------


@dataclass
class _Series:
    windows: list[WindowStats] = field(default_factory=list)  # by window_start
    ids: set[str] = field(default_factory=set)


def _observed_after(series: Iterable[_Series], since_ms: int) -> float | None:
    """The median p95 of the first windows that started after ``since_ms`` (None: none yet)."""
    after = sorted((w for s in series for w in s.windows if w.window_start >= since_ms), key=lambda w: w.window_start)
    return statistics.median(w.p95_ms for w in after[:AFTER_WINDOWS]) if after else None


def _condition(alert: Alert) -> ConditionKey:
    return (alert.kind, alert.service, alert.context, alert.fingerprint, alert.pool_name)


def _newer(a: Alert, b: Alert) -> bool:
    return (a.window_end, a.created_at, a.state == "resolved") > (b.window_end, b.created_at, b.state == "resolved")


class View:
    """Everything the page shows, bounded (see the module docstring). Thread-safe."""

    def __init__(self, settings: Settings, clock: Callable[[], int] = now_ms,
                 calendar: Calendar | None = None) -> None:
        self.settings = settings
        self.cfg = settings.serve
        self.clock = clock
        self.calendar = calendar or Calendar.from_settings(settings)
        self._lock = threading.RLock()
        self._series: OrderedDict[SeriesKey, _Series] = OrderedDict()  # least recently updated first
        self._alerts: OrderedDict[str, Alert] = OrderedDict()
        self._conditions: dict[ConditionKey, Alert] = {}
        self._fired: dict[ConditionKey, Alert] = {}  # the latest firing alert of each condition
        self._notifications: OrderedDict[str, dict[tuple[str, str], NotificationResult]] = OrderedDict()
        self._commands: OrderedDict[str, OptimizationCommand] = OrderedDict()
        self._results: dict[str, list[OptimizationResult]] = {}
        self._audit: dict[str, AuditEntry] = {}
        self._decisions: dict[str, OperatorDecision] = {}
        self._pools = PoolMonitor(settings, self.calendar)
        self._pool_state: dict[str, Any] = {}

    # --- input ----------------------------------------------------------------------------------

    def add(self, record: Record) -> Kind | None:
        """Take one record from a topic; returns what part of the view changed (None: nothing)."""
        with self._lock:
            if isinstance(record, WindowStats):
                return "windows" if self._add_window(record) else None
            if isinstance(record, Alert):
                return "alerts" if self._add_alert(record) else None
            if isinstance(record, NotificationResult):
                self._add_notification(record)
                return "notifications"
            if isinstance(record, OptimizationCommand):
                self._remember_command(record)
                return "optimizations"
            if isinstance(record, OptimizationResult):
                return "optimizations" if self._add_result(record) else None
            if isinstance(record, (PoolSnapshot, ServerSnapshot)):
                self._add_snapshot(record)
                return "pools"
        return None

    def add_audit(self, entries: Iterable[AuditEntry]) -> bool:
        """History from the executor's audit table; True when anything changed."""
        changed = False
        with self._lock:
            for entry in entries:
                if self._audit.get(entry.command.command_id) != entry:
                    self._audit[entry.command.command_id] = entry
                    self._remember_command(entry.command, touch=False)
                    changed = True
            self._trim_commands()
        return changed

    def set_decisions(self, decisions: Iterable[OperatorDecision]) -> bool:
        with self._lock:
            fresh = {d.recommendation_id: d for d in decisions}
            changed = fresh != self._decisions
            self._decisions = fresh
        return changed

    def add_decision(self, decision: OperatorDecision) -> None:
        with self._lock:
            self._decisions[decision.recommendation_id] = decision

    def prune(self) -> None:
        """Drop windows older than the retention (called now and then; inserts also prune their series)."""
        horizon = self.clock() - int(self.cfg.retention_s * 1000)
        with self._lock:
            for key in [k for k, s in self._series.items() if self._trim(s, horizon)]:
                del self._series[key]

    def _add_window(self, window: WindowStats) -> bool:
        if window.window_kind != "tumbling":
            return False
        horizon = self.clock() - int(self.cfg.retention_s * 1000)
        if window.window_end < horizon:
            return False
        key: SeriesKey = (window.service, window.context, window.fingerprint)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = _Series()
            while len(self._series) > self.cfg.max_keys:
                self._series.popitem(last=False)
        else:
            self._series.move_to_end(key)
        if window.window_id in series.ids:
            return False
        series.ids.add(window.window_id)
        series.windows.append(window)
        if len(series.windows) > 1 and series.windows[-2].window_start > window.window_start:
            series.windows.sort(key=lambda w: w.window_start)
        self._trim(series, horizon)
        return True

    def _trim(self, series: _Series, horizon: int) -> bool:
        """Cut ``series`` to the retention and the count; True when it is empty."""
        keep = [w for w in series.windows if w.window_end >= horizon][-self.cfg.max_windows_per_key:]
        if len(keep) != len(series.windows):
            series.windows = keep
            series.ids = {w.window_id for w in keep}
        return not keep

    def _add_alert(self, alert: Alert) -> bool:
        if alert.alert_id in self._alerts:
            return False
        self._alerts[alert.alert_id] = alert
        key = _condition(alert)
        current = self._conditions.get(key)
        if current is None or _newer(alert, current):
            self._conditions[key] = alert
        if alert.state == "firing" and (key not in self._fired or _newer(alert, self._fired[key])):
            self._fired[key] = alert
        while len(self._alerts) > self.cfg.max_records:
            _, old = self._alerts.popitem(last=False)
            old_key = _condition(old)
            if self._conditions.get(old_key) is old:
                del self._conditions[old_key]
                self._fired.pop(old_key, None)
        return True

    def _add_notification(self, outcome: NotificationResult) -> None:
        lines = self._notifications.setdefault(outcome.notification_id, {})
        self._notifications.move_to_end(outcome.notification_id)
        previous = lines.get((outcome.channel, outcome.target))
        if previous is None or outcome.finished_at >= previous.finished_at:
            lines[(outcome.channel, outcome.target)] = outcome
        while len(self._notifications) > 4 * self.cfg.max_records:
            self._notifications.popitem(last=False)

    def _remember_command(self, command: OptimizationCommand, touch: bool = True) -> None:
        if command.command_id not in self._commands:
            self._commands[command.command_id] = command
            if touch:
                self._trim_commands()

    def _trim_commands(self) -> None:
        while len(self._commands) > self.cfg.max_records:
            oldest = min(self._commands.values(), key=lambda c: c.created_at)
            del self._commands[oldest.command_id]
            self._results.pop(oldest.command_id, None)
            self._audit.pop(oldest.command_id, None)

    def _add_result(self, result: OptimizationResult) -> bool:
        if result.command_id.startswith("unverified:") or result.status == "duplicate":
            return False  # not a command's state: a rejected forgery, or a redelivery answered again
        results = self._results.setdefault(result.command_id, [])
        if any((r.status, r.finished_at) == (result.status, result.finished_at) for r in results):
            return False
        results.append(result)
        results.sort(key=lambda r: r.finished_at)
        return True

    def _add_snapshot(self, snapshot: PoolSnapshot | ServerSnapshot) -> None:
        outcome = self._pools.on_record(snapshot, self._pool_state, snapshot.snapshot_time)
        for key, value in outcome.state.items():
            if value is None:
                self._pool_state.pop(key, None)
            else:
                self._pool_state[key] = value

    # --- queries --------------------------------------------------------------------------------

    def _slo(self, context: str, at_ms: int) -> float:
        return slo_ms(context, at_ms, self.settings.domain, self.settings.timezone)

    def _colour(self, window: WindowStats | None, slo: float, firing: Iterable[str], now: int) -> Colour:
        return status_colour(
            window.p95_ms if window else None, slo, firing, window.window_end if window else None, now,
            warn_ratio=self.cfg.warn_ratio, stale_ms=self.cfg.stale_s * 1000,
        )

    def _firing_of(self, service: str, context: str | None = None, fingerprint: str | None = None) -> list[Alert]:
        return [
            a for a in self._conditions.values()
            if a.state == "firing" and a.service == service and (context is None or a.context == context)
            and (fingerprint is None or a.fingerprint == fingerprint)
        ]

    def _context_row(self, key: SeriesKey, series: _Series, now: int) -> ContextRow:
        service, context, _ = key
        last = series.windows[-1] if series.windows else None
        slo = self._slo(context, last.window_start if last else now)
        firing = self._firing_of(service, context)
        length_s = max((last.window_end - last.window_start) / 1000, 1e-9) if last else 1.0
        return ContextRow(
            service=service, context=context, criticality=last.criticality if last else "medium",
            p50_ms=last.p50_ms if last else None, p95_ms=last.p95_ms if last else None,
            p99_ms=last.p99_ms if last else None, slo_ms=slo, count=last.count if last else 0,
            per_s=(last.count / length_s) if last else 0.0,
            error_share=(last.errors / last.count) if last and last.count else 0.0,
            window_start=last.window_start if last else None, window_end=last.window_end if last else None,
            colour=self._colour(last, slo, (a.severity for a in firing), now),
            firing=[AlertBrief(a.alert_id, a.kind, a.severity, a.fingerprint, a.message) for a in firing],
        )

    def contexts(self) -> list[ContextRow]:
        """Every (service, context) now, the worst first."""
        now = self.clock()
        with self._lock:
            rows = [self._context_row(k, s, now) for k, s in self._series.items() if k[2] is None and s.windows]
        return sorted(rows, key=lambda r: (COLOUR_ORDER[r.colour], -((r.p95_ms or 0) / r.slo_ms), r.service, r.context))

    def services(self) -> list[str]:
        with self._lock:
            return sorted({k[0] for k in self._series})

    def windows(self, service: str, fingerprint: str | None = None, context: str | None = None) -> list[WindowPoint]:
        """The kept windows of one series: a fingerprint's, or a context row's (fingerprint None)."""
        with self._lock:
            found = [s for (svc, ctx, fp), s in self._series.items()
                     if svc == service and fp == fingerprint and (context is None or ctx == context)]
            windows = sorted((w for s in found for w in s.windows), key=lambda w: (w.window_start, w.context))
        return [self._point(w) for w in windows]

    def _point(self, w: WindowStats) -> WindowPoint:
        return WindowPoint(w.window_id, w.window_start, w.window_end, w.count, w.errors, w.p50_ms, w.p95_ms,
                           w.p99_ms, w.max_ms, self._slo(w.context, w.window_start))

    def service(self, service: str, fingerprint: str | None = None) -> ServiceDetail:
        now = self.clock()
        optimizations = self.optimizations()
        with self._lock:
            mine = [(k, s) for k, s in self._series.items() if k[0] == service and s.windows]
            contexts = [self._context_row(k, s, now) for k, s in mine if k[2] is None]
            fingerprints = []
            for (_, context, fp), s in mine:
                if fp is None:
                    continue
                last = s.windows[-1]
                slo = self._slo(context, last.window_start)
                firing = (a.severity for a in self._firing_of(service, context, fp))
                fingerprints.append(FingerprintRow(fp, context, last.statement_type, last.query_text, last.p95_ms,
                                                   last.p99_ms, last.count, slo, last.window_end,
                                                   self._colour(last, slo, firing, now)))
            charts = [
                self._chart(k, s, optimizations) for k, s in mine
                if (fingerprint is not None and k[2] == fingerprint) or (fingerprint is None and k[2] is None)
            ]
        fingerprints.sort(key=lambda r: (COLOUR_ORDER[r.colour], -r.p95_ms / r.slo_ms))
        return ServiceDetail(service, sorted(contexts, key=lambda r: r.context), fingerprints, charts, fingerprint)

    def _chart(self, key: SeriesKey, series: _Series, optimizations: list[Optimization]) -> Chart:
        service, context, fp = key
        last = series.windows[-1]
        text = next((w.query_text for w in reversed(series.windows) if w.query_text), None)
        mine = [o for o in optimizations if o.rollback_of is None
                and (fp in o.fingerprints if fp is not None else (o.service, o.context) == (service, context))]
        markers = [
            Marker(at, status, o.command_id, f"{o.action} {o.index_name or o.table or ''}".strip())
            for o in mine
            for at, status in ((o.applied_at, "applied"), (o.rolled_back_at, "rolled_back"))
            if at is not None
        ]
        title = f"{service} · {context}" + (f" · {fp}" if fp else "")
        return Chart(title, service, context, fp, text, self._slo(context, last.window_start),
                     [self._point(w) for w in series.windows], markers)

    def alerts(self) -> AlertsView:
        with self._lock:
            entries = [self._alert_entry(key, alert) for key, alert in self._conditions.items()]
        firing = sorted((e for e in entries if e.state == "firing"),
                        key=lambda e: (["critical", "high", "warning", "info"].index(e.severity), -e.window_end))
        resolved = sorted((e for e in entries if e.state == "resolved"), key=lambda e: -e.window_end)
        return AlertsView(firing, resolved)

    def _alert_entry(self, key: ConditionKey, alert: Alert) -> AlertEntry:
        fired = self._fired.get(key)
        ids = [alert.alert_id] + ([fired.alert_id] if fired and fired.alert_id != alert.alert_id else [])
        lines = [
            NotificationLine(n.notification_id, n.channel, n.target, n.status, n.reason, n.attempts, n.finished_at)
            for nid in ids for n in self._notifications.get(nid, {}).values()
        ]
        return AlertEntry(
            alert.alert_id, alert.state, alert.severity, alert.kind, alert.service, alert.context, alert.fingerprint,
            alert.pool_name, alert.p95_ms, alert.threshold_ms, alert.metric, alert.window_start, alert.window_end,
            alert.message, fired.window_end if fired else None, alert.query_text,
            sorted(lines, key=lambda n: n.finished_at),
        )

    def optimizations(self) -> list[Optimization]:
        """Every command kept, the newest first."""
        with self._lock:
            rolled_back_by = {c.rollback_of: c.command_id for c in self._commands.values() if c.rollback_of}
            by_fingerprint: dict[str, list[_Series]] = {}
            for (_, _, fp), series in self._series.items():
                if fp is not None:
                    by_fingerprint.setdefault(fp, []).append(series)
            joined = [self._join(c, rolled_back_by.get(c.command_id), by_fingerprint) for c in self._commands.values()]
            undo_at = {o.command_id: o.applied_at for o in joined if o.rollback_of}
            joined = [replace(o, rolled_back_at=undo_at.get(o.rolled_back_by or "")) for o in joined]
        return sorted(joined, key=lambda o: -o.created_at)

    def optimization(self, command_id: str) -> Optimization | None:
        return next((o for o in self.optimizations() if o.command_id == command_id), None)

    def _join(self, command: OptimizationCommand, rolled_back_by: str | None,
              by_fingerprint: Mapping[str, list[_Series]]) -> Optimization:
        results = self._results.get(command.command_id, [])
        audit = self._audit.get(command.command_id)
        status, status_reason, finished = "sent", "waiting for the executor", None
        if audit is not None:
            status, status_reason = audit.status, audit.reason
            finished = audit.finished_at
        if results and (finished is None or results[-1].finished_at >= finished):
            status, status_reason, finished = results[-1].status, results[-1].reason, results[-1].finished_at
        # a rollback command's own status is rolled_back: it "applied" when it ran
        ran = ("applied", "rolled_back") if command.rollback_of else ("applied",)
        applied = next((r for r in results if r.status in ran), None)
        applied_at = applied.finished_at if applied else (audit.finished_at if audit and audit.status in
                                                           ("applied", "kept", "rolled_back") else None)
        kept = next((r for r in results if r.status == "kept"), None)
        verdict = "kept" if kept else ("rolled_back" if status == "rolled_back" and not command.rollback_of else None)
        after, source = (kept.p95_after_ms, "verifier") if kept and kept.p95_after_ms is not None else (None, None)
        if after is None and applied_at is not None and command.action == "create_index":
            after = _observed_after([s for fp in command.fingerprints for s in by_fingerprint.get(fp, ())], applied_at)
            source = "observed" if after is not None else None
        return Optimization(
            command_id=command.command_id, created_at=command.created_at, origin=command.origin,
            action=command.action, sql=command.sql, rollback_sql=command.rollback_sql, table=command.table,
            index_name=next((r.index_name for r in reversed(results) if r.index_name),
                            audit.index_name if audit else None),
            service=command.service, context=command.context, fingerprints=list(command.fingerprints),
            emergency=command.emergency, rollback_of=command.rollback_of, reason=command.reason,
            status=status, status_reason=status_reason, finished_at=finished, applied_at=applied_at,
            rolled_back_at=None,
            duration_ms=next((r.duration_ms for r in results if r.duration_ms is not None),
                             audit.duration_ms if audit else None),
            p95_before_ms=command.p95_before_ms, p95_after_ms=after, p95_after_source=source,
            cost_before=command.cost_before, cost_after=command.cost_after, verdict=verdict,
            rolled_back_by=rolled_back_by,
            results=[ResultLine(r.status, r.reason, r.finished_at, r.executor_id) for r in results],
            audited=audit is not None,
        )

    def recommendations(self, include_decided: bool = True) -> list[Recommendation]:
        """Commands waiting for a person (pending first), with the decisions already taken."""
        season = self.calendar.season()
        level = self.settings.executor.aggressiveness
        found = []
        with self._lock:
            decisions = dict(self._decisions)
        for o in self.optimizations():
            command = self._commands_get(o.command_id)
            why = recommendation_reason(command, level, season) if command else None
            decision = decisions.get(o.command_id)
            if why is None and decision is None:
                continue
            if decision is not None:
                state: Literal["pending", "approved", "dismissed", "done"] = decision.decision
            elif o.status in RAN:
                state = "done"
            else:
                state = "pending"
            if state == "pending" or include_decided:
                found.append(Recommendation(o.command_id, why or "", state, decision, o,
                                            bool(command and command.recommendation)))
        return sorted(found, key=lambda r: (r.state != "pending", -r.optimization.created_at))

    def recommendation(self, rec_id: str) -> Recommendation | None:
        return next((r for r in self.recommendations() if r.id == rec_id), None)

    def _commands_get(self, command_id: str) -> OptimizationCommand | None:
        with self._lock:
            return self._commands.get(command_id)

    def command(self, command_id: str) -> OptimizationCommand | None:
        return self._commands_get(command_id)

    def pools(self) -> tuple[list[PoolView], list[BudgetView], int]:
        """Every pool and server budget as the worker judges them, and the newest snapshot time."""
        with self._lock:
            state: Mapping[str, Any] = dict(self._pool_state)
            pools, budgets = self._pools.views(state)
        return pools, budgets, int(state.get(CLOCK) or 0)

    def calendar_state(self) -> CalendarState:
        now: datetime = self.calendar.now()
        criticality = self.calendar.criticality(False, now)
        freeze = self.calendar.is_freeze_day(now)
        ends = self.calendar.freeze_ends(now) if freeze else None
        return CalendarState(
            local_time=now.isoformat(timespec="minutes"), timezone=self.calendar.timezone,
            weekday=now.strftime("%A"), season=self.calendar.season(now), freeze_day=freeze,
            ceremony_hours=freeze and self.calendar.in_ceremony_hours(now), criticality=int(criticality),
            criticality_name=criticality.name.lower(), freeze_ends=ends.isoformat() if ends else None,
            aggressiveness=self.settings.executor.aggressiveness,
        )

    def sizes(self) -> dict[str, int]:
        """How much the view holds (for /metrics)."""
        with self._lock:
            return {"series": len(self._series), "windows": sum(len(s.windows) for s in self._series.values()),
                    "alerts": len(self._alerts), "optimizations": len(self._commands)}
