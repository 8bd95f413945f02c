"""Turn the bytes of one record into an accepted, normalized QueryEvent or a reasoned rejection.

Pure: no Kafka I/O, the clock is a parameter, per-service state (:class:`FingerprintCap`) is
held by the caller. Rejection reasons (the DLQ ``reason``) are stable machine classes:

* from the decoder: ``undecodable`` (no known framing), ``unknown_schema``, ``malformed_avro``;
* ``not_a_query_event``, ``missing_field``, ``too_large``, ``invalid_duration``, ``too_old``,
  ``too_far_in_future``, ``unknown_statement_type``, ``unparsable_sql``.

Normalization keeps what the producer sent when present and fills in what is missing: the
fingerprint is computed with pglast when absent, tables are taken from the parsed statement when
the producer sent none, and ``query_text`` is always re-normalized, so literals that slipped
through a producer are stripped here (re-normalizing an already ``$n``-placeholder text is the
identity). A few utility statements (``NOTIFY ch, $1``) are valid only with their literal, so
their placeholder form does not parse; such a text is still accepted when the producer sent a
fingerprint and PostgreSQL's scanner finds no literal in it.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field, replace
from typing import Literal

import msgspec
from pglast import parser

from streams.config import IngestSettings, Settings
from streams.domain.contexts import classify
from streams.records import DeadLetter, QueryEvent
from streams.serde import Codec, DecodeError
from streams.sql import SqlParseError, StatementCache

OTHER_FINGERPRINT = "other"
_LITERAL_TOKENS = frozenset({"SCONST", "USCONST", "ICONST", "FCONST", "BCONST", "XCONST"})
_EVENT_FIELDS = msgspec.structs.fields(QueryEvent)
# the schema's required text fields must not be blank; every text field but query_text is bounded
_REQUIRED_TEXT = tuple(f.name for f in _EVENT_FIELDS if f.type is str)
_BOUNDED_TEXT = tuple(f.name for f in _EVENT_FIELDS if f.type in (str, str | None) and f.name != "query_text")


@dataclass(frozen=True, slots=True)
class Accepted:
    """A valid event: ``event`` is literal-free, with its fingerprint and tables."""

    event: QueryEvent
    context: str
    criticality: str


@dataclass(frozen=True, slots=True)
class Rejected:
    reason: str
    detail: str


class _Reject(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.rejected = Rejected(reason, detail)


@functools.lru_cache(maxsize=4)
def _statements(size: int) -> StatementCache:
    """One process-wide normalization cache per configured size (repeated statements parse once)."""
    return StatementCache(size)


def validate(raw_value: bytes | None, codec: Codec, settings: Settings, now_ms: int) -> Accepted | Rejected:
    """Decode, validate, normalize and classify one record of the query-events topic."""
    try:
        event = codec.decode_record(raw_value)
    except DecodeError as exc:
        return Rejected(exc.reason, exc.detail)
    if not isinstance(event, QueryEvent):
        return Rejected("not_a_query_event", f"record is a {event.SCHEMA}, not a QueryEvent")
    return check_event(event, settings, now_ms)


def check_event(event: QueryEvent, settings: Settings, now_ms: int) -> Accepted | Rejected:
    """Validate, normalize and classify a decoded QueryEvent (:func:`validate` without the decoding)."""
    try:
        _check(event, settings.ingest, now_ms)
        event = _normalized(event, settings.ingest)
    except _Reject as exc:
        return exc.rejected
    found = classify(event.tables, settings.domain)
    return Accepted(event, found.context, found.criticality)


def _check(event: QueryEvent, limits: IngestSettings, now_ms: int) -> None:
    """Raise :class:`_Reject` for an event the stream must not count (types are the decoder's)."""
    for name in _REQUIRED_TEXT:
        if not getattr(event, name).strip():
            raise _Reject("missing_field", f"{name} is missing or empty")
    _check_sizes(event, limits)
    duration = event.duration_ms
    if not math.isfinite(duration) or duration < 0:
        raise _Reject("invalid_duration", f"duration_ms must be a finite number >= 0, got {duration!r}")
    if duration > limits.max_duration_ms:
        raise _Reject("invalid_duration", f"duration_ms {duration!r} is over the limit of {limits.max_duration_ms} ms")
    event_time = event.event_time
    if now_ms - event_time > limits.max_age_ms:
        raise _Reject("too_old", f"event_time is {now_ms - event_time} ms old; the limit is {limits.max_age_ms} ms")
    if event_time - now_ms > limits.max_future_skew_ms:
        raise _Reject(
            "too_far_in_future",
            f"event_time is {event_time - now_ms} ms ahead of now; the limit is {limits.max_future_skew_ms} ms",
        )
    statement_type = event.statement_type
    if statement_type not in limits.statement_types:
        raise _Reject(
            "unknown_statement_type",
            f"statement_type {statement_type[:40]!r} is not one of {', '.join(limits.statement_types)}",
        )


def _check_sizes(event: QueryEvent, limits: IngestSettings) -> None:
    if len(event.query_text) > limits.max_query_text:
        raise _Reject("too_large", f"query_text has {len(event.query_text)} characters; the limit is {limits.max_query_text}")
    tables = event.tables
    if len(tables) > limits.max_tables:
        raise _Reject("too_large", f"{len(tables)} tables; the limit is {limits.max_tables}")
    for name in _BOUNDED_TEXT:
        value = getattr(event, name)
        if value is not None and len(value) > limits.max_string:
            raise _Reject("too_large", f"{name} has {len(value)} characters; the limit is {limits.max_string}")
    for table in tables:
        if len(table) > limits.max_string:
            raise _Reject("too_large", f"a table name has {len(table)} characters; the limit is {limits.max_string}")


def _normalized(event: QueryEvent, limits: IngestSettings) -> QueryEvent:
    text = event.query_text
    try:
        statement = _statements(limits.statement_cache).get(text)
    except SqlParseError as exc:
        if event.fingerprint and _literal_free(text):
            return msgspec.structs.replace(event, tables=tuple(t.lower() for t in event.tables))
        raise _Reject("unparsable_sql", str(exc)) from None
    return msgspec.structs.replace(
        event,
        query_text=statement.query_text,
        fingerprint=event.fingerprint or statement.fingerprint,
        tables=tuple(t.lower() for t in (event.tables or statement.tables)),
    )


def _literal_free(text: str) -> bool:
    """True when PostgreSQL's scanner finds no literal token (``$n`` placeholders are fine)."""
    try:
        return not any(token.name in _LITERAL_TOKENS for token in parser.scan(text))
    except parser.ParseError:
        return False


CapOutcome = Literal["known", "added", "overflow"]


@dataclass
class FingerprintCap:
    """The distinct fingerprints admitted for ONE service, at most ``limit`` of them.

    The caller keeps one per service (for example in a Faust table, persisting ``known`` when
    :meth:`admit` says ``added``). Once full, events of new fingerprints are aggregated under
    :data:`OTHER_FINGERPRINT` (with an empty ``query_text``), so unparameterized SQL cannot
    exhaust memory; the caller counts the ``overflow`` outcomes.
    """

    limit: int
    known: set[str] = field(default_factory=set)

    def admit(self, accepted: Accepted) -> tuple[Accepted, CapOutcome]:
        fingerprint = accepted.event.fingerprint
        assert fingerprint is not None  # validate() always fills it in
        if fingerprint in self.known:
            return accepted, "known"
        if len(self.known) < self.limit:
            self.known.add(fingerprint)
            return accepted, "added"
        capped = msgspec.structs.replace(accepted.event, fingerprint=OTHER_FINGERPRINT, query_text="")
        return replace(accepted, event=capped), "overflow"


def dead_letter(
    raw_key: bytes | None,
    raw_value: bytes | None,
    topic: str,
    partition: int,
    offset: int,
    rejected: Rejected,
    now_ms: int,
) -> DeadLetter:
    """The DeadLetter record for a rejected record: its original bytes, where it came from, why."""
    return DeadLetter(
        reason=rejected.reason,
        detail=rejected.detail,
        source_topic=topic,
        source_partition=partition,
        source_offset=offset,
        original_key=raw_key,
        original_value=raw_value,
        received_at=now_ms,
    )
