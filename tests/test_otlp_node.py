"""A real Node.js service (``tests/otel_node``: pg + @opentelemetry/sdk-node + instrumentation-pg +
the OTLP/HTTP protobuf exporter, configured only by OTEL_* variables) runs parameterized and
literal-inlined statements against the real PostgreSQL and exports to ``dbopt otlp``.

The QueryEvents on the topic carry the service name, the fingerprints and texts the Python SDK
produces for the same statements, the span's duration (within the time the service measured
around each call) and no literal anywhere; ``dbopt worker`` windows them exactly like the Python
SDK's events for the same statements.

The Node packages are installed by this test with ``npm ci`` into ``tests/otel_node/node_modules``
(once per lock file: a stamp with the lock file's hash skips the install on later runs).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest

from streams.client import EventProducer
from streams.client.events import statement_fields
from streams.config import Settings, TopicPolicy
from streams.kafka.topics import ensure_topics
from streams.otlp.mapping import EVENT_ID_NAMESPACE
from streams.records import QueryEvent
from streams.serde import Codec
from streams.sql import StatementCache
from test_otlp_http import TOKEN, Receiver, read_events, receiver_env
from worker_harness import WindowReader, WorkerProcess, worker_env

pytestmark = pytest.mark.timeout(240)

NODE_DIR = Path(__file__).parent / "otel_node"
NODE_SERVICE = "guest-service-node"
PYTHON_SERVICE = "guest-service-python"
LITERALS = (b"zoe.hartley@example.com", b"4321.99", b"918273")


@pytest.fixture(scope="session")
def node_service() -> Path:
    """``service.js`` with its packages installed (``npm ci``, skipped when the lock file is unchanged)."""
    npm = shutil.which("npm")
    assert npm and shutil.which("node"), "the OpenTelemetry Node.js test needs node and npm on PATH"
    digest = hashlib.sha256((NODE_DIR / "package-lock.json").read_bytes()).hexdigest()
    stamp = NODE_DIR / "node_modules" / ".dbopt-installed"
    with open(Path(tempfile.gettempdir()) / "dbopt-otel-node-npm.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two test runs never install at once
        if not stamp.exists() or stamp.read_text() != digest:
            proc = subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=NODE_DIR,
                                  capture_output=True, text=True, timeout=600)  # fmt: skip
            assert proc.returncode == 0, f"npm ci failed:\n{proc.stdout}\n{proc.stderr}"
            stamp.write_text(digest)
    return NODE_DIR / "service.js"


def run_node(service_js: Path, database_url: str, endpoint: str, report: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DBOPT_", "OTEL_"))}
    env.update({
        "DATABASE_URL": database_url,
        "REPORT_FILE": str(report),
        "OTEL_SERVICE_NAME": NODE_SERVICE,
        "OTEL_RESOURCE_ATTRIBUTES": "service.instance.id=node-pod-1",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": endpoint,
        "OTEL_EXPORTER_OTLP_TRACES_HEADERS": f"authorization=Bearer%20{TOKEN}",
        "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION": "gzip",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
    })  # fmt: skip
    proc = subprocess.run(["node", str(service_js)], cwd=NODE_DIR, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"node service failed:\n{proc.stdout}\n{proc.stderr}"
    return json.loads(report.read_text())


def test_node_spans_become_the_python_sdks_events(
    settings: Settings, scratch_db: str, node_service: Path, tmp_path: Path
) -> None:
    settings = settings.with_overrides(topic_policy=TopicPolicy(partitions=1))
    ensure_topics(settings)
    receiver = Receiver(receiver_env(settings, DBOPT_OTLP_BEARER_TOKEN=TOKEN), tmp_path / "otlp.log")
    try:
        report = run_node(node_service, scratch_db, f"{receiver.url}/v1/traces", tmp_path / "report.json")
    finally:
        assert receiver.stop() == 0, receiver.log.read_text()
    calls = report["calls"]
    spans = [s for s in report["spans"] if "db.query.text" in s["attributes"]]  # pg.connect has none
    assert [s["attributes"]["db.query.text"] for s in spans] == [c["text"] for c in calls]

    values = read_events(settings, len(spans), idle_timeout=15)
    assert len(values) == len(spans)
    for value in values:
        for literal in LITERALS:
            assert literal not in value
    codec = Codec.from_settings(settings)
    events = {e.event_id: e for e in (QueryEvent.from_avro(codec.decode(v).record) for v in values)}
    cache = StatementCache(64)
    database = scratch_db.rpartition("/")[2]
    for s, call in zip(spans, calls, strict=True):
        event = events[events_id(s)]
        sdk = statement_fields(call["text"], cache)  # what the Python SDK sends for this statement
        assert (event.fingerprint, event.query_text, event.statement_type, list(event.tables)) == (
            sdk["fingerprint"], sdk["query_text"], sdk["statement_type"], sdk["tables"]
        )
        assert (event.service, event.instance_id, event.database, event.vendor_category) == (
            NODE_SERVICE, "node-pod-1", database, "venues"
        )
        assert abs(event.duration_ms - s["duration_ms"]) < 0.01
        assert 0 < event.duration_ms <= call["elapsed_ms"]
        assert (event.error is None) == (call["error"] is None)
    fingerprints = [events[events_id(s)].fingerprint for s in spans]
    # guests INSERT, payments INSERT and the SELECT run parameterized and literal-inlined: one fingerprint each
    assert [fingerprints[i] == fingerprints[i + 1] for i in (2, 4, 6)] == [True, True, True]
    assert len(set(fingerprints)) == len(spans) - 3

    # the Python SDK reports the same statements (same times); the worker must window both alike
    with EventProducer(settings, PYTHON_SERVICE, instance_id="py-1") as sdk_producer:
        for s, call in zip(spans, calls, strict=True):
            event = events[events_id(s)]
            assert sdk_producer.emit_statement(call["text"], event.duration_ms, -1, event.error, event.event_time)
        assert sdk_producer.flush(30) == 0
    expected = Counter((e.event_time // 1000 * 1000, e.fingerprint) for e in events.values())
    worker = WorkerProcess(
        worker_env(settings, f"otlp-node-{uuid.uuid4().hex[:8]}", tmp_path / "worker",
                   DBOPT_WINDOW_TUMBLING_MS="1000", DBOPT_WINDOW_HOP_MS="1000", DBOPT_WINDOW_HOPPING_MS="2000",
                   DBOPT_WINDOW_GRACE_MS="0", DBOPT_WINDOW_IDLE_TIMEOUT_MS="1000"),
        tmp_path / "worker.log",
    )  # fmt: skip
    reader = WindowReader(settings)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            worker.check_alive()
            reader.poll(1.0)
            windows = tumbling_by_service(reader.first.values())
            if all(Counter({k: v[0] for k, v in windows.get(svc, {}).items()}) == expected
                   for svc in (NODE_SERVICE, PYTHON_SERVICE)):  # fmt: skip
                break
    finally:
        reader.close()
        assert worker.stop() == 0, worker.log.read_text()[-3000:]
    windows = tumbling_by_service(reader.first.values())
    assert Counter({k: v[0] for k, v in windows[NODE_SERVICE].items()}) == expected
    assert windows[NODE_SERVICE] == windows[PYTHON_SERVICE]


def events_id(s: dict) -> str:
    """The event id dbopt derives from a span's trace and span ids."""
    return str(uuid.uuid5(EVENT_ID_NAMESPACE, s["trace_id"] + s["span_id"]))


def tumbling_by_service(records) -> dict[str, dict[tuple[int, str], tuple[int, int, str]]]:  # type: ignore[no-untyped-def]
    """service -> (window start, fingerprint) -> (count, errors, context) of the per-fingerprint tumbling windows."""
    out: dict[str, dict[tuple[int, str], tuple[int, int, str]]] = {}
    for r in records:
        if r["window_kind"] == "tumbling" and r["fingerprint"] is not None:
            out.setdefault(r["service"], {})[(r["window_start"], r["fingerprint"])] = (r["count"], r["errors"], r["context"])
    return out
