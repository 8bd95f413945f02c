"""Shared pieces of the dbopt serve tests: settings with users, records on private topics, waiting, and
the fixtures ``ss`` (serve settings on a seeded scratch database) and ``served`` (a running server)."""

from __future__ import annotations

import time
import uuid
from typing import Any, Callable, Iterator, TypeVar

import psycopg
import pytest
from confluent_kafka import KafkaError, Producer

from streams.commands import build_command, sign
from streams.config import Settings
from streams.records import Alert, AvroRecord, OptimizationCommand, WindowStats
from streams.serde import Codec
from streams.serve import server
from streams.serve.auth import hash_password

KEY = "serve-test-key"
PASSWORDS = {"olivia": "olivia-secret-pw", "vic": "vic-secret-pw"}  # olivia: operator, vic: viewer
HASHES = {name: hash_password(pw, rounds=4) for name, pw in PASSWORDS.items()}
SEED = """
CREATE EXTENSION IF NOT EXISTS hypopg;
CREATE TABLE bookings (id serial PRIMARY KEY, vendor_id int NOT NULL, status text NOT NULL, email text);
INSERT INTO bookings (vendor_id, status, email)
    SELECT g % 97, CASE WHEN g % 3 = 0 THEN 'confirmed' ELSE 'pending' END, 'guest' || g || '@example.org'
    FROM generate_series(1, 20000) g;
ANALYZE bookings;
"""
T = TypeVar("T")


def serve_settings(settings: Settings, database_url: str, **serve: Any) -> Settings:
    users = f"olivia:operator:{HASHES['olivia']},vic:viewer:{HASHES['vic']}"
    return settings.with_overrides(
        database_url=database_url, command_key=KEY, freeze_weekdays=(),
        serve=settings.serve.with_overrides(users=users, session_secret="serve-test-session-secret",
                                            history_refresh_s=1.0, **serve),
        executor=settings.executor.with_overrides(
            aggressiveness="recommend", consumer_group=f"dbopt-executor-{uuid.uuid4().hex[:8]}", poll_timeout_s=0.2,
            db_retry_max_s=1.0, deferred_recheck_s=3600.0,
        ),
    )


def seed(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(SEED)


def produce(settings: Settings, *records: AvroRecord) -> None:
    codec = Codec.from_settings(settings)
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap})
    errors: list[KafkaError] = []
    topics = {"WindowStats": settings.topics.latency_windows, "Alert": settings.topics.alerts,
              "OptimizationCommand": settings.topics.commands, "OptimizationResult": settings.topics.results,
              "NotificationResult": settings.topics.notifications, "PoolSnapshot": settings.topics.pool_snapshots}
    for record in records:
        topic = topics[record.SCHEMA]
        key = getattr(record, "command_id", None) or getattr(record, "service", None) or "k"
        producer.produce(topic, key=key.encode(), value=codec.encode_record(record, topic=topic),
                         on_delivery=lambda err, _m: errors.append(err) if err else None)
    assert producer.flush(30) == 0 and not errors, errors


def window(i: int, p95: float, *, now: int, service: str = "booking-service", context: str = "booking",
           fingerprint: str | None = None, count: int = 600) -> WindowStats:
    start = (now // 60_000 - 12 + i) * 60_000
    return WindowStats(
        window_id=f"w-{service}-{context}-{fingerprint}-{start}", window_kind="tumbling", window_start=start,
        window_end=start + 60_000, service=service, fingerprint=fingerprint, context=context,
        criticality={"booking": "critical", "vendor_search": "high"}.get(context, "medium"),
        count=count, errors=3, min_ms=1.0, max_ms=p95 * 3, sum_ms=count * 5.0, p50_ms=round(p95 / 3, 1), p95_ms=p95,
        p99_ms=p95 * 2, query_text="SELECT * FROM bookings WHERE vendor_id = $1" if fingerprint else None,
        emitted_at=now,
    )


def firing_alert(now: int, *, severity: str = "critical") -> Alert:
    start = (now // 60_000 - 3) * 60_000
    return Alert(alert_id=f"alert-{uuid.uuid4().hex[:8]}", state="firing", severity=severity,  # type: ignore[arg-type]
                 kind="slo", service="booking-service", context="booking", p95_ms=85.0, threshold_ms=50.0,
                 window_start=start, window_end=start + 60_000, message="booking-service booking: p95 85.0 ms above "
                 "the SLO of 50.0 ms", created_at=now)


def advisor_command(sql: str, **kw: Any) -> OptimizationCommand:
    return sign(build_command("advisor", kw.pop("action", "create_index"), sql, **kw), KEY.encode())


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 20.0) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


@pytest.fixture
def ss(settings: Settings, scratch_db: str) -> Settings:
    """Serve settings (users, keys) on a scratch database seeded with ``SEED``."""
    seed(scratch_db)
    return serve_settings(settings, scratch_db)


@pytest.fixture
def served(ss: Settings) -> Iterator[server.Running]:
    """``dbopt serve`` running in this process with ``ss``."""
    running = server.start(ss)
    yield running
    running.close()
