"""Late data is accounted, never silent.

An event that arrives after its window closed joins no window (an emitted window never changes)
and goes to the DLQ with reason ``late`` and how late it was (``late_by_ms=``, behind the
partition's watermark). The allowed lateness (``DBOPT_WINDOW_ALLOWED_LATENESS_MS``) is how far
behind the wall clock an idle partition's watermark is held, separate from the idle timeout.

A real worker gets a backfill of 1-6-minute-old events sent to a partition whose watermark an idle tick
already moved: every event is either in a window or in the DLQ, exactly once. (The engine's own
verdicts, also for events replayed after a crash, are unit-tested with the window engine.)
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from faults_harness import window_reader
from streams.kafka.consume import assigned_consumer, read_messages
from streams.serde import Codec
from worker_harness import MINUTE, Event, WindowReader, WorkerProcess, produce, worker_env, worker_settings


def _dlq(settings: Any, idle: float) -> list[dict[str, Any]]:
    codec = Codec.from_settings(settings)
    consumer = assigned_consumer(settings, settings.topics.dlq)
    try:
        return [codec.decode(m.value()).record for m in read_messages(consumer, max_messages=None, idle_timeout=idle)
                if not m.error()]
    finally:
        consumer.close()


def _in_windows(reader: WindowReader) -> int:
    return sum(r["count"] for r in reader.first.values() if r["window_kind"] == "tumbling" and r["fingerprint"] is None)


pytestmark = [pytest.mark.faults, pytest.mark.timeout(420)]


def test_backfill_after_an_idle_tick_every_event_in_a_window_or_in_the_dlq(settings: Any, tmp_path: Path) -> None:
    settings = worker_settings(settings, partitions=2)
    env = worker_env(settings, f"t-late-{uuid.uuid4().hex[:8]}", tmp_path / "data",
                     DBOPT_WINDOW_ALLOWED_LATENESS_MS="5000", DBOPT_WINDOW_IDLE_TIMEOUT_MS="2000")
    worker = WorkerProcess(env, tmp_path / "w.log")
    reader = window_reader(settings)
    try:
        now = int(time.time() * 1000)
        # live traffic of the last 3 minutes, then the service goes quiet: the idle tick moves the
        # partition's watermark to wall clock - 5 s and closes its windows
        live = [Event("svc-late", i % 3, now - 3 * MINUTE + i * 900, 5.0 + i % 7) for i in range(190)]
        produce(settings, live)
        deadline = time.monotonic() + 120
        last_full = (now - 15_000) // MINUTE * MINUTE
        while not any(r["window_end"] >= last_full for r in reader.first.values()) and time.monotonic() < deadline:
            worker.check_alive()
            reader.poll(1.0)
        assert reader.first, "the idle tick did not close the live windows"
        # a service whose SDK buffered through a network blip: 1-6-minute-old events, sent now
        sent_at = int(time.time() * 1000)
        backfill = [Event("svc-late", i % 3, sent_at - 6 * MINUTE + i * 1_200, 100.0 + i) for i in range(250)]
        produce(settings, backfill)
        # the windows still open close too (the tick, a minute and a bit later): wait until all is accounted
        total = len(live) + len(backfill)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            worker.check_alive()
            reader.poll(2.0)
            dead = _dlq(settings, idle=2)
            if _in_windows(reader) + len(dead) >= total:
                break
        reader.poll(3)
        dead = _dlq(settings, idle=5)
    finally:
        reader.close()
        worker.stop()

    in_windows = _in_windows(reader)
    late = [d for d in dead if d["reason"] == "late"]
    assert len(dead) == len(late)  # nothing else was rejected
    assert in_windows + len(late) == total  # every event accounted for, exactly once
    assert len({(d["source_partition"], d["source_offset"]) for d in late}) == len(late)
    assert len(late) >= 200  # the backfill's older minutes all came after their windows
    for d in late:
        assert d["detail"].startswith("late_by_ms=")
        late_by = int(d["detail"].split()[0].removeprefix("late_by_ms=").rstrip(":"))
        assert 0 < late_by <= 7 * MINUTE
        assert d["original_value"]  # the event itself is kept: it can be replayed or counted elsewhere
