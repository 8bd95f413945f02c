"""``dbopt otlp`` as a real process on a free port, against the real broker: OTLP/HTTP protobuf and
JSON bodies (gzip), bearer token, bounded bodies, partial success, 503 + Retry-After when the
broker does not acknowledge, clean shutdown. The QueryEvents are read back from a private topic."""

from __future__ import annotations

import gzip
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest
from google.protobuf import json_format
from google.rpc import status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from streams.config import Settings
from streams.kafka.consume import assigned_consumer, read_messages
from streams.kafka.topics import ensure_topics
from streams.otlp.synthetic import db_attributes, request, span
from streams.records import QueryEvent
from streams.serde import Codec

TOKEN = "s3cret-token"
EMAIL = "zoe.hartley@example.com"
AMOUNT = "4321.99"
STATEMENTS = [
    f"SELECT * FROM guests WHERE email = '{EMAIL}'",
    f"INSERT INTO payments (guest_id, amount) VALUES (7, {AMOUNT})",
    "UPDATE guests SET rsvp = $1 WHERE id = $2",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Receiver:
    """``dbopt otlp`` in a child process; its log in ``log``."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self._out = log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "otlp", "--port", str(self.port), "--log-level", "INFO"],
            env=env, stdout=self._out, stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=1):
                    return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"dbopt otlp did not start:\n{log.read_text()}") from None
                time.sleep(0.1)

    def post(self, body: bytes, content_type: str = "application/x-protobuf", token: str | None = TOKEN,
             gzipped: bool = True) -> tuple[int, dict[str, str], bytes]:  # fmt: skip
        headers = {"Content-Type": content_type}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        if gzipped:
            body = gzip.compress(body)
            headers["Content-Encoding"] = "gzip"
        req = urllib.request.Request(f"{self.url}/v1/traces", data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=30) as answer:
                return answer.status, dict(answer.headers), answer.read()
        except urllib.error.HTTPError as err:
            return err.code, dict(err.headers), err.read()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._out.close()
        return self.proc.returncode


def receiver_env(settings: Settings, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DBOPT_")}
    env["DBOPT_KAFKA_BOOTSTRAP"] = settings.kafka_bootstrap
    for name, topic in settings.topics.all().items():
        env[f"DBOPT_TOPIC_{name.upper()}"] = topic
    env.update(extra)
    return env


@pytest.fixture
def receiver(settings: Settings, tmp_path: Path) -> Iterator[Receiver]:
    ensure_topics(settings, ["query_events"])
    r = Receiver(receiver_env(settings, DBOPT_OTLP_BEARER_TOKEN=TOKEN, DBOPT_OTLP_MAX_REQUEST_BYTES="65536"),
                 tmp_path / "otlp.log")  # fmt: skip
    yield r
    assert r.stop() == 0, r.log.read_text()
    assert TOKEN not in r.log.read_text() and EMAIL not in r.log.read_text()


def read_events(settings: Settings, expected: int, idle_timeout: float = 10) -> list[bytes]:
    consumer = assigned_consumer(settings, settings.topics.query_events)
    try:
        values = [m.value() for m in read_messages(consumer, max_messages=expected, idle_timeout=idle_timeout)
                  if m.error() is None]  # fmt: skip
    finally:
        consumer.close()
    return values


def export_request() -> tuple[bytes, list[Span]]:
    now = time.time_ns()
    spans = [span({**db_attributes(sql), "dbopt.wedding_id": "w-77"}, start_ns=now, duration_ns=1_500_000 + i)
             for i, sql in enumerate(STATEMENTS)]  # fmt: skip
    spans.append(span({"http.request.method": "GET"}, start_ns=now, duration_ns=9, kind=Span.SPAN_KIND_SERVER))
    broken = span(db_attributes(STATEMENTS[0]), start_ns=now, duration_ns=5)
    broken.end_time_unix_nano = broken.start_time_unix_nano - 1
    spans.append(broken)
    return request("guest-service", spans, **{"service.instance.id": "pod-3"}).SerializeToString(), spans


def test_protobuf_export_becomes_literal_free_events(settings: Settings, receiver: Receiver) -> None:
    body, spans = export_request()
    status, headers, answer = receiver.post(body)
    assert status == 200, answer
    assert headers["Content-Type"] == "application/x-protobuf"
    response = ExportTraceServiceResponse.FromString(answer)
    assert response.partial_success.rejected_spans == 1
    assert "negative_duration=1" in response.partial_success.error_message
    values = read_events(settings, len(STATEMENTS))
    assert len(values) == len(STATEMENTS)
    for value in values:
        assert EMAIL.encode() not in value and AMOUNT.encode() not in value
    codec = Codec.from_settings(settings)
    events = sorted((QueryEvent.from_avro(codec.decode(v).record) for v in values), key=lambda e: e.duration_ms)
    assert [e.tables for e in events] == [("guests",), ("payments",), ("guests",)]
    assert {(e.service, e.instance_id, e.database, e.wedding_id) for e in events} == {
        ("guest-service", "pod-3", "weddings", "w-77")
    }
    for event, s in zip(events, spans, strict=False):  # the HTTP and the rejected span at the end make no event
        assert event.duration_ms == (s.end_time_unix_nano - s.start_time_unix_nano) / 1e6
        assert event.event_time == s.end_time_unix_nano // 1_000_000
    # the client retries an unanswered request: the same spans give the same event ids
    assert receiver.post(body)[0] == 200
    again = [QueryEvent.from_avro(codec.decode(v).record) for v in read_events(settings, 2 * len(STATEMENTS))]
    assert len(again) == 2 * len(STATEMENTS) and len({e.event_id for e in again}) == len(STATEMENTS)
    with urllib.request.urlopen(f"{receiver.url}/metrics", timeout=5) as page:
        metrics = page.read().decode()
    assert 'dbopt_otlp_spans_total{outcome="ignored",reason="not_database",source="http"} 2.0' in metrics
    assert 'dbopt_otlp_events_acknowledged_total 6.0' in metrics


def test_json_export_gets_a_json_answer(settings: Settings, receiver: Receiver) -> None:
    _body, spans = export_request()
    document = json.loads(json_format.MessageToJson(request("guest-service", spans[:1])))
    for s, original in zip(document["resourceSpans"][0]["scopeSpans"][0]["spans"], spans[:1], strict=True):
        s["traceId"], s["spanId"] = original.trace_id.hex(), original.span_id.hex()  # OTLP/JSON ids are hex
    status, headers, answer = receiver.post(json.dumps(document).encode(), "application/json", gzipped=False)
    assert (status, headers["Content-Type"]) == (200, "application/json")
    assert json.loads(answer) == {}
    (value,) = read_events(settings, 1)
    assert QueryEvent.from_avro(Codec.from_settings(settings).decode(value).record).tables == ("guests",)


def test_refused_requests(settings: Settings, receiver: Receiver) -> None:
    body, _ = export_request()
    status, headers, answer = receiver.post(body, token=None)
    assert (status, headers.get("WWW-Authenticate", "")[:6]) == (401, "Bearer")
    assert status_pb2.Status.FromString(answer).code == 16  # UNAUTHENTICATED
    assert receiver.post(body, token="wrong")[0] == 401
    assert receiver.post(body, "text/plain")[0] == 415
    status, _, answer = receiver.post(b"\xff\xff not protobuf")
    assert status == 400 and status_pb2.Status.FromString(answer).code == 3  # INVALID_ARGUMENT
    status, _, answer = receiver.post(b'{"resourceSpans": 1}', "application/json")
    assert status == 400 and json.loads(answer)["code"] == 3
    assert receiver.post(os.urandom(70_000), gzipped=False)[0] == 413  # over DBOPT_OTLP_MAX_REQUEST_BYTES
    assert receiver.post(bytes(10_000_000))[0] == 413  # a gzip bomb: 10 MB of zeros in ~10 KB
    assert read_events(settings, 1, idle_timeout=2) == []


def test_unacknowledged_events_are_503_with_retry_after(settings: Settings, tmp_path: Path) -> None:
    """No broker at the address: the events are never acknowledged, the client is told to retry."""
    r = Receiver(receiver_env(settings, DBOPT_KAFKA_BOOTSTRAP=f"127.0.0.1:{free_port()}",
                              DBOPT_OTLP_DELIVERY_TIMEOUT_S="1", DBOPT_OTLP_RETRY_AFTER_S="7"),
                 tmp_path / "otlp.log")  # fmt: skip
    try:
        status, headers, answer = r.post(export_request()[0], token=None)
        assert (status, headers.get("Retry-After")) == (503, "7")
        assert status_pb2.Status.FromString(answer).code == 14  # UNAVAILABLE
        # spans that hold no database statement need no broker: accepted at once
        only_http = request("svc", [span({"http.request.method": "GET"}, start_ns=time.time_ns(), duration_ns=5)])
        assert r.post(only_http.SerializeToString(), token=None)[0] == 200
    finally:
        assert r.stop() == 0, r.log.read_text()
    assert EMAIL not in r.log.read_text()
