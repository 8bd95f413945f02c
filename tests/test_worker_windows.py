"""``dbopt worker`` against the real broker: every emitted window checked against numpy.

Each test runs the worker as a child process with its own topics, Faust app id (consumer group,
changelog topics) and RocksDB directory. Events carry event times in the past hour, so windows
close by event-time watermark while events flow and by the idle tick (2 s in tests) at the end.
"""

from __future__ import annotations

import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from streams.config import Settings
from streams.kafka.consume import assigned_consumer, read_messages
from streams.serde import Codec
from worker_harness import (
    MINUTE,
    Event,
    WindowReader,
    WorkerProcess,
    assert_windows_match,
    base_time,
    expected_windows,
    known_latencies,
    produce,
    wait_for_members,
    window_key,
    worker_env,
    worker_settings,
)

pytestmark = [pytest.mark.infra, pytest.mark.timeout(300)]


def _start(settings: Settings, tmp_path: Path, app_id: str, name: str = "w1", **extra: str) -> WorkerProcess:
    env = worker_env(settings, app_id, tmp_path / f"data-{name}", **extra)
    worker = WorkerProcess(env, tmp_path / f"{name}.log")
    worker.web_port = int(env["DBOPT_WORKER_WEB_PORT"])  # type: ignore[attr-defined]
    return worker


def _metrics(worker: WorkerProcess) -> str:
    url = f"http://127.0.0.1:{worker.web_port}/metrics"  # type: ignore[attr-defined]
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read().decode()


def _read_dlq(settings: Settings, n: int) -> list[dict[str, Any]]:
    codec = Codec.from_settings(settings)
    consumer = assigned_consumer(settings, settings.topics.dlq)
    try:
        return [codec.decode(m.value()).record for m in read_messages(consumer, max_messages=n, idle_timeout=30) if not m.error()]
    finally:
        consumer.close()


def test_windows_match_numpy_across_distributions_partitions_and_windows(settings: Settings, tmp_path: Path) -> None:
    settings = worker_settings(settings, partitions=4)
    rng = np.random.default_rng(11)
    events = known_latencies(rng, base_time(), services=6, minutes=7, n=12_000)
    worker = _start(settings, tmp_path, f"t-acc-{uuid.uuid4().hex[:8]}")
    reader = WindowReader(settings)
    try:
        bad = [(b"svc-0", b"not avro at all"), (b"svc-1", b"\xc3\x01" + b"\x00" * 8 + b"junk")]
        produce(settings, events, raw=bad)
        reader.wait_for(expected_windows(events).keys(), timeout=150, workers=[worker])
        reader.poll(3)  # nothing else may follow
        expected = expected_windows(events)
        assert_windows_match(reader.first.values(), expected)
        assert {r["window_kind"] for r in reader.first.values()} == {"tumbling", "hopping"}
        errors = [r["errors"] for r in reader.first.values() if r["window_kind"] == "tumbling" and r["fingerprint"] is None]
        assert sum(errors) == sum(e.error for e in events)
        assert len(reader.all) == len(expected)  # an uninterrupted run emits each window once
        dead = _read_dlq(settings, 2)
        assert sorted(d["reason"] for d in dead) == ["undecodable", "unknown_schema"]
        assert {d["original_value"] for d in dead} == {v for _, v in bad}
        text = _metrics(worker)
        assert "dbopt_windows_emitted_total" in text
    finally:
        reader.close()
        assert worker.stop() == 0  # clean exit on SIGTERM


