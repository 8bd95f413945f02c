"""What dbopt tells people, built from records (pure: no I/O, the calendar's clock is not read).

A :class:`Notification` is one thing to tell: an alert changing state, a result of a command, or
a digest of what a rate limit held back. Its :class:`Message` is channel-neutral text (title,
summary, facts, the normalized statement, a link); each channel lays it out in its own format.

Everything here is a function of the record (and of what the audit says dbopt did), never of the
wall clock: a record redelivered after a crash yields the same notification, the same id, the
same text. Times shown are the record's own (the alert's window, the result's finish), in the
platform's time zone, with the calendar state (season, wedding-day criticality) at that time.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterable, Mapping
from urllib.parse import quote, urlencode
from zoneinfo import ZoneInfo

from streams.domain.calendar import Calendar
from streams.records import Alert, OptimizationResult

SEVERITIES = ("info", "warning", "high", "critical")  # least severe first
ALERT_KINDS = ("slo", "regression", "pool", "errors", "surge", "budget", "statement")
# what each alert kind is called, and the label of its headline figure
_KIND_NAMES = {"slo": ("SLO breach", "Latency"), "regression": ("latency regression", "Latency"),
               "pool": ("connection pool alert", "Pool"), "errors": ("error-rate alert", "Errors"),
               "surge": ("traffic surge", "Traffic"), "budget": ("connection budget alert", "Connections"),
               "statement": ("slow statement (pg_stat_statements)", "Latency")}
RESULT_KIND = "result"
DIGEST_KIND = "digest"
KINDS = (*ALERT_KINDS, RESULT_KIND, DIGEST_KIND)
# what the executor and the verifier say, and how loudly each is told
RESULT_SEVERITY = {"applied": "info", "deferred": "info", "kept": "info", "rolled_back": "warning",
                   "failed": "warning", "rejected": "warning", "duplicate": "info"}
DEFAULT_RESULT_STATUSES = ("applied", "rolled_back", "failed", "deferred")


@dataclass(frozen=True)
class Message:
    """Channel-neutral content of one notification."""

    title: str  # one line: state, severity, service, the figure that matters
    summary: str  # one or two sentences (PagerDuty summary, e-mail lead, SMS source)
    facts: tuple[tuple[str, str], ...]  # ordered (label, value) pairs
    statement: str | None = None  # normalized SQL, never a literal
    link: str | None = None  # the live page, when DBOPT_UI_URL is set
    items: tuple[str, ...] = ()  # a digest's held-back titles


@dataclass(frozen=True)
class Notification:
    """One thing to tell. ``condition_key`` ties a resolved alert to its firing one (and is the
    PagerDuty ``dedup_key``: one incident per alert condition, not per window)."""

    notification_id: str
    kind: str  # slo | regression | pool | result | digest
    state: str  # firing | resolved | a result status | digest
    severity: str  # info | warning | high | critical
    service: str
    context: str
    condition_key: str
    emergency: bool  # passes rate limits: critical, or high on a freeze day
    event_ms: int  # the record's time (alert window end, result finish), epoch ms
    message: Message

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Notification":
        raw = dict(data)
        msg = dict(raw.pop("message"))
        msg["facts"] = tuple(tuple(pair) for pair in msg["facts"])
        msg["items"] = tuple(msg.get("items", ()))
        return cls(**raw, message=Message(**msg))


@dataclass(frozen=True)
class Action:
    """What the executor's audit says dbopt did or is doing (shown in the message)."""

    command_id: str
    action: str
    status: str
    index_name: str | None = None
    service: str | None = None
    context: str | None = None
    fingerprints: tuple[str, ...] = field(default_factory=tuple)

    def describe(self) -> str:
        target = f" ({self.index_name})" if self.index_name else ""
        return f"{self.action} {self.command_id}: {self.status}{target}"


def digest_of(text: str, size: int = 32) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:size]


def condition_key(kind: str, service: str, context: str, fingerprint: str | None) -> str:
    """One alert condition (what fires and later resolves), independent of the window."""
    return "dbopt-" + digest_of(json.dumps([kind, service, context, fingerprint or ""]))


