"""Records as JSON for people and scripts (pure; no I/O).

Records travel with timestamps as int epoch milliseconds. Shown to a person they become
ISO-8601 UTC strings (``2026-05-02T14:03:07.125Z``): the record's ``TIMESTAMPS`` (the fields the
schema types ``timestamp-millis``). Bytes become base64 text, so every line is plain JSON.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from typing import Any

from streams.records import AvroRecord

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


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


def to_json(record: AvroRecord) -> dict[str, Any]:
    """``record`` as JSON-ready data: its Avro fields, timestamps as ISO-8601, bytes as base64."""
    data = record.to_avro()
    for name in record.TIMESTAMPS:
        data[name] = iso_from_ms(data[name])
    for name, value in data.items():
        if isinstance(value, bytes):
            data[name] = base64.b64encode(value).decode()
    return data
