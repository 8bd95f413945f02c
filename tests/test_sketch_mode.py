"""The SDK's sketch mode end to end: services on real EventProducers (some in sketch mode, some in
events mode) into the real broker, ``dbopt worker`` as a child process, every window checked
against numpy over the executions the services ran."""

from __future__ import annotations

import time
import uuid
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from streams.client import EventProducer
from streams.config import Settings
from streams.sql import normalize
from worker_harness import MINUTE, WindowReader, WorkerProcess, window_key, worker_env, worker_settings

pytestmark = [pytest.mark.infra, pytest.mark.timeout(300)]
# (statement as a service runs it, context the worker classifies it into)
STATEMENTS = (
    ("SELECT * FROM bookings WHERE wedding_id = $1 AND status = $2", "booking"),
    ("SELECT id, name FROM vendors WHERE city = $1 ORDER BY rating DESC LIMIT $2", "vendor_search"),
    ("UPDATE guests SET rsvp = $1 WHERE id = $2", "guest_management"),
)
SLOW_MS = 400.0  # sketch mode: executions at least this slow go as their own events


def _executions(rng: np.random.Generator, base: int, n: int) -> list[tuple[int, int, float, bool]]:
    """(statement, event time, duration, failed), in event-time order over six minutes."""
    times = np.sort(base + rng.integers(0, 6 * MINUTE, n))
    durations = np.where(rng.random(n) < 0.01, rng.uniform(SLOW_MS, 2_000, n), rng.lognormal(2.5, 1.0, n))
    durations[rng.random(n) < 0.01] = 0.0
    return [(int(rng.integers(0, 3)), int(t), round(float(d), 3), bool(rng.random() < 0.02))
            for t, d in zip(times, durations, strict=True)]  # fmt: skip


def _oracle(runs: dict[str, list[tuple[int, int, float, bool]]]) -> dict[tuple, tuple[np.ndarray, int]]:
    """(kind, start, end, service, fingerprint or None, context) -> (durations, errors) of every window."""
    groups: dict[tuple, list[tuple[float, bool]]] = defaultdict(list)
    for service, executions in runs.items():
        for statement, t, d, failed in executions:
            sql, context = STATEMENTS[statement]
            fingerprint = normalize(sql).fingerprint
            start = t // MINUTE * MINUTE
            windows = [("tumbling", start, start + MINUTE)]
            windows += [("hopping", end - 5 * MINUTE, end) for end in range(start + MINUTE, start + 6 * MINUTE, MINUTE)]
            for kind, lo, hi in windows:
                for name in (fingerprint, None):
                    groups[(kind, lo, hi, service, name, context)].append((d, failed))
    return {k: (np.array([d for d, _ in v]), sum(f for _, f in v)) for k, v in groups.items()}


def test_windows_are_exact_with_sketches_and_events_mixed(settings: Settings, tmp_path: Path) -> None:
    settings = worker_settings(settings, partitions=2)
    rng = np.random.default_rng(21)
    base = (int(time.time() * 1000) - 20 * MINUTE) // (5 * MINUTE) * (5 * MINUTE)
    runs = {f"svc-{i}": _executions(rng, base, 6_000) for i in range(4)}
    # svc-0, svc-1: sketch mode, a 7 s interval (cut at every minute); svc-1 counts its errors in the
    # sketches instead of sending them as events; svc-2, svc-3: one event per execution
    modes = {
        "svc-0": {"sdk_mode": "sketch", "sdk_flush_interval_ms": 7_000, "sdk_event_above_ms": SLOW_MS},
        "svc-1": {"sdk_mode": "sketch", "sdk_event_above_ms": SLOW_MS, "sdk_error_events": False},
        "svc-2": {}, "svc-3": {},
    }  # fmt: skip
    producers = {s: EventProducer(settings.with_overrides(**modes[s]), s, instance_id="i-1") for s in runs}
    # the services run side by side, in event-time order; each has its own producer, whose batches
    # reach the broker in any order: flushing every 2 s of event time keeps them within the grace
    flushed = base
    for t, service, statement, d, failed in sorted((t, s, st, d, f) for s, ex in runs.items() for st, t, d, f in ex):
        if t - flushed >= 2_000:
            for producer in producers.values():
                producer.flush()
            flushed = t
        producers[service].emit_statement(STATEMENTS[statement][0], d, 1, error="57014" if failed else None,
                                          event_time_ms=t)  # fmt: skip
    for producer in producers.values():
        producer.close(timeout=30)
        assert producer.sent == 6_000 and not producer.dropped  # executions delivered, events or sketched
    sketched = {s: producers[s]._sketches.sketches_sent for s in ("svc-0", "svc-1")}  # type: ignore[union-attr]  # noqa: SLF001
    assert all(50 < n < 1_000 for n in sketched.values()), sketched  # far fewer records than executions

    expected = _oracle(runs)
    env = worker_env(settings, f"t-sketch-{uuid.uuid4().hex[:8]}", tmp_path / "data")
    worker = WorkerProcess(env, tmp_path / "worker.log")
    reader = WindowReader(settings)
    try:
        reader.wait_for(expected.keys(), timeout=180, workers=[worker])
        reader.poll(3)
        got = {window_key(r): r for r in reader.first.values()}
        assert set(got) == set(expected), (len(set(expected) - set(got)), len(set(got) - set(expected)))
        for key, (values, errors) in expected.items():
            record = got[key]
            assert (record["count"], record["errors"]) == (values.size, errors), key
            assert (record["min_ms"], record["max_ms"]) == (values.min(), values.max()), key
            assert record["sum_ms"] == pytest.approx(values.sum(), rel=1e-9), key
            for q, field in ((0.5, "p50_ms"), (0.95, "p95_ms"), (0.99, "p99_ms")):
                exact = float(np.quantile(values, q, method="lower"))
                assert abs(record[field] - exact) <= 0.005 * exact + 1e-9, (key, field, record[field], exact)
        assert len(reader.all) == len(expected)  # each window once
    finally:
        reader.close()
        assert worker.stop() == 0
