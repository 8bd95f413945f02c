"""Scale-out stays exact: two ``dbopt worker`` processes in one group, with partitions moving
between them in the middle of the stream (a second worker joins, later the first one leaves),
emit the same windows as one worker over the same events, and both match numpy."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pytest
from confluent_kafka.admin import AdminClient

from faults_harness import window_reader
from streams.config import Settings
from streams.kafka.topics import ensure_topics
from worker_harness import (
    MINUTE,
    QUANTILES,
    Event,
    WorkerProcess,
    base_time,
    expected_windows,
    produce,
    wait_for_members,
    window_key,
    worker_env,
    worker_settings,
)

pytestmark = [pytest.mark.infra, pytest.mark.timeout(420)]
# a partition pauses between the phases below; it must not count as idle meanwhile
IDLE_MS = "20000"


def _events(n: int) -> list[Event]:
    rng = np.random.default_rng(17)
    base = base_time(40)
    times = np.sort(base + rng.integers(0, 9 * MINUTE, n))
    services = rng.integers(0, 8, n)
    durations = rng.lognormal(2.0, 1.2, n)
    return [Event(f"svc-{s}", int(i % 3), int(t), round(float(d), 3), error=bool(i % 40 == 0))
            for i, (t, s, d) in enumerate(zip(times, services, durations, strict=True))]  # fmt: skip


def test_two_workers_with_rebalances_emit_what_one_worker_emits(settings: Settings, tmp_path: Path) -> None:
    settings = worker_settings(settings, partitions=4)
    # the same input, two outputs: one worker (A) and two workers in one group (B)
    settings_b = settings.with_overrides(topics=settings.topics.with_overrides(
        latency_windows=settings.topics.latency_windows + "-b", dlq=settings.topics.dlq + "-b"))  # fmt: skip
    ensure_topics(settings_b)
    events = _events(30_000)
    thirds = [events[: len(events) // 3], events[len(events) // 3 : 2 * len(events) // 3], events[2 * len(events) // 3 :]]
    app_a, app_b = f"t-one-{uuid.uuid4().hex[:8]}", f"t-two-{uuid.uuid4().hex[:8]}"

    def start(s: Settings, app_id: str, name: str) -> WorkerProcess:
        env = worker_env(s, app_id, tmp_path / f"data-{name}", DBOPT_WINDOW_IDLE_TIMEOUT_MS=IDLE_MS)
        return WorkerProcess(env, tmp_path / f"{name}.log")

    one = start(settings, app_a, "one")
    b1 = start(settings_b, app_b, "b1")
    readers = [window_reader(settings), window_reader(settings_b)]  # a just-created topic may not be listed yet
    b2 = None
    try:
        wait_for_members(settings, app_b, 1, [one, b1])
        produce(settings, thirds[0])
        readers[1].poll(2)
        b2 = start(settings_b, app_b, "b2")  # joins: partitions move from b1 to b2 (restored from the changelog)
        owned = wait_for_members(settings, app_b, 2, [one, b1, b2])
        assert owned[0].isdisjoint(owned[1]) and owned[0] | owned[1] == {0, 1, 2, 3}
        produce(settings, thirds[1])
        readers[1].poll(2)
        assert b1.stop() == 0  # leaves: b2 takes every partition
        wait_for_members(settings, app_b, 1, [one, b2])
        produce(settings, thirds[2])
        expected = expected_windows(events)
        for reader in readers:
            reader.wait_for(expected.keys(), timeout=150, workers=[one, b2])
        for reader in readers:
            reader.poll(2)
        alone = {window_key(r): r for r in readers[0].first.values()}
        shared = {window_key(r): r for r in readers[1].first.values()}
        assert set(alone) == set(shared) == set(expected)
        fields = ("count", "errors", "rows", "min_ms", "max_ms", "p50_ms", "p95_ms", "p99_ms")
        for key, values in expected.items():
            a, b = alone[key], shared[key]
            assert [a[f] for f in fields] == [b[f] for f in fields], key  # the same bins, the same figures
            assert a["sum_ms"] == pytest.approx(b["sum_ms"], rel=1e-12)
            assert a["count"] == values.size and a["min_ms"] == values.min() and a["max_ms"] == values.max()
            for q, field in QUANTILES:
                exact = float(np.quantile(values, q, method="lower"))
                assert abs(a[field] - exact) <= 0.005 * exact + 1e-9, (key, field)
    finally:
        for reader in readers:
            reader.close()
        for w in (one, b1, b2):
            if w is not None:
                w.stop()
        admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
        for future in admin.delete_topics([settings_b.topics.latency_windows, settings_b.topics.dlq]).values():
            future.result()
