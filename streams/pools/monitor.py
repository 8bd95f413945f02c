"""Pool alerts, the connection budget and pool-size advice from PoolSnapshot and ServerSnapshot
records (pure: the caller passes the state and the records; time is the records' own).

A *pool* is (service, pool name): the instances of a service share their pool's configuration,
so a pool is judged over its live instances together (an instance is live while its latest
snapshot is at most ``DBOPT_POOLS_STALE_S`` older than the newest record seen).

* **Pool alert** (``kind=pool``): the pool is under pressure when in-use / max_size over its live
  instances is at least ``DBOPT_POOLS_UTILIZATION`` (0.75), or any client waits, or a checkout
  timed out in the latest interval. It fires after ``DBOPT_POOLS_SUSTAIN_S`` (15 s) of pressure, at
  once when a client waits or a checkout timed out, and resolves after ``DBOPT_POOLS_RESOLVE_S``
  (30 s) without pressure (or when every instance went quiet).
* **Budget alert** (``kind=budget``), per server (from ``dbopt collect``): the configured maxima of
  every live instance of every pool of the server's databases add up to more than
  ``max_connections`` minus the reserved slots, for ``DBOPT_POOLS_SUSTAIN_S``; resolves like a pool.
* **Severity**: the service's criticality (:func:`service_class`) times the magnitude (utilization
  only: x1, waiting clients: x2, timeouts: x5; budget: total / allowed), one step higher when the
  wedding calendar says a wedding is today (criticality 3 and up).
* **Advice**: per pool, ``max_size`` = ceil(peak demand / utilization threshold x the season's
  multiplier (``DBOPT_POOLS_SEASON_MULTIPLIERS``, peak x2)), where the demand of an instance is its
  in-use plus waiting clients at each snapshot (plus one when a checkout timed out), its peak over
  ``DBOPT_POOLS_ADVICE_WINDOW_S``; at least the pool's min_size, and capped so every instance of the
  pool still fits the server's budget beside the other pools. A recommendation only, never
  applied, and withheld during ceremony hours on a wedding day.

State keys (values are JSON-able dicts, replaced and never mutated, so the state can be a Faust
table): ``["instance", service, pool, instance]``, ``["pool", service, pool]``,
``["server", server]`` and ``"clock"`` (the newest record time). A record older than the newest
one of its instance (or server) is ignored, so a replay changes nothing. Alert ids hash the
kind, the pool (or server), the new state and the causing record.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterable, Mapping

from streams.config import Settings
from streams.detect.detector import alert_id, severity
from streams.domain.calendar import Calendar, WeddingCriticality
from streams.domain.slo import season
from streams.domain.vocabulary import CRITICALITIES
from streams.records import Alert, PoolSnapshot, ServerSnapshot

SEVERITIES = ("info", "warning", "high", "critical")
_MAGNITUDE = (1.0, 2.0, 5.0)  # utilization only, clients waiting, timeouts: the detector's magnitude buckets
CLOCK = "clock"
MINUTE_MS = 60_000


def instance_key(service: str, pool: str, instance: str) -> str:
    return json.dumps(["instance", service, pool, instance])


def pool_key(service: str, pool: str) -> str:
    return json.dumps(["pool", service, pool])


def server_key(server: str) -> str:
    return json.dumps(["server", server])


def service_class(service: str, settings: Settings) -> tuple[str, str]:
    """(context, criticality) of a service: ``DBOPT_POOLS_SERVICE_CRITICALITY``, else the context
    rule whose name's first word starts the service name (``booking-service``: booking), else the default."""
    domain = settings.domain
    named = settings.pools.service_criticality.get(service)
    lowered = service.lower()
    for rule in domain.context_rules:
        if lowered.startswith(rule.context.split("_")[0]):
            return rule.context, named or rule.criticality
    return domain.default_context, named or domain.default_criticality


