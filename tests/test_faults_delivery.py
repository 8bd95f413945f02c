"""Fault: the broker does not take the windows stage's records in time.

After a broker restart a producer can stay stuck with records it never delivers (seen in the
broker-restart test: 4 records, never delivered, the stage waiting in a commit until librdkafka's
default 300 s message timeout, then the worker ended). The stage's records now wait at most
``DBOPT_WORKER_DELIVERY_TIMEOUT_MS``; then the stage starts again from its last commit on new clients,
as a restarted process would, and the worker lives on.

Made certain here on a private broker: the worker consumes every event, the broker is stopped before
the stage's next commit, so that commit's changelog records cannot be delivered within the (3 s)
timeout; the broker comes back 30 s later. Expected: the worker alive, the stage started again (its
log says so), and every window exactly as numpy computes it from the events.
"""

from __future__ import annotations

import threading
import time
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import pytest

from faults_harness import private_broker, restart_broker
from streams.config import Settings
from worker_harness import (
    WindowReader,
    WorkerProcess,
    assert_windows_match,
    base_time,
    expected_windows,
    known_latencies,
    produce,
    worker_env,
    worker_settings,
)

pytestmark = [pytest.mark.faults, pytest.mark.timeout(420)]
EVENTS = 3_000
COMMIT_S = 20  # the stage's commit interval: the broker is stopped well inside one
SESSION_MS = "60000"  # longer than the wait for that commit: a lost assignment would drop the state to write
RESTARTED = "starting the stage again from its last commit"


def _events_in(port: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        for line in response.read().decode().splitlines():
            if line.startswith("dbopt_events_in_total "):
                return float(line.split()[1])
    return 0.0


def test_records_the_broker_does_not_take_restart_the_stage_from_its_last_commit(
    settings: Settings, tmp_path: Path
) -> None:
    events = known_latencies(np.random.default_rng(14), base_time(40), services=2, minutes=10, n=EVENTS)
    with private_broker() as broker:
        xs = worker_settings(settings.with_overrides(kafka_bootstrap=broker.bootstrap), partitions=2)
        produce(xs, events)
        env = worker_env(xs, f"t-delivery-{uuid.uuid4().hex[:8]}", tmp_path / "data",
                         DBOPT_WORKER_DELIVERY_TIMEOUT_MS="3000", DBOPT_WORKER_COMMIT_INTERVAL_MS=str(COMMIT_S * 1000),
                         DBOPT_WORKER_SESSION_TIMEOUT_MS=SESSION_MS)
        log = tmp_path / "worker.log"
        worker = WorkerProcess(env, log, "--stage", "windows", "--log-level", "info")
        try:
            port, deadline = env["DBOPT_WORKER_WEB_PORT"], time.monotonic() + COMMIT_S
            while time.monotonic() < deadline:  # every event read (the commit after the first is still ahead)
                worker.check_alive()
                try:
                    if _events_in(port) >= EVENTS:
                        break
                except OSError:
                    pass  # the worker's web server is not up yet
                time.sleep(0.2)
            assert _events_in(port) == EVENTS
            assert RESTARTED not in log.read_text()
            broker.stop()
            deadline = time.monotonic() + 2 * COMMIT_S + 30
            while RESTARTED not in log.read_text() and time.monotonic() < deadline:
                worker.check_alive()
                time.sleep(0.5)
            assert RESTARTED in log.read_text(), log.read_text()[-4000:]
            time.sleep(5)
            worker.check_alive()  # the stage waits for the broker; the worker did not end
            restarter = threading.Thread(target=restart_broker, args=(broker,))
            restarter.start()
            restarter.join(90)
            reader = WindowReader(xs)
            try:
                expected = expected_windows(events)
                reader.wait_for(expected, timeout=180, workers=[worker])
                worker.check_alive()
                assert_windows_match(reader.first.values(), expected)
            finally:
                reader.close()
        finally:
            worker.stop()
