"""Pure: OTLP trace data -> QueryEvents, per the OpenTelemetry database semantic conventions.

Only PostgreSQL client spans with a statement become events; every other span is counted under
a reason and dropped. Both generations of attribute names are read (the stable names win when a
span carries both, as instrumentations in ``database/dup`` mode do):

=======================  =====================================  ===============================
QueryEvent field         stable attribute                       older attribute
=======================  =====================================  ===============================
(filter)                 ``db.system.name`` = ``postgresql``    ``db.system`` = ``postgresql``
query_text, fingerprint  ``db.query.text`` (normalized)         ``db.statement``
database                 ``db.namespace`` (part before ``.``)   ``db.name``
error                    ``db.response.status_code`` (SQLSTATE), ``error.type``, the ``exception``
                         event's ``exception.type``, ``_OTHER``; only for failed spans
rows                     ``db.response.returned_rows``          (-1)
service / instance_id    resource ``service.name`` / ``service.instance.id`` or ``host.name``
event_time, duration_ms  span end; end - start
vendor_category,         span ``dbopt.vendor_category``,
wedding_id               ``dbopt.wedding_id``
=======================  =====================================  ===============================

The statement text is normalized here, in memory, by the SDK's own normalizer
(:func:`streams.client.events.statement_fields`): no literal leaves this module, and a text that
pglast cannot parse becomes the SDK's placeholder (``fingerprint`` null, ``query_text``
``"unparsable statement"``). JDBC texts (the Java agent reports ``?`` placeholders) are rewritten
to ``$n`` with PostgreSQL's scanner when they do not parse as they are.
"""

from __future__ import annotations

import functools
import hashlib
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, overload

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status
from pglast import parser

from streams.client.events import statement_fields
from streams.records import QueryEvent
from streams.sql import StatementCache

POSTGRESQL = "postgresql"
UNKNOWN_SERVICE = "unknown_service"  # the OpenTelemetry SDKs' default when service.name is unset
UNKNOWN_INSTANCE = "unknown"
OTHER_ERROR = "_OTHER"  # the semantic conventions' error.type for "failed, class unknown"
EVENT_ID_NAMESPACE = uuid.UUID("6f1d2b0e-8a59-4c1e-9d3a-0b7e5c2f4a61")
_NAMESPACE_BYTES = EVENT_ID_NAMESPACE.bytes

# why a span is not an event: ignored (well-formed, not ours) or rejected (malformed)
IGNORED_REASONS = ("not_database", "not_client", "no_statement")
REJECTED_REASONS = ("missing_time", "negative_duration", "bad_attribute", "too_long")

_SPAN_ATTRIBUTES = frozenset({
    "db.system.name", "db.system", "db.query.text", "db.statement", "db.namespace", "db.name",
    "db.response.status_code", "error.type", "db.response.returned_rows",
    "dbopt.vendor_category", "dbopt.wedding_id",
})  # fmt: skip
_RESOURCE_ATTRIBUTES = frozenset({"service.name", "service.instance.id", "host.name"})
_EXCEPTION_TYPE = frozenset({"exception.type"})
_SAFE_ERROR_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.$:-")
_MAX_ERROR = 128


