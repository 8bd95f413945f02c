"""What the worker benchmarks share: settings, the pre-filled topic, the worker's environment."""

from __future__ import annotations

import os
import socket
import tempfile
import time
import uuid

import numpy as np
from confluent_kafka import Producer, TopicPartition
from confluent_kafka.admin import NewTopic

from streams.config import Settings, Topics, load_settings
from streams.kafka import clients
from streams.serde import Codec

# the job every reader of the comparison does: these statements, 20 services x 7 fingerprints
QUERIES = (
    ("SELECT * FROM bookings WHERE id = $1", ["bookings"]),
    ("SELECT * FROM vendors WHERE city = $1 ORDER BY rating DESC LIMIT $2", ["vendors"]),
    ("UPDATE guests SET rsvp = $1 WHERE id = $2", ["guests"]),
    ("INSERT INTO payments (booking_id, amount) VALUES ($1, $2)", ["payments"]),
)
SERVICES = 20
FINGERPRINTS = 7
# event times lie within the last days: the worker accepts events this old
MAX_AGE_MS = 30 * 24 * 3600 * 1000


def bench_settings() -> Settings:
    """The local servers' settings with the default topic names (no test overrides)."""
    return load_settings().with_overrides(topics=Topics())


def total(settings: Settings, topic: str) -> int:
    """Records in ``topic`` (sum of the partitions' end offsets; 0 when it does not exist)."""
    consumer = clients.consumer(settings, f"bench-{uuid.uuid4().hex}")
    try:
        meta = consumer.list_topics(topic, timeout=10).topics.get(topic)
        if meta is None or meta.error is not None:
            return 0
        return sum(consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in meta.partitions)
    finally:
        consumer.close()


def ensure_topic(settings: Settings, topic: str, partitions: int = 6) -> None:
    """Create ``topic`` unless it exists."""
    admin = clients.admin(settings)  # kept alive until the topic exists
    if topic not in admin.list_topics(timeout=10).topics:
        admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])[topic].result()


def send(producer: Producer, topic: str, key: bytes, value: bytes) -> None:
    """Produce one record, serving delivery reports while the producer's queue is full."""
    while True:
        try:
            producer.produce(topic, key=key, value=value)
            return
        except BufferError:
            producer.poll(0.5)


def fill(settings: Settings, topic: str, events: int, partitions: int = 6) -> int:
    """Fill ``topic`` with ``events`` QueryEvents once (zstd, keyed by service, as the SDK sends
    them; event times spread over one hour, two hours ago); returns the records it holds."""
    ensure_topic(settings, topic, partitions)
    have = total(settings, topic)
    if have >= events:
        print(f"reusing {topic}: {have} events")
        return have
    codec = Codec.from_settings(settings)
    producer = clients.producer(settings, linger_ms=50, compression_type="zstd")
    rng = np.random.default_rng(1)
    start = (int(time.time() * 1000) - 2 * 3600 * 1000) // 60_000 * 60_000
    n = events - have
    times = np.sort(start + rng.integers(0, 3600 * 1000, n))
    durations = rng.lognormal(2.0, 1.0, n)
    print(f"filling {topic} with {n} events ...")
    for i in range(n):
        service = f"service-{i % SERVICES}"
        text, tables = QUERIES[i % len(QUERIES)]
        record = {
            "event_id": uuid.uuid4().hex, "service": service, "instance_id": "bench", "event_time": int(times[i]),
            "fingerprint": f"{i % FINGERPRINTS:016x}", "query_text": text, "statement_type": text.split()[0],
            "tables": tables, "duration_ms": float(durations[i]), "rows": 1, "error": None,
        }  # fmt: skip
        send(producer, topic, service.encode(), codec.encode("QueryEvent", record, topic=topic))
        producer.poll(0)
    producer.flush()
    return total(settings, topic)


def committed(settings: Settings, group: str, topic: str) -> int:
    """Offsets ``group`` has committed on ``topic``, summed over its partitions."""
    consumer = clients.consumer(settings, group)
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        offsets = consumer.committed([TopicPartition(topic, p) for p in meta.partitions], timeout=10)
        return sum(max(tp.offset, 0) for tp in offsets)
    finally:
        consumer.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def worker_env(settings: Settings, topic: str, **extra: str) -> tuple[dict[str, str], str]:
    """The environment of a ``dbopt worker`` reading ``topic`` with a fresh app id (consumer group,
    state) and fresh output topics, so it drains the whole topic; and that app id."""
    suffix = uuid.uuid4().hex[:8]
    app_id = f"bench-worker-{suffix}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DBOPT_")}
    env.update(
        DBOPT_KAFKA_BOOTSTRAP=settings.kafka_bootstrap,
        DBOPT_TOPIC_QUERY_EVENTS=topic,
        DBOPT_TOPIC_LATENCY_WINDOWS=f"dbopt.bench.latency-windows.{suffix}",
        DBOPT_TOPIC_DLQ=f"dbopt.bench.dlq.{suffix}",
        DBOPT_TOPIC_ALERTS=f"dbopt.bench.alerts.{suffix}",
        DBOPT_WORKER_APP_ID=app_id,
        DBOPT_WORKER_DATA_DIR=tempfile.mkdtemp(prefix="dbopt-bench-"),
        DBOPT_WORKER_WEB_PORT=str(free_port()),
        DBOPT_INGEST_MAX_AGE_MS=str(MAX_AGE_MS),
    )
    env.update(extra)
    return env, app_id
