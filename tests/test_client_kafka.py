"""The SDK against the real broker and PostgreSQL: events arrive decodable and literal-free,
psycopg statements are reported one by one, and an unreachable broker never blocks the caller."""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any, Iterator

import psycopg
import pytest
from confluent_kafka.admin import NewTopic
from prometheus_client import REGISTRY

from streams.client import UNPARSABLE_TEXT, EventProducer, InvalidEvent, instrument, monitor_query
from streams.config import Settings
from streams.kafka import clients
from streams.kafka.consume import assigned_consumer, read_messages
from streams.serde import Codec
from streams.sql import normalize


@pytest.fixture
def topic_settings(settings: Settings) -> Settings:
    """Settings whose (private) query-events topic exists, with one partition so order is kept."""
    admin = clients.admin(settings)  # kept referenced until the futures resolve
    futures = admin.create_topics([NewTopic(settings.topics.query_events, 1, 1)])
    for future in futures.values():
        future.result(timeout=30)
    return settings


@pytest.fixture
def producer(topic_settings: Settings, request: pytest.FixtureRequest) -> Iterator[EventProducer]:
    with EventProducer(topic_settings, f"svc-{request.node.name[:40]}", instance_id="test-1") as p:
        yield p


def consume(settings: Settings, expected: int) -> list[tuple[bytes, bytes]]:
    """(key, raw value) of the first ``expected`` records of the query-events topic."""
    consumer = assigned_consumer(settings, settings.topics.query_events)
    try:
        out = []
        for msg in read_messages(consumer, max_messages=expected, idle_timeout=15):
            assert msg.error() is None, msg.error()
            out.append((msg.key(), msg.value()))
        return out
    finally:
        consumer.close()


def drained(producer: EventProducer) -> None:
    assert producer.flush(30) == 0
    assert not producer.dropped, producer.dropped


LITERALS = ["Zoë Hartley", "zoe.hartley@example.com", "4321.99", "2031-07-19", "918273", "+1-555-0199", "rustic"]


def test_statements_with_literals_arrive_without_them(topic_settings: Settings, producer: EventProducer) -> None:
    statements = [
        "SELECT * FROM guests WHERE full_name = 'Zoë Hartley' AND email = 'zoe.hartley@example.com'",
        "INSERT INTO payments (booking_id, amount, paid_on) VALUES (918273, 4321.99, DATE '2031-07-19')",
        "UPDATE guests SET phone = '+1-555-0199' WHERE wedding_id IN (918273, 5)",
        "SELECT id FROM vendors WHERE style = 'rustic' -- asked by Zoë Hartley",
        "SELEC broken 'Zoë Hartley' 4321.99",
    ]
    for i, sql in enumerate(statements):
        assert producer.emit_statement(sql, 1.25 + i, i, wedding_id="w-77", vendor_category="florists")
    drained(producer)
    records = consume(topic_settings, len(statements))
    assert len(records) == len(statements)
    codec = Codec.from_settings(topic_settings)
    for (key, value), sql in zip(records, statements, strict=True):
        assert key == producer.service.encode()
        for literal in LITERALS:
            assert literal.encode() not in value, (literal, value)
        decoded = codec.decode(value)
        assert decoded.schema_name.endswith("QueryEvent")
        event = decoded.record
        assert event["service"] == producer.service and event["instance_id"] == "test-1"
        assert event["wedding_id"] == "w-77" and event["vendor_category"] == "florists"
        try:
            expected = normalize(sql)
        except ValueError:
            assert event["fingerprint"] is None and event["query_text"] == UNPARSABLE_TEXT
            continue
        assert event["fingerprint"] == expected.fingerprint
        assert event["query_text"] == expected.query_text
        assert event["statement_type"] == expected.statement_type
        assert event["tables"] == list(expected.tables)
    assert producer.sent == len(statements)


