"""Pool, budget, error and surge alerts from a real ``dbopt worker`` (one process for the module):

* a real pool of size N held by N+k threads running pg_sleep fires a pool alert within 30 s of
  saturation, with the default pool thresholds, and resolves after the threads let go; collect
  sees the held sessions in pg_stat_activity;
* a healthy pool beside it never alerts;
* the budget alert fires when the pools' configured maxima exceed what the server allows
  (max_connections from a real ``dbopt collect`` read);
* crafted windows on the windows topic fire error-rate and surge alerts; healthy ones stay silent.
"""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
import uuid
from typing import Callable, Iterator

import pytest
from confluent_kafka import Producer
from psycopg_pool import ConnectionPool

from streams.client import EventProducer, watch_pool
from streams.collect.agent import CollectStage
from streams.collect.core import server_snapshot
from streams.config import Settings, TopicPolicy, Topics
from streams.kafka import clients
from streams.kafka.consume import assigned_consumer
from streams.kafka.topics import ensure_topics
from streams.records import Alert, WindowStats
from streams.serde import Codec
from worker_harness import WorkerProcess, worker_env

pytestmark = pytest.mark.infra

MINUTE = 60_000


@pytest.fixture(scope="module")
def module_settings(infra: Settings) -> Iterator[Settings]:
    """Private topics (two partitions) for the whole module; deleted afterwards."""
    suffix = uuid.uuid4().hex[:8]
    topics = Topics(**{name: f"{value}.p{suffix}" for name, value in Topics().all().items()})
    settings = infra.with_overrides(topics=topics, topic_policy=TopicPolicy(partitions=2))
    ensure_topics(settings)
    yield settings
    admin = clients.admin(infra)
    present = admin.list_topics(timeout=10).topics
    names = [n for n in topics.all().values() if n in present]
    for future in admin.delete_topics(names, operation_timeout=30).values():
        future.result()


