"""``dbopt notify`` as people run it: a real process on the real broker and ledger, every channel
on, pointed at recording servers. SIGKILLed mid-delivery and restarted, it delivers every
notification exactly once (counted at the servers); ``--check`` says which channels are on and
sends nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any, Iterator

import pytest

from clienv import DBOPT, dbopt, settings_env
from notify_servers import RecordingServer, Reply, SmtpServer
from streams.config import Settings
from streams.kafka import clients
from streams.kafka.consume import assigned_consumer, read_messages
from streams.kafka.topics import ensure_topics
from streams.records import Alert, OptimizationResult
from streams.serde import Codec
from test_notify_core import FRIDAY, alert, result

OK = {"slack": Reply(200, b"ok"), "pagerduty": Reply(202, b'{"status":"success"}'),
      "twilio": Reply(201, b'{"sid":"SM1"}'), "webhook": Reply(204, b"")}
REFUSE = Reply(503, b"unavailable")
ACCEPT_FIRST = 2  # each server takes this many, then refuses until the restart


@pytest.fixture
def servers() -> Iterator[dict[str, Any]]:
    found: dict[str, Any] = {name: RecordingServer(REFUSE) for name in OK}
    found["smtp"] = SmtpServer(default="451 4.3.0 try later")
    yield found
    for server in found.values():
        server.close()


def notify_env(settings: Settings, servers: dict[str, Any], routes: Path, group: str) -> dict[str, str]:
    return settings_env(
        settings,
        DBOPT_NOTIFY_SLACK_WEBHOOK_URL=f"{servers['slack'].url}/services/T/B/X",
        DBOPT_NOTIFY_PAGERDUTY_URL=f"{servers['pagerduty'].url}/v2/enqueue",
        DBOPT_NOTIFY_PAGERDUTY_ROUTING_KEY="rk",
        DBOPT_NOTIFY_TWILIO_URL=servers["twilio"].url, DBOPT_NOTIFY_TWILIO_ACCOUNT_SID="AC1",
        DBOPT_NOTIFY_TWILIO_AUTH_TOKEN="tw1l10-t0k3n", DBOPT_NOTIFY_SMS_FROM="+15550001",
        DBOPT_NOTIFY_SMS_TO="+15550100,+15550101",
        DBOPT_NOTIFY_SMTP_URL=servers["smtp"].url, DBOPT_NOTIFY_EMAIL_FROM="dbopt@example.com",
        DBOPT_NOTIFY_EMAIL_TO="oncall@example.com",
        DBOPT_NOTIFY_WEBHOOK_URL=f"{servers['webhook'].url}/hook", DBOPT_NOTIFY_WEBHOOK_SECRET="s3cret",
        DBOPT_NOTIFY_ROUTES=str(routes), DBOPT_NOTIFY_GROUP=group,
        DBOPT_NOTIFY_SLACK_RATE="none", DBOPT_NOTIFY_EMAIL_RATE="none", DBOPT_NOTIFY_SMS_RATE="none",
        DBOPT_NOTIFY_RETRY_BASE_S="0.05", DBOPT_NOTIFY_RETRY_MAX_S="0.3", DBOPT_NOTIFY_BREAKER_COOLDOWN_S="0.5",
        DBOPT_NOTIFY_MAX_ATTEMPTS="1000", DBOPT_NOTIFY_IDLE_POLL_S="0.2", DBOPT_NOTIFY_TIMEOUT_S="2",
        DBOPT_NOTIFY_SESSION_TIMEOUT_MS="6000",
    )


def produce(settings: Settings, records: list[Alert | OptimizationResult]) -> None:
    ensure_topics(settings)  # the broker does not create topics on first use
    codec, producer = Codec(), clients.producer(settings)
    errors: list[object] = []
    for record in records:
        topic = settings.topics.alerts if isinstance(record, Alert) else settings.topics.results
        key = record.alert_id if isinstance(record, Alert) else record.command_id
        producer.produce(topic, key=key.encode(), value=codec.encode(record.SCHEMA, record.to_avro(), topic=topic),
                         on_delivery=lambda err, _msg: errors.append(err) if err else None)
    assert producer.flush(30) == 0 and not errors, errors


def start(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([DBOPT, "notify"], env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT)


def delivered_ids(servers: dict[str, Any]) -> dict[str, Counter[str]]:
    """Per server, how often each notification (and recipient) was delivered."""
    return {
        "slack": Counter(r.json()["blocks"][-1]["elements"][0]["text"] for r in servers["slack"].delivered()),
        "pagerduty": Counter(f"{r.json()['event_action']}:{r.json()['dedup_key']}" for r in servers["pagerduty"].delivered()),
        "twilio": Counter(f"{r.form()['To']}:{r.form()['Body']}" for r in servers["twilio"].delivered()),
        "webhook": Counter(r.headers["x-dbopt-delivery"] for r in servers["webhook"].delivered()),
        "smtp": Counter(m.message["X-Dbopt-Notification"] for m in servers["smtp"].delivered()),
    }


def test_sigkill_mid_delivery_then_restart_delivers_each_exactly_once(
        settings: Settings, scratch_db: str, servers: dict[str, Any], tmp_path: Path) -> None:
    settings = settings.with_overrides(database_url=scratch_db)
    routes = tmp_path / "routes.yaml"
    routes.write_text("routes:\n  - match: {kind: result}\n    channels: [slack, webhook]\n")
    env = notify_env(settings, servers, routes, group=f"notify-{os.getpid()}-{time.time_ns()}")
    for name in OK:
        servers[name].script(*[OK[name]] * ACCEPT_FIRST)
    servers["smtp"].script.extend(["250 OK"] * ACCEPT_FIRST)

    critical = [alert("critical", at=FRIDAY + i * 60_000, service=f"booking-{i}") for i in range(4)]
    high = [alert("high", at=FRIDAY + i * 60_000, service=f"vendor-{i}", context="vendor_search") for i in range(4)]
    warning = [alert("warning", at=FRIDAY + i * 60_000, service=f"guest-{i}", context="guest_management")
               for i in range(3)]
    results = [result("applied"), OptimizationResult.from_avro({**result("applied").to_avro(), "command_id": "cmd-2"})]
    resolved = [alert("critical", "resolved", at=FRIDAY + 3_600_000 + i, service=f"booking-{i}") for i in range(2)]
    produce(settings, [*critical, *high, *warning, results[0]])

    log = tmp_path / "notify.log"
    proc = start(env, log)
    try:
        # mid-delivery: each channel delivered some, was refused since, and has more queued
        for name in ("slack", "pagerduty", "twilio"):
            servers[name].wait_for(lambda rs: sum(r.delivered for r in rs) >= ACCEPT_FIRST
                                   and any(not r.delivered for r in rs), timeout=60)
        deadline = time.monotonic() + 30
        while not any(m.code.startswith("4") for m in servers["smtp"].mails):
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        before = {name: len(servers[name].delivered()) for name in OK} | {"smtp": len(servers["smtp"].delivered())}
        assert before["slack"] == before["pagerduty"] == before["twilio"] == before["smtp"] == ACCEPT_FIRST

        for name in OK:
            servers[name].set_default(OK[name])
        servers["smtp"].default = "250 OK"
        produce(settings, [*resolved, results[1]])
        proc = start(env, log)
        expected = {"slack": 4 + 2 + 4 + 3 + 2, "pagerduty": 4 + 2, "twilio": (4 + 2) * 2, "webhook": 2, "smtp": 4}
        deadline = time.monotonic() + 60
        while any(sum(delivered_ids(servers)[n].values()) < count for n, count in expected.items()):
            assert time.monotonic() < deadline, (delivered_ids(servers), log.read_text()[-3000:])
            time.sleep(0.1)
        time.sleep(1.5)  # nothing more arrives
        got = delivered_ids(servers)
        for name, count in expected.items():
            assert len(got[name]) == count and set(got[name].values()) == {1}, (name, got[name])
        # PagerDuty: the resolves share their triggers' dedup keys
        triggers = {k.split(":", 1)[1] for k in got["pagerduty"] if k.startswith("trigger:")}
        resolves = {k.split(":", 1)[1] for k in got["pagerduty"] if k.startswith("resolve:")}
        assert len(triggers) == 4 and len(resolves) == 2 and resolves <= triggers

        # every outcome is on the notifications topic (at least once; keyed by notification id)
        consumer = assigned_consumer(settings, settings.topics.notifications)
        codec, outcomes = Codec(), {}
        for msg in read_messages(consumer, max_messages=None, idle_timeout=4):
            if msg.error() is None:
                rec = codec.decode(msg.value()).record
                outcomes[(rec["notification_id"], rec["channel"], rec["target"])] = rec["status"]
        consumer.close()
        assert Counter(outcomes.values()) == Counter({"delivered": sum(expected.values())})
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            assert proc.wait(30) == 0, log.read_text()[-3000:]
        finally:
            proc.kill()


def test_check_says_which_channels_are_on_and_sends_nothing(
        settings: Settings, servers: dict[str, Any], tmp_path: Path) -> None:
    routes = tmp_path / "routes.yaml"
    routes.write_text("routes:\n  - match: {service: analytics}\n    channels: []\n")
    env = notify_env(settings, servers, routes, group="unused")
    del env["DBOPT_NOTIFY_WEBHOOK_SECRET"], env["DBOPT_NOTIFY_PAGERDUTY_ROUTING_KEY"]
    extra = {k: v for k, v in env.items() if k.startswith("DBOPT_NOTIFY")}
    proc = dbopt(settings, "notify", "--check", **extra)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert any(line.startswith("  slack     on") for line in lines)
    assert any(line.startswith("  sms       on") and "to 2 number(s)" in line for line in lines)
    assert any(line.startswith("  email     on") for line in lines)
    assert "  pagerduty off  (DBOPT_NOTIFY_PAGERDUTY_ROUTING_KEY is not set)" in lines
    assert any(line.startswith("  webhook   off") and "DBOPT_NOTIFY_WEBHOOK_SECRET" in line for line in lines)
    assert "  service=analytics -> (nobody)" in lines
    assert "tw1l10-t0k3n" not in proc.stdout and "/services/T/B/X" not in proc.stdout  # secrets stay hidden
    assert all(not s.requests for n, s in servers.items() if n != "smtp") and not servers["smtp"].mails
    routes.write_text("routes:\n  - match: {colour: red}\n    channels: []\n")
    bad = dbopt(settings, "notify", "--check", **extra)
    assert bad.returncode == 2 and "cannot match on ['colour']" in bad.stderr
