"""Every schema change stays compatible: the checked-in samples of every revision still decode
with the current schemas (through the production decoder, checked against fastavro's own
schema resolution), and every revision is compatible with the current one both ways.
The last tests show the check catches incompatible changes."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from samples import (
    EXAMPLES,
    SAMPLE_DIR,
    SCHEMA_DIR,
    TOPIC_OF_SCHEMA,
    compatibility_problems,
    current,
    read_avro_json,
    resolve,
    revisions,
    sample_path,
)
from streams.serde import Codec, DecodeError, load_schema_set
from streams.serde.schemas import parse_revision

SAMPLE_FILES = sorted(SAMPLE_DIR.glob("*.json"))


def test_every_schema_has_examples_topic_and_current_samples() -> None:
    names = set(current())
    assert names == set(EXAMPLES) == set(TOPIC_OF_SCHEMA)
    missing = [f"{n} v{raw.get('version', 1)}" for n, raw in current().items()
               if not sample_path(n, int(raw.get("version", 1))).exists()]
    assert not missing, f"no sample records for {missing}: run `python tests/samples.py` and commit them"


@pytest.mark.parametrize("path", SAMPLE_FILES, ids=[p.stem for p in SAMPLE_FILES])
def test_old_samples_decode_with_current_schemas(path: Path) -> None:
    doc = json.loads(path.read_text())
    name, version = doc["schema"], doc["version"]
    writer = revisions().get((name, version))
    assert writer is not None, (
        f"{name} v{version} is gone from schemas/: copy a schema to schemas/revisions/ before changing it"
    )
    assert parse_revision(writer).fingerprint.hex() == doc["fingerprint"], (
        f"schemas/ holds a different {name} v{version} than the one that wrote {path.name}: "
        "a changed schema needs a new version (and the old one in schemas/revisions/)"
    )
    reader = current()[name]
    codec = Codec()
    assert doc["records"]
    for sample in doc["records"]:
        data = bytes.fromhex(sample["single_object"])
        assert data[2:10].hex() == doc["fingerprint"]
        decoded = codec.decode(data)
        assert decoded.schema_name == name
        # oracle: fastavro's resolution of the JSON form, written by the old schema, read by the new
        expected = resolve(writer, reader, read_avro_json(writer, sample["avro_json"]))
        assert decoded.record == expected


@pytest.mark.parametrize("key", sorted(revisions()), ids=lambda k: f"{k[0]}.v{k[1]}")
def test_every_revision_compatible_with_current(key: tuple[str, int]) -> None:
    old = revisions()[key]
    assert compatibility_problems(old, current()[key[0]]) == []


# -- the check catches incompatible changes ----------------------------------------------------


def _changed(name: str, change: Any) -> dict[str, Any]:
    raw = copy.deepcopy(current()[name])
    change(raw)
    raw["version"] = raw.get("version", 1) + 1
    return raw


def _field(raw: dict[str, Any], field: str) -> dict[str, Any]:
    return next(f for f in raw["fields"] if f["name"] == field)


def test_removed_required_field_is_incompatible() -> None:
    new = _changed("QueryEvent", lambda r: r["fields"].remove(_field(r, "duration_ms")))
    problems = compatibility_problems(current()["QueryEvent"], new)
    assert problems and all("forward" in p for p in problems) and "duration_ms" in " ".join(problems)


def test_retyped_field_is_incompatible() -> None:
    new = _changed("QueryEvent", lambda r: _field(r, "rows").update(type="string"))
    problems = compatibility_problems(current()["QueryEvent"], new)
    assert any(p.startswith("backward") for p in problems) and any(p.startswith("forward") for p in problems)


def test_new_field_without_default_is_incompatible() -> None:
    new = _changed("PoolSnapshot", lambda r: r["fields"].append({"name": "region", "type": "string"}))
    problems = compatibility_problems(current()["PoolSnapshot"], new)
    assert len(problems) == 1 and problems[0].startswith("backward") and "region" in problems[0]


def test_removed_enum_symbol_is_incompatible() -> None:
    new = _changed("Alert", lambda r: _field(r, "state")["type"]["symbols"].remove("resolved"))
    assert any("resolved" in p for p in compatibility_problems(current()["Alert"], new))


def test_new_field_with_default_is_compatible() -> None:
    new = _changed("PoolSnapshot", lambda r: r["fields"].append({"name": "region", "type": "string", "default": "eu"}))
    assert compatibility_problems(current()["PoolSnapshot"], new) == []


def test_retyped_schema_fails_on_the_checked_in_samples(tmp_path: Path) -> None:
    """The data-level check: with ``duration_ms`` retyped to string (version bumped, the old
    revision kept as the rules say), the production decoder cannot read the old samples."""
    shutil.copytree(SCHEMA_DIR, tmp_path / "schemas")
    old = current()["QueryEvent"]
    (tmp_path / "schemas" / "revisions").mkdir(exist_ok=True)
    (tmp_path / "schemas" / "revisions" / f"QueryEvent.{old['version']}.avsc").write_text(json.dumps(old))
    new = _changed("QueryEvent", lambda r: _field(r, "duration_ms").update(type="string"))
    (tmp_path / "schemas" / "QueryEvent.avsc").write_text(json.dumps(new))
    codec = Codec(schemas=load_schema_set(tmp_path / "schemas"))
    sample = json.loads(sample_path("QueryEvent", old["version"]).read_text())["records"][0]
    with pytest.raises(DecodeError) as info:
        codec.decode(bytes.fromhex(sample["single_object"]))
    assert info.value.reason == "malformed_avro"
