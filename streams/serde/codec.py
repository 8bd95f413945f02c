"""Avro encoding and decoding of dbopt records, fastavro on the hot path.

Two wire formats, and the decoder accepts both:

* **Confluent wire format** (when ``DBOPT_SCHEMA_REGISTRY_URL`` is set): ``0x00`` +
  4-byte big-endian schema id + Avro body. Schemas are registered under the
  ``<topic>-value`` subject through confluent-kafka's Schema Registry client.
* **Avro single-object encoding** (otherwise): ``0xC3 0x01`` + 8-byte little-endian
  CRC-64-AVRO fingerprint of the writer schema + Avro body; schemas come from ``schemas/``.

Anything else raises :class:`DecodeError`, whose ``reason`` is a short machine-readable
class (it becomes the DLQ reason) and ``detail`` says what exactly was wrong.
"""

from __future__ import annotations

import io
import json
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import fastavro

from streams.records import RECORD_TYPES, Record

from .schemas import SchemaRevision, SchemaSet, default_schema_set, parse_revision

if TYPE_CHECKING:
    from confluent_kafka.schema_registry import SchemaRegistryClient

    from streams.config import Settings

SINGLE_OBJECT_MAGIC = b"\xc3\x01"
CONFLUENT_MAGIC = b"\x00"


