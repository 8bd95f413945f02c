"""Pure tests of the OTLP core: span -> QueryEvent per the semantic conventions (stable and older
attribute names), and the OTLP body decoding/encoding. No servers."""

from __future__ import annotations

import gzip
import json
import uuid

import pytest
from google.rpc import status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from streams.client.events import UNPARSABLE_TEXT, query_event
from streams.otlp import wire
from streams.otlp.mapping import EVENT_ID_NAMESPACE, OTHER_ERROR, Limits, SpanMapper, jdbc_to_postgres
from streams.otlp.synthetic import attributes, db_attributes, request, span
from streams.records import QueryEvent
from streams.sql import StatementCache

T0 = 1_800_000_000_123_456_789  # ns
EMAIL = "zoe.hartley@example.com"
AMOUNT = "4321.99"
INLINED = f"SELECT * FROM guests g JOIN payments p ON p.guest_id = g.id WHERE g.email = '{EMAIL}' AND p.amount > {AMOUNT}"
PARAMETERIZED = "SELECT * FROM guests g JOIN payments p ON p.guest_id = g.id WHERE g.email = $1 AND p.amount > $2"


def sdk_fields(sql: str) -> dict[str, object]:
    """What the Python SDK puts on the wire for ``sql``: the oracle of every statement field."""
    event = query_event(sql=sql, cache=StatementCache(8), service="s", instance_id="i", duration_ms=1, rows=1,
                        error=None, event_time_ms=1, context={})  # fmt: skip
    return event_fields(event)


def event_fields(event: QueryEvent) -> dict[str, object]:
    data = event.to_avro()
    return {k: data[k] for k in ("fingerprint", "query_text", "statement_type", "tables")}


def one(spans: list[Span], mapper: SpanMapper | None = None, **resource: str) -> QueryEvent:
    result = (mapper or SpanMapper()).map_request(request("booking-service", spans, **resource))
    assert len(result.events) == 1, result
    return result.events[0]


@pytest.mark.parametrize("stable", [True, False], ids=["stable-names", "older-names"])
def test_database_span_becomes_the_sdk_event(stable: bool) -> None:
    s = span({**db_attributes(INLINED, "weddings.public" if stable else "weddings", stable=stable),
              "dbopt.vendor_category": "florists", "dbopt.wedding_id": 918273},
             start_ns=T0, duration_ns=2_345_678)  # fmt: skip
    event = one([s], **{"service.instance.id": "pod-7", "host.name": "node-1"})
    assert event_fields(event) == sdk_fields(INLINED)
    assert event.query_text == sdk_fields(PARAMETERIZED)["query_text"] and event.tables == ("guests", "payments")
    assert event_fields(event)["fingerprint"] == sdk_fields(PARAMETERIZED)["fingerprint"]
    assert (event.service, event.instance_id, event.database) == ("booking-service", "pod-7", "weddings")
    assert event.event_time == (T0 + 2_345_678) // 1_000_000
    assert event.duration_ms == pytest.approx(2.345678)
    assert (event.rows, event.error) == (-1, None)
    assert (event.vendor_category, event.wedding_id) == ("florists", "918273")
    encoded = json.dumps(event.to_avro())
    assert EMAIL not in encoded and AMOUNT not in encoded


def test_stable_names_win_over_older_ones_and_host_name_is_the_fallback_instance() -> None:
    attrs = {**db_attributes("SELECT 1 FROM vendors", "new_db"), **db_attributes("SELECT 2 FROM guests", "old_db", stable=False)}
    event = one([span(attrs, start_ns=T0, duration_ns=1000)], **{"host.name": "node-1"})
    assert event.tables == ("vendors",) and event.database == "new_db" and event.instance_id == "node-1"


def test_event_ids_are_deterministic_per_span() -> None:
    s = span(db_attributes(PARAMETERIZED), start_ns=T0, duration_ns=10)
    other = span(db_attributes(PARAMETERIZED), start_ns=T0, duration_ns=10, trace_id=s.trace_id)
    mapper = SpanMapper()
    assert one([s], mapper).event_id == one([s], mapper).event_id != one([other], mapper).event_id
    assert one([s], mapper).event_id == str(uuid.uuid5(EVENT_ID_NAMESPACE, (s.trace_id + s.span_id).hex()))


def test_spans_that_are_not_postgresql_client_statements_are_counted_and_dropped() -> None:
    spans = [
        span({"http.request.method": "GET", "url.path": f"/guests/{EMAIL}"}, start_ns=T0, duration_ns=5, kind=Span.SPAN_KIND_SERVER),
        span({"db.system.name": "mysql", "db.query.text": INLINED}, start_ns=T0, duration_ns=5),
        span({"db.system": "redis", "db.statement": "GET x"}, start_ns=T0, duration_ns=5),
        span(db_attributes(INLINED), start_ns=T0, duration_ns=5, kind=Span.SPAN_KIND_INTERNAL),
        span({"db.system.name": "postgresql", "db.namespace": "weddings"}, start_ns=T0, duration_ns=5, name="pg.connect"),
        span(db_attributes(INLINED), start_ns=T0, duration_ns=5),
    ]  # fmt: skip
    result = SpanMapper().map_request(request("svc", spans))
    assert len(result.events) == 1 and result.spans == len(spans)
    assert result.ignored == {"not_database": 3, "not_client": 1, "no_statement": 1}
    assert not result.rejected