class Malformed(ValueError):
    """A span that cannot become an event; ``reason`` is one of :data:`REJECTED_REASONS`."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Limits:
    """Bounds of what a span may carry (the ingest stage rejects larger events)."""

    max_string: int = 256  # service, instance, database, context values
    max_statement: int = 100_000  # raw statement characters handed to the parser
    max_query_text: int = 16_384  # normalized text


@dataclass
class MappingResult:
    """The events of one OTLP request and what happened to the other spans."""

    events: list[QueryEvent] = field(default_factory=list)
    ignored: Counter[str] = field(default_factory=Counter)
    rejected: Counter[str] = field(default_factory=Counter)
    unparsable: int = 0
    # one detail per rejection reason, for a log line (never the statement text)
    samples: dict[str, str] = field(default_factory=dict)

    @property
    def spans(self) -> int:
        return len(self.events) + sum(self.ignored.values()) + sum(self.rejected.values())

    def rejected_summary(self) -> str:
        """``reason=count (sample detail)`` for the OTLP partial-success message."""
        return "; ".join(
            f"{reason}={count} ({self.samples[reason]})" for reason, count in sorted(self.rejected.items())
        )


class SpanMapper:
    """Turns OTLP requests into QueryEvents, with one statement cache for the process."""

    def __init__(self, statement_cache: int = 4096, limits: Limits = Limits()) -> None:
        self.cache = StatementCache(statement_cache)
        self.limits = limits
        self._jdbc = functools.lru_cache(maxsize=statement_cache)(jdbc_to_postgres)

    def map_request(self, request: ExportTraceServiceRequest) -> MappingResult:
        result = MappingResult()
        for resource_spans in request.resource_spans:
            resource = _attributes(resource_spans.resource.attributes, _RESOURCE_ATTRIBUTES)
            try:
                service = self._string(resource, "service.name", UNKNOWN_SERVICE)
                instance = self._string(resource, "service.instance.id") or self._string(
                    resource, "host.name", UNKNOWN_INSTANCE
                )
            except Malformed as exc:
                count = sum(len(s.spans) for s in resource_spans.scope_spans)
                self._reject(result, exc, count)
                continue
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    try:
                        event = self.map_span(span, service, instance)
                    except Malformed as exc:
                        self._reject(result, exc, 1)
                        continue
                    if isinstance(event, str):
                        result.ignored[event] += 1
                        continue
                    result.events.append(event)
                    if event.fingerprint is None:
                        result.unparsable += 1
        return result

    def map_span(self, span: Span, service: str, instance: str) -> QueryEvent | str:
        """The span's QueryEvent, or the reason it is ignored; raises :class:`Malformed`."""
        attrs = _attributes(span.attributes, _SPAN_ATTRIBUTES)
        system = _first(attrs, "db.system.name", "db.system")
        if system is None or system.string_value != POSTGRESQL:
            return "not_database"
        if span.kind != Span.SPAN_KIND_CLIENT:
            return "not_client"
        text = _first(attrs, "db.query.text", "db.statement")
        if text is None:
            return "no_statement"
        if text.WhichOneof("value") != "string_value":
            raise Malformed("bad_attribute", "the statement attribute is not a string")
        if not span.start_time_unix_nano or not span.end_time_unix_nano:
            raise Malformed("missing_time", "start or end time is 0")
        if span.end_time_unix_nano < span.start_time_unix_nano:
            raise Malformed("negative_duration", "the span ends before it starts")
        statement = self._statement(text.string_value)
        namespace = self._string(attrs, "db.namespace")
        database = namespace.split(".", 1)[0] if namespace else self._string(attrs, "db.name")
        rows = attrs.get("db.response.returned_rows")
        return QueryEvent(
            event_id=_event_id(span),
            service=service,
            instance_id=instance,
            event_time=span.end_time_unix_nano // 1_000_000,
            duration_ms=(span.end_time_unix_nano - span.start_time_unix_nano) / 1e6,
            rows=rows.int_value if rows is not None and rows.WhichOneof("value") == "int_value" else -1,
            error=_error(span, attrs),
            database=database or None,
            vendor_category=self._string(attrs, "dbopt.vendor_category"),
            wedding_id=self._string(attrs, "dbopt.wedding_id"),
            **statement,
        )

    def _statement(self, sql: str) -> dict[str, Any]:
        if len(sql) > self.limits.max_statement:
            raise Malformed("too_long", f"statement of {len(sql)} characters (limit {self.limits.max_statement})")
        fields = statement_fields(sql, self.cache)
        if fields["fingerprint"] is None and "?" in sql:
            rewritten = self._jdbc(sql)
            if rewritten is not None:
                fields = statement_fields(rewritten, self.cache)
        if len(fields["query_text"]) > self.limits.max_query_text:
            raise Malformed("too_long", f"normalized statement over {self.limits.max_query_text} characters")
        fields["tables"] = tuple(fields["tables"])
        return fields

    @overload
    def _string(self, attrs: dict[str, AnyValue], key: str, default: str) -> str: ...
    @overload
    def _string(self, attrs: dict[str, AnyValue], key: str, default: None = None) -> str | None: ...

    def _string(self, attrs: dict[str, AnyValue], key: str, default: str | None = None) -> str | None:
        """A string (or integer) attribute, bounded; ``default`` when absent or empty."""
        value = attrs.get(key)
        if value is None:
            return default
        kind = value.WhichOneof("value")
        if kind == "string_value":
            text = value.string_value
        elif kind == "int_value":
            text = str(value.int_value)
        else:
            raise Malformed("bad_attribute", f"{key} is a {kind}, not a string")
        if len(text) > self.limits.max_string:
            raise Malformed("too_long", f"{key} has {len(text)} characters (limit {self.limits.max_string})")
        return text or default

    @staticmethod
    def _reject(result: MappingResult, exc: Malformed, count: int) -> None:
        if count:
            result.rejected[exc.reason] += count
            result.samples.setdefault(exc.reason, exc.detail)


