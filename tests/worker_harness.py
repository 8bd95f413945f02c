"""Helpers of the worker tests: run ``dbopt worker`` as a real process, produce QueryEvents,
read the emitted windows, and the numpy oracle of what every window must hold."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from streams.config import Settings, TopicPolicy
from streams.kafka.consume import assigned_consumer
from streams.kafka.topics import ensure_topics
from streams.serde import Codec

# (fingerprint, normalized text, tables, expected context): the oracle's own classification
QUERIES = (
    ("fp-booking", "SELECT * FROM bookings WHERE id = $1", ["bookings"], "booking"),
    ("fp-vendor", "SELECT * FROM vendors WHERE city = $1", ["vendors"], "vendor_search"),
    ("fp-guest", "UPDATE guests SET rsvp = $1 WHERE id = $2", ["guests"], "guest_management"),
)
MINUTE = 60_000
QUANTILES = ((0.5, "p50_ms"), (0.95, "p95_ms"), (0.99, "p99_ms"))
ACCURACY = 0.01  # the sketch's 0.5 % relative accuracy, with a margin


@dataclass(frozen=True)
class Event:
    service: str
    query: int  # index into QUERIES
    event_time: int
    duration_ms: float
    error: bool = False

    def record(self) -> dict[str, Any]:
        fingerprint, text, tables, _ = QUERIES[self.query]
        return {
            "event_id": str(uuid.uuid4()),
            "service": self.service,
            "instance_id": "test-1",
            "event_time": self.event_time,
            "fingerprint": fingerprint,
            "query_text": text,
            "statement_type": text.split()[0],
            "tables": tables,
            "duration_ms": self.duration_ms,
            "rows": 1,
            "error": "57014" if self.error else None,
        }


def worker_settings(settings: Settings, partitions: int) -> Settings:
    """The test's topics with ``partitions`` partitions, created on the broker."""
    settings = settings.with_overrides(topic_policy=TopicPolicy(partitions=partitions))
    ensure_topics(settings)
    return settings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker_env(settings: Settings, app_id: str, data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DBOPT_")}
    env.update(
        {
            "DBOPT_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
            "DBOPT_TOPIC_PARTITIONS": str(settings.topic_policy.partitions),
            "DBOPT_WORKER_APP_ID": app_id,
            "DBOPT_WORKER_DATA_DIR": str(data_dir),
            "DBOPT_WORKER_WEB_PORT": str(free_port()),
            "DBOPT_WINDOW_IDLE_TIMEOUT_MS": "2000",
            "DBOPT_WORKER_TICK_INTERVAL_MS": "500",
            "DBOPT_INGEST_MAX_AGE_MS": str(6 * 3600 * 1000),
            "DBOPT_WORKER_BATCH_WITHIN_MS": "100",
        }
    )
    for name, topic in settings.topics.all().items():
        env[f"DBOPT_TOPIC_{name.upper()}"] = topic
    env.update(extra)
    return env


class WorkerProcess:
    """``dbopt worker`` in a child process, its output in ``log``."""

    def __init__(self, env: dict[str, str], log: Path, *options: str) -> None:
        """``options``: the worker's command-line options (default: warnings and errors only)."""
        self.log = log
        self._out = log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "worker", *(options or ("--log-level", "warning"))],
            env=env,
            stdout=self._out,
            stderr=subprocess.STDOUT,
        )

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        self._out.close()

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM, and the exit status (SIGKILL if it does not stop in time)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        self._out.close()
        return self.proc.returncode

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise AssertionError(f"worker exited with {self.proc.returncode}:\n{self.log.read_text()[-4000:]}")


def produce(settings: Settings, events: Iterable[Event], raw: Iterable[tuple[bytes, bytes]] = ()) -> int:
    """Send events keyed by service (and ``raw`` (key, value) records as they are)."""
    codec = Codec.from_settings(settings)
    topic = settings.topics.query_events
    # zstd like the SDK: the worker must read compressed batches
    producer = Producer(
        {"bootstrap.servers": settings.kafka_bootstrap, "linger.ms": 20, "enable.idempotence": True, "compression.type": "zstd"}
    )
    n = 0
    for event in events:
        producer.produce(topic, key=event.service.encode(), value=codec.encode("QueryEvent", event.record(), topic=topic))
        n += 1
        if n % 10_000 == 0:
            producer.flush()
    for key, value in raw:
        producer.produce(topic, key=key, value=value)
    assert producer.flush(30) == 0
    return n


