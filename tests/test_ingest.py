"""Ingest validation, normalization, fingerprint cap and DLQ records (pure, no servers)."""

from __future__ import annotations

import math
from typing import Any

import msgspec
import pytest

from streams.config import IngestSettings, Settings
from streams.ingest import OTHER_FINGERPRINT, Accepted, FingerprintCap, Rejected, dead_letter, validate
from streams.records import Alert, DeadLetter, QueryEvent
from streams.serde import Codec
from streams.sql import normalize

NOW = 1_760_000_000_000  # 2025-10-09, peak season
TOPIC = "dbopt.query-events.v1"
SETTINGS = Settings()
CODEC = Codec()


def event(**changes: Any) -> QueryEvent:
    record = QueryEvent(
        event_id="e-1",
        service="booking-service",
        instance_id="pod-1",
        event_time=NOW - 1000,
        query_text="SELECT * FROM bookings WHERE id = $1",
        statement_type="SELECT",
        duration_ms=12.5,
        rows=1,
        database="dbopt",
    )
    return msgspec.structs.replace(record, **changes)


def run(record: QueryEvent, settings: Settings = SETTINGS) -> Accepted | Rejected:
    return validate(CODEC.encode_record(record, topic=TOPIC), CODEC, settings, NOW)


def rejected(record: QueryEvent, settings: Settings = SETTINGS) -> Rejected:
    result = run(record, settings)
    assert isinstance(result, Rejected), result
    return result


def test_valid_event_is_accepted_fingerprinted_and_classified() -> None:
    result = run(event())
    assert isinstance(result, Accepted)
    expected = normalize("SELECT * FROM bookings WHERE id = 42")
    assert result.event.fingerprint == expected.fingerprint
    assert result.event.query_text == "SELECT * FROM bookings WHERE id = $1"
    assert result.event.tables == ("bookings",)
    assert (result.context, result.criticality) == ("booking", "critical")


def test_producer_fingerprint_and_tables_are_kept() -> None:
    result = run(event(fingerprint="abc123", tables=("Payments",)))
    assert isinstance(result, Accepted)
    assert result.event.fingerprint == "abc123"
    assert result.event.tables == ("payments",)
    assert result.context == "payment"


def test_literals_that_arrive_are_stripped() -> None:
    raw = "SELECT * FROM guests WHERE email = 'ann@example.com' AND age > 30"
    result = run(event(query_text=raw, fingerprint=None))
    assert isinstance(result, Accepted)
    assert "ann@example.com" not in result.event.query_text and "30" not in result.event.query_text
    assert result.event.query_text == "SELECT * FROM guests WHERE email = $1 AND age > $2"
    # same fingerprint as the producer-side normalization of the raw statement
    assert result.event.fingerprint == normalize(raw).fingerprint
    assert result.context == "guest_management"


@pytest.mark.parametrize(
    "raw",
    [
        "SELECT * FROM bookings WHERE id IN (1, 2, 3) AND note = 'x'",
        "INSERT INTO payments (a, b) VALUES (1, 'a'), (2, 'b')",
        "UPDATE vendors SET name = 'n' WHERE id = 7",
        "SET statement_timeout = 5000",
    ],
)
def test_renormalizing_placeholder_text_is_identity(raw: str) -> None:
    once = normalize(raw)
    twice = normalize(once.query_text)
    assert (twice.query_text, twice.fingerprint) == (once.query_text, once.fingerprint)


def test_placeholder_utility_statement_that_does_not_reparse() -> None:
    text = "NOTIFY ch, $1"  # a producer's literal-free form; PostgreSQL only parses it with a literal
    accepted = run(event(query_text=text, fingerprint="f00d", statement_type="UTILITY"))
    assert isinstance(accepted, Accepted) and accepted.event.query_text == text
    # without a producer fingerprint it cannot be fingerprinted: rejected
    assert rejected(event(query_text=text, statement_type="UTILITY")).reason == "unparsable_sql"
    # and a text that does not parse is never accepted when it holds a literal
    literal = rejected(event(query_text="NOTIFY ch, 'guest@example.com' junk", fingerprint="f00d", statement_type="UTILITY"))
    assert literal.reason == "unparsable_sql"


def test_garbage_bytes_are_undecodable() -> None:
    result = validate(b"\x7bnot avro", CODEC, SETTINGS, NOW)
    assert isinstance(result, Rejected) and result.reason == "undecodable"
    empty = validate(b"", CODEC, SETTINGS, NOW)
    assert isinstance(empty, Rejected) and empty.reason == "undecodable"


