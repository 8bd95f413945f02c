"""Codec behaviour that needs no server: framing, typed errors, schema revisions."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from samples import SCHEMA_DIR
from streams.serde import Codec, DecodeError, SchemaError, load_schema_set


def _event() -> dict:
    return dict(
        event_id="e1", service="booking", instance_id="i1", event_time=1_795_306_000_000, fingerprint=None,
        query_text="SELECT * FROM bookings WHERE id = $1", statement_type="SELECT", tables=["bookings"],
        duration_ms=1.5, rows=1, error=None, database=None, vendor_category=None, wedding_id=None,
    )


def test_single_object_round_trip_and_header() -> None:
    codec = Codec()
    data = codec.encode("QueryEvent", _event(), topic="t")
    assert data[:2] == b"\xc3\x01"
    assert data[2:10] == codec.schemas.get("QueryEvent").fingerprint
    decoded = codec.decode(data)
    assert (decoded.schema_name, decoded.wire_format) == ("QueryEvent", "single-object")
    assert decoded.record == _event()


def test_fingerprint_matches_avro_spec_vector() -> None:
    # Avro spec: CRC-64-AVRO of the schema "null" is 0x63dd24e7cc258f8a; single-object encoding
    # carries it little-endian, and that is the byte order parse_revision stores
    from fastavro.schema import fingerprint, to_parsing_canonical_form

    assert fingerprint('"null"', "CRC-64-AVRO") == struct.pack("<Q", 0x63DD24E7CC258F8A).hex()
    rev = Codec().schemas.get("QueryEvent")
    canonical = fingerprint(to_parsing_canonical_form(rev.raw), "CRC-64-AVRO")
    assert rev.fingerprint == bytes.fromhex(canonical)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "undecodable"),
        (b"{\"json\": true}", "undecodable"),
        (b"\xc3\x01\x00", "undecodable"),
        (b"\xc3\x01" + b"\x00" * 8 + b"x", "unknown_schema"),
        (b"\x00\x00\x00\x00\x07abc", "unknown_schema"),
    ],
)
def test_garbage_raises_typed_error(data: bytes, reason: str) -> None:
    with pytest.raises(DecodeError) as info:
        Codec().decode(data)
    assert info.value.reason == reason
    assert info.value.detail


def test_truncated_and_trailing_bodies_are_malformed() -> None:
    codec = Codec()
    data = codec.encode("QueryEvent", _event(), topic="t")
    for bad in (data[:-3], data + b"zz"):
        with pytest.raises(DecodeError) as info:
            codec.decode(bad)
        assert info.value.reason == "malformed_avro"


def test_encode_rejects_records_that_do_not_fit() -> None:
    codec = Codec()
    with pytest.raises(SchemaError, match="service"):
        codec.encode("QueryEvent", {k: v for k, v in _event().items() if k != "service"}, topic="t")
    with pytest.raises(SchemaError):
        codec.encode("QueryEvent", {**_event(), "duration_ms": "slow"}, topic="t")
    with pytest.raises(KeyError, match="unknown schema"):
        codec.encode("NoSuchRecord", {}, topic="t")


def test_optional_fields_take_their_defaults() -> None:
    codec = Codec()
    sparse = {k: v for k, v in _event().items() if k not in ("error", "database", "rows", "tables")}
    record = codec.decode(codec.encode("QueryEvent", sparse, topic="t")).record
    assert record["error"] is None and record["rows"] == 0 and record["tables"] == []


def test_old_revision_is_read_with_current_schema(tmp_path: Path) -> None:
    """A record written by an older revision decodes through its fingerprint into the current shape."""
    for path in SCHEMA_DIR.glob("*.avsc"):
        (tmp_path / path.name).write_text(path.read_text())
    current = json.loads((SCHEMA_DIR / "QueryEvent.avsc").read_text())
    old = {**current, "version": 0, "fields": [f for f in current["fields"] if f["name"] != "wedding_id"]}
    (tmp_path / "revisions").mkdir()
    (tmp_path / "revisions" / "QueryEvent.0.avsc").write_text(json.dumps(old))
    schemas = load_schema_set(tmp_path)
    old_rev = schemas.by_fingerprint[next(fp for fp, r in schemas.by_fingerprint.items() if r.version == 0)]
    import io

    import fastavro

    buf = io.BytesIO()
    record = {k: v for k, v in _event().items() if k != "wedding_id"}
    fastavro.schemaless_writer(buf, old_rev.parsed, record)
    decoded = Codec(schemas).decode(b"\xc3\x01" + old_rev.fingerprint + buf.getvalue())
    assert decoded.record == {**record, "wedding_id": None}
