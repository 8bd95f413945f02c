"""The Avro contracts in ``schemas/``: loading, parsing and fingerprints.

The top-level ``schemas/`` directory is the package ``streams.contracts`` (``streams/contracts``
is a symlink to it), so the wheel carries the ``.avsc`` files as package data and they are read
with :mod:`importlib.resources`, never from the checkout.

Every revision of every schema is known by its CRC-64-AVRO fingerprint (of the Parsing
Canonical Form), so single-object-encoded records written by an older revision still
decode: the writer schema is the old revision, the reader schema the current one.

The codec reads and writes the dicts of the typed records' ``to_avro()``/``from_avro()``
(:mod:`streams.records`); timestamp fields are int epoch milliseconds. To keep the hot path free
of datetime conversions, schemas are parsed for fastavro without their ``logicalType``
annotations (the canonical form, and so the fingerprint, ignores them).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib.resources import files
from importlib.resources.abc import Traversable
from typing import Any

import fastavro
from fastavro.schema import fingerprint, to_parsing_canonical_form

SCHEMAS: Traversable = files("streams.contracts")


@dataclass(frozen=True)
class SchemaRevision:
    name: str  # short record name, e.g. "QueryEvent"
    version: int
    raw: dict[str, Any]  # the .avsc as written (with docs and logical types)
    parsed: Any  # fastavro-parsed, logical types stripped
    fingerprint: bytes  # 8 bytes, little-endian CRC-64-AVRO, as single-object encoding carries it

    @property
    def text(self) -> str:
        return json.dumps(self.raw)

    def timestamp_fields(self) -> tuple[str, ...]:
        return tuple(
            f["name"]
            for f in self.raw["fields"]
            if isinstance(f["type"], dict) and f["type"].get("logicalType") == "timestamp-millis"
        )


def _strip_logical_types(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _strip_logical_types(v) for k, v in node.items() if k != "logicalType"}
    if isinstance(node, list):
        return [_strip_logical_types(v) for v in node]
    return node


def parse_revision(raw: dict[str, Any]) -> SchemaRevision:
    canonical = to_parsing_canonical_form(raw)
    fp_hex = fingerprint(canonical, "CRC-64-AVRO")
    # fastavro gives the 64-bit fingerprint as little-endian hex, the byte order
    # single-object encoding carries (spec vector: "null" -> 8a8f25cce724dd63)
    fp = bytes.fromhex(fp_hex)
    parsed = fastavro.parse_schema(_strip_logical_types(raw), _force=True)
    return SchemaRevision(raw["name"], int(raw.get("version", 1)), raw, parsed, fp)


@dataclass(frozen=True)
class SchemaSet:
    current: dict[str, SchemaRevision]
    by_fingerprint: dict[bytes, SchemaRevision]

    def get(self, name: str) -> SchemaRevision:
        try:
            return self.current[name]
        except KeyError:
            raise KeyError(f"unknown schema {name!r}; known: {sorted(self.current)}") from None


def _avsc_files(directory: Traversable) -> list[Traversable]:
    if not directory.is_dir():
        return []
    return sorted((f for f in directory.iterdir() if f.name.endswith(".avsc")), key=lambda f: f.name)


def load_schema_set(directory: Traversable = SCHEMAS) -> SchemaSet:
    """The current schemas (``*.avsc``) and every older revision (``revisions/*.avsc``)."""
    current: dict[str, SchemaRevision] = {}
    by_fp: dict[bytes, SchemaRevision] = {}
    for path in _avsc_files(directory):
        rev = parse_revision(json.loads(path.read_text(encoding="utf-8")))
        current[rev.name] = rev
        by_fp[rev.fingerprint] = rev
    for path in _avsc_files(directory / "revisions"):
        rev = parse_revision(json.loads(path.read_text(encoding="utf-8")))
        by_fp.setdefault(rev.fingerprint, rev)
    if not current:
        raise FileNotFoundError(f"no Avro schemas found in {directory}")
    return SchemaSet(current, by_fp)


@lru_cache(maxsize=1)
def default_schema_set() -> SchemaSet:
    return load_schema_set()
