"""``dbopt otlp --from-kafka TOPIC`` as a real process: records written the way the OpenTelemetry
Collector's Kafka exporter writes them (``otlp_proto``: value = serialized ExportTraceServiceRequest;
``otlp_json``) become the same QueryEvents the pure mapping gives; a record that is not OTLP becomes
a DeadLetter that points at it without copying it; offsets are committed after the acknowledgement."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Iterator

import pytest
from confluent_kafka import TopicPartition
from google.protobuf import json_format

from streams.config import Settings
from streams.kafka import clients
from streams.kafka.consume import assigned_consumer, read_messages
from streams.kafka.topics import ensure_topics
from streams.otlp.mapping import SpanMapper
from streams.otlp.synthetic import db_attributes, request, span
from streams.otlp.wire import parse_kafka_value
from streams.records import DeadLetter, QueryEvent
from streams.serde import Codec
from test_otlp_http import free_port, receiver_env

EMAIL = "zoe.hartley@example.com"
AMOUNT = "4321.99"


@pytest.fixture
def source_topic(settings: Settings) -> Iterator[str]:
    """The Collector's topic (1 partition), deleted afterwards."""
    from confluent_kafka.admin import NewTopic

    name = f"otlp_spans.t{uuid.uuid4().hex[:8]}"
    admin = clients.admin(settings)
    admin.create_topics([NewTopic(name, 1, 1)])[name].result(timeout=30)
    yield name
    admin.delete_topics([name], operation_timeout=30)[name].result()


def collector_records() -> list[bytes]:
    """Three batches as the Collector exports them: protobuf, protobuf, OTLP/JSON (hex ids)."""
    now = time.time_ns()
    batches = [
        request("booking-service", [
            span(db_attributes(f"SELECT * FROM bookings WHERE guest_email = '{EMAIL}'"), start_ns=now, duration_ns=3_000_000),
            span({"http.request.method": "POST"}, start_ns=now, duration_ns=9_000_000, kind=2),
        ], **{"service.instance.id": "pod-1"}),
        request("payment-service", [
            span(db_attributes(f"INSERT INTO payments (amount) VALUES ({AMOUNT})", stable=False), start_ns=now + i, duration_ns=700_000)
            for i in range(3)
        ]),
        request("vendor-service", [span(db_attributes("SELECT * FROM vendors WHERE city = $1"), start_ns=now, duration_ns=1_200_000)]),
    ]  # fmt: skip
    values = [b.SerializeToString() for b in batches[:2]]
    document = json.loads(json_format.MessageToJson(batches[2]))
    originals = batches[2].resource_spans[0].scope_spans[0].spans
    for s, original in zip(document["resourceSpans"][0]["scopeSpans"][0]["spans"], originals, strict=True):
        s["traceId"], s["spanId"] = original.trace_id.hex(), original.span_id.hex()
    values.append(json.dumps(document).encode())
    return values


def test_collector_records_become_the_same_events(settings: Settings, source_topic: str, tmp_path: Path) -> None:
    ensure_topics(settings)
    values = collector_records()
    producer = clients.producer(settings)
    for value in values[:2]:
        producer.produce(source_topic, value=value)
    producer.produce(source_topic, value=b"\x00\x01 not an export request " + EMAIL.encode())
    producer.produce(source_topic, value=values[2])
    assert producer.flush(30) == 0

    port = free_port()
    group = f"otlp-test-{uuid.uuid4().hex[:8]}"
    log = tmp_path / "otlp.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "otlp", "--from-kafka", source_topic, "--port", str(port),
             "--log-level", "INFO"],
            env=receiver_env(settings, DBOPT_OTLP_CONSUMER_GROUP=group),
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            codec = Codec.from_settings(settings)
            consumer = assigned_consumer(settings, settings.topics.query_events)
            raw = [m.value() for m in read_messages(consumer, max_messages=5, idle_timeout=30) if m.error() is None]
            consumer.close()
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as probe:
                assert json.loads(probe.read())["ready"] is True
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0, log.read_text()

    for value in raw:
        assert EMAIL.encode() not in value and AMOUNT.encode() not in value
    got = {QueryEvent.from_avro(codec.decode(v).record) for v in raw}
    mapper = SpanMapper()
    expected = {e for v in values for e in mapper.map_request(parse_kafka_value(v)).events}
    assert got == expected and len(got) == 5
    assert {e.service for e in got} == {"booking-service", "payment-service", "vendor-service"}

    dlq = assigned_consumer(settings, settings.topics.dlq)
    letters = [DeadLetter.from_avro(codec.decode(m.value()).record)
               for m in read_messages(dlq, max_messages=1, idle_timeout=15) if m.error() is None]  # fmt: skip
    dlq.close()
    assert [(d.reason, d.source_topic, d.source_offset, d.original_value) for d in letters] == [
        ("undecodable", source_topic, 2, None)
    ]
    assert committed(settings, group, source_topic) == 4  # all processed, output acknowledged
    assert EMAIL not in log.read_text()


def committed(settings: Settings, group: str, topic: str) -> int:
    consumer = clients.consumer(settings, group)
    try:
        (tp,) = consumer.committed([TopicPartition(topic, 0)], timeout=10)
        return tp.offset
    finally:
        consumer.close()