def raise_for_calendar(level: str, at_ms: int, calendar: Calendar) -> str:
    """One severity step up when a wedding is today (wedding-day criticality 3 or more)."""
    if calendar.criticality(at=_instant(at_ms)) >= WeddingCriticality.HIGH:
        return SEVERITIES[min(len(SEVERITIES) - 1, SEVERITIES.index(level) + 1)]
    return level


def _instant(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, timezone.utc)


def _severity(criticality: str, bucket: int) -> str:
    """The latency detector's criticality x magnitude table, magnitude bucket 0, 1 or 2."""
    return severity(criticality, _MAGNITUDE[bucket], 1.0)


@dataclass
class PoolChange:
    """What one record changes: state entries to write (None: delete) and the alerts to send first."""

    state: dict[str, dict[str, Any] | int | None] = field(default_factory=dict)
    alerts: list[Alert] = field(default_factory=list)


@dataclass(frozen=True)
class Advice:
    recommended: int | None  # None: withheld (ceremony hours on a wedding day) or no data
    peak_demand: int
    multiplier: float
    season: str
    capped: bool = False
    held: bool = False

    def describe(self) -> str:
        if self.held:
            return "advice withheld: ceremony hours on a wedding day"
        if self.recommended is None:
            return "no advice yet"
        cap = ", capped by the connection budget" if self.capped else ""
        return (f"recommended max_size {self.recommended} per instance (peak demand {self.peak_demand}, "
                f"x{self.multiplier:g} {self.season} season{cap})")


@dataclass(frozen=True)
class PoolView:
    """One pool now, for ``dbopt pools`` and the alerts."""

    service: str
    pool: str
    database: str | None
    context: str
    criticality: str
    instances: int
    size: int
    in_use: int
    max_size: int  # the sum over live instances
    max_size_per_instance: int
    waiting: int
    timeouts: int
    checkout_wait_p95_ms: float | None
    utilization: float
    alert: str  # firing or ok
    advice: Advice
    last_seen: int


@dataclass(frozen=True)
class BudgetView:
    server: str
    up: bool
    error: str | None
    max_connections: int
    reserved: int
    allowed: int
    total_connections: int
    pool_maxima: int
    over: bool
    alert: str
    contributors: tuple[tuple[str, str, int, int], ...]  # (service, pool, instances, max per instance)