def is_emergency(severity: str, event_ms: int, calendar: Calendar) -> bool:
    """The bypass: ``critical`` always passes rate limits; on a freeze day ``high`` passes too."""
    if severity == "critical":
        return True
    return severity == "high" and calendar.is_freeze_day(_instant(event_ms))


def _instant(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, timezone.utc)


def _ms(value: float) -> str:
    return f"{value:.1f} ms" if value < 100 else f"{value:.0f} ms"


def _window(start_ms: int, end_ms: int, tz: str) -> str:
    zone = ZoneInfo(tz)
    start, end = _instant(start_ms).astimezone(zone), _instant(end_ms).astimezone(zone)
    return f"{start:%Y-%m-%d %H:%M:%S}–{end:%H:%M:%S} {end.tzname()}"


def _calendar_facts(event_ms: int, calendar: Calendar) -> list[tuple[str, str]]:
    at = _instant(event_ms)
    level = calendar.criticality(at=at)
    return [("Season", calendar.season(at.astimezone(ZoneInfo(calendar.timezone)))),
            ("Wedding day", f"{int(level)} {level.name.lower()}")]


def _link(ui_url: str | None, path: str, **query: str | None) -> str | None:
    if not ui_url:
        return None
    params = urlencode({k: v for k, v in query.items() if v})
    return ui_url.rstrip("/") + path + (f"?{params}" if params else "")


def _figure(alert: Alert) -> tuple[str, str]:
    """The headline figure of an alert, and its fact line."""
    if alert.kind == "pool":
        figure = f"pool at {alert.p95_ms:.0%} (limit {alert.threshold_ms:.0%})"
        return figure, figure
    if alert.kind == "errors":
        figure = f"errors {alert.p95_ms:.1%} (limit {alert.threshold_ms:.1%})"
        return figure, figure
    if alert.kind == "surge":
        figure = f"{alert.p95_ms:,.0f} events per window (limit {alert.threshold_ms:,.0f})"
        return figure, figure + (f", baseline {alert.baseline_ms:,.0f}" if alert.baseline_ms else "")
    if alert.kind == "budget":
        figure = f"pool maxima {alert.p95_ms:.0f} vs {alert.threshold_ms:.0f} connections allowed"
        return figure, figure
    if alert.kind == "statement":
        relation = ">" if alert.state == "firing" else "back within"
        figure = f"mean {_ms(alert.p95_ms)} {relation} SLO {_ms(alert.threshold_ms)}"
        return figure, figure
    if alert.kind == "regression" and alert.baseline_ms is not None:
        figure = f"p95 {_ms(alert.p95_ms)} vs baseline {_ms(alert.baseline_ms)}"
        return figure, f"{figure} (threshold {_ms(alert.threshold_ms)})"
    relation = ">" if alert.state == "firing" else "back within"
    figure = f"p95 {_ms(alert.p95_ms)} {relation} SLO {_ms(alert.threshold_ms)}"
    return figure, figure


def from_alert(alert: Alert, calendar: Calendar, *, ui_url: str | None = None,
               actions: Iterable[Action] = ()) -> Notification:
    figure, figure_fact = _figure(alert)
    state = alert.state.upper()
    where = alert.context + (f", query {alert.fingerprint}" if alert.fingerprint else "")  # one alert per query too
    title = f"{state} {alert.severity}: {alert.service} ({where}) {figure}"
    what, label = _KIND_NAMES[alert.kind]
    summary = (f"dbopt {what} {alert.state} for {alert.service} in context {alert.context}: {figure_fact}"
               + (f". {alert.message}" if alert.message else ""))
    facts: list[tuple[str, str]] = [
        ("Service", alert.service),
        ("Context", alert.context),
        (label, figure_fact),
        ("Window", _window(alert.window_start, alert.window_end, calendar.timezone)),
        *_calendar_facts(alert.window_end, calendar),
    ]
    if alert.fingerprint:
        facts.append(("Fingerprint", alert.fingerprint))
    done = [a.describe() for a in actions]
    facts.append(("dbopt", "; ".join(done) if done else "analysing (no command yet)"))
    return Notification(
        notification_id=alert.alert_id,
        kind=alert.kind,
        state=alert.state,
        severity=alert.severity,
        service=alert.service,
        context=alert.context,
        condition_key=condition_key(alert.kind, alert.service, alert.context, alert.fingerprint),
        emergency=is_emergency(alert.severity, alert.window_end, calendar),
        event_ms=alert.window_end,
        message=Message(
            title=title,
            summary=summary,
            facts=tuple(facts),
            statement=alert.query_text,
            link=_link(ui_url, f"/services/{quote(alert.service, safe='')}", fingerprint=alert.fingerprint),
        ),
    )