@pytest.mark.parametrize(
    ("attrs", "error", "expected"),
    [
        ({"db.response.status_code": "23505", "error.type": "23505"}, True, "23505"),
        ({"error.type": "org.postgresql.util.PSQLException"}, True, "org.postgresql.util.PSQLException"),
        ({"error.type": "timeout"}, False, "timeout"),  # error.type alone marks a failure
        ({}, True, OTHER_ERROR),
        ({"error.type": f"duplicate key value violates unique constraint: {EMAIL}"}, True, OTHER_ERROR),
        ({"db.response.status_code": "01000"}, False, None),  # a warning is not a failure
    ],
)
def test_error_is_a_code_or_class_never_a_message(attrs: dict[str, str], error: bool, expected: str | None) -> None:
    s = span({**db_attributes(INLINED), **attrs}, start_ns=T0, duration_ns=5, error=error)
    s.status.message = f"duplicate key value (email)=({EMAIL})"
    assert one([s]).error == expected


def test_error_class_from_the_exception_event() -> None:
    s = span(db_attributes(INLINED), start_ns=T0, duration_ns=5, error=True)
    event = s.events.add(name="exception", time_unix_nano=T0 + 5)
    event.attributes.extend(attributes({"exception.type": "PSQLException", "exception.message": f"bad {EMAIL}"}))
    assert one([s]).error == "PSQLException"


def test_rows_from_returned_rows() -> None:
    assert one([span({**db_attributes(PARAMETERIZED), "db.response.returned_rows": 12}, start_ns=T0, duration_ns=5)]).rows == 12


def test_unparsable_statement_becomes_the_sdk_placeholder() -> None:
    mapper = SpanMapper()
    result = mapper.map_request(request("svc", [span(db_attributes(f"SELEC broken '{EMAIL}' {AMOUNT}"), start_ns=T0, duration_ns=5)]))
    (event,) = result.events
    assert (event.fingerprint, event.query_text, event.statement_type, event.tables) == (None, UNPARSABLE_TEXT, "UTILITY", ())
    assert result.unparsable == 1
    assert EMAIL not in json.dumps(event.to_avro())


def test_jdbc_placeholders_get_the_fingerprint_of_the_same_statement() -> None:
    jdbc = "SELECT * FROM guests g JOIN payments p ON p.guest_id = g.id WHERE g.email=? AND p.amount > ?"
    assert jdbc_to_postgres(jdbc) is not None
    assert event_fields(one([span(db_attributes(jdbc), start_ns=T0, duration_ns=5)])) == sdk_fields(INLINED)
    assert jdbc_to_postgres("SELECT data ?? 'key' FROM t WHERE id IN (?, ?)") == "SELECT data ? 'key' FROM t WHERE id IN ($1, $2)"
    assert jdbc_to_postgres("SELECT 1") is None


def _ends_early(s: Span) -> None:
    s.end_time_unix_nano = s.start_time_unix_nano - 1


def _no_start(s: Span) -> None:
    s.start_time_unix_nano = 0


@pytest.mark.parametrize(
    ("attrs", "change", "reason"),
    [
        ({}, _ends_early, "negative_duration"),
        ({}, _no_start, "missing_time"),
        ({"db.query.text": 5}, None, "bad_attribute"),
        ({"db.namespace": 1.5}, None, "bad_attribute"),
        ({"dbopt.wedding_id": "w" * 300}, None, "too_long"),
    ],
)
def test_malformed_spans_are_rejected_with_a_reason(attrs: dict[str, object], change, reason: str) -> None:  # type: ignore[no-untyped-def]
    bad = span({**db_attributes(INLINED), **attrs}, start_ns=T0, duration_ns=5)  # type: ignore[dict-item]
    if change is not None:
        change(bad)
    result = SpanMapper().map_request(request("svc", [bad, span(db_attributes(INLINED), start_ns=T0, duration_ns=5)]))
    assert len(result.events) == 1 and result.rejected == {reason: 1}
    assert reason in result.rejected_summary() and EMAIL not in result.rejected_summary()


def test_bad_resource_rejects_its_spans_and_limits_bound_statements() -> None:
    mapper = SpanMapper(limits=Limits(max_string=10, max_statement=50))
    spans = [span(db_attributes("SELECT 1 FROM t"), start_ns=T0, duration_ns=5) for _ in range(3)]
    result = mapper.map_request(request("a-very-long-service-name", spans))
    assert result.rejected == {"too_long": 3} and not result.events
    result = mapper.map_request(request("svc", [span(db_attributes(INLINED), start_ns=T0, duration_ns=5)]))
    assert result.rejected == {"too_long": 1}


def test_statement_cache_serves_repeated_texts() -> None:
    mapper = SpanMapper(statement_cache=16)
    spans = [span(db_attributes(PARAMETERIZED), start_ns=T0, duration_ns=5) for _ in range(10)]
    mapper.map_request(request("svc", spans))
    assert (mapper.cache.misses, mapper.cache.hits) == (1, 9)