class DecodeError(ValueError):
    """Bytes that are not a dbopt record. ``reason`` is a stable class, ``detail`` the specifics."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class SchemaError(ValueError):
    """A record that does not fit its schema (raised when encoding or validating)."""


@dataclass(frozen=True)
class Decoded:
    schema_name: str
    record: dict[str, Any]
    wire_format: str  # "single-object" or "confluent"


class Codec:
    def __init__(self, schemas: SchemaSet | None = None, registry: "SchemaRegistryClient | None" = None) -> None:
        self.schemas = schemas or default_schema_set()
        self.registry = registry
        self._ids: dict[tuple[str, str], int] = {}  # (subject, schema name) -> registry id
        self._by_id: dict[int, SchemaRevision] = {}

    @classmethod
    def from_settings(cls, settings: "Settings") -> "Codec":
        registry = None
        if settings.schema_registry_url:
            from confluent_kafka.schema_registry import SchemaRegistryClient

            auth = settings.schema_registry
            config: dict[str, Any] = {"url": settings.schema_registry_url}
            if auth.username is not None and auth.password is not None:
                config["basic.auth.user.info"] = f"{auth.username}:{auth.password.get_secret_value()}"
            if auth.ca_file is not None:
                config["ssl.ca.location"] = auth.ca_file
            registry = SchemaRegistryClient(config)
        return cls(registry=registry)

    # -- encoding -------------------------------------------------------------------

    def _body(self, rev: SchemaRevision, record: dict[str, Any]) -> bytes:
        buf = io.BytesIO()
        try:
            fastavro.schemaless_writer(buf, rev.parsed, record, strict_allow_default=True)
        except (ValueError, TypeError, KeyError, AttributeError, OverflowError, struct.error) as exc:
            raise SchemaError(f"record does not fit {rev.name}: {exc}") from exc
        return buf.getvalue()

    def validate(self, name: str, record: dict[str, Any]) -> None:
        """Raise :class:`SchemaError` when ``record`` cannot be written as ``name``."""
        self._body(self.schemas.get(name), record)

    def prepare(self, name: str, topic: str) -> None:
        """Register ``name`` for ``topic`` now (with a registry), so no later ``encode`` waits on HTTP."""
        if self.registry is not None:
            self._registry_id(topic, self.schemas.get(name))

    def encode(self, name: str, record: dict[str, Any], topic: str) -> bytes:
        rev = self.schemas.get(name)
        body = self._body(rev, record)
        if self.registry is None:
            return SINGLE_OBJECT_MAGIC + rev.fingerprint + body
        return CONFLUENT_MAGIC + struct.pack(">I", self._registry_id(topic, rev)) + body

    def encode_record(self, record: Record, topic: str) -> bytes:
        """:meth:`encode` for a typed record (:mod:`streams.records`)."""
        return self.encode(record.SCHEMA, record.to_avro(), topic)

    def _registry_id(self, topic: str, rev: SchemaRevision) -> int:
        from confluent_kafka.schema_registry import Schema

        subject = f"{topic}-value"
        key = (subject, rev.name)
        if key not in self._ids:
            assert self.registry is not None
            schema_id = self.registry.register_schema(subject, Schema(rev.text, "AVRO"))
            self._ids[key] = schema_id
            self._by_id[schema_id] = rev
        return self._ids[key]

    # -- decoding -------------------------------------------------------------------

    def decode(self, data: bytes | None) -> Decoded:
        if not data:
            raise DecodeError("undecodable", "empty value")
        if data[:2] == SINGLE_OBJECT_MAGIC:
            if len(data) < 10:
                raise DecodeError("undecodable", f"single-object header truncated ({len(data)} bytes)")
            writer = self.schemas.by_fingerprint.get(bytes(data[2:10]))
            if writer is None:
                raise DecodeError("unknown_schema", f"no schema with fingerprint {bytes(data[2:10]).hex()}")
            return self._read(writer, data[10:], "single-object")
        if data[:1] == CONFLUENT_MAGIC:
            if len(data) < 5:
                raise DecodeError("undecodable", f"Confluent header truncated ({len(data)} bytes)")
            (schema_id,) = struct.unpack(">I", data[1:5])
            return self._read(self._writer_for_id(schema_id), data[5:], "confluent")
        raise DecodeError(
            "undecodable",
            f"unknown magic byte 0x{data[0]:02x}: neither Avro single-object (C3 01) nor Confluent (00) framing",
        )

    def decode_record(self, data: bytes | None) -> Record:
        """:meth:`decode` to the typed record (:mod:`streams.records`) of the writer's schema."""
        decoded = self.decode(data)
        return RECORD_TYPES[decoded.schema_name].from_avro(decoded.record)  # type: ignore[return-value]

    def _writer_for_id(self, schema_id: int) -> SchemaRevision:
        if schema_id in self._by_id:
            return self._by_id[schema_id]
        if self.registry is None:
            raise DecodeError(
                "unknown_schema", f"Confluent-framed record (schema id {schema_id}) but no schema registry is configured"
            )
        try:
            text = self.registry.get_schema(schema_id).schema_str
        except Exception as exc:  # noqa: BLE001 - registry errors become a decode reason
            raise DecodeError("unknown_schema", f"schema id {schema_id} not in registry: {exc}") from exc
        if text is None:
            raise DecodeError("unknown_schema", f"schema id {schema_id} has no schema text in the registry")
        writer = parse_revision(json.loads(text))
        if writer.name not in self.schemas.current:
            raise DecodeError("unknown_schema", f"schema id {schema_id} is {writer.name}, not a dbopt schema")
        self._by_id[schema_id] = writer
        return writer

    def _read(self, writer: SchemaRevision, body: bytes, wire_format: str) -> Decoded:
        reader = self.schemas.current.get(writer.name, writer)
        buf = io.BytesIO(body)
        try:
            record = fastavro.schemaless_reader(
                buf, writer.parsed, None if reader.fingerprint == writer.fingerprint else reader.parsed
            )
        except Exception as exc:  # noqa: BLE001 - fastavro raises many types on garbage
            raise DecodeError("malformed_avro", f"{writer.name} body does not parse: {type(exc).__name__}: {exc}") from exc
        if buf.tell() != len(body):
            raise DecodeError("malformed_avro", f"{len(body) - buf.tell()} trailing bytes after the {writer.name} record")
        return Decoded(writer.name, record, wire_format)  # type: ignore[arg-type]