def test_same_statement_different_literals_same_fingerprint(topic_settings: Settings, producer: EventProducer) -> None:
    for email, amount in [("a@x.org", 10), ("b@y.com", 99999), ("c@z.net", 0)]:
        producer.emit_statement(
            f"SELECT * FROM payments p JOIN guests g ON g.id = p.guest_id WHERE g.email = '{email}' AND p.amount > {amount}",
            2.0,
            1,
        )
    drained(producer)
    codec = Codec.from_settings(topic_settings)
    events = [codec.decode(value).record for _, value in consume(topic_settings, 3)]
    assert len(events) == 3
    assert len({e["fingerprint"] for e in events}) == 1 and events[0]["fingerprint"]
    assert len({e["query_text"] for e in events}) == 1
    assert len({e["event_id"] for e in events}) == 3
    assert events[0]["tables"] == ["guests", "payments"]


def test_psycopg_integration_one_event_per_statement(
    topic_settings: Settings, producer: EventProducer, scratch_db: str
) -> None:
    with psycopg.connect(scratch_db, autocommit=True) as conn:
        conn.execute("CREATE TABLE guests (id int PRIMARY KEY, email text, wedding_id int)")
        instrument(conn, producer, vendor_category="venues")
        conn.execute("INSERT INTO guests VALUES (%s, %s, %s)", (1, "ann@example.org", 7))
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO guests VALUES (%s, %s, %s)", [(i, f"guest{i}@example.org", 7) for i in range(2, 6)]
            )
            cur.execute("SELECT id, email FROM guests WHERE wedding_id = %s", (7,))
            selected = len(cur.fetchall())
            cur.execute("UPDATE guests SET email = 'hidden@example.org' WHERE id > 3")
        with pytest.raises(psycopg.errors.UndefinedTable):
            conn.execute("SELECT * FROM no_such_table WHERE email = %s", ("ann@example.org",))
        dbname = conn.info.dbname
        # oracle for the row counts: the database itself
        (total,) = conn.execute("SELECT count(*) FROM guests").fetchone()  # type: ignore[misc]
    drained(producer)
    codec = Codec.from_settings(topic_settings)
    raw = consume(topic_settings, 6)
    for _, value in raw:
        for literal in ("ann@example.org", "guest2@example.org", "hidden@example.org"):
            assert literal.encode() not in value
    events = [codec.decode(value).record for _, value in raw]
    summary = [(e["statement_type"], e["tables"], e["rows"], e["error"]) for e in events]
    assert summary == [
        ("INSERT", ["guests"], 1, None),
        ("INSERT", ["guests"], 4, None),
        ("SELECT", ["guests"], selected, None),
        ("UPDATE", ["guests"], 2, None),
        ("SELECT", ["no_such_table"], -1, "42P01"),
        ("SELECT", ["guests"], 1, None),
    ]
    assert selected == total == 5
    assert events[0]["query_text"] == "INSERT INTO guests VALUES ($1, $2, $3)"
    assert events[0]["fingerprint"] == events[1]["fingerprint"]
    assert all(e["database"] == dbname and e["vendor_category"] == "venues" for e in events)
    assert all(e["duration_ms"] > 0 for e in events)


def test_psycopg_prepared_statements_keep_their_text(
    topic_settings: Settings, producer: EventProducer, scratch_db: str
) -> None:
    """psycopg prepares a statement after its 5th run; later runs must still be normalized."""
    runs = 8
    with psycopg.connect(scratch_db) as conn:
        instrument(conn, producer)
        for i in range(runs):
            conn.execute("SELECT %s::int + 1", (i,))
    drained(producer)
    codec = Codec.from_settings(topic_settings)
    events = [codec.decode(value).record for _, value in consume(topic_settings, runs)]
    assert {e["statement_type"] for e in events} == {"SELECT"}
    assert len({e["query_text"] for e in events}) == 1 and "%s" not in events[0]["query_text"]
    assert len({e["fingerprint"] for e in events}) == 1 and events[0]["fingerprint"]


def test_psycopg_async_integration(topic_settings: Settings, producer: EventProducer, scratch_db: str) -> None:
    async def work() -> int:
        async with await psycopg.AsyncConnection.connect(scratch_db, autocommit=True) as conn:
            instrument(conn, producer)
            cur = await conn.execute("SELECT generate_series(1, %s)", (3,))
            return len(await cur.fetchall())

    assert asyncio.run(asyncio.wait_for(work(), 30)) == 3
    drained(producer)
    events = [Codec.from_settings(topic_settings).decode(v).record for _, v in consume(topic_settings, 1)]
    assert [(e["statement_type"], e["rows"], e["query_text"]) for e in events] == [
        ("SELECT", 3, "SELECT generate_series($1, $2)")
    ]


