"""The closed loop, end to end, every part real and in its own process:

simulator (SDK) -> Kafka -> dbopt worker (windows, detector) -> alert -> dbopt advisor
(pglast + HypoPG) -> signed command -> dbopt executor -> CREATE INDEX CONCURRENTLY on the
index-less demo database -> the booking p95 falls under its SLO.

The demo data is smaller than the product default to keep the suite fast, so the booking
SLO is set from the slow query's measured latency on this machine (a third of it): the
breach is real, and so must be the recovery.
"""

from __future__ import annotations

import secrets
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest

from streams.config import Settings
from streams.demo.load import init_demo_db
from streams.demo.workload import SLOW_BOOKING_QUERY
from streams.kafka.consume import assigned_consumer
from streams.serde import Codec
from worker_harness import WorkerProcess, worker_env, worker_settings

BOOKINGS = 400_000
WINDOW_MS = 5_000


def slow_query_ms(url: str) -> float:
    """Median client-side latency of the simulator's slow booking query, no index."""
    samples = []
    with psycopg.connect(url) as conn:
        for vendor in range(1, 8):
            start = time.perf_counter()
            conn.execute(SLOW_BOOKING_QUERY.sql, (vendor, "2026-01-01")).fetchall()
            samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


def dbopt_index_state(url: str) -> list[tuple[str, bool, bool]]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT c.relname, i.indisvalid, i.indisready FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "WHERE i.indrelid = 'bookings'::regclass AND c.relname LIKE 'dbopt\\_idx\\_%'"
        ).fetchall()


class Child:
    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.log = log_dir / f"{name}.log"
        self._out = self.log.open("ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "streams.cli", *argv], env=env,
                                     stdout=self._out, stderr=subprocess.STDOUT)

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise AssertionError(f"{self.name} exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._out.close()


@pytest.mark.timeout(420)
def test_slow_booking_query_is_fixed_by_a_verified_index(settings: Settings, scratch_db: str, tmp_path: Path) -> None:
    init_demo_db(settings, scratch_db, BOOKINGS, say=lambda *_: None)
    before_ms = slow_query_ms(scratch_db)
    assert before_ms >= 6, f"the slow booking query takes only {before_ms:.1f} ms here; the loop needs a real breach"
    slo_ms = before_ms / 3
    assert dbopt_index_state(scratch_db) == []

    settings = worker_settings(settings, partitions=2)
    env = worker_env(
        settings, f"e2e-{uuid.uuid4().hex[:8]}", tmp_path / "worker",
        DBOPT_DATABASE_URL=scratch_db,
        DBOPT_COMMAND_KEY=secrets.token_hex(16),
        DBOPT_FREEZE_WEEKDAYS="",
        DBOPT_SLO_P95_MS=f'{{"booking": {slo_ms:.3f}}}',
        DBOPT_WINDOW_TUMBLING_MS=str(WINDOW_MS),
        DBOPT_WINDOW_HOP_MS=str(WINDOW_MS),
        DBOPT_WINDOW_HOPPING_MS=str(5 * WINDOW_MS),
        DBOPT_WINDOW_GRACE_MS="1000",
        DBOPT_DETECT_MIN_SAMPLES="5",
        DBOPT_ADVISOR_GROUP=f"e2e-advisor-{uuid.uuid4().hex[:6]}",
        DBOPT_EXECUTOR_GROUP=f"e2e-executor-{uuid.uuid4().hex[:6]}",
        DBOPT_AUDIT_SCHEMA="dbopt_e2e",
    )
    codec = Codec.from_settings(settings)
    watched = {
        name: assigned_consumer(settings, topic)
        for name, topic in (("windows", settings.topics.latency_windows), ("alerts", settings.topics.alerts),
                            ("results", settings.topics.results))
    }
    children: list[Any] = []
    try:
        children.append(WorkerProcess(env, tmp_path / "worker.log"))
        children.append(Child("advisor", ["advisor"], env, tmp_path))
        children.append(Child("executor", ["executor"], env, tmp_path))
        time.sleep(8)  # advisor and executor start at the end of their topics: let them get there
        children.append(Child("simulate", ["simulate", "--profile", "off-season", "--services", "booking",
                                           "--rate", "25", "--duration", "300", "--database-url", scratch_db],
                              env, tmp_path))

        seen: dict[str, list[dict[str, Any]]] = {name: [] for name in watched}
        applied_at: int | None = None
        recovered: dict[str, Any] | None = None
        deadline = time.monotonic() + 300
        while recovered is None and time.monotonic() < deadline:
            for child in children:
                child.check_alive()
            for name, consumer in watched.items():
                msg = consumer.poll(0.3)
                if msg is None or msg.error():
                    continue
                record = codec.decode(msg.value()).record
                seen[name].append(record)
                if name == "results" and record["status"] == "applied" and applied_at is None:
                    applied_at = record["finished_at"]
                if (name == "windows" and applied_at is not None and record["context"] == "booking"
                        and record["fingerprint"] is None and record["window_kind"] == "tumbling"
                        and record["service"] == "booking-service" and record["window_start"] > applied_at
                        and record["count"] >= 5):
                    recovered = record

        booking_rows = [r for r in seen["windows"] if r["context"] == "booking" and r["fingerprint"] is None
                        and r["window_kind"] == "tumbling" and r["service"] == "booking-service"]
        firing = [a for a in seen["alerts"] if a["state"] == "firing" and a["context"] == "booking"]
        diagnostics = (f"windows={[(r['window_start'], r['count'], round(r['p95_ms'], 1)) for r in booking_rows]} "
                       f"alerts={[(a['state'], a['kind'], a['fingerprint']) for a in seen['alerts']]} "
                       f"results={[(r['status'], r['reason']) for r in seen['results']]}")
        # the breach was real: windows over the SLO, and an alert fired for it
        assert any(r["p95_ms"] > slo_ms for r in booking_rows), diagnostics
        assert firing, diagnostics
        # the executor applied an index that the catalog shows valid
        assert applied_at is not None, diagnostics
        state = dbopt_index_state(scratch_db)
        assert state and all(valid and ready for _, valid, ready in state), state
        # and a full window after it is under the SLO
        assert recovered is not None, diagnostics
        assert recovered["p95_ms"] <= slo_ms, diagnostics
    finally:
        for child in reversed(children):
            child.stop()
        for consumer in watched.values():
            consumer.close()
