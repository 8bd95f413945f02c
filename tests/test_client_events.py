"""Pure tests of the SDK's event building and drop logging (no servers)."""

from __future__ import annotations

import logging

import pytest

from streams.client.events import (
    UNPARSABLE_TEXT,
    InvalidEvent,
    check_context,
    error_code,
    prepare_record,
    query_event,
)
from streams.client.metrics import DropLog
from streams.records import QueryEvent
from streams.sql import StatementCache


def build(**overrides: object) -> QueryEvent:
    args: dict[str, object] = dict(
        sql="SELECT * FROM guests WHERE email = 'ann@example.org'",
        cache=StatementCache(16),
        service="guest-service",
        instance_id="pod-1",
        duration_ms=3,
        rows=None,
        error=None,
        event_time_ms=1_800_000_000_000,
        context={"wedding_id": 42},
    )
    args.update(overrides)
    return query_event(**args)  # type: ignore[arg-type]


def test_query_event_fields() -> None:
    event = build()
    assert event.query_text == "SELECT * FROM guests WHERE email = $1"
    assert event.statement_type == "SELECT" and event.tables == ("guests",)
    assert event.rows == -1 and event.duration_ms == 3.0 and isinstance(event.duration_ms, float)
    assert event.wedding_id == "42" and event.database is None and event.vendor_category is None
    assert event.event_time == 1_800_000_000_000
    assert "ann@example.org" not in repr(event)


def test_unparsable_statement_never_carries_raw_sql() -> None:
    event = build(sql="SELEC * FROM guests WHERE email = 'ann@example.org'")
    assert event.fingerprint is None and event.query_text == UNPARSABLE_TEXT
    assert "ann" not in repr(event)


def test_check_context_rejects_unknown_keys() -> None:
    check_context({"wedding_id": 1, "vendor_category": "venues", "database": "x"})
    with pytest.raises(InvalidEvent, match="guest_name"):
        check_context({"guest_name": "Ann"})


def test_prepare_record_fills_defaults_and_normalizes() -> None:
    out = prepare_record(
        {"query_text": "delete from guests where id = 7", "duration_ms": "1.5", "statement_type": "SELECT",
         "tables": ["wrong"]},
        cache=StatementCache(4), service="svc", instance_id="i", database="dbopt",
    )
    assert out.query_text == "DELETE FROM guests WHERE id = $1"
    assert out.statement_type == "DELETE" and out.tables == ("guests",)  # derived, not trusted
    assert out.service == "svc" and out.database == "dbopt" and out.rows == -1
    assert out.duration_ms == 1.5 and len(out.event_id) == 36


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"duration_ms": 1}, "query_text is required"),
        ({"query_text": "  ", "duration_ms": 1}, "query_text is required"),
        ({"query_text": "SELECT 1"}, "duration_ms is required"),
        ({"query_text": "SELECT 1", "duration_ms": "slow"}, "must be numbers"),
        ({"query_text": "SELECT 1", "duration_ms": -2}, "must not be negative"),
        ({"query_text": "SELECT 1", "duration_ms": 1, "guest": "Ann"}, r"unknown field\(s\) \['guest'\]"),
    ],
)
def test_prepare_record_rejects_bad_records(record: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidEvent, match=message):
        prepare_record(record, cache=StatementCache(4), service="s", instance_id="i", database=None)


def test_error_code_is_sqlstate_or_class_never_message() -> None:
    class PgLike(Exception):
        sqlstate = "23505"

    assert error_code(PgLike("duplicate key (email)=(ann@example.org)")) == "23505"
    assert error_code(TimeoutError("guest Ann")) == "TimeoutError"


def test_drop_log_is_rate_limited(caplog: pytest.LogCaptureFixture) -> None:
    drop_log = DropLog(logging.getLogger("test.droplog"), "svc", interval_s=3600)
    with caplog.at_level(logging.WARNING, logger="test.droplog"):
        for _ in range(500):
            drop_log.record("buffer_full")
    assert len(caplog.records) == 1
    assert "buffer_full=1" in caplog.records[0].getMessage()
