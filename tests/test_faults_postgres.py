"""Fault: PostgreSQL goes away for 60 s while commands arrive.

The database is a private cluster (:func:`faults_harness.private_postgres`, never the shared one);
the executor, ``dbopt collect`` and the advisor run against it, on the shared broker with this
test's own topics. Expected: no command lost, none applied twice, each applied once the database is
back; the collector reports the outage (``up=false`` snapshots) and recovers; the advisor reports it
(warnings) and saves its state once the database is back.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable

import psycopg
import pytest

from faults_harness import private_postgres, start_postgres, stop_postgres
from streams.advise.agent import run_advisor
from streams.collect.agent import CollectStage
from streams.config import Settings
from streams.execute.agent import run_executor
from streams.execute.executor import Executor
from streams.kafka.consume import assigned_consumer
from streams.kafka.health import Health
from streams.kafka.loop import run_stage
from streams.records import OptimizationResult, ServerSnapshot, WindowStats
from streams.serde import Codec
from test_executor import command, committed_offset, exec_settings, send

pytestmark = [pytest.mark.faults, pytest.mark.timeout(420)]
OUTAGE_S = 60.0
COLUMNS = 8


class Reader:
    """Everything on one topic, decoded, read as it arrives."""

    def __init__(self, settings: Settings, topic: str) -> None:
        self.codec = Codec.from_settings(settings)
        self.consumer = assigned_consumer(settings, topic)
        self.records: list[object] = []

    def poll(self, seconds: float) -> list[object]:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            msg = self.consumer.poll(0.2)
            if msg is not None and msg.error() is None:
                self.records.append(self.codec.decode_record(msg.value()))
        return self.records

    def wait(self, done: Callable[[list[object]], bool], timeout: float) -> list[object]:
        deadline = time.monotonic() + timeout
        while not done(self.records) and time.monotonic() < deadline:
            self.poll(0.5)
        return self.records

    def close(self) -> None:
        self.consumer.close()


def _applied(records: list[object]) -> Counter[str]:
    return Counter(r.command_id for r in records if isinstance(r, OptimizationResult) and r.status == "applied")


def test_postgres_down_60s_commands_applied_once_collector_and_advisor_recover(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    with private_postgres() as cluster:
        url = cluster.url
        with psycopg.connect(url, autocommit=True) as conn:
            cols = ", ".join(f"c{i} int NOT NULL DEFAULT 0" for i in range(COLUMNS))
            conn.execute(f"CREATE TABLE bookings (id serial PRIMARY KEY, {cols})")
            conn.execute("INSERT INTO bookings (c0) SELECT g FROM generate_series(1, 1000) g")
        xs = exec_settings(settings, url, stabilize_critical_s=0.0, stabilize_support_s=0.0, stabilize_rest_s=0.0)
        xs = xs.with_overrides(
            collect=xs.collect.with_overrides(interval_s=1.0, retry_max_s=2.0, name="faults-pg"),
            advise=xs.advise.with_overrides(consumer_group=f"advisor-{uuid.uuid4().hex[:8]}"),
        )
        from streams.kafka.topics import ensure_topics

        ensure_topics(xs)
        commands = [command(f"CREATE INDEX CONCURRENTLY dbopt_idx_c{i} ON bookings (c{i})") for i in range(COLUMNS)]
        stop = threading.Event()
        executor = Executor(xs)
        executor.stop = stop
        collect_health, advisor_health = Health("collect"), Health("advisor")
        threads = [
            threading.Thread(target=run_executor, args=(executor,), daemon=True),
            threading.Thread(target=run_stage, args=(xs, CollectStage(xs, collect_health)), daemon=True,
                             kwargs={"group_id": f"collect-{uuid.uuid4().hex[:8]}", "stop": stop,
                                     "health": collect_health, "poll_timeout_s": 0.5}),
            threading.Thread(target=run_advisor, args=(xs, stop, advisor_health), daemon=True),
        ]
        for thread in threads:
            thread.start()
        results, snapshots = Reader(xs, xs.topics.results), Reader(xs, xs.topics.server_snapshots)
        try:
            assert advisor_health.ready_event.wait(60)
            send(xs, *commands[:3])
            results.wait(lambda r: len(_applied(r)) == 3, timeout=60)
            assert len(_applied(results.records)) == 3

            stop_postgres(cluster)
            down_at = time.monotonic()
            # while it is down: more commands, and a window that changes the advisor's state
            send(xs, *commands[3:])
            window = WindowStats(window_id="w-outage", window_kind="tumbling", window_start=0, window_end=60_000,
                                 service="booking-service", fingerprint="fp-outage", context="booking", count=50,
                                 errors=0, min_ms=1.0, max_ms=9.0, p50_ms=3.0, p95_ms=8.0, p99_ms=9.0)
            from test_verify_io import _produce

            _produce(xs, xs.topics.latency_windows, [window], "booking-service")
            time.sleep(max(0.0, OUTAGE_S - 5 - (time.monotonic() - down_at)))
            assert len(_applied(results.poll(0.5))) == 3  # nothing applied while it is down ...
            assert committed_offset(xs) < len(commands) - 1  # ... and the waiting command is not committed
            assert all(t.is_alive() for t in threads)
            time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - down_at)))
            start_postgres(cluster)

            results.wait(lambda r: len(_applied(r)) == len(commands), timeout=120)
            snapshots.wait(lambda s: any(isinstance(x, ServerSnapshot) and x.up for x in s[-3:]), timeout=30)
            time.sleep(3)  # the advisor's next checkpoint
        finally:
            stop.set()
            for thread in threads:
                thread.join(30)
            results.close()
            snapshots.close()

        # none lost, none applied twice, every one applied once the database was back
        applied = _applied(results.records)
        assert applied == Counter({c.command_id: 1 for c in commands})
        assert not [r for r in results.records if isinstance(r, OptimizationResult) and r.status != "applied"]
        with psycopg.connect(url) as conn:
            audit = conn.execute("SELECT status, count(*) FROM dbopt.dbopt_audit GROUP BY 1").fetchall()
            valid = conn.execute("SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                                 "WHERE c.relname LIKE 'dbopt_idx_c%' AND i.indisvalid").fetchone()
            state = conn.execute("SELECT state::text FROM dbopt.dbopt_advisor_state WHERE group_id = %s",
                                 (xs.advise.consumer_group,)).fetchone()
        assert audit == [("applied", len(commands))] and valid == (len(commands),)
        # the collector reported the outage and recovered by itself
        ups = [s.up for s in snapshots.records if isinstance(s, ServerSnapshot)]
        assert False in ups and ups[-1] is True and ups.index(False) < len(ups) - 1
        down = next(s for s in snapshots.records if isinstance(s, ServerSnapshot) and not s.up)
        assert down.error
        # the advisor reported it and saved the state the outage held back (the window's fingerprint)
        assert any("PostgreSQL unavailable for the advisor" in r.getMessage() for r in caplog.records)
        assert state is not None and "fp-outage" in state[0]
        # the executor reported it too
        assert any("PostgreSQL unavailable" in r.getMessage() and r.name == "dbopt.executor" for r in caplog.records)