def test_out_of_order_within_grace_counts_and_late_events_do_not(settings: Settings, tmp_path: Path) -> None:
    settings = worker_settings(settings, partitions=2)
    b = base_time(30)
    on_time = [
        Event("svc-a", 0, b + 1_000, 10.0),
        Event("svc-a", 0, b + 50_000, 20.0),
        Event("svc-a", 0, b + 65_000, 30.0),  # watermark b+65 s: [b, b+60 s) still open (grace 10 s)
        Event("svc-a", 0, b + 30_000, 40.0),  # out of order, within grace: joins [b, b+60 s)
        Event("svc-a", 0, b + 75_000, 50.0),  # watermark b+75 s closes [b, b+60 s)
    ]
    late = [Event("svc-a", 0, b + 10_000, 1_000.0), Event("svc-a", 0, b + 59_999, 2_000.0)]
    after = [Event("svc-a", 0, b + 80_000, 60.0)]
    worker = _start(settings, tmp_path, f"t-late-{uuid.uuid4().hex[:8]}")
    reader = WindowReader(settings)
    try:
        produce(settings, on_time + late + after)
        accepted = on_time + after
        reader.wait_for(expected_windows(accepted).keys(), timeout=120, workers=[worker])
        reader.poll(3)
        assert_windows_match(reader.first.values(), expected_windows(accepted))
        first = next(r for r in reader.first.values() if window_key(r) == ("tumbling", b, b + MINUTE, "svc-a", None, "booking"))
        assert (first["count"], first["max_ms"]) == (3, 40.0)
        assert "dbopt_late_events_total 2.0" in _metrics(worker)
    finally:
        reader.close()
        worker.stop()


def test_sigkill_mid_stream_then_restart_gives_the_uninterrupted_totals(settings: Settings, tmp_path: Path) -> None:
    settings = worker_settings(settings, partitions=4)
    rng = np.random.default_rng(5)
    events = known_latencies(rng, base_time(), services=8, minutes=12, n=36_000)
    expected = expected_windows(events)
    app_id = f"t-kill-{uuid.uuid4().hex[:8]}"
    produce(settings, events)
    reader = WindowReader(settings)
    worker = _start(settings, tmp_path, app_id)
    try:
        deadline = time.monotonic() + 120
        while not reader.first and time.monotonic() < deadline:
            worker.check_alive()
            reader.poll(0.2)
        worker.kill()  # SIGKILL: no chance to commit or flush anything
        reader.poll(2)
        emitted_before = len(reader.keys())
        assert 0 < emitted_before < len(expected), "the kill must land mid-stream"
        worker = _start(settings, tmp_path, app_id, name="w1-restarted")
        reader.wait_for(expected.keys(), timeout=180, workers=[worker])
        reader.poll(3)
        assert_windows_match(reader.first.values(), expected_windows(events))
        # re-emissions after the crash repeat a window_id: downstream keeps the first
        assert len(reader.all) >= len(expected)
    finally:
        reader.close()
        worker.stop()


def test_two_workers_split_the_partitions_and_totals_add_up(settings: Settings, tmp_path: Path) -> None:
    settings = worker_settings(settings, partitions=4)
    app_id = f"t-two-{uuid.uuid4().hex[:8]}"
    workers = [_start(settings, tmp_path, app_id, name="w1"), _start(settings, tmp_path, app_id, name="w2")]
    reader = WindowReader(settings)
    try:
        owned = wait_for_members(settings, app_id, 2, workers)
        assert owned[0].isdisjoint(owned[1])
        assert owned[0] | owned[1] == {0, 1, 2, 3}
        rng = np.random.default_rng(9)
        events = known_latencies(rng, base_time(), services=8, minutes=6, n=8_000)
        produce(settings, events)
        reader.wait_for(expected_windows(events).keys(), timeout=150, workers=workers)
        reader.poll(3)
        assert_windows_match(reader.first.values(), expected_windows(events))
    finally:
        reader.close()
        for w in workers:
            w.stop()


def test_idle_partitions_still_close_their_windows(settings: Settings, tmp_path: Path) -> None:
    settings = worker_settings(settings, partitions=4)
    b = base_time(20)
    # two services (at most two of the four partitions), each stops early: only ticks can close
    # their last windows, since no later event will ever move their watermarks
    events = [Event(s, i % 3, b + i * 7_000, 5.0 + i) for s in ("svc-x", "svc-y") for i in range(20)]
    worker = _start(settings, tmp_path, f"t-idle-{uuid.uuid4().hex[:8]}")
    reader = WindowReader(settings)
    try:
        produce(settings, events)
        expected = expected_windows(events)
        last_end = max(k[2] for k in expected)
        assert last_end > max(e.event_time for e in events) + 10_000  # beyond any event's watermark
        reader.wait_for(expected.keys(), timeout=120, workers=[worker])
        reader.poll(2)
        assert_windows_match(reader.first.values(), expected_windows(events))
    finally:
        reader.close()
        worker.stop()
