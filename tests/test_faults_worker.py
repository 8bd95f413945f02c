"""Fault: ``dbopt worker`` SIGKILLed 10 times at random moments while events with known latencies
flow through 6 partitions. Every window is then checked against numpy: the exact count, min, max
and sum, p50/p95/p99 within the sketch's accuracy of numpy's exact order statistics
(``method="lower"``, docs/windows.md), and no window emitted twice with different contents.

``FAULTS_WORKER_EVENTS`` (default 200,000, the issue's figure) and ``FAULTS_SEED`` size and seed the run.
"""

from __future__ import annotations

import os
import random
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from faults_harness import window_reader
from streams.config import Settings
from streams.kafka.consume import assigned_consumer, read_messages
from streams.serde import Codec
from worker_harness import (
    ACCURACY,
    WorkerProcess,
    assert_windows_match,
    base_time,
    expected_windows,
    known_latencies,
    produce,
    worker_env,
    worker_settings,
)

pytestmark = [
    pytest.mark.faults,
    pytest.mark.timeout(900),
]
EVENTS = int(os.environ.get("FAULTS_WORKER_EVENTS", "200000"))
SEED = int(os.environ.get("FAULTS_SEED", "14"))
KILLS = 10


def _start(settings: Settings, tmp_path: Path, app_id: str, name: str) -> WorkerProcess:
    # a fresh data directory each time: what a worker rescheduled on another machine has (the state
    # comes back from the changelog, never from files the killed process left half-written)
    # the events flow in slices 3 s apart: a partition must not count as idle between two of them (an idle
    # tick moves its watermark to wall clock, and the next slice would be late: the late-data test's subject)
    env = worker_env(settings, app_id, tmp_path / f"data-{name}", DBOPT_WINDOW_IDLE_TIMEOUT_MS="10000")
    return WorkerProcess(env, tmp_path / f"{name}.log")


def _without_emitted_at(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k != "emitted_at"}


def test_worker_sigkilled_10_times_emits_exact_windows(settings: Settings, tmp_path: Path) -> None:
    settings = worker_settings(settings, partitions=6)
    rng, moments = np.random.default_rng(SEED), random.Random(SEED)
    base = base_time(40)
    events = known_latencies(rng, base, services=12, minutes=20, n=EVENTS)
    expected = expected_windows(events)
    app_id = f"t-faults-kill-{uuid.uuid4().hex[:8]}"

    # the events flow while the worker is killed: produced in slices (in event-time order) over the kills
    def feed() -> None:
        step = -(-len(events) // (KILLS + 1))
        for i in range(0, len(events), step):
            produce(settings, events[i:i + step])
            time.sleep(3.0)

    feeder = threading.Thread(target=feed, daemon=True)
    reader = window_reader(settings)
    worker = _start(settings, tmp_path, app_id, "w0")
    feeder.start()
    started = time.monotonic()
    kill_log: list[tuple[float, int, int]] = []  # (s, windows when this worker started, windows at the kill)
    try:
        for kill in range(1, KILLS + 1):
            before = len(reader.keys())
            if kill == 1:  # the first one mid-emission: once the worker has emitted windows
                deadline = time.monotonic() + 120
                while not reader.first and time.monotonic() < deadline:
                    worker.check_alive()
                    reader.poll(0.5)
            # a random moment: working, restoring, or waiting for the killed member's partitions
            # (a dead consumer holds them for its session timeout)
            pause = time.monotonic() + moments.uniform(0.0, 3.0) + (0.0 if kill == 1 else moments.uniform(3.0, 9.0))
            while time.monotonic() < pause:
                worker.check_alive()
                reader.poll(0.2)
            worker.kill()  # SIGKILL: no chance to flush, commit or close anything
            kill_log.append((round(time.monotonic() - started, 1), before, len(reader.keys())))
            worker = _start(settings, tmp_path, app_id, f"w{kill}")
        feeder.join(120)
        assert not feeder.is_alive()
        # the rest: until every window is there, or (a stuck worker fails fast) no new window for 120 s
        last_progress, seen = time.monotonic(), len(reader.keys())
        while reader.keys() < expected.keys() and time.monotonic() - last_progress < 120:
            worker.check_alive()
            reader.poll(1.0)
            if len(reader.keys()) > seen:
                last_progress, seen = time.monotonic(), len(reader.keys())
        reader.poll(3)
        print(f"seed {SEED}, {EVENTS} events, kills at (s, windows before, windows at the kill): {kill_log}; "
              f"{len(reader.all)} window records for {len(expected)} windows in {time.monotonic() - started:.0f} s")
    finally:
        reader.close()
        worker.stop()

    # the kills landed while events flowed (windows still to come), the first one mid-emission
    assert kill_log[0][2] > 0 and all(k[2] < len(expected) for k in kill_log), kill_log
    assert_windows_match(reader.first.values(), expected, ACCURACY)
    # re-emissions after a kill repeat a window exactly, never with other contents
    for record in reader.all:
        assert _without_emitted_at(record) == _without_emitted_at(reader.first[record["window_id"]])
    total = sum(r["count"] for r in reader.first.values() if r["window_kind"] == "tumbling" and r["fingerprint"] is None)
    assert total == EVENTS
    # nothing was judged late or rejected: the DLQ is empty
    codec = Codec.from_settings(settings)
    dlq = assigned_consumer(settings, settings.topics.dlq)
    try:
        dead = [codec.decode(m.value()).record for m in read_messages(dlq, max_messages=10, idle_timeout=3)
                if not m.error()]
    finally:
        dlq.close()
    assert dead == []
