"""Records as JSON for people and scripts (pure; no I/O).

Records travel with timestamps as int epoch milliseconds. Shown to a person they become
ISO-8601 UTC strings (``2026-05-02T14:03:07.125Z``), found by walking the Avro schema: a
field is a timestamp when its type carries ``logicalType: timestamp-millis``. Bytes become
base64 text, so every line is plain JSON.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from typing import Any

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}


def iso_from_ms(ms: int) -> str:
    """Epoch milliseconds -> ISO-8601 UTC with millisecond precision and a ``Z``."""
    return (_EPOCH + timedelta(milliseconds=ms)).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def ms_from_iso(text: str) -> int:
    """ISO-8601 -> epoch milliseconds. A time without an offset is taken as UTC.

    Raises ValueError for anything that is not an ISO-8601 date-time.
    """
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def to_json(schema: Any, value: Any) -> Any:
    """``value`` (as read with ``schema``, an .avsc dict) as JSON-ready data."""
    named: dict[str, Any] = {}
    _collect_names(schema, named)
    return _convert(schema, value, named)


def _collect_names(schema: Any, named: dict[str, Any]) -> None:
    """Every named type (record, enum, fixed) by its short name, so references resolve."""
    if isinstance(schema, list):
        for branch in schema:
            _collect_names(branch, named)
    elif isinstance(schema, dict):
        if "name" in schema:
            named[schema["name"].rsplit(".", 1)[-1]] = schema
        for f in schema.get("fields", ()):
            _collect_names(f["type"], named)
        for key in ("items", "values"):
            if key in schema:
                _collect_names(schema[key], named)


def _resolve(schema: Any, named: dict[str, Any]) -> Any:
    if isinstance(schema, str) and schema not in _PRIMITIVES:
        return named[schema.rsplit(".", 1)[-1]]
    return schema


def _convert(schema: Any, value: Any, named: dict[str, Any]) -> Any:
    schema = _resolve(schema, named)
    if isinstance(schema, str):
        return base64.b64encode(value).decode() if schema == "bytes" else value
    if isinstance(schema, list):
        return _convert(_union_branch(schema, value, named), value, named)
    kind = schema["type"]
    if kind == "record":
        return {f["name"]: _convert(f["type"], value[f["name"]], named) for f in schema["fields"] if f["name"] in value}
    if kind == "array":
        return [_convert(schema["items"], item, named) for item in value]
    if kind == "map":
        return {k: _convert(schema["values"], v, named) for k, v in value.items()}
    if kind == "fixed":
        return base64.b64encode(value).decode()
    if schema.get("logicalType") == "timestamp-millis" and isinstance(value, int):
        return iso_from_ms(value)
    if kind == "enum":
        return value
    return _convert(kind, value, named)


def _union_branch(branches: list[Any], value: Any, named: dict[str, Any]) -> Any:
    """The branch of a union a Python value belongs to (records are dicts, enums strings, ...)."""
    for branch in branches:
        resolved = _resolve(branch, named)
        if _matches(resolved if isinstance(resolved, str) else resolved["type"], value):
            return branch
    raise ValueError(f"value {value!r} fits no branch of union {branches}")


def _matches(kind: str, value: Any) -> bool:
    if kind == "null":
        return value is None
    if kind in ("bytes", "fixed"):
        return isinstance(value, (bytes, bytearray))
    if kind in ("string", "enum"):
        return isinstance(value, str)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind in ("int", "long"):
        return isinstance(value, int) and not isinstance(value, bool)
    if kind in ("float", "double"):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind in ("record", "map"):
        return isinstance(value, dict)
    if kind == "array":
        return isinstance(value, list)
    return False