class Alerts:
    """Reads the alerts topic in the background."""

    def __init__(self, settings: Settings) -> None:
        self.codec = Codec.from_settings(settings)
        self.consumer = assigned_consumer(settings, settings.topics.alerts)
        self.seen: list[tuple[float, Alert]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            msg = self.consumer.poll(0.2)
            if msg is not None and msg.error() is None:
                self.seen.append((time.monotonic(), self.codec.decode_record(msg.value())))

    def wait_for(self, test: Callable[[Alert], bool], timeout: float) -> tuple[float, Alert]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [(t, a) for t, a in list(self.seen) if test(a)]
            if found:
                return found[0]
            time.sleep(0.2)
        raise AssertionError(f"no such alert in {timeout} s; seen: {[a for _, a in self.seen]}")

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.consumer.close()


@pytest.fixture(scope="module")
def worker(module_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    workdir = tmp_path_factory.mktemp("pool-worker")
    env = worker_env(
        module_settings, f"dbopt-pools-test-{uuid.uuid4().hex[:8]}", workdir / "data",
        DBOPT_WORKER_STORE="memory://", DBOPT_POOLS_RESOLVE_S="3",
    )
    port = int(env["DBOPT_WORKER_WEB_PORT"])
    proc = WorkerProcess(env, workdir / "worker.log")
    deadline = time.monotonic() + 90
    try:
        while True:
            proc.check_alive()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            assert time.monotonic() < deadline, (workdir / "worker.log").read_text()[-3000:]
            time.sleep(0.5)
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def alerts(module_settings: Settings, worker: WorkerProcess) -> Iterator[Alerts]:
    reader = Alerts(module_settings)
    yield reader
    reader.close()


def test_saturated_pool_alerts_within_30s_and_resolves_healthy_pool_stays_silent_budget_fires(
    module_settings: Settings, scratch_db: str, alerts: Alerts, worker: WorkerProcess
) -> None:
    settings = module_settings
    stage = CollectStage(settings.with_overrides(database_url=scratch_db))
    server = stage.server
    producers = {s: EventProducer(settings, s, instance_id=f"{s}-1") for s in
                 ("booking-service", "guest-service", "vendor-service", "analytics")}
    pools = {
        "booking-service": ConnectionPool(scratch_db, min_size=2, max_size=2, timeout=30, open=True,
                                          kwargs={"application_name": "booking-service"}),
        "guest-service": ConnectionPool(scratch_db, min_size=1, max_size=4, open=True),
        # configured far above what the server allows (max_connections minus reserved), barely used
        "vendor-service": ConnectionPool(scratch_db, min_size=1, max_size=150, open=True),
        "analytics": ConnectionPool(scratch_db, min_size=1, max_size=150, open=True),
    }
    watches = [watch_pool(pool, producers[s], interval=1.0) for s, pool in pools.items()]
    stop = threading.Event()

    def healthy() -> None:
        while not stop.is_set():
            with pools["guest-service"].connection() as conn:
                conn.execute("SELECT 1")
            stop.wait(0.05)

    def hold() -> None:
        with pools["booking-service"].connection() as conn:
            conn.execute("SELECT pg_sleep(3)")

    threads = [threading.Thread(target=healthy)]
    try:
        for pool in pools.values():
            pool.wait(10)
        # the server's own view: max_connections, reserved slots, its databases
        emits = list(stage.tick(int(time.time() * 1000)))
        producer = clients.producer(settings)
        codec = Codec.from_settings(settings)
        for emit in emits:
            producer.produce(emit.topic, key=emit.key.encode(), value=codec.encode_record(emit.record, emit.topic))
        assert producer.flush(10) == 0
        threads[0].start()
        time.sleep(2)
        saturated_at = time.monotonic()
        holders = [threading.Thread(target=hold) for _ in range(4)]  # N = 2 connections, N + 2 threads
        threads += holders
        for t in holders:
            t.start()
        time.sleep(0.5)
        # collect sees the held connections in pg_stat_activity: both active in pg_sleep
        assert stage.reader is not None
        (group,) = [g for g in server_snapshot(server, stage.reader.facts(), stage.reader.activity(), 0).connections
                    if g.application_name == "booking-service"]
        assert (group.database, group.active, group.idle) == (scratch_db.rpartition("/")[2], 2, 0)
        at, fired = alerts.wait_for(lambda a: a.kind == "pool" and a.service == "booking-service", timeout=30)
        assert at - saturated_at < 30 and fired.state == "firing"
        assert fired.pool_name == "default" and fired.metric == "utilization" and fired.p95_ms == 1.0
        assert fired.severity in ("critical", "high") and fired.context == "booking"
        assert "waiting" in fired.message
        # the advice: more than the 2 configured, but the budget (blown by the other pools) caps it there
        assert (fired.recommended_max_size == 2 and "capped by the connection budget" in fired.message) or (
            fired.recommended_max_size is None and "withheld" in fired.message
        )
        for t in holders:
            t.join(20)  # released: two rounds of pg_sleep(3)
        _, resolved = alerts.wait_for(
            lambda a: a.kind == "pool" and a.service == "booking-service" and a.state == "resolved", timeout=20
        )
        assert resolved.alert_id != fired.alert_id
        _, budget = alerts.wait_for(lambda a: a.kind == "budget", timeout=30)
        assert budget.state == "firing" and budget.service == server and budget.metric == "connections"
        facts = stage.reader.facts() if stage.reader else None
        assert facts is not None and budget.threshold_ms == facts.max_connections - facts.reserved_connections
        assert budget.p95_ms == 2 + 4 + 150 + 150
    finally:
        stop.set()
        for t in threads:
            t.join(20)
        for w in watches:
            w.stop()
        for pool in pools.values():
            pool.close()
        for p in producers.values():
            p.close()
        stage.close()
    pool_alerts = [a for _, a in alerts.seen if a.kind == "pool"]
    assert {a.service for a in pool_alerts} == {"booking-service"}  # the healthy pools never alerted
    assert [a.state for a in pool_alerts] == ["firing", "resolved"]
    worker.check_alive()


def crafted(i: int, t0: int, service: str, context: str, criticality: str, count: int, errors: int) -> WindowStats:
    start = t0 + i * MINUTE
    return WindowStats(
        window_id=f"crafted-{service}-{context}-{start}", window_kind="tumbling", window_start=start,
        window_end=start + MINUTE, service=service, context=context, criticality=criticality, count=count,
        errors=errors, min_ms=0.5, max_ms=9.0, p50_ms=1.0, p95_ms=4.0, p99_ms=8.0,
    )


def test_crafted_windows_fire_error_and_surge_alerts_healthy_ones_stay_silent(
    module_settings: Settings, alerts: Alerts
) -> None:
    settings = module_settings
    t0 = (int(time.time() * 1000) // MINUTE - 30) * MINUTE
    windows: list[WindowStats] = []
    for i in range(12):
        # payment: 4 % errors from window 3 on (limit 2 % for a critical context)
        windows.append(crafted(i, t0, "payment-service", "payment", "critical", 200, 8 if i >= 3 else 1))
        # booking: ~300 events per window, 5x in windows 7 and 8
        windows.append(crafted(i, t0, "booking-service", "booking", "critical", 1500 if i in (7, 8) else 300, 0))
        # healthy: steady traffic, a few errors
        windows.append(crafted(i, t0, "guest-service", "guest_management", "medium", 250 + i, 2))
    codec = Codec.from_settings(settings)
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap})
    topic = settings.topics.latency_windows
    for w in windows:
        producer.produce(topic, key=w.service.encode(), value=codec.encode_record(w, topic))
    assert producer.flush(10) == 0

    _, errors = alerts.wait_for(lambda a: a.kind == "errors", timeout=30)
    assert (errors.state, errors.service, errors.context, errors.metric) == ("firing", "payment-service", "payment", "error_share")
    assert errors.window_start == t0 + 4 * MINUTE and errors.p95_ms == 0.04 and errors.threshold_ms == 0.02
    # firing and resolved are keyed by their own ids, so they may sit on different partitions of the
    # alerts topic and be read in either order: each is waited for by its state
    _, surge = alerts.wait_for(lambda a: a.kind == "surge" and a.state == "firing", timeout=30)
    assert (surge.state, surge.service, surge.metric, surge.p95_ms) == ("firing", "booking-service", "events_per_window", 1500.0)
    assert surge.window_start == t0 + 8 * MINUTE and surge.baseline_ms == 300.0 and surge.season is not None
    _, resolved = alerts.wait_for(lambda a: a.kind == "surge" and a.state == "resolved", timeout=30)
    assert resolved.window_start == t0 + 10 * MINUTE
    time.sleep(2)
    traffic = [a for _, a in alerts.seen if a.kind in ("errors", "surge", "slo")]
    assert sorted((a.kind, a.service, a.state) for a in traffic) == [
        ("errors", "payment-service", "firing"), ("surge", "booking-service", "firing"),
        ("surge", "booking-service", "resolved"),
    ]
