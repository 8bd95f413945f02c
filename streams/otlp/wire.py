"""Pure: OTLP trace bodies in and out, per the OTLP specification (OTLP/HTTP and Kafka values).

Requests are ``ExportTraceServiceRequest`` as binary protobuf (``application/x-protobuf``) or
OTLP/JSON (``application/json``: proto3 JSON mapping, except that trace and span ids are hex, not
base64), optionally gzip-compressed. Responses are ``ExportTraceServiceResponse`` in the request's
encoding; errors are a ``google.rpc.Status`` in the same encoding.

Error messages never quote the body (it holds statement texts with literals).
"""

from __future__ import annotations

import base64
import contextlib
import json
import zlib
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from google.rpc import code_pb2, status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
_MEDIA_TYPES = {PROTOBUF: PROTOBUF, "application/protobuf": PROTOBUF, JSON: JSON}
_ID_FIELDS = ("traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id")
# HTTP status -> google.rpc.Code of the Status body
_RPC_CODES = {
    400: code_pb2.INVALID_ARGUMENT,
    401: code_pb2.UNAUTHENTICATED,
    413: code_pb2.RESOURCE_EXHAUSTED,
    415: code_pb2.INVALID_ARGUMENT,
    429: code_pb2.RESOURCE_EXHAUSTED,
    503: code_pb2.UNAVAILABLE,
}


class WireError(ValueError):
    """A body or header that cannot be accepted; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def media_type(content_type: str | None) -> str:
    """:data:`PROTOBUF` or :data:`JSON` for a Content-Type header; 415 for anything else."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media not in _MEDIA_TYPES:
        raise WireError(415, f"unsupported Content-Type {media or '(none)'!r}: use {PROTOBUF} or {JSON}")
    return _MEDIA_TYPES[media]


def decompress(body: bytes, content_encoding: str | None, limit: int) -> bytes:
    """The body, gunzipped when ``Content-Encoding: gzip``; at most ``limit`` bytes (413 beyond)."""
    encoding = (content_encoding or "identity").strip().lower()
    if encoding == "identity":
        if len(body) > limit:
            raise WireError(413, f"request body over {limit} bytes")
        return body
    if encoding != "gzip":
        raise WireError(415, f"unsupported Content-Encoding {encoding!r}: use gzip or none")
    out = bytearray()
    data = body
    while data:  # a gzip stream may hold several members
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            out += inflater.decompress(data, limit + 1 - len(out))
        except zlib.error:
            raise WireError(400, "body is not valid gzip") from None
        if len(out) > limit or inflater.unconsumed_tail:
            raise WireError(413, f"decompressed request body over {limit} bytes")
        if not inflater.eof:
            raise WireError(400, "gzip body is truncated")
        data = inflater.unused_data
    return bytes(out)


def parse_request(body: bytes, media: str) -> ExportTraceServiceRequest:
    """Decode an export request in ``media`` encoding; :class:`WireError` (400) when it is not one."""
    request = ExportTraceServiceRequest()
    if media == PROTOBUF:
        try:
            request.ParseFromString(body)
        except (DecodeError, ValueError):
            raise WireError(400, "body is not a protobuf ExportTraceServiceRequest") from None
        return request
    try:
        document = json.loads(body)
        if not isinstance(document, dict):
            raise ValueError("not an object")
        _hex_ids_to_base64(document)
        json_format.ParseDict(document, request, ignore_unknown_fields=True)
    except (ValueError, TypeError, json_format.ParseError, RecursionError):
        raise WireError(400, "body is not an OTLP/JSON ExportTraceServiceRequest") from None
    return request


def parse_kafka_value(value: bytes) -> ExportTraceServiceRequest:
    """A Collector Kafka exporter record: ``otlp_proto`` (the default) or ``otlp_json`` encoding.

    A serialized request starts with field 1's tag (0x0A) or is empty; JSON starts with ``{``.
    """
    return parse_request(value, JSON if value.lstrip()[:1] == b"{" else PROTOBUF)


def encode_response(media: str, rejected: int = 0, message: str = "") -> bytes:
    """ExportTraceServiceResponse; ``partial_success`` set when spans were rejected or there is a warning."""
    response = ExportTraceServiceResponse()
    if rejected or message:
        response.partial_success.rejected_spans = rejected
        response.partial_success.error_message = message
    return _encode(response, media)


def encode_status(media: str, http_status: int, message: str) -> bytes:
    """The ``google.rpc.Status`` body of an error answer."""
    return _encode(status_pb2.Status(code=_RPC_CODES.get(http_status, code_pb2.UNKNOWN), message=message), media)


def _encode(message: Message, media: str) -> bytes:
    if media == JSON:
        return json_format.MessageToJson(message, indent=None).encode()
    return message.SerializeToString()


def _hex_ids_to_base64(document: dict[str, Any]) -> None:
    """OTLP/JSON carries ids as hex; the proto3 JSON mapping (ParseDict) expects base64 bytes."""
    for resource_spans in _items(document, "resourceSpans", "resource_spans"):
        for scope_spans in _items(resource_spans, "scopeSpans", "scope_spans"):
            for span in _items(scope_spans, "spans"):
                _convert_ids(span)
                for link in _items(span, "links"):
                    _convert_ids(link)


def _items(parent: Any, *keys: str) -> list[Any]:
    if not isinstance(parent, dict):
        return []
    for key in keys:
        value = parent.get(key)
        if isinstance(value, list):
            return value
    return []


def _convert_ids(obj: Any) -> None:
    if not isinstance(obj, dict):
        return
    for key in _ID_FIELDS:
        value = obj.get(key)
        if isinstance(value, str) and value:
            with contextlib.suppress(ValueError):  # not hex: left for the base64 parser, which rejects what it cannot read
                obj[key] = base64.b64encode(bytes.fromhex(value)).decode()