class PoolMonitor:
    """Turns snapshots into state changes and alerts (see the module docstring)."""

    def __init__(self, settings: Settings, calendar: Calendar | None = None) -> None:
        self.settings = settings
        self.config = settings.pools
        self.calendar = calendar or Calendar.from_settings(settings)

    # -- input ---------------------------------------------------------------------------------

    def on_record(self, record: PoolSnapshot | ServerSnapshot, state: Mapping[str, Any], now_ms: int) -> PoolChange:
        if isinstance(record, PoolSnapshot):
            return self.on_pool(record, state, now_ms)
        return self.on_server(record, state, now_ms)

    @staticmethod
    def _begin(key: str, snapshot_time: int, state: Mapping[str, Any]) -> tuple[PoolChange, Any, int] | None:
        """None when ``key`` already holds a snapshot this new (a replay); else the change, begun with the
        clock (the latest snapshot time seen), the entry of ``key`` so far and that clock."""
        previous = state.get(key)
        if previous is not None and snapshot_time <= previous["time"]:
            return None
        outcome = PoolChange()
        clock = max(snapshot_time, state.get(CLOCK) or 0)
        outcome.state[CLOCK] = clock
        return outcome, previous, clock

    def on_pool(self, snap: PoolSnapshot, state: Mapping[str, Any], now_ms: int) -> PoolChange:
        key = instance_key(snap.service, snap.pool_name, snap.instance_id)
        begun = self._begin(key, snap.snapshot_time, state)
        if begun is None:
            return PoolChange()
        outcome, previous, clock = begun
        outcome.state[key] = self._instance(snap, previous)
        view = _Overlay(state, outcome.state)
        self._judge_pool(snap.service, snap.pool_name, view, clock, f"{snap.instance_id}@{snap.snapshot_time}",
                         now_ms, outcome)
        self._sweep(view, clock, now_ms, outcome)
        return outcome

    def on_server(self, snap: ServerSnapshot, state: Mapping[str, Any], now_ms: int) -> PoolChange:
        key = server_key(snap.server)
        begun = self._begin(key, snap.snapshot_time, state)
        if begun is None:
            return PoolChange()
        outcome, previous, clock = begun
        entry = dict(previous or {"max_connections": 0, "reserved": 0, "databases": [], "total_connections": 0,
                                  "condition": _fresh()})
        entry.update(time=snap.snapshot_time, up=snap.up, error=snap.error)
        if snap.up:
            entry.update(max_connections=snap.max_connections, reserved=snap.reserved_connections,
                         databases=sorted(snap.databases or [snap.database]), total_connections=snap.total_connections)
        outcome.state[key] = entry
        self._sweep(_Overlay(state, outcome.state), clock, now_ms, outcome)
        return outcome

    # -- instances ------------------------------------------------------------------------------

    def _instance(self, snap: PoolSnapshot, previous: dict[str, Any] | None) -> dict[str, Any]:
        demand = snap.in_use + snap.waiting + (1 if snap.timeouts else 0)
        minute = snap.snapshot_time // MINUTE_MS * MINUTE_MS
        horizon = snap.snapshot_time - int(self.config.advice_window_s * 1000)
        peaks = [p for p in (previous or {}).get("peaks", []) if p[0] + MINUTE_MS > horizon]
        if peaks and peaks[-1][0] == minute:
            peaks[-1] = [minute, max(peaks[-1][1], demand)]
        else:
            peaks.append([minute, demand])
        return {
            "service": snap.service, "pool": snap.pool_name, "instance": snap.instance_id, "database": snap.database,
            "time": snap.snapshot_time, "size": snap.size, "max_size": snap.max_size, "min_size": snap.min_size,
            "in_use": snap.in_use, "idle": snap.idle, "waiting": snap.waiting, "timeouts": snap.timeouts,
            "checkout_wait_p95_ms": snap.checkout_wait_p95_ms, "peaks": peaks,
        }

    def _live(self, state: Mapping[str, Any], clock: int) -> list[dict[str, Any]]:
        stale_ms = self.config.stale_s * 1000
        return [v for k, v in _entries(state, "instance") if clock - v["time"] <= stale_ms]

    # -- pool alerts ----------------------------------------------------------------------------

    def pool_view(self, service: str, pool: str, state: Mapping[str, Any], clock: int,
                  live: list[dict[str, Any]] | None = None) -> PoolView | None:
        live = self._live(state, clock) if live is None else live
        members = [i for i in live if i["service"] == service and i["pool"] == pool]
        if not members:
            return None
        context, criticality = service_class(service, self.settings)
        in_use = sum(i["in_use"] for i in members)
        max_size = sum(i["max_size"] for i in members)
        waits = [i["checkout_wait_p95_ms"] for i in members if i["checkout_wait_p95_ms"] is not None]
        condition = (state.get(pool_key(service, pool)) or {}).get("condition") or _fresh()
        return PoolView(
            service=service, pool=pool, database=members[0]["database"], context=context, criticality=criticality,
            instances=len(members), size=sum(i["size"] for i in members), in_use=in_use, max_size=max_size,
            max_size_per_instance=max(i["max_size"] for i in members), waiting=sum(i["waiting"] for i in members),
            timeouts=sum(i["timeouts"] for i in members), checkout_wait_p95_ms=max(waits) if waits else None,
            utilization=in_use / max_size if max_size else 0.0, alert="firing" if condition["firing"] else "ok",
            advice=self._advice(members, live, state, clock), last_seen=max(i["time"] for i in members),
        )

    def _judge_pool(self, service: str, pool: str, state: Mapping[str, Any], clock: int, cause: str, now_ms: int,
                    outcome: PoolChange) -> None:
        view = self.pool_view(service, pool, state, clock)
        key = pool_key(service, pool)
        entry = state.get(key) or {"service": service, "pool": pool, "condition": _fresh()}
        if view is None:
            return
        pressure = view.utilization >= self.config.utilization or view.waiting > 0 or view.timeouts > 0
        urgent = view.waiting > 0 or view.timeouts > 0
        condition, change = self._step(entry["condition"], pressure, urgent, clock)
        if change == "firing":
            bucket = 2 if view.timeouts else 1 if view.waiting else 0
            level = raise_for_calendar(_severity(view.criticality, bucket), clock, self.calendar)
            condition = {**condition, "severity": level}
        if condition != entry["condition"]:
            outcome.state[key] = {**entry, "condition": condition}
        if change is not None:
            outcome.alerts.append(self._pool_alert(view, change, condition, cause, clock, now_ms))

    def _pool_alert(self, view: PoolView, change: str, condition: dict[str, Any], cause: str, clock: int,
                    now_ms: int) -> Alert:
        if change == "firing":
            p95 = f"{view.checkout_wait_p95_ms:.0f} ms" if view.checkout_wait_p95_ms is not None else "-"
            message = (f"{view.service} pool {view.pool}: {view.in_use}/{view.max_size} connections in use "
                       f"({view.utilization:.0%}) over {view.instances} instance(s), {view.waiting} waiting, "
                       f"{view.timeouts} checkout timeout(s), checkout wait p95 {p95}; {view.advice.describe()}")
            start = condition["since"]
        else:
            message = f"{view.service} pool {view.pool}: back to {view.utilization:.0%} in use, nobody waiting"
            start = condition["calm_since"] or clock
        return Alert(
            alert_id=alert_id("pool", view.service, view.context, view.pool, change, cause),
            state=change,  # type: ignore[arg-type]
            severity=condition["severity"],
            kind="pool",
            service=view.service,
            context=view.context,
            p95_ms=round(view.utilization, 4),
            threshold_ms=self.config.utilization,
            window_start=start,
            window_end=clock,
            message=message,
            created_at=now_ms,
            metric="utilization",
            season=season(clock, self.settings.timezone),
            pool_name=view.pool,
            recommended_max_size=view.advice.recommended if change == "firing" else None,
        )

    def _step(self, condition: dict[str, Any], pressure: bool, urgent: bool,
              at: int) -> tuple[dict[str, Any], str | None]:
        """Time-based hysteresis: fire after sustain_s of pressure (at once when urgent), resolve
        after resolve_s without."""
        sustain_ms, resolve_ms = self.config.sustain_s * 1000, self.config.resolve_s * 1000
        if not condition["firing"]:
            if not pressure:
                return {**condition, "since": None}, None
            since = condition["since"] if condition["since"] is not None else at
            if urgent or at - since >= sustain_ms:
                return {**condition, "firing": True, "since": since, "calm_since": None}, "firing"
            return {**condition, "since": since}, None
        if pressure:
            return {**condition, "calm_since": None}, None
        calm = condition["calm_since"] if condition["calm_since"] is not None else at
        if at - calm >= resolve_ms:
            return {**condition, "firing": False, "since": None, "calm_since": calm}, "resolved"
        return {**condition, "calm_since": calm}, None

    # -- sweeping: quiet pools, the budget ------------------------------------------------------

    def _sweep(self, state: _Overlay, clock: int, now_ms: int, outcome: PoolChange) -> None:
        """Resolve alerts of pools whose instances all went quiet, forget long-gone instances,
        and judge every server's budget."""
        live = self._live(state, clock)
        forget_ms = max(self.config.stale_s, self.config.advice_window_s) * 1000
        for key, entry in _entries(state, "instance"):
            if clock - entry["time"] > forget_ms:
                outcome.state[key] = None
        live_pools = {(i["service"], i["pool"]) for i in live}
        for key, entry in _entries(state, "pool"):
            if entry["condition"]["firing"] and (entry["service"], entry["pool"]) not in live_pools:
                condition = {**entry["condition"], "firing": False, "since": None, "calm_since": clock}
                outcome.state[key] = {**entry, "condition": condition}
                context, _ = service_class(entry["service"], self.settings)
                outcome.alerts.append(Alert(
                    alert_id=alert_id("pool", entry["service"], context, entry["pool"], "resolved", f"quiet@{clock}"),
                    state="resolved", severity=condition["severity"], kind="pool", service=entry["service"],
                    context=context, p95_ms=0.0, threshold_ms=self.config.utilization, window_start=clock,
                    window_end=clock, created_at=now_ms, metric="utilization", pool_name=entry["pool"],
                    season=season(clock, self.settings.timezone),
                    message=f"{entry['service']} pool {entry['pool']}: no snapshot for {self.config.stale_s:g} s",
                ))
        for key, entry in _entries(state, "server"):
            self._judge_budget(key, entry, state, live, clock, now_ms, outcome)

    def budget_view(self, server: str, entry: dict[str, Any], live: list[dict[str, Any]]) -> BudgetView:
        databases = set(entry["databases"])
        groups: dict[tuple[str, str], list[int]] = {}
        for i in live:
            if i["database"] in databases:
                groups.setdefault((i["service"], i["pool"]), []).append(i["max_size"])
        total = sum(sum(v) for v in groups.values())
        allowed = entry["max_connections"] - entry["reserved"]
        contributors = tuple(sorted(((s, p, len(v), max(v)) for (s, p), v in groups.items()),
                                    key=lambda c: (-c[2] * c[3], c[0], c[1])))
        return BudgetView(
            server=server, up=entry["up"], error=entry.get("error"), max_connections=entry["max_connections"],
            reserved=entry["reserved"], allowed=allowed, total_connections=entry["total_connections"],
            pool_maxima=total, over=entry["max_connections"] > 0 and total > allowed,
            alert="firing" if entry["condition"]["firing"] else "ok", contributors=contributors,
        )

    def _judge_budget(self, key: str, entry: dict[str, Any], state: Mapping[str, Any], live: list[dict[str, Any]],
                      clock: int, now_ms: int, outcome: PoolChange) -> None:
        if not entry["max_connections"]:
            return  # never read successfully: nothing to judge against
        view = self.budget_view(json.loads(key)[1], entry, live)
        condition, change = self._step(entry["condition"], view.over, False, clock)
        if change == "firing":
            criticalities = [service_class(s, self.settings)[1] for s, _, _, _ in view.contributors] or ["medium"]
            criticality = min(criticalities, key=CRITICALITIES.index)
            ratio = view.pool_maxima / max(1, view.allowed)
            bucket = 0 if ratio < 2 else 1 if ratio < 5 else 2
            condition = {**condition, "severity": raise_for_calendar(_severity(criticality, bucket), clock,
                                                                     self.calendar)}
        if condition != entry["condition"]:
            outcome.state[key] = {**entry, "condition": condition}
        if change is None:
            return
        top = ", ".join(f"{s}/{p} {n}x{m}" for s, p, n, m in view.contributors[:5])
        relation = "exceed" if change == "firing" else "fit again in"
        outcome.alerts.append(Alert(
            alert_id=alert_id("budget", view.server, "database", None, change, f"{view.server}@{clock}"),
            state=change,  # type: ignore[arg-type]
            severity=condition["severity"], kind="budget", service=view.server, context="database",
            p95_ms=float(view.pool_maxima), threshold_ms=float(view.allowed),
            window_start=condition["since"] if change == "firing" else condition["calm_since"], window_end=clock,
            created_at=now_ms, metric="connections", season=season(clock, self.settings.timezone),
            message=(f"{view.server}: the pools' configured maxima ({view.pool_maxima}) {relation} the "
                     f"{view.allowed} connections the server allows (max_connections {view.max_connections} - "
                     f"{view.reserved} reserved); largest: {top or '-'}"),
        ))

    # -- advice -------------------------------------------------------------------------------

    def _advice(self, members: list[dict[str, Any]], live: list[dict[str, Any]], state: Mapping[str, Any],
                clock: int) -> Advice:
        when = season(clock, self.settings.timezone)
        multiplier = self.config.season_multipliers.get(when, 1.0)
        peak = max(max(p[1] for p in i["peaks"]) for i in members)
        at = _instant(clock)
        if self.calendar.is_freeze_day(at) and self.calendar.in_ceremony_hours(at):
            return Advice(None, peak, multiplier, when, held=True)
        wanted = max(1, max(i["min_size"] for i in members),
                     math.ceil(peak / self.config.utilization * multiplier - 1e-9))
        cap = self._budget_cap(members, live, state)
        if cap is not None and cap < wanted:
            # the budget stops growth; it never asks for less than configured (that is the budget alert's job)
            current = max(i["max_size"] for i in members)
            return Advice(max(1, min(wanted, max(cap, current))), peak, multiplier, when, capped=True)
        return Advice(wanted, peak, multiplier, when)

    def _budget_cap(self, members: list[dict[str, Any]], live: list[dict[str, Any]],
                    state: Mapping[str, Any]) -> int | None:
        """Largest max_size per instance that keeps the pool's server within its budget."""
        database = members[0]["database"]
        mine = {(i["service"], i["pool"], i["instance"]) for i in members}
        for _, server in _entries(state, "server"):
            if database in server["databases"] and server["max_connections"]:
                others = sum(i["max_size"] for i in live if i["database"] in server["databases"]
                             and (i["service"], i["pool"], i["instance"]) not in mine)
                return (server["max_connections"] - server["reserved"] - others) // len(members)
        return None

    # -- the whole picture ---------------------------------------------------------------------

    def views(self, state: Mapping[str, Any]) -> tuple[list[PoolView], list[BudgetView]]:
        """Every live pool and every known server, as of the newest record."""
        clock = state.get(CLOCK) or 0
        live = self._live(state, clock)
        pools = sorted({(i["service"], i["pool"]) for i in live})
        views = [v for s, p in pools if (v := self.pool_view(s, p, state, clock, live)) is not None]
        budgets = [self.budget_view(json.loads(k)[1], e, live) for k, e in _entries(state, "server")]
        return views, sorted(budgets, key=lambda b: b.server)


def _fresh() -> dict[str, Any]:
    return {"firing": False, "since": None, "calm_since": None, "severity": None}


def _entries(state: Mapping[str, Any], kind: str) -> Iterable[tuple[str, dict[str, Any]]]:
    prefix = f'["{kind}", '
    return [(k, v) for k, v in list(state.items()) if isinstance(k, str) and k.startswith(prefix) and v is not None]


class _Overlay(Mapping[str, Any]):
    """The state as it will be once ``changes`` are written (None: deleted)."""

    def __init__(self, base: Mapping[str, Any], changes: Mapping[str, Any]) -> None:
        self.base, self.changes = base, changes

    def __getitem__(self, key: str) -> Any:
        if key in self.changes:
            if self.changes[key] is None:
                raise KeyError(key)
            return self.changes[key]
        return self.base[key]

    def __iter__(self) -> Any:
        seen = set()
        for key in list(self.changes):
            seen.add(key)
            if self.changes[key] is not None:
                yield key
        for key in list(self.base):
            if key not in seen:
                yield key

    def __len__(self) -> int:
        return sum(1 for _ in self)
