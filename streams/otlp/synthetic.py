"""OTLP requests built the way OpenTelemetry SDKs build them, for the tests and the benchmark."""

from __future__ import annotations

import os
from typing import Mapping

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, Span, Status

Attr = str | int | float | bool


def any_value(value: Attr) -> AnyValue:
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    return AnyValue(string_value=value)


def attributes(values: Mapping[str, Attr]) -> list[KeyValue]:
    return [KeyValue(key=k, value=any_value(v)) for k, v in values.items()]


def span(
    attrs: Mapping[str, Attr],
    *,
    start_ns: int,
    duration_ns: int,
    kind: int = Span.SPAN_KIND_CLIENT,
    error: bool = False,
    name: str = "pg.query",
    trace_id: bytes | None = None,
    span_id: bytes | None = None,
) -> Span:
    return Span(
        trace_id=trace_id or os.urandom(16),
        span_id=span_id or os.urandom(8),
        name=name,
        kind=kind,  # type: ignore[arg-type]
        start_time_unix_nano=start_ns,
        end_time_unix_nano=start_ns + duration_ns,
        attributes=attributes(attrs),
        status=Status(code=Status.STATUS_CODE_ERROR if error else Status.STATUS_CODE_UNSET),
    )


def db_attributes(statement: str, database: str = "weddings", *, stable: bool = True) -> dict[str, Attr]:
    """A PostgreSQL client span's attributes, stable (``db.query.text``) or older (``db.statement``) names."""
    if stable:
        return {"db.system.name": "postgresql", "db.query.text": statement, "db.namespace": database,
                "server.address": "127.0.0.1", "server.port": 5432}  # fmt: skip
    return {"db.system": "postgresql", "db.statement": statement, "db.name": database,
            "net.peer.name": "127.0.0.1", "net.peer.port": 5432}  # fmt: skip


def request(service: str, spans: list[Span], **resource: Attr) -> ExportTraceServiceRequest:
    """One resource (``service.name`` = ``service`` plus ``resource``) with one scope holding ``spans``."""
    rs = ResourceSpans()
    rs.resource.attributes.extend(attributes({"service.name": service, **resource}))
    scope = rs.scope_spans.add()
    scope.scope.name = "@opentelemetry/instrumentation-pg"
    scope.spans.extend(spans)
    return ExportTraceServiceRequest(resource_spans=[rs])
