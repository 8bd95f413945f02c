"""SDK -> Kafka -> decode for every schema, in both wire formats, through the real broker
and (for the Confluent format) a real schema registry."""

from __future__ import annotations

import json
import struct
from typing import Any

import pytest
from confluent_kafka import Producer
from confluent_kafka.schema_registry import SchemaRegistryClient
from fastavro.schema import to_parsing_canonical_form

from clienv import schema_registry  # noqa: F401 - fixture
from samples import EXAMPLES, TOPIC_OF_SCHEMA
from streams.client.producer import EventProducer
from streams.config import Settings
from streams.kafka.consume import assigned_consumer, read_messages
from streams.serde import CONFLUENT_MAGIC, SINGLE_OBJECT_MAGIC, Codec
from streams.sql import normalize

RAW_SQL = "SELECT * FROM guests WHERE email = 'ann.smith@example.com' AND name = 'Ann Smith'"


def _read_all(settings: Settings, topic: str, count: int) -> list[bytes]:
    consumer = assigned_consumer(settings, topic)
    try:
        values = [m.value() for m in read_messages(consumer, max_messages=count, idle_timeout=15) if not m.error()]
    finally:
        consumer.close()
    return values


def _round_trip(settings: Settings) -> dict[str, list[tuple[bytes, Any]]]:
    """Send every example (QueryEvents through the SDK's EventProducer, the rest with the Codec)
    and return, per schema, what came back: (raw bytes, decoded with a fresh Codec)."""
    codec = Codec.from_settings(settings)
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "acks": "all"})
    topics = settings.topics.all()
    for name, records in EXAMPLES.items():
        if name == "QueryEvent":
            continue
        topic = topics[TOPIC_OF_SCHEMA[name]]
        for i, record in enumerate(records):
            # one partition keeps the order; keys, because the commands and results topics are compacted
            producer.produce(topic, codec.encode(name, record, topic=topic), key=f"{name}-{i}".encode(), partition=0)
    assert producer.flush(15) == 0
    with EventProducer(settings, service="booking-service") as sdk:
        for record in EXAMPLES["QueryEvent"]:
            assert sdk.emit(record)
        sdk.emit_statement(RAW_SQL, duration_ms=3.5, rows=1)
        assert sdk.flush(15) == 0
    assert sdk.sent == len(EXAMPLES["QueryEvent"]) + 1 and not sdk.dropped
    reader = Codec.from_settings(settings)  # nothing cached: Confluent ids are looked up in the registry
    out = {}
    for name, records in EXAMPLES.items():
        expected = len(records) + (1 if name == "QueryEvent" else 0)
        values = _read_all(settings, topics[TOPIC_OF_SCHEMA[name]], expected)
        assert len(values) == expected, f"{name}: {len(values)} of {expected} records arrived"
        out[name] = [(v, reader.decode(v)) for v in values]
    return out


def _check_records(received: dict[str, list[tuple[bytes, Any]]], wire_format: str) -> None:
    for name, records in EXAMPLES.items():
        got = received[name]
        assert all(d.schema_name == name and d.wire_format == wire_format for _, d in got), name
        if name != "QueryEvent":
            assert [d.record for _, d in got] == records, name
            continue
        events = {d.record["event_id"]: d.record for _, d in got}
        for record in records:
            sent = events.pop(record["event_id"])
            # the SDK derives the fingerprint from the (already normalized) text
            assert sent["fingerprint"] == normalize(record["query_text"]).fingerprint
            assert {k: v for k, v in sent.items() if k != "fingerprint"} == {
                k: v for k, v in record.items() if k != "fingerprint"
            }
        (from_sql,) = events.values()
        assert from_sql["tables"] == ["guests"] and from_sql["query_text"].count("$") == 2
        raw = b"".join(v for v, _ in got)
        for literal in (b"ann.smith@example.com", b"Ann Smith"):
            assert literal not in raw


@pytest.mark.timeout(120)
@pytest.mark.usefixtures("created_topics")
def test_single_object_round_trip_every_schema(settings: Settings) -> None:
    assert settings.schema_registry_url is None
    received = _round_trip(settings)
    _check_records(received, "single-object")
    schemas = Codec().schemas
    for name, got in received.items():
        for value, _ in got:
            assert value[:2] == SINGLE_OBJECT_MAGIC and value[2:10] == schemas.get(name).fingerprint


@pytest.mark.timeout(180)
@pytest.mark.usefixtures("created_topics")
def test_confluent_round_trip_every_schema(settings: Settings, schema_registry: str) -> None:  # noqa: F811
    settings = settings.with_overrides(schema_registry_url=schema_registry)
    received = _round_trip(settings)
    _check_records(received, "confluent")
    client = SchemaRegistryClient({"url": schema_registry})
    schemas = Codec().schemas
    for name, got in received.items():
        subject = f"{settings.topics.all()[TOPIC_OF_SCHEMA[name]]}-value"
        registered = client.get_latest_version(subject)
        assert to_parsing_canonical_form(json.loads(registered.schema.schema_str)) == to_parsing_canonical_form(
            schemas.get(name).raw
        )
        for value, _ in got:
            assert value[:1] == CONFLUENT_MAGIC
            assert struct.unpack(">I", value[1:5])[0] == registered.schema_id
