"""The worker's web surface: only /metrics, /healthz and /readyz, on the loopback address only,
and its logs as JSON lines with ``--log-format json``."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

from streams.config import Settings
from streams.kafka import clients
from worker_harness import WorkerProcess, worker_env, worker_settings

pytestmark = [pytest.mark.infra, pytest.mark.timeout(300)]

# Faust's own views (router, tables with their contents, statistics, graph, performance, index)
FAUST_VIEWS = ["/", "/router/", "/router", "/table/", "/table", "/table/windows/", "/graph/", "/stats/",
               "/assignment/", "/performance/"]


def get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def listening_addresses(port: int) -> set[str]:
    """Local addresses of the sockets listening on ``port`` (IPv4 and IPv6), from /proc/net."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                found.add(address)
    return found


def wait_ready(worker: WorkerProcess, port: int, timeout: float = 120) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    body: dict[str, object] = {}
    while time.monotonic() < deadline:
        worker.check_alive()
        try:
            status, raw = get(port, "/readyz")
        except OSError:  # not listening yet
            time.sleep(0.5)
            continue
        body = json.loads(raw)
        if status == 200:
            return body
        time.sleep(0.5)
    raise AssertionError(f"worker not ready within {timeout} s: {body}")


def test_worker_serves_only_metrics_and_health_on_loopback(settings: Settings, tmp_path: Path) -> None:
    settings = worker_settings(settings, partitions=2)
    app_id = f"t-web-{uuid.uuid4().hex[:8]}"
    env = worker_env(settings, app_id, tmp_path / "data")
    port = int(env["DBOPT_WORKER_WEB_PORT"])
    log = tmp_path / "worker.log"
    worker = WorkerProcess(env, log, "--log-level", "info", "--log-format", "json")
    try:
        ready = wait_ready(worker, port)
        assert ready == {"stage": "worker", "live": True, "ready": True, "problem": ""}
        status, raw = get(port, "/healthz")
        assert status == 200 and json.loads(raw)["live"] is True
        status, raw = get(port, "/metrics")
        assert status == 200 and b"dbopt_events_in_total" in raw
        for path in FAUST_VIEWS:
            assert get(port, path)[0] == 404, path
        assert listening_addresses(port) == {"0100007F"}  # 127.0.0.1, and no IPv6 socket
    finally:
        assert worker.stop() == 0
        _delete_app_topics(settings, app_id)
    lines = [line for line in log.read_text().splitlines() if line.strip()]
    assert lines, "the worker logged nothing at INFO"
    entries = [json.loads(line) for line in lines]  # every line is a JSON object
    assert any(e["logger"] == "streams.app.worker" and e["message"].startswith(f"worker {app_id}") for e in entries)
    assert all({"time", "level", "logger", "message"} <= set(e) for e in entries)


def _delete_app_topics(settings: Settings, app_id: str) -> None:
    """The worker's own topics (ticks, changelogs): named after its app id."""
    admin = clients.admin(settings)
    names = [name for name in admin.list_topics(timeout=10).topics if name.startswith(app_id)]
    for future in admin.delete_topics(names, operation_timeout=30).values() if names else ():
        future.result()