def result_id(result: OptimizationResult) -> str:
    """A command can be deferred first and applied later: one notification per status."""
    return f"result:{result.command_id}:{result.status}"


def from_result(result: OptimizationResult, calendar: Calendar, *, ui_url: str | None = None,
                command: Action | None = None) -> Notification:
    """``command`` is the audit's view of the command (its service, context and fingerprints)."""
    service = (command.service if command else None) or "-"
    context = (command.context if command else None) or "-"
    severity = RESULT_SEVERITY[result.status]
    subject = result.index_name or result.table or result.command_id
    title = f"{result.status.upper().replace('_', ' ')}: {subject}" + (f" for {service}" if command else "")
    summary = f"dbopt {result.status.replace('_', ' ')} command {result.command_id}: {result.reason}"
    facts: list[tuple[str, str]] = [("Command", result.command_id), ("Status", result.status),
                                    ("Reason", result.reason)]
    if command:
        facts += [("Service", service), ("Context", context)]
        if command.fingerprints:
            facts.append(("Fingerprints", ", ".join(command.fingerprints)))
    if result.p95_before_ms is not None and result.p95_after_ms is not None:
        facts.append(("p95", f"{_ms(result.p95_before_ms)} → {_ms(result.p95_after_ms)}"))
    if result.cost_before is not None and result.cost_after is not None:
        facts.append(("Plan cost", f"{result.cost_before:.0f} → {result.cost_after:.0f}"))
    if result.rollback_sql:
        facts.append(("Rollback", result.rollback_sql))
    facts += _calendar_facts(result.finished_at, calendar)
    return Notification(
        notification_id=result_id(result),
        kind=RESULT_KIND,
        state=result.status,
        severity=severity,
        service=service,
        context=context,
        condition_key=f"dbopt-command-{result.command_id}",
        emergency=is_emergency(severity, result.finished_at, calendar),
        event_ms=result.finished_at,
        message=Message(title=title, summary=summary, facts=tuple(facts), statement=result.sql,
                        link=_link(ui_url, "/optimizations", command=result.command_id)),
    )


MAX_DIGEST_ITEMS = 20


def digest(channel: str, target: str, held: list[Notification], *, ui_url: str | None = None) -> Notification:
    """One notification standing for everything a rate limit held back on one channel/target.
    Its id is a function of the members, so re-making it after a crash gives the same id."""
    ids = sorted(n.notification_id for n in held)
    worst = max((n.severity for n in held), key=SEVERITIES.index)
    items = [n.message.title for n in sorted(held, key=lambda n: (n.event_ms, n.notification_id))]
    shown = items[:MAX_DIGEST_ITEMS]
    if len(items) > len(shown):
        shown.append(f"... and {len(items) - len(shown)} more")
    services = sorted({n.service for n in held})
    title = f"DIGEST: {len(held)} notification(s) held back by the {channel} rate limit"
    return Notification(
        notification_id=f"digest:{channel}:{digest_of(json.dumps([target, ids]), 24)}",
        kind=DIGEST_KIND,
        state=DIGEST_KIND,
        severity=worst,
        service=", ".join(services),
        context="-",
        condition_key=f"dbopt-digest-{channel}",
        emergency=False,
        event_ms=max(n.event_ms for n in held),
        message=Message(
            title=title,
            summary=f"{title}; worst severity {worst}; services {', '.join(services)}",
            facts=(("Held back", str(len(held))), ("Worst severity", worst), ("Services", ", ".join(services))),
            items=tuple(shown),
            link=_link(ui_url, "/alerts"),
        ),
    )
