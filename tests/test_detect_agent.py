"""Detector agent against the real broker: windows in, exactly one firing and one resolved
alert out, bad records to the DLQ, and /metrics served over HTTP by the same worker."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Iterator

import pytest
from confluent_kafka import Producer

from streams.config import Settings, TopicPolicy
from streams.kafka.consume import assigned_consumer, read_messages
from streams.kafka.topics import ensure_topics
from streams.records import Alert, DeadLetter, WindowStats
from streams.serde import Codec
from test_detect import MINUTE, T0, window as detector_window

pytestmark = pytest.mark.infra


# A minimal worker: only the detector agent and the metrics page. The memory store keeps the
# test light; the table still has its changelog topic, which is what restores state.
WORKER = textwrap.dedent(
    """
    import sys
    import faust
    from streams.app.faust_app import prepare_changelogs
    from streams.config import load_settings
    from streams.detect.agent import register
    from streams.observe.metrics import install_metrics_route

    app_id, port, datadir = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    settings = load_settings()
    app = faust.App(app_id, broker=f"kafka://{settings.kafka_bootstrap}", store="memory://",
                    web_bind="127.0.0.1", web_port=port, datadir=datadir,
                    topic_partitions=settings.topic_policy.partitions)
    register(app, settings)
    install_metrics_route(app)
    prepare_changelogs(app, settings, settings.topic_policy.partitions)  # as dbopt worker does
    sys.argv = [sys.argv[0], "worker", "-l", "warn"]
    app.main()
    """
)


def window(i: int, p95: float, kind: str = "tumbling") -> WindowStats:
    """A booking context row (no fingerprint, so only the SLO condition, 50 ms in June)."""
    return detector_window(i, p95, fingerprint=None, kind=kind)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_serving(proc: subprocess.Popen[bytes], port: int, log: Path, timeout: float = 60) -> None:
    """Wait for the worker's web server (it starts with the app); fail with its log if it dies."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"worker exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"worker not serving on port {port} after {timeout} s:\n{log.read_text()[-3000:]}")


@pytest.fixture
def small_settings(settings: Settings) -> Settings:
    small = settings.with_overrides(topic_policy=TopicPolicy(partitions=2))
    ensure_topics(small)
    return small


@contextlib.contextmanager
def running_worker(settings: Settings, workdir: Path, app_id: str) -> Iterator[int]:
    """A detector worker process for ``app_id``; yields its web port, stops it (SIGTERM) after."""
    port = free_port()
    script = workdir / "worker.py"
    script.write_text(WORKER)
    env = {
        **os.environ,
        "DBOPT_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "DBOPT_TOPIC_PARTITIONS": str(settings.topic_policy.partitions),
        **{f"DBOPT_TOPIC_{k.upper()}": v for k, v in settings.topics.all().items()},
    }
    log_path = workdir / f"worker-{port}.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, str(script), app_id, str(port), str(workdir / "data")],
            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=Path(__file__).resolve().parents[1],
        )  # fmt: skip
        try:
            wait_until_serving(proc, port, log_path)
            yield port
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


@pytest.fixture
def worker(small_settings: Settings, tmp_path: Path) -> Iterator[int]:
    with running_worker(small_settings, tmp_path, f"dbopt-detect-test-{uuid.uuid4().hex[:8]}") as port:
        yield port


def produce_windows(settings: Settings, records: list[WindowStats], extra: bytes | None = None) -> None:
    codec = Codec()
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap})
    for record in records:
        value = codec.encode_record(record, topic=settings.topics.latency_windows)
        producer.produce(settings.topics.latency_windows, key=b"booking-service", value=value)
    if extra is not None:
        producer.produce(settings.topics.latency_windows, key=b"booking-service", value=extra)
    assert producer.flush(30) == 0


def read_alerts(settings: Settings, expected: int) -> list[Alert]:
    """Wait for ``expected`` alerts, then 8 s more of silence to prove there is no extra one."""
    codec = Codec()
    consumer = assigned_consumer(settings, settings.topics.alerts)
    try:
        messages = list(read_messages(consumer, max_messages=expected, idle_timeout=60))
        messages += list(read_messages(consumer, max_messages=None, idle_timeout=8))
    finally:
        consumer.close()
    records = [codec.decode_record(m.value()) for m in messages if m.error() is None]
    alerts = [r for r in records if isinstance(r, Alert)]
    assert alerts == records
    assert [m.key().decode() for m in messages] == [a.alert_id for a in alerts]
    return alerts


def test_detector_agent_round_trip(small_settings: Settings, worker: int) -> None:
    codec = Codec()
    topics = small_settings.topics
    garbage = b"\x42 definitely not avro"
    records = [window(0, 80), window(1, 90), window(1, 90), window(2, 95), window(3, 20), window(4, 25),
               window(5, 30), window(0, 500, "hopping"), window(1, 500, "hopping")]  # fmt: skip
    produce_windows(small_settings, records, extra=garbage)

    alerts = read_alerts(small_settings, expected=2)
    assert [(a.state, a.kind, a.window_start) for a in alerts] == [
        ("firing", "slo", T0 + 1 * MINUTE),
        ("resolved", "slo", T0 + 4 * MINUTE),
    ]
    assert alerts[0].severity == "high" and alerts[0].threshold_ms == 50.0

    dlq = assigned_consumer(small_settings, topics.dlq)
    try:
        dead = [codec.decode_record(m.value()) for m in read_messages(dlq, max_messages=1, idle_timeout=30)]
    finally:
        dlq.close()
    assert len(dead) == 1 and isinstance(dead[0], DeadLetter)
    assert dead[0].original_value == garbage and dead[0].reason == "undecodable"

    with urllib.request.urlopen(f"http://127.0.0.1:{worker}/metrics", timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/plain; version=")
        text = response.read().decode()
    for name in ("dbopt_events_in_total", "dbopt_dlq_records_total", "dbopt_late_events_total",
                 "dbopt_windows_emitted_total", "dbopt_alerts_total", "dbopt_consumer_lag_messages",
                 "dbopt_processing_seconds"):  # fmt: skip
        assert f"# TYPE {name}" in text or f"# TYPE {name.removesuffix('_total')}" in text, name
    assert 'dbopt_alerts_total{severity="high",state="firing"} 1.0' in text
    assert 'dbopt_alerts_total{severity="high",state="resolved"} 1.0' in text
    assert 'dbopt_dlq_records_total{reason="undecodable"} 1.0' in text
    assert f'dbopt_processing_seconds_count{{topic="{topics.latency_windows}"}} 10.0' in text
    assert 'dbopt_consumer_lag_messages{partition="' in text


def test_restarted_detector_does_not_fire_again(small_settings: Settings, tmp_path: Path) -> None:
    """State comes back from the table's changelog: after a restart the same breach stays quiet."""
    app_id = f"dbopt-detect-test-{uuid.uuid4().hex[:8]}"
    with running_worker(small_settings, tmp_path, app_id):
        produce_windows(small_settings, [window(0, 80), window(1, 90)])
        first = read_alerts(small_settings, expected=1)
    assert [a.state for a in first] == ["firing"]
    # a re-emitted window and a further breach, then recovery, seen by a fresh process
    produce_windows(small_settings, [window(1, 90), window(2, 99), window(3, 20), window(4, 20)])
    with running_worker(small_settings, tmp_path, app_id):
        alerts = read_alerts(small_settings, expected=2)
    assert [(a.state, a.window_start) for a in alerts] == [
        ("firing", T0 + 1 * MINUTE),
        ("resolved", T0 + 4 * MINUTE),
    ]
