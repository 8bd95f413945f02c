"""``dbopt notify``: the notify stage on the shared Kafka loop (:mod:`streams.kafka.loop`).

It reads ``dbopt.alerts.v1`` and ``dbopt.results.v1``. For each record it builds the
notification, routes it, and queues every delivery in the ledger (one transaction) before
``on_record`` returns: the loop commits the source offset only after that, so a crash never
loses a routed notification, and a redelivered record finds its rows and queues nothing new.
The channel workers (:mod:`.dispatch`) deliver from the ledger on their own threads. Every
outcome becomes a NotificationResult on ``dbopt.notifications.v1``: ``tick`` emits the ledger's
unreported outcomes, ``checkpoint`` (after the broker acknowledged them) marks them reported.

``dbopt notify --check`` prints which channels are on, the routes and the limits, and sends nothing.
"""

from __future__ import annotations

import argparse
import logging
import threading
import time
from collections.abc import Iterable
from typing import Any, Callable, TypeVar

import psycopg

from streams import db
from streams.cli_args import add_logging_arguments
from streams.config import Settings, load_settings
from streams.domain.calendar import Calendar
from streams.kafka.health import Health, serve
from streams.kafka.loop import Emit, Incoming, Stage, Stopped, run_stage, stop_on_signals
from streams.records import Alert, NotificationResult, OptimizationResult

from . import model
from .channels import build_channels
from .channels.base import Channel
from .dispatch import Dispatcher
from .ledger import Delivery, Ledger
from .metrics import NOTIFICATIONS
from .routing import Route, describe, load_routes, plan

HELP = "tell people: route alerts and results to Slack, PagerDuty, e-mail, SMS and webhooks (ledger, retries)"
log = logging.getLogger("dbopt.notify")
T = TypeVar("T")
REPORT_BATCH = 500
# the loop waits this long for a batch to fill: short, a pager's latency matters more than batching
POLL_TIMEOUT_S = 0.1


def outcome_record(delivery: Delivery) -> NotificationResult:
    n = delivery.notification
    source = "alert" if n.kind in model.ALERT_KINDS else n.kind
    finished = delivery.finished_at or delivery.created_at
    latency = (finished - delivery.created_at) * 1000 if delivery.status == "delivered" else None
    return NotificationResult(
        notification_id=n.notification_id, source=source, channel=delivery.channel, target=delivery.target,  # type: ignore[arg-type]
        status=delivery.status, reason=delivery.reason, severity=n.severity, state=n.state,  # type: ignore[arg-type]
        attempts=delivery.attempts, latency_ms=latency, digest_id=delivery.digest_id,
        finished_at=int(finished * 1000),
    )


class NotifyStage(Stage):
    name = "notify"

    def __init__(self, settings: Settings, channels: dict[str, Channel], off: dict[str, str],
                 routes: tuple[Route, ...], *, stop: threading.Event, wake: Callable[[], None],
                 calendar: Calendar | None = None) -> None:
        self.settings, self.routes, self.off, self.stop, self.wake = settings, routes, off, stop, wake
        self.targets = {name: channel.targets() for name, channel in channels.items()}
        self.calendar = calendar or Calendar.from_settings(settings)
        self.conn: psycopg.Connection[Any] | None = None
        self.reported: list[tuple[str, str, str]] = []
        self.ensured = False

    def topics(self) -> list[str]:
        return [self.settings.topics.alerts, self.settings.topics.results]

    def restore(self) -> None:
        """Create the ledger (once: the channel workers start only after it exists)."""
        if not self.ensured:
            self._with_ledger(lambda ledger: ledger.ensure())
            self.ensured = True

    def _with_ledger(self, work: Callable[[Ledger], T]) -> T:
        """Run ``work`` on a healthy connection; while PostgreSQL is down, retry with backoff
        (the batch is not committed meanwhile; a stop request abandons it uncommitted)."""
        delay = 0.5
        while True:
            try:
                if self.conn is None or self.conn.closed:
                    self.conn = db.connect(self.settings, application_name="dbopt-notify")
                return work(Ledger(self.conn, self.settings.executor.audit_schema))
            except psycopg.OperationalError as exc:
                log.warning("notify: ledger unavailable (%s); retrying in %.1fs", exc, delay)
                if self.conn is not None:
                    self.conn.close()
                if self.stop.wait(delay):
                    raise Stopped() from None
                delay = min(delay * 2, self.settings.executor.db_retry_max_s)

    def on_record(self, incoming: Incoming) -> Iterable[Emit]:
        record = incoming.record
        if isinstance(record, OptimizationResult) and record.status not in self.settings.notify.result_statuses:
            return ()
        if not isinstance(record, (Alert, OptimizationResult)):
            return ()
        self._with_ledger(lambda ledger: self._queue(ledger, record))
        self.wake()
        return ()

    def _queue(self, ledger: Ledger, record: Alert | OptimizationResult) -> None:
        ui_url = self.settings.ui_url
        if isinstance(record, Alert):
            if ledger.known(record.alert_id):
                return
            n = model.from_alert(record, self.calendar, ui_url=ui_url, actions=ledger.actions_for(record.fingerprint))
        else:
            if ledger.known(model.result_id(record)):
                return
            n = model.from_result(record, self.calendar, ui_url=ui_url, command=ledger.command(record.command_id))
        resolved_alert = n.kind in model.ALERT_KINDS and n.state == "resolved"
        planned = plan(
            n, self.routes, self.targets, self.off,
            firing_channels=ledger.firing_channels(n.condition_key, n.event_ms) if resolved_alert else None,
            resolved_later=n.state == "firing" and ledger.resolved_after(n.condition_key, n.event_ms),
        )
        ledger.enqueue(n, planned, time.time())
        for p in planned:
            if p.status == "suppressed":
                NOTIFICATIONS.labels(p.channel, "suppressed").inc()

    def tick(self, now_ms: int) -> Iterable[Emit]:
        try:
            rows = self._with_ledger(lambda ledger: ledger.unreported(REPORT_BATCH))
        except Stopped:
            return ()
        self.reported = [row.key for row in rows]
        topic = self.settings.topics.notifications
        return [Emit(topic, row.notification.notification_id, outcome_record(row)) for row in rows]

    def checkpoint(self) -> None:
        if self.reported:
            keys, self.reported = self.reported, []
            self._with_ledger(lambda ledger: ledger.mark_reported(keys))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--check", action="store_true",
                        help="say which channels are on, the routes and the limits; send nothing")
    add_logging_arguments(parser)


