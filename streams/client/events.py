"""Pure construction of QueryEvent records (no I/O): what the SDK puts on the wire."""

from __future__ import annotations

import time
import uuid
from typing import Any, Mapping

from streams.sql import NormalizedStatement, SqlParseError, StatementCache

# What goes on the wire for a statement pglast cannot parse: never the raw SQL.
UNPARSABLE_TEXT = "unparsable statement"
CONTEXT_FIELDS = ("database", "vendor_category", "wedding_id")
_FIELDS = (
    "event_id", "service", "instance_id", "event_time", "fingerprint", "query_text",
    "statement_type", "tables", "duration_ms", "rows", "error", *CONTEXT_FIELDS,
)


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


def statement_fields(sql: str, cache: StatementCache) -> dict[str, Any]:
    """fingerprint/query_text/statement_type/tables of ``sql``; a placeholder text when unparsable."""
    try:
        stmt: NormalizedStatement = cache.get(sql)
    except SqlParseError:
        return {"fingerprint": None, "query_text": UNPARSABLE_TEXT, "statement_type": "UTILITY", "tables": []}
    return {
        "fingerprint": stmt.fingerprint,
        "query_text": stmt.query_text,
        "statement_type": stmt.statement_type,
        "tables": list(stmt.tables),
    }


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
) -> dict[str, Any]:
    """A complete QueryEvent record for one executed statement."""
    record: dict[str, Any] = {
        "event_id": str(uuid.uuid4()),
        "service": service,
        "instance_id": instance_id,
        "event_time": now_ms() if event_time_ms is None else int(event_time_ms),
        **statement_fields(sql, cache),
        "duration_ms": float(duration_ms),
        "rows": -1 if rows is None else int(rows),
        "error": error,
    }
    for name in CONTEXT_FIELDS:
        record[name] = _optional_str(context.get(name))
    return record


def prepare_record(
    record: Mapping[str, Any], *, cache: StatementCache, service: str, instance_id: str, database: str | None
) -> dict[str, Any]:
    """Complete a pre-built QueryEvent dict (``dbopt produce``): defaults filled in and the
    ``query_text`` normalized in-process, so raw SQL given by a person never reaches Kafka.
    ``fingerprint``, ``statement_type`` and ``tables`` are always derived from ``query_text``
    (values given in the record are ignored), so they cannot disagree with it.

    Raises :class:`InvalidEvent` naming the offending field.
    """
    unknown = sorted(set(record) - set(_FIELDS))
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
    out: dict[str, Any] = {
        "event_id": str(record.get("event_id") or uuid.uuid4()),
        "service": str(record.get("service") or service),
        "instance_id": str(record.get("instance_id") or instance_id),
        "event_time": event_time,
        **statement_fields(record["query_text"], cache),
        "duration_ms": duration,
        "rows": rows,
        "error": _optional_str(record.get("error")),
    }
    for name in CONTEXT_FIELDS:
        out[name] = _optional_str(record.get(name))
    if out["database"] is None:
        out["database"] = database
    return out


def error_code(exc: BaseException) -> str:
    """SQLSTATE of a database error, else the exception class: never the message (it may hold literals)."""
    sqlstate = getattr(exc, "sqlstate", None)
    return sqlstate if isinstance(sqlstate, str) and sqlstate else type(exc).__name__
