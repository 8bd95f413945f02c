"""The typed records (streams.records) match the Avro contracts field for field, and survive the
real Codec: a schema changed without its record (or the reverse) fails here."""

from __future__ import annotations

import json
from typing import Any, Literal, get_args, get_origin, get_type_hints

import msgspec
import pytest

from samples import EXAMPLES, SAMPLE_DIR, current, read_avro_json
from streams import records
from streams.records import RECORD_TYPES, AvroRecord, EpochMs, OptimizationResult, QueryEvent, WindowStats
from streams.serde import Codec

SCHEMAS = current()
_PRIMITIVES: dict[str, type] = {
    "string": str, "long": int, "int": int, "double": float, "float": float, "boolean": bool, "bytes": bytes,
}


def _python_type(avro: Any) -> Any:
    """The annotation a record field must have for an Avro field type."""
    if isinstance(avro, list):
        assert len(avro) == 2 and avro[0] == "null", f"only [null, T] unions are mapped, got {avro}"
        return _python_type(avro[1]) | None
    if isinstance(avro, str):
        return _PRIMITIVES[avro]
    if avro["type"] == "enum":
        return Literal[tuple(avro["symbols"])]
    if avro["type"] == "array":
        return tuple[_python_type(avro["items"]), ...]  # type: ignore[misc]
    if avro["type"] == "record":  # a nested record: its Struct in streams.records, same name
        return getattr(records, avro["name"])
    if avro.get("logicalType") == "timestamp-millis":
        return EpochMs
    return _PRIMITIVES[avro["type"]]


def _python_default(avro_field: dict[str, Any]) -> Any:
    if "default" not in avro_field:
        return msgspec.NODEFAULT
    return tuple(avro_field["default"]) if isinstance(avro_field["default"], list) else avro_field["default"]


def test_every_schema_has_a_record_class_and_every_class_a_schema() -> None:
    assert set(RECORD_TYPES) == set(SCHEMAS)
    assert set(get_args(records.Record)) == set(RECORD_TYPES.values())
    for name, cls in RECORD_TYPES.items():
        assert cls.SCHEMA == name == cls.__name__


def _mismatches(cls: type[AvroRecord], schema: dict[str, Any]) -> list[str]:
    """How the record class differs from the .avsc: names, order, types, optionality, defaults, symbols."""
    fields = msgspec.structs.fields(cls)
    avro_fields = schema["fields"]
    if [f.name for f in fields] != [f["name"] for f in avro_fields]:
        return [f"fields {[f.name for f in fields]} != {[f['name'] for f in avro_fields]}"]
    hints = get_type_hints(cls, include_extras=True)
    problems = []
    for field, avro in zip(fields, avro_fields, strict=True):
        expected, hint = _python_type(avro["type"]), hints[field.name]
        if hint != expected or (get_origin(hint) is Literal and get_args(hint) != get_args(expected)):
            problems.append(f"{field.name}: type {hint} != {expected}")
        if field.default != _python_default(avro) or field.default_factory is not msgspec.NODEFAULT:
            problems.append(f"{field.name}: default {field.default!r} != {avro.get('default', 'none')!r}")
    return problems


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_record_matches_its_schema_field_for_field(name: str) -> None:
    assert _mismatches(RECORD_TYPES[name], SCHEMAS[name]) == []


def test_the_check_sees_a_drift() -> None:
    def changed(edit: Any) -> dict[str, Any]:
        schema = json.loads(json.dumps(SCHEMAS["Alert"]))
        edit(schema["fields"])
        return schema

    def field(fields: list[dict[str, Any]], name: str) -> dict[str, Any]:
        return next(f for f in fields if f["name"] == name)

    drifts = [
        lambda fs: fs.append({"name": "region", "type": ["null", "string"], "default": None}),  # new field
        lambda fs: fs.insert(0, fs.pop()),  # order
        lambda fs: field(fs, "message").update(default="none"),  # default
        lambda fs: field(fs, "p95_ms").update(type=["null", "double"], default=None),  # optionality
        lambda fs: field(fs, "kind")["type"]["symbols"].append("pool_wait"),  # enum symbol
        lambda fs: field(fs, "kind")["type"]["symbols"].reverse(),  # enum order
        lambda fs: field(fs, "window_end").update(type="double"),  # type
        lambda fs: field(fs, "window_end").update(type="long"),  # no longer a timestamp
    ]
    for edit in drifts:
        assert _mismatches(records.Alert, changed(edit)), edit


def _samples() -> list[tuple[str, str, dict[str, Any]]]:
    out = []
    for path in sorted(SAMPLE_DIR.glob("*.json")):
        doc = json.loads(path.read_text())
        out += [(doc["schema"], doc["fingerprint"], r) for r in doc["records"]]
    return out


@pytest.mark.parametrize(("name", "fingerprint", "sample"), _samples())
def test_samples_round_trip_through_the_codec(name: str, fingerprint: str, sample: dict[str, Any]) -> None:
    codec = Codec()
    data = bytes.fromhex(sample["single_object"])
    record = codec.decode_record(data)
    assert type(record) is RECORD_TYPES[name]
    encoded = codec.encode_record(record, topic="t")
    assert codec.decode_record(encoded) == record
    rev = codec.schemas.get(name)
    if rev.fingerprint.hex() == fingerprint:  # a sample of the current revision: the very same bytes
        assert encoded == data
        assert record.to_avro() == read_avro_json(rev.raw, sample["avro_json"])


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_examples_are_records_and_back(name: str) -> None:
    for example in EXAMPLES[name]:
        record = RECORD_TYPES[name].from_avro(example)
        assert record.to_avro() == example
        assert all(type(v) is list for v in record.to_avro().values() if isinstance(v, (list, tuple)))


def test_records_are_frozen_hashable_and_keyword_only() -> None:
    event = QueryEvent.from_avro(EXAMPLES["QueryEvent"][0])
    with pytest.raises(AttributeError):
        event.service = "other"  # type: ignore[misc]
    assert hash(event) == hash(QueryEvent.from_avro(EXAMPLES["QueryEvent"][0]))
    assert msgspec.structs.replace(event, rows=7).rows == 7 and event.rows == 3
    with pytest.raises(TypeError):
        QueryEvent("e", "s")  # type: ignore[misc]


def test_building_checks_enum_fields() -> None:
    base = {"command_id": "c", "reason": "", "sql": "ANALYZE t", "finished_at": 1}
    assert OptimizationResult(status="kept", **base).status == "kept"
    with pytest.raises(ValueError, match="status must be one of"):
        OptimizationResult(status="done", **base)  # type: ignore[arg-type]
    with pytest.raises(msgspec.ValidationError, match="window_kind"):
        WindowStats.from_avro({**EXAMPLES["WindowStats"][0], "window_kind": "sliding"})


def test_from_avro_takes_exactly_the_schema_fields_with_their_types() -> None:
    example = EXAMPLES["QueryEvent"][0]
    with pytest.raises(msgspec.ValidationError, match="unknown field"):
        QueryEvent.from_avro({**example, "region": "eu"})
    with pytest.raises(msgspec.ValidationError, match="service"):
        QueryEvent.from_avro({k: v for k, v in example.items() if k != "service"})
    with pytest.raises(msgspec.ValidationError, match="duration_ms"):
        QueryEvent.from_avro({**example, "duration_ms": "slow"})
