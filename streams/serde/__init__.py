"""Avro contracts and their two wire formats (single-object encoding, Confluent)."""

from .codec import CONFLUENT_MAGIC, SINGLE_OBJECT_MAGIC, Codec, Decoded, DecodeError, SchemaError
from .schemas import SchemaRevision, SchemaSet, default_schema_set, load_schema_set

__all__ = [
    "CONFLUENT_MAGIC",
    "SINGLE_OBJECT_MAGIC",
    "Codec",
    "DecodeError",
    "Decoded",
    "SchemaError",
    "SchemaRevision",
    "SchemaSet",
    "default_schema_set",
    "load_schema_set",
]