def test_monitor_query_context_manager_and_decorator(topic_settings: Settings, producer: EventProducer) -> None:
    with monitor_query(producer, "SELECT * FROM weddings WHERE id = 5", wedding_id=5) as m:
        time.sleep(0.02)
        m.rows = 1

    class Boom(Exception):
        sqlstate = "57014"

    @monitor_query(producer, "SELECT * FROM bookings WHERE id = 9")
    def failing() -> None:
        raise Boom("query_canceled for guest Zoë Hartley")

    with pytest.raises(Boom, match="Zoë Hartley") as info:
        failing()
    assert info.type is Boom  # the caller's exception, unchanged

    with pytest.raises(KeyError), monitor_query(producer, "SELECT 1"):
        raise KeyError("x")
    drained(producer)
    raw = consume(topic_settings, 3)
    assert all(b"Zo" not in value for _, value in raw)
    events = [Codec.from_settings(topic_settings).decode(v).record for _, v in raw]
    assert [(e["rows"], e["error"], e["wedding_id"]) for e in events] == [(1, None, "5"), (-1, "57014", None), (-1, "KeyError", None)]
    assert events[0]["duration_ms"] >= 20


def test_emit_prebuilt_record_is_normalized(topic_settings: Settings, producer: EventProducer) -> None:
    record: dict[str, Any] = {
        "service": "guest-service",
        "event_time": 1_900_000_000_000,
        "query_text": "SELECT * FROM guests WHERE email = 'ann@example.org'",
        "duration_ms": 12.5,
        "rows": 1,
    }
    assert producer.emit(record)
    with pytest.raises(InvalidEvent, match="duration_ms"):
        producer.prepare({"query_text": "SELECT 1"})
    with pytest.raises(InvalidEvent, match="unknown field"):
        producer.prepare({"query_text": "SELECT 1", "duration_ms": 1, "colour": "red"})
    assert producer.emit({"query_text": "SELECT 1"}) is False
    assert producer.dropped == {"invalid_event": 1}
    assert producer.flush(30) == 0
    (_key, value), = consume(topic_settings, 1)
    assert b"ann@example.org" not in value
    event = Codec.from_settings(topic_settings).decode(value).record
    assert event["service"] == "guest-service" and event["event_time"] == 1_900_000_000_000
    assert event["query_text"] == "SELECT * FROM guests WHERE email = $1"
    assert event["instance_id"] == "test-1"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed when the block ends: nothing listens there


def test_unreachable_broker_never_blocks_and_counts_drops(settings: Settings) -> None:
    dead = settings.with_overrides(kafka_bootstrap=f"127.0.0.1:{_closed_port()}", sdk_buffer_messages=10)
    service = f"unreachable-{time.time_ns()}"
    producer = EventProducer(dead, service, log_interval_s=3600)
    calls = 1000
    start = time.monotonic()
    results = [
        producer.emit_statement(f"SELECT * FROM guests WHERE email = 'g{i}@example.org'", 1.0, 1) for i in range(calls)
    ]
    elapsed = time.monotonic() - start
    close_start = time.monotonic()
    producer.close(timeout=0.5)
    close_elapsed = time.monotonic() - close_start
    # generous bounds: this proves "does not block", it is not a speed claim
    assert elapsed < 10, elapsed
    assert close_elapsed < 5, close_elapsed
    accepted = sum(results)
    assert 1 <= accepted <= 10  # the bounded buffer took what it could hold
    assert producer.dropped["buffer_full"] == calls - accepted
    assert producer.dropped["unflushed"] == accepted
    assert producer.sent == 0
    metric = REGISTRY.get_sample_value(
        "dbopt_sdk_events_dropped_total", {"service": service, "reason": "buffer_full"}
    )
    assert metric == calls - accepted
    assert producer.emit_statement("SELECT 1", 1.0, 1) is False  # closed: counted, not raised
    assert producer.dropped["closed"] == 1
