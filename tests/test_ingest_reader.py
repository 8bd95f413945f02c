"""The worker's fast per-event path (:class:`streams.ingest.reader.EventReader`) decides exactly
what :func:`streams.ingest.validate` decides, for good, hostile and byte-mutated records (no servers)."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest

from streams.config import Settings, load_settings
from streams.ingest import Rejected, validate
from streams.ingest.reader import EventReader, Execution
from streams.serde import Codec

NOW = 1_800_000_000_000
SETTINGS = load_settings({})
CODEC = Codec()


def _event(**changes: Any) -> dict[str, Any]:
    record = {
        "event_id": "5f0c7a52-6d1e-4b53-9a55-1f3f2d6f0a01", "service": "booking-service", "instance_id": "pod-1",
        "event_time": NOW - 5_000, "fingerprint": "a6c3085224957fd8",
        "query_text": "SELECT * FROM bookings WHERE wedding_id = $1", "statement_type": "SELECT",
        "tables": ["bookings"], "duration_ms": 12.5, "rows": 3, "error": None, "database": None,
        "vendor_category": None, "wedding_id": None,
    }  # fmt: skip
    record.update(changes)
    return record


GOOD = [
    _event(),
    _event(fingerprint=None),
    _event(tables=[], query_text="SELECT * FROM vendors v JOIN bookings b ON b.vendor_id = v.id WHERE v.city = $1"),
    _event(error="57014", rows=-1),
    _event(error=""),
    _event(database="orders", vendor_category="photography", wedding_id="w-42"),
    _event(duration_ms=0.0),
    _event(duration_ms=-0.0),
    _event(rows=10**12, duration_ms=1e-9),
    _event(event_id="x" * 64, service="s" * 63, instance_id="é-pod"),
    _event(service="svc with space", event_id="\u00e9v\u00e9nement"),
    _event(query_text="SELECT 'literal', 42 FROM guests WHERE email = 'a@b.c'"),  # literals stripped by ingest
    _event(query_text="UPDATE Guests SET rsvp = $1 WHERE id = $2", tables=["Guests"], statement_type="UPDATE"),
    _event(query_text="NOTIFY ch, $1", fingerprint="f00d", statement_type="UTILITY", tables=[]),
    _event(event_time=NOW + 60_000),
]
HOSTILE = [
    _event(event_id=""), _event(event_id="   "), _event(service="\t"), _event(instance_id=" "),
    _event(service=" booking"),  # valid: not blank, but takes the exact path
    _event(duration_ms=math.nan), _event(duration_ms=math.inf), _event(duration_ms=-1.0), _event(duration_ms=1e12),
    _event(event_time=NOW - 10 * 3600 * 1000), _event(event_time=NOW + 3600 * 1000),
    _event(statement_type="DROP"), _event(statement_type=""), _event(query_text=""),
    _event(query_text="SELEKT nonsense FROM", fingerprint=None), _event(query_text="NOTIFY ch, $1", fingerprint=None),
    _event(service="s" * 300), _event(event_id="e" * 300), _event(error="x" * 300), _event(tables=["t" * 300]),
    _event(tables=[f"t{i}" for i in range(100)]), _event(query_text="SELECT 1 FROM t WHERE a = $1" + " " * 20_000),
]  # fmt: skip


def _encode(record: dict[str, Any]) -> bytes:
    return CODEC.encode("QueryEvent", record, topic="t")


def _verdict(result: Any) -> Any:
    if isinstance(result, Rejected):
        return ("rejected", result.reason)
    if isinstance(result, Execution):
        s = result.statement
        return ("accepted", result.service, result.event_time, result.duration_ms, result.error, result.rows,
                result.database, s.fingerprint, s.query_text, s.statement_type, s.tables, s.context, s.criticality)  # fmt: skip
    event = result.event
    return ("accepted", event.service, event.event_time, event.duration_ms, bool(event.error), event.rows,
            event.database, event.fingerprint, event.query_text, event.statement_type, event.tables, result.context,
            result.criticality)  # fmt: skip


def _same(reader: EventReader, value: bytes, settings: Settings = SETTINGS) -> None:
    expected = _verdict(validate(value, CODEC, settings, NOW))
    assert _verdict(reader.read(value, NOW)) == expected


def test_the_inline_decoder_reads_the_current_query_event_revision() -> None:
    assert EventReader(CODEC, SETTINGS).inline


@pytest.mark.parametrize("record", GOOD + HOSTILE, ids=range(len(GOOD + HOSTILE)))
def test_same_verdict_as_validate_first_and_repeated(record: dict[str, Any]) -> None:
    reader = EventReader(CODEC, SETTINGS)
    for good in GOOD:  # the memo knows every good statement
        reader.read(_encode(good), NOW)
    value = _encode(record)
    _same(reader, value)
    _same(reader, value)  # a second time: from the memo where it hits
    _same(reader, _encode({**record, "event_id": "another-id", "duration_ms": 7.0}) if record["event_id"] else value)


def test_same_verdict_for_framing_errors_and_other_records() -> None:
    reader = EventReader(CODEC, SETTINGS)
    good = _encode(GOOD[0])
    reader.read(good, NOW)
    window = CODEC.encode("DeadLetter", {"reason": "x", "detail": "y", "source_topic": "t", "source_partition": 0,
                                         "source_offset": 1, "original_key": None, "original_value": None,
                                         "received_at": NOW}, topic="d")  # fmt: skip
    for value in (None, b"", b"not avro", good[:9], good[:-1], good + b"\x00", b"\x00\x00\x00\x00\x01" + good[10:],
                  good[:2] + b"\x00" * 8 + good[10:], window):  # fmt: skip
        _same(reader, value)


def test_same_verdict_for_mutated_bytes() -> None:
    """Seeded random byte flips, insertions and truncations of good records (the seed is fixed)."""
    rng = random.Random(13)
    reader = EventReader(CODEC, SETTINGS)
    values = [_encode(r) for r in GOOD]
    for value in values:
        reader.read(value, NOW)
    for _ in range(4000):
        data = bytearray(rng.choice(values))
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(10, len(data))
            kind = rng.random()
            if kind < 0.6:
                data[at] = rng.randrange(256)
            elif kind < 0.8:
                data.insert(at, rng.randrange(256))
            else:
                del data[at:]
                break
        _same(reader, bytes(data))


def test_the_memo_is_bounded() -> None:
    settings = SETTINGS.with_overrides(ingest=SETTINGS.ingest.with_overrides(statement_cache=2))
    reader = EventReader(CODEC, settings)
    for i in range(5):
        value = _encode(_event(fingerprint=f"f{i}"))
        _same(reader, value, settings)
        _same(reader, value, settings)
    assert len(reader._memo) == 2  # noqa: SLF001 - the bound is the point
