"""Channel workers against real local servers and a real ledger (PostgreSQL, a scratch database):
retries with backoff and Retry-After, giving up, rate limits with digests and the emergency
bypass, a breaker that opens while other channels keep delivering, and PagerDuty's resolve
never overtaking its trigger. Backoffs and cool-downs are shortened through settings."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Iterator

import psycopg
import pytest

from notify_servers import RecordingServer, Reply
from streams.config import NotifySettings, Settings
from streams.domain.calendar import Calendar
from streams.notify.channels import build_channels
from streams.notify.dispatch import Dispatcher
from streams.notify.ledger import Ledger
from streams.notify.model import Notification, from_alert
from streams.notify.routing import DEFAULT_ROUTES, plan
from streams.records import Alert
from test_notify_core import FRIDAY, SATURDAY, alert

CAL = Calendar()
FAST = dict(retry_base_s=0.05, retry_max_s=0.2, timeout_s=2.0, breaker_cooldown_s=1.0, idle_poll_s=0.1)


@dataclass
class Env:
    settings: Settings
    slack: RecordingServer
    pagerduty: RecordingServer
    stop: threading.Event = field(default_factory=threading.Event)
    dispatcher: Dispatcher | None = None
    conn: Any = None

    def start(self, **notify: Any) -> None:
        self.settings = self.settings.with_overrides(notify=NotifySettings(
            slack_webhook_url=f"{self.slack.url}/services/T/B/X", pagerduty_url=f"{self.pagerduty.url}/v2/enqueue",
            pagerduty_routing_key="rk", **{**FAST, **notify}))
        self.conn = psycopg.connect(self.settings.database_url.get_secret_value(), autocommit=True)
        self.ledger = Ledger(self.conn, self.settings.executor.audit_schema)
        self.ledger.ensure()
        channels, self.off = build_channels(self.settings)
        self.targets = {name: ch.targets() for name, ch in channels.items()}
        self.dispatcher = Dispatcher(self.settings, channels, self.stop)
        self.dispatcher.start()

    def tell(self, *alerts: Alert) -> list[Notification]:
        out = []
        for record in alerts:
            n = from_alert(record, CAL)
            firing = self.ledger.firing_channels(n.condition_key, n.event_ms) if n.state == "resolved" else None
            self.ledger.enqueue(n, plan(n, DEFAULT_ROUTES, self.targets, self.off, firing_channels=firing), time.time())
            out.append(n)
        assert self.dispatcher is not None
        self.dispatcher.wake()
        return out

    def rows(self) -> list[tuple[Any, ...]]:
        return self.conn.execute(
            "SELECT notification_id, channel, status, attempts, reason, digest_id FROM dbopt.dbopt_notify_ledger"
            " ORDER BY event_ms, notification_id, channel").fetchall()


@pytest.fixture
def env(infra: Settings, scratch_db: str) -> Iterator[Env]:
    slack, pagerduty = RecordingServer(), RecordingServer(Reply(202, b'{"status":"success"}'))
    e = Env(infra.with_overrides(database_url=scratch_db), slack, pagerduty)
    yield e
    e.stop.set()
    if e.dispatcher:
        e.dispatcher.join()
    if e.conn:
        e.conn.close()
    slack.close(), pagerduty.close()


def wait_until(predicate: Any, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_500_429_timeout_then_success(env: Env) -> None:
    env.slack.script(Reply(500, b"rollup_error"), Reply(429, b"", (("Retry-After", "1"),)),
                     Reply(504, delay_s=1.0))  # too slow: the client times out first
    env.start(timeout_s=0.4)
    (n,) = env.tell(alert("warning"))
    (delivered,) = env.slack.wait_delivered(1)
    requests = env.slack.requests
    assert [r.status for r in requests] == [500, 429, 504, 200]
    assert requests[2].at - requests[1].at >= 1.0  # Retry-After honoured
    assert delivered.json()["text"] == n.message.title
    wait_until(lambda: env.rows()[0][2] == "delivered")
    (row,) = env.rows()
    assert row[:4] == (n.notification_id, "slack", "delivered", 4)


def test_given_up_after_the_last_attempt_with_its_reason(env: Env) -> None:
    env.slack.set_default(Reply(503, b"unavailable"))
    env.start(max_attempts=3)
    env.tell(alert("warning"))
    wait_until(lambda: env.rows()[0][2] == "failed")
    assert env.rows()[0][3:5] == (3, "gave up after 3 attempts: HTTP 503: unavailable")
    time.sleep(0.3)
    assert len(env.slack.requests) == 3
    env.slack.set_default(Reply(400, b"invalid_payload"))
    env.tell(alert("warning", at=FRIDAY + 60_000))
    wait_until(lambda: env.rows()[1][2] == "failed")
    assert env.rows()[1][3:5] == (1, "not retried: HTTP 400: invalid_payload")


def test_rate_limit_digest_and_emergency_bypass(env: Env) -> None:
    env.start(slack_rate="3/3s")
    warnings = env.tell(*(alert("warning", at=FRIDAY + i * 60_000) for i in range(6)))
    env.slack.wait_delivered(3)
    time.sleep(0.5)
    assert len(env.slack.requests) == 3  # the rest is held
    # critical always passes; high passes on a freeze day (Saturday); the limit is spent
    critical, saturday_high = env.tell(alert("critical", at=FRIDAY + 7 * 60_000), alert("high", at=SATURDAY))
    bypassed = env.slack.wait_delivered(5)[3:]
    assert {r.json()["text"] for r in bypassed} == {critical.message.title, saturday_high.message.title}
    # the window reopens: one digest of the three held warnings
    digest = env.slack.wait_delivered(6, timeout=10)[5].json()
    assert digest["text"] == "DIGEST: 3 notification(s) held back by the slack rate limit"
    items = next(b for b in digest["blocks"] if b["type"] == "section" and "•" in b.get("text", {}).get("text", ""))
    assert all(n.message.title in items["text"]["text"] for n in warnings[3:])
    time.sleep(0.3)
    assert len(env.slack.requests) == 6
    statuses = {(r[0], r[1]): (r[2], r[5]) for r in env.rows()}
    digest_ids = {statuses[(n.notification_id, "slack")][1] for n in warnings[3:]}
    assert {statuses[(n.notification_id, "slack")][0] for n in warnings[3:]} == {"digested"}
    assert len(digest_ids) == 1 and statuses[(digest_ids.pop(), "slack")][0] == "delivered"


def test_breaker_opens_while_other_channels_keep_delivering(env: Env) -> None:
    env.pagerduty.set_default(Reply(503, b"", delay_s=0.2))  # slow and broken
    env.start(breaker_failures=3, breaker_cooldown_s=1.5, retry_base_s=0.01, retry_max_s=0.02, slack_rate="none")
    alerts = env.tell(*(alert("critical", at=FRIDAY + i * 60_000, service=f"svc-{i}") for i in range(8)))
    env.slack.wait_delivered(8, timeout=10)  # Slack is not held up by PagerDuty
    worker = env.dispatcher.workers["pagerduty"]  # type: ignore[union-attr]
    wait_until(lambda: worker.breaker.state == "open")
    opened = len(env.pagerduty.requests)
    assert opened == 3
    time.sleep(0.8)
    assert len(env.pagerduty.requests) == opened  # open: nothing is sent during the cool-down
    env.pagerduty.set_default(Reply(202, b'{"status":"success"}'))
    env.pagerduty.wait_delivered(8, timeout=15)  # the half-open probe succeeded and closed it
    assert worker.breaker.state == "closed"
    keys = [r.json()["dedup_key"] for r in env.pagerduty.delivered()]
    assert sorted(keys) == sorted(n.condition_key for n in alerts)


def test_resolve_never_overtakes_its_trigger(env: Env) -> None:
    env.pagerduty.script(Reply(500), Reply(500))
    env.start(retry_base_s=0.3, retry_max_s=0.3, slack_rate="none")
    firing, resolved = env.tell(alert("critical", "firing", at=FRIDAY), alert("critical", "resolved", at=FRIDAY + 120_000))
    delivered = env.pagerduty.wait_delivered(2)
    assert [r.json()["event_action"] for r in delivered] == ["trigger", "resolve"]
    assert delivered[0].json()["dedup_key"] == delivered[1].json()["dedup_key"] == firing.condition_key
    assert {r[1] for r in env.rows() if r[0] == resolved.notification_id} == {"pagerduty", "slack"}  # SMS is off


def test_the_ledger_queues_a_notification_once(env: Env) -> None:
    env.start()
    env.tell(alert("warning"), alert("warning"), alert("warning"))
    env.slack.wait_delivered(1)
    time.sleep(0.5)
    assert len(env.slack.requests) == 1 and len(env.rows()) == 1
