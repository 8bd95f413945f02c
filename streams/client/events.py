"""Pure construction of QueryEvent records (no I/O): what the SDK puts on the wire."""

from __future__ import annotations

import time
import uuid
from typing import Any, Mapping

import msgspec

from streams.records import QueryEvent
from streams.sql import SqlParseError, StatementCache

# What goes on the wire for a statement pglast cannot parse: never the raw SQL.
UNPARSABLE_TEXT = "unparsable statement"
CONTEXT_FIELDS = ("database", "vendor_category", "wedding_id")  # the business context a service may add
_FIELDS = frozenset(f.name for f in msgspec.structs.fields(QueryEvent))


class InvalidEvent(ValueError):
    """A record given to the SDK cannot become a QueryEvent; the message says which field and why."""


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def check_context(context: Mapping[str, object]) -> None:
    """Reject unknown business-context keys early (at instrumentation time, not per statement)."""
    unknown = sorted(set(context) - set(CONTEXT_FIELDS))
    if unknown:
        raise InvalidEvent(f"unknown context field(s) {unknown}; allowed: {list(CONTEXT_FIELDS)}")


def _optional_str(value: object) -> str | None:
    return None if value is None else str(value)


def _statement(sql: str, cache: StatementCache) -> tuple[str | None, str, str, tuple[str, ...]]:
    """fingerprint, query_text, statement_type and tables of ``sql``; a placeholder text when unparsable."""
    try:
        stmt = cache.get(sql)
    except SqlParseError:
        return None, UNPARSABLE_TEXT, "UTILITY", ()
    return stmt.fingerprint, stmt.query_text, stmt.statement_type, stmt.tables


def statement_fields(sql: str, cache: StatementCache) -> dict[str, Any]:
    """The QueryEvent fields fingerprint/query_text/statement_type/tables of ``sql``, for mappers
    that build events from other sources (OTLP spans) exactly as the SDK does."""
    fingerprint, query_text, statement_type, tables = _statement(sql, cache)
    return {"fingerprint": fingerprint, "query_text": query_text, "statement_type": statement_type, "tables": list(tables)}


def query_event(
    *,
    sql: str,
    cache: StatementCache,
    service: str,
    instance_id: str,
    duration_ms: float,
    rows: int,
    error: str | None,
    event_time_ms: int | None,
    context: Mapping[str, object],
) -> QueryEvent:
    """A complete QueryEvent for one executed statement."""
    fingerprint, query_text, statement_type, tables = _statement(sql, cache)
    return QueryEvent(
        event_id=str(uuid.uuid4()),
        service=service,
        instance_id=instance_id,
        event_time=now_ms() if event_time_ms is None else int(event_time_ms),
        fingerprint=fingerprint,
        query_text=query_text,
        statement_type=statement_type,
        tables=tables,
        duration_ms=float(duration_ms),
        rows=-1 if rows is None else int(rows),
        error=error,
        database=_optional_str(context.get("database")),
        vendor_category=_optional_str(context.get("vendor_category")),
        wedding_id=_optional_str(context.get("wedding_id")),
    )


def prepare_record(
    record: Mapping[str, Any], *, cache: StatementCache, service: str, instance_id: str, database: str | None
) -> QueryEvent:
    """Complete a pre-built QueryEvent dict (``dbopt produce``): defaults filled in and the
    ``query_text`` normalized in-process, so raw SQL given by a person never reaches Kafka.
    ``fingerprint``, ``statement_type`` and ``tables`` are always derived from ``query_text``
    (values given in the record are ignored), so they cannot disagree with it.

    Raises :class:`InvalidEvent` naming the offending field.
    """
    unknown = sorted(set(record) - _FIELDS)
    if unknown:
        raise InvalidEvent(f"unknown field(s) {unknown}")
    if not isinstance(record.get("query_text"), str) or not record["query_text"].strip():
        raise InvalidEvent("query_text is required and must be a non-empty string")
    if "duration_ms" not in record:
        raise InvalidEvent("duration_ms is required")
    try:
        duration = float(record["duration_ms"])
        rows = int(record.get("rows", -1))
        event_time = now_ms() if record.get("event_time") is None else int(record["event_time"])
    except (TypeError, ValueError) as exc:
        raise InvalidEvent(f"duration_ms, rows and event_time must be numbers: {exc}") from None
    if duration < 0:
        raise InvalidEvent(f"duration_ms must not be negative, got {duration}")
    fingerprint, query_text, statement_type, tables = _statement(record["query_text"], cache)
    given_database = _optional_str(record.get("database"))
    return QueryEvent(
        event_id=str(record.get("event_id") or uuid.uuid4()),
        service=str(record.get("service") or service),
        instance_id=str(record.get("instance_id") or instance_id),
        event_time=event_time,
        fingerprint=fingerprint,
        query_text=query_text,
        statement_type=statement_type,
        tables=tables,
        duration_ms=duration,
        rows=rows,
        error=_optional_str(record.get("error")),
        database=database if given_database is None else given_database,
        vendor_category=_optional_str(record.get("vendor_category")),
        wedding_id=_optional_str(record.get("wedding_id")),
    )


def error_code(exc: BaseException) -> str:
    """SQLSTATE of a database error, else the exception class: never the message (it may hold literals)."""
    sqlstate = getattr(exc, "sqlstate", None)
    return sqlstate if isinstance(sqlstate, str) and sqlstate else type(exc).__name__