# -- wire: OTLP/HTTP bodies --------------------------------------------------------------------

def test_protobuf_and_json_bodies_decode_to_the_same_request() -> None:
    s = span(db_attributes(INLINED), start_ns=T0, duration_ns=2_000_000, trace_id=bytes(range(16)), span_id=bytes(range(8)))
    expected = request("svc", [s])
    assert wire.parse_request(expected.SerializeToString(), wire.PROTOBUF) == expected
    body = {  # OTLP/JSON as the spec writes it: hex ids, enum as number, int64 as string, unknown keys
        "resourceSpans": [{
            "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "svc"}}]},
            "scopeSpans": [{
                "scope": {"name": "@opentelemetry/instrumentation-pg"},
                "spans": [{
                    "traceId": bytes(range(16)).hex(), "spanId": bytes(range(8)).hex(), "name": "pg.query",
                    "kind": 3, "startTimeUnixNano": str(T0), "endTimeUnixNano": str(T0 + 2_000_000),
                    "attributes": [{"key": k, "value": {"intValue": str(v)} if isinstance(v, int) else {"stringValue": v}}
                                   for k, v in db_attributes(INLINED).items()],
                    "status": {}, "futureField": {"x": 1},
                }],
            }],
        }]
    }  # fmt: skip
    parsed = wire.parse_request(json.dumps(body).encode(), wire.JSON)
    assert parsed.resource_spans[0].scope_spans[0].spans[0] == s
    assert one(list(parsed.resource_spans[0].scope_spans[0].spans)).query_text == sdk_fields(PARAMETERIZED)["query_text"]


@pytest.mark.parametrize("body", [b"\xff\xff\xff", b'["not", "an", "object"]', b"{", b'{"resourceSpans": 5}'])
def test_bodies_that_are_not_requests_are_400(body: bytes) -> None:
    media = wire.JSON if body[:1] in (b"{", b"[") else wire.PROTOBUF
    with pytest.raises(wire.WireError) as info:
        wire.parse_request(body, media)
    assert info.value.status == 400


def test_content_types_and_encodings() -> None:
    assert wire.media_type("application/x-protobuf") == wire.PROTOBUF
    assert wire.media_type("Application/JSON; charset=utf-8") == wire.JSON
    for bad in ("text/plain", None):
        with pytest.raises(wire.WireError) as info:
            wire.media_type(bad)
        assert info.value.status == 415
    with pytest.raises(wire.WireError) as info:
        wire.decompress(b"x", "br", 100)
    assert info.value.status == 415
    assert wire.decompress(gzip.compress(b"abc") + gzip.compress(b"def"), "gzip", 6) == b"abcdef"


def test_gzip_is_bounded_after_decompression() -> None:
    bomb = gzip.compress(bytes(50_000_000))  # 50 MB of zeros in ~50 KB
    assert len(bomb) < 100_000
    with pytest.raises(wire.WireError) as info:
        wire.decompress(bomb, "gzip", 1_000_000)
    assert info.value.status == 413
    with pytest.raises(wire.WireError) as info:
        wire.decompress(bytes(2000), None, 1000)
    assert info.value.status == 413
    for broken in (gzip.compress(b"abc" * 100)[:-12], b"not gzip at all"):
        with pytest.raises(wire.WireError) as info:
            wire.decompress(broken, "gzip", 1000)
        assert info.value.status == 400


@pytest.mark.parametrize("media", [wire.PROTOBUF, wire.JSON])
def test_responses_carry_partial_success(media: str) -> None:
    def decode(body: bytes, message):  # type: ignore[no-untyped-def]
        if media == wire.JSON:
            from google.protobuf import json_format

            return json_format.Parse(body, message)
        message.ParseFromString(body)
        return message

    full = decode(wire.encode_response(media), ExportTraceServiceResponse())
    assert not full.HasField("partial_success")
    partial = decode(wire.encode_response(media, 2, "negative_duration=2"), ExportTraceServiceResponse())
    assert (partial.partial_success.rejected_spans, partial.partial_success.error_message) == (2, "negative_duration=2")
    status = decode(wire.encode_status(media, 503, "broker unavailable"), status_pb2.Status())
    assert (status.code, status.message) == (14, "broker unavailable")


def test_kafka_values_in_both_collector_encodings() -> None:
    expected = request("svc", [span(db_attributes(INLINED), start_ns=T0, duration_ns=5)])
    assert wire.parse_kafka_value(expected.SerializeToString()) == expected
    from google.protobuf import json_format

    as_json = json.loads(json_format.MessageToJson(expected))
    for s in as_json["resourceSpans"][0]["scopeSpans"][0]["spans"]:  # OTLP/JSON ids are hex
        s["traceId"] = expected.resource_spans[0].scope_spans[0].spans[0].trace_id.hex()
        s["spanId"] = expected.resource_spans[0].scope_spans[0].spans[0].span_id.hex()
    assert wire.parse_kafka_value(json.dumps(as_json).encode()) == expected
    assert wire.parse_kafka_value(b"") == type(expected)()