def test_truncated_avro_body_is_rejected() -> None:
    data = CODEC.encode_record(event(), topic=TOPIC)
    result = validate(data[:-30], CODEC, SETTINGS, NOW)
    assert isinstance(result, Rejected) and result.reason == "malformed_avro"


def test_other_record_type_is_not_a_query_event() -> None:
    alert = Alert(
        alert_id="a", state="firing", severity="high", kind="slo", service="s", context="booking",
        p95_ms=1.0, threshold_ms=1.0, window_start=0, window_end=1,
    )  # fmt: skip
    result = validate(CODEC.encode_record(alert, topic=TOPIC), CODEC, SETTINGS, NOW)
    assert isinstance(result, Rejected) and result.reason == "not_a_query_event"


@pytest.mark.parametrize("name", ["event_id", "service", "instance_id", "query_text", "statement_type"])
def test_empty_required_field(name: str) -> None:
    result = rejected(event(**{name: "  "}))
    assert result.reason == "missing_field" and name in result.detail


@pytest.mark.parametrize("duration", [-0.5, math.nan, math.inf, -math.inf])
def test_invalid_duration(duration: float) -> None:
    assert rejected(event(duration_ms=duration)).reason == "invalid_duration"


def test_zero_duration_is_fine() -> None:
    assert isinstance(run(event(duration_ms=0.0)), Accepted)


def test_event_time_limits_are_inclusive_and_configurable() -> None:
    limits = IngestSettings()
    assert isinstance(run(event(event_time=NOW - limits.max_age_ms)), Accepted)
    assert rejected(event(event_time=NOW - limits.max_age_ms - 1)).reason == "too_old"
    assert isinstance(run(event(event_time=NOW + limits.max_future_skew_ms)), Accepted)
    too_new = rejected(event(event_time=NOW + limits.max_future_skew_ms + 1))
    assert too_new.reason == "too_far_in_future" and "ahead" in too_new.detail
    strict = SETTINGS.with_overrides(ingest=IngestSettings(max_age_ms=500))
    assert rejected(event(event_time=NOW - 501), strict).reason == "too_old"


@pytest.mark.parametrize(
    "changes",
    [
        {"query_text": "SELECT * FROM bookings WHERE " + " AND ".join(["a = $1"] * 3000)},
        {"tables": tuple(f"t{i}" for i in range(65))},
        {"service": "s" * 257},
        {"tables": ("t" * 300,)},
        {"wedding_id": "w" * 1000},
    ],
)
def test_oversized_input_is_too_large(changes: dict[str, Any]) -> None:
    assert rejected(event(**changes)).reason == "too_large"


def test_unknown_statement_type() -> None:
    result = rejected(event(statement_type="SELECTX"))
    assert result.reason == "unknown_statement_type" and "SELECTX" in result.detail


def test_unparsable_sql_detail_does_not_quote_the_statement() -> None:
    result = rejected(event(query_text="SELEC secret_value FROM bookings"))
    assert result.reason == "unparsable_sql"
    assert "secret_value" not in result.detail


def test_fingerprint_cap_overflows_to_other() -> None:
    cap = FingerprintCap(limit=2)
    outcomes = []
    for table in ["bookings", "payments", "bookings", "vendors", "guests"]:
        accepted = run(event(query_text=f"SELECT * FROM {table} WHERE id = $1"))
        assert isinstance(accepted, Accepted)
        admitted, outcome = cap.admit(accepted)
        outcomes.append((admitted.event.fingerprint == OTHER_FINGERPRINT, outcome))
        if outcome == "overflow":
            assert admitted.event.query_text == "" and admitted.context == accepted.context
    assert outcomes == [(False, "added"), (False, "added"), (False, "known"), (True, "overflow"), (True, "overflow")]
    assert len(cap.known) == 2


def test_dead_letter_keeps_original_bytes_and_fits_schema() -> None:
    raw_value = b"\x00\x01\x02garbage\xff"
    raw_key = b"booking-service"
    result = validate(raw_value, CODEC, SETTINGS, NOW)
    assert isinstance(result, Rejected)
    record = dead_letter(raw_key, raw_value, TOPIC, 3, 1234, result, NOW)
    decoded = CODEC.decode_record(CODEC.encode_record(record, topic="dbopt.dlq.v1"))
    assert isinstance(decoded, DeadLetter) and decoded == record
    assert decoded.original_value == raw_value
    assert decoded.original_key == raw_key
    assert (decoded.source_partition, decoded.source_offset) == (3, 1234)
    assert decoded.reason == result.reason and decoded.detail == result.detail