class WindowReader:
    """Reads the latency-windows topic from the beginning; keeps the FIRST record per window_id."""

    def __init__(self, settings: Settings) -> None:
        self.codec = Codec.from_settings(settings)
        self.consumer = assigned_consumer(settings, settings.topics.latency_windows)
        self.first: dict[str, dict[str, Any]] = {}
        self.all: list[dict[str, Any]] = []

    def poll(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            msg = self.consumer.poll(0.2)
            if msg is None or msg.error():
                continue
            record = self.codec.decode(msg.value()).record
            self.all.append(record)
            self.first.setdefault(record["window_id"], record)

    def keys(self) -> set[tuple]:
        return {window_key(r) for r in self.first.values()}

    def wait_for(self, keys: Iterable[tuple], timeout: float, workers: Iterable[WorkerProcess] = ()) -> None:
        """Read until every window of ``keys`` arrived (or ``timeout``), failing if a worker died."""
        wanted = set(keys)
        deadline = time.monotonic() + timeout
        while not wanted <= self.keys() and time.monotonic() < deadline:
            for w in workers:
                w.check_alive()
            self.poll(1.0)

    def close(self) -> None:
        self.consumer.close()


def expected_windows(
    events: Iterable[Event], tumbling: int = MINUTE, hop: int = MINUTE, hopping: int = 5 * MINUTE
) -> dict[tuple, np.ndarray]:
    """Oracle: (kind, start, end, service, fingerprint or None, context) -> the durations it holds."""
    groups: dict[tuple, list[float]] = defaultdict(list)
    for e in events:
        fingerprint, _, _, context = QUERIES[e.query]
        windows = [("tumbling", e.event_time // tumbling * tumbling, e.event_time // tumbling * tumbling + tumbling)]
        end = e.event_time // hop * hop + hop
        while end - hopping <= e.event_time:
            windows.append(("hopping", end - hopping, end))
            end += hop
        for kind, start, stop in windows:
            groups[(kind, start, stop, e.service, fingerprint, context)].append(e.duration_ms)
            groups[(kind, start, stop, e.service, None, context)].append(e.duration_ms)
    return {k: np.asarray(v) for k, v in groups.items()}


def window_key(record: dict[str, Any]) -> tuple:
    return (
        record["window_kind"], record["window_start"], record["window_end"],
        record["service"], record["fingerprint"], record["context"],
    )  # fmt: skip


def base_time(minutes_ago: int = 40) -> int:
    """The 5-minute boundary at or before ``minutes_ago`` minutes ago: where a test's event times start."""
    return (int(time.time() * 1000) - minutes_ago * MINUTE) // (5 * MINUTE) * (5 * MINUTE)


def known_latencies(rng: np.random.Generator, base: int, services: int, minutes: int, n: int) -> list[Event]:
    """Events over ``minutes`` from ``base`` in event-time order (so no event is late), one latency
    distribution per service (lognormal, bimodal, uniform, exponential), every 50th an error."""
    draws = (
        lambda k: rng.lognormal(2.0, 1.0, k),
        lambda k: np.where(rng.random(k) < 0.7, rng.normal(5, 1, k), rng.normal(300, 30, k)).clip(0.05),
        lambda k: rng.uniform(0.5, 250, k),
        lambda k: rng.exponential(40, k),
    )
    times = np.sort(base + rng.integers(0, minutes * MINUTE, n))
    services_of = rng.integers(0, services, n)
    queries = rng.integers(0, 3, n)
    durations = {s: iter(draws[s % 4](n)) for s in range(services)}
    return [
        Event(f"svc-{s}", int(q), int(t), round(float(next(durations[s])), 3), error=bool(i % 50 == 0))
        for i, (t, s, q) in enumerate(zip(times, services_of, queries, strict=True))
    ]


def _summary(keys: set[tuple]) -> dict[str, list[tuple[object, int]]]:
    """What a failure says about ``keys`` (window keys): how many per (kind, end) and per service —
    enough to tell a partition that stopped closing from a lost close."""
    by_end = Counter((key[0], key[2]) for key in keys)
    by_service = Counter(key[3] for key in keys)
    return {"by kind and end": sorted(by_end.items())[:20], "by service": sorted(by_service.items())}


def assert_windows_match(
    first: Iterable[dict[str, Any]], expected: dict[tuple, np.ndarray], accuracy: float = ACCURACY
) -> None:
    """``first`` (the first record per window_id) holds every expected window and no other: the exact
    count, min, max and sum, p50/p95/p99 within ``accuracy`` of numpy's exact order statistics
    (``method="lower"``, docs/windows.md)."""
    got = {window_key(r): r for r in first}
    missing, extra = set(expected) - set(got), set(got) - set(expected)
    assert not missing and not extra, (len(missing), len(extra), _summary(missing), _summary(extra))
    for key, values in expected.items():
        record = got[key]
        assert record["count"] == values.size, key
        assert record["min_ms"] == values.min() and record["max_ms"] == values.max(), key
        assert record["sum_ms"] == pytest.approx(values.sum(), rel=1e-9)
        for q, field in QUANTILES:
            exact = float(np.quantile(values, q, method="lower"))
            assert abs(record[field] - exact) <= accuracy * exact, (key, field, record[field], exact)


def group_partitions(settings: Settings, group: str) -> list[set[int]]:
    """The query-events partitions each member of consumer group ``group`` holds now."""
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    description = admin.describe_consumer_groups([group])[group].result(timeout=10)
    topic = settings.topics.query_events
    return [{tp.partition for tp in m.assignment.topic_partitions if tp.topic == topic} for m in description.members]


def wait_for_members(settings: Settings, group: str, count: int, workers: Sequence[WorkerProcess]) -> list[set[int]]:
    """The partitions of each member once ``group`` has ``count`` members, each with partitions (90 s
    at most; fails at once if a worker died)."""
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        for w in workers:
            w.check_alive()
        owned = group_partitions(settings, group)
        if len(owned) == count and all(owned):
            return owned
        time.sleep(0.5)
    raise AssertionError(f"group {group} never had {count} members with partitions: {group_partitions(settings, group)}")