def check_report(settings: Settings) -> list[str]:
    routes = load_routes(settings.notify.routes)
    channels, off = build_channels(settings)
    n = settings.notify
    lines = ["channels:"]
    for name in ("pagerduty", "slack", "email", "sms", "webhook"):
        if name in channels:
            rate = getattr(n, f"{name}_rate")
            lines.append(f"  {name:<9} on   {channels[name].describe()}; rate limit {rate}")
        else:
            lines.append(f"  {name:<9} off  ({off[name]})")
    lines.append(f"routes ({n.routes or 'built-in defaults'}), first match wins:")
    lines += [f"  {line}" for line in describe(routes)]
    lines.append(f"bypass: critical always; high on freeze days ({','.join(settings.freeze_weekdays) or 'none'})")
    lines.append(f"retries: {n.max_attempts} attempts, backoff {n.retry_base_s:g}s doubling to {n.retry_max_s:g}s, "
                 f"timeout {n.timeout_s:g}s; breaker opens after {n.breaker_failures} failures, "
                 f"probe after {n.breaker_cooldown_s:g}s")
    lines.append(f"ledger: {settings.executor.audit_schema}.dbopt_notify_ledger; results on "
                 f"{settings.topics.notifications}; group {n.consumer_group}")
    routed_off = sorted({c for r in routes for c in r.channels if c not in channels})
    if routed_off:
        lines.append(f"note: routes name {', '.join(routed_off)}, which are off: those deliveries are suppressed")
    return lines


def run(args: argparse.Namespace) -> int:
    settings = load_settings()
    if args.check:
        print("\n".join(check_report(settings)))
        return 0
    routes = load_routes(settings.notify.routes)
    channels, off = build_channels(settings)
    if not channels:
        log.warning("notify: no channel is on (see `dbopt notify --check`); outcomes are recorded as suppressed")
    stop = threading.Event()
    stop_on_signals(stop)
    health = Health("notify")
    if settings.notify.probe_port:
        serve(health, settings.notify.probe_host, settings.notify.probe_port)
    dispatcher = Dispatcher(settings, channels, stop)
    stage = NotifyStage(settings, channels, off, routes, stop=stop, wake=dispatcher.wake)
    log.info("notify: channels on: %s", ", ".join(channels) or "none")
    try:
        stage.restore()
    except Stopped:
        return 0
    dispatcher.start()
    try:
        run_stage(settings, stage, group_id=settings.notify.consumer_group, stop=stop, health=health,
                  poll_timeout_s=POLL_TIMEOUT_S,
                  consumer_overrides={"session.timeout.ms": settings.notify.session_timeout_ms})
    finally:
        stop.set()
        dispatcher.join()
    return 0