def _attributes(pairs: Any, wanted: frozenset[str]) -> dict[str, AnyValue]:
    """The ``wanted`` keys of a repeated KeyValue (the first occurrence of a key wins)."""
    out: dict[str, AnyValue] = {}
    kv: KeyValue
    for kv in pairs:
        if kv.key in wanted and kv.key not in out:
            out[kv.key] = kv.value
    return out


def _first(attrs: dict[str, AnyValue], *keys: str) -> AnyValue | None:
    for key in keys:
        value = attrs.get(key)
        if value is not None:
            return value
    return None


def _event_id(span: Span) -> str:
    """``uuid5(EVENT_ID_NAMESPACE, hex(trace_id + span_id))``: the same span (a request the client sends
    again) always gets the same id. Computed from the SHA-1 directly, as :func:`uuid.uuid5` does, without
    its intermediate objects (they were a third of the per-span cost)."""
    if not (span.trace_id and span.span_id):
        return str(uuid.uuid4())
    digest = bytearray(hashlib.sha1(_NAMESPACE_BYTES + (span.trace_id + span.span_id).hex().encode()).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _error(span: Span, attrs: dict[str, AnyValue]) -> str | None:
    """SQLSTATE or error class of a failed span; never a message (messages quote values)."""
    error_type = _safe_error(attrs.get("error.type"))
    if span.status.code != Status.STATUS_CODE_ERROR and error_type is None:
        return None
    sqlstate = _safe_error(attrs.get("db.response.status_code"))
    if sqlstate is not None and len(sqlstate) == 5:
        return sqlstate
    if error_type is not None:
        return error_type
    for event in span.events:
        if event.name == "exception":
            exception_type = _safe_error(_attributes(event.attributes, _EXCEPTION_TYPE).get("exception.type"))
            if exception_type is not None:
                return exception_type
    return OTHER_ERROR


def _safe_error(value: AnyValue | None) -> str | None:
    """A code or class name (letters, digits, ``_.$:-``, bounded); anything else is not trusted."""
    if value is None or value.WhichOneof("value") != "string_value":
        return None
    text = value.string_value
    if not text or len(text) > _MAX_ERROR or not set(text) <= _SAFE_ERROR_CHARS:
        return None
    return text


def jdbc_to_postgres(sql: str) -> str | None:
    """``sql`` with JDBC ``?`` placeholders as ``$n`` (PostgreSQL's scanner finds them; ``??``, JDBC's
    escape of the ``?`` operator, becomes ``?``), or None when there is none to rewrite."""
    out: list[str] = []
    pos = 0
    number = 0
    try:
        tokens = parser.scan(sql)
    except parser.ParseError:
        return None
    for token in tokens:
        if token.name != "Op":
            continue
        op = sql[token.start : token.end + 1]
        if op == "??":
            replacement = "?"
        elif op.endswith("?") and "?" not in op[:-1]:
            number += 1
            replacement = f"{op[:-1]} ${number}" if len(op) > 1 else f"${number}"
        else:
            continue
        out.append(sql[pos : token.start])
        out.append(replacement)
        pos = token.end + 1
    if not out:
        return None
    out.append(sql[pos:])
    return "".join(out)
