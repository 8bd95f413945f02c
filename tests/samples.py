"""Example records of every schema, the checked-in samples of every schema revision, and the
compatibility check.

``tests/data/samples/<Name>.v<version>.json`` holds records written by that revision of the
schema: each as Avro JSON encoding (fastavro ``json_writer``, readable) and as the Avro
single-object encoding's bytes (hex). Sample files are evidence and are never rewritten.
When a schema gets a new revision, ``python tests/samples.py`` writes the missing sample file
for it (the previous revision's records read with the new schema, or ``EXAMPLES`` for a new
schema); add records that use the new fields by hand if you like.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import fastavro
from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType
from avro.schema import parse as avro_parse

from streams.serde.schemas import parse_revision

SCHEMA_DIR = Path(__file__).resolve().parents[1] / "schemas"  # the contracts as checked in
SAMPLE_DIR = Path(__file__).resolve().parent / "data" / "samples"

# schema -> key in streams.config.Topics (see schemas/README.md)
TOPIC_OF_SCHEMA = {
    "QueryEvent": "query_events",
    "PoolSnapshot": "pool_snapshots",
    "WindowStats": "latency_windows",
    "Alert": "alerts",
    "OptimizationCommand": "commands",
    "OptimizationResult": "results",
    "DeadLetter": "dlq",
    "NotificationResult": "notifications",
    "ServerSnapshot": "server_snapshots",
    "StatementStats": "statement_stats",
    "StatementSketch": "statement_sketches",
}

T0 = 1_777_730_587_125  # 2026-05-02T14:03:07.125Z, a Saturday in peak season

# Realistic records of the first revision of every schema: nulls and non-null union
# branches, empty and full arrays, every kind of field.
EXAMPLES: dict[str, list[dict[str, Any]]] = {
    "QueryEvent": [
        {
            "event_id": "5f0c7a52-6d1e-4b53-9a55-1f3f2d6f0a01", "service": "booking-service",
            "instance_id": "booking-7d9f-abcde", "event_time": T0, "fingerprint": "a6c3085224957fd8",
            "query_text": "SELECT * FROM bookings WHERE wedding_id = $1 AND status = $2",
            "statement_type": "SELECT", "tables": ["bookings"], "duration_ms": 48.25, "rows": 3, "error": None,
            "database": "dbopt", "vendor_category": "photography", "wedding_id": "w-000042",
        },
        {
            "event_id": "5f0c7a52-6d1e-4b53-9a55-1f3f2d6f0a02", "service": "payment-service",
            "instance_id": "payment-1", "event_time": T0 + 1, "fingerprint": None,
            "query_text": "UPDATE payments SET status = $1 WHERE id = $2", "statement_type": "UPDATE",
            "tables": ["payments"], "duration_ms": 0.0, "rows": -1, "error": "40001",
            "database": None, "vendor_category": None, "wedding_id": None,
        },
    ],
    "PoolSnapshot": [
        {
            "service": "booking-service", "instance_id": "booking-1", "pool_name": "default",
            "snapshot_time": T0, "size": 20, "max_size": 20, "in_use": 17, "idle": 3, "waiting": 4,
            "database": "dbopt", "min_size": 4, "interval_ms": 5000, "checkouts": 250, "checkout_wait_p95_ms": 12.5,
            "checkout_wait_max_ms": 30.0, "timeouts": 1,
        },
        {
            "service": "guest-service", "instance_id": "guest-2", "pool_name": "replica",
            "snapshot_time": T0, "size": 0, "max_size": 5, "in_use": 0, "idle": 0, "waiting": 0, "database": None,
            "min_size": 0, "interval_ms": 0, "checkouts": 0, "checkout_wait_p95_ms": None, "checkout_wait_max_ms": None,
            "timeouts": 0,
        },
    ],
    "WindowStats": [
        {
            "window_id": "ws-1", "window_kind": "tumbling", "window_start": T0 - 60_000, "window_end": T0,
            "service": "booking-service", "fingerprint": "a6c3085224957fd8", "context": "booking",
            "criticality": "critical", "count": 1200, "errors": 2, "rows": 3600, "min_ms": 0.4, "max_ms": 310.0,
            "sum_ms": 21000.5, "p50_ms": 11.0, "p95_ms": 61.5, "p99_ms": 140.25, "statement_type": "SELECT",
            "query_text": "SELECT * FROM bookings WHERE wedding_id = $1", "tables": ["bookings"], "emitted_at": T0 + 5000,
            "database": "weddings_eu",
        },
        {
            "window_id": "ws-2", "window_kind": "hopping", "window_start": T0 - 300_000, "window_end": T0,
            "service": "vendor-service", "fingerprint": None, "context": "vendor_search", "criticality": "high",
            "count": 1, "errors": 0, "rows": 0, "min_ms": 5.0, "max_ms": 5.0, "sum_ms": 5.0, "p50_ms": 5.0,
            "p95_ms": 5.0, "p99_ms": 5.0, "statement_type": None, "query_text": None, "tables": [], "emitted_at": 0,
            "database": None,
        },
    ],
    "Alert": [
        {
            "alert_id": "al-1", "state": "firing", "severity": "critical", "kind": "slo", "service": "booking-service",
            "context": "booking", "fingerprint": "a6c3085224957fd8", "p95_ms": 61.5, "threshold_ms": 50.0,
            "baseline_ms": 12.0, "window_start": T0 - 60_000, "window_end": T0,
            "query_text": "SELECT * FROM bookings WHERE wedding_id = $1", "message": "p95 61.5 ms > SLO 50 ms",
            "created_at": T0 + 10, "metric": None, "season": None, "pool_name": None, "recommended_max_size": None,
            "database": "weddings_eu",
        },
        {
            "alert_id": "al-2", "state": "resolved", "severity": "info", "kind": "pool", "service": "guest-service",
            "context": "guest_management", "fingerprint": None, "p95_ms": 0.0, "threshold_ms": 0.75,
            "baseline_ms": None, "window_start": T0, "window_end": T0 + 60_000, "query_text": None, "message": "",
            "created_at": 0, "metric": "utilization", "season": "peak", "pool_name": "replica",
            "recommended_max_size": 8, "database": None,
        },
    ],
    "OptimizationCommand": [
        {
            "command_id": "cmd-1", "created_at": T0, "origin": "advisor", "action": "create_index",
            "sql": "CREATE INDEX CONCURRENTLY dbopt_bookings_wedding_id ON bookings (wedding_id)",
            "rollback_sql": "DROP INDEX CONCURRENTLY dbopt_bookings_wedding_id", "table": "bookings",
            "emergency": False, "rollback_of": None, "service": "booking-service", "context": "booking",
            "fingerprints": ["a6c3085224957fd8", "0011223344556677"], "p95_before_ms": 61.5,
            "cost_before": 35811.0, "cost_after": 8.44, "reason": "seq scan on bookings.wedding_id",
            "signature": "9f" * 32, "priority": 90, "evidence": [{"name": "sampled_ms_before", "value": 12.5}],
            "requires": ["pg_trgm"], "recommendation": False, "database": "weddings_eu",
        },
        {
            "command_id": "cmd-2", "created_at": T0, "origin": "operator", "action": "analyze",
            "sql": "ANALYZE payments", "rollback_sql": None, "table": None, "emergency": True,
            "rollback_of": "cmd-1", "service": None, "context": None, "fingerprints": [], "p95_before_ms": None,
            "cost_before": None, "cost_after": None, "reason": "", "signature": "00" * 32,
            "priority": 0, "evidence": [], "requires": [], "recommendation": True, "database": None,
        },
    ],
    "OptimizationResult": [
        {
            "command_id": "cmd-1", "status": "applied", "reason": "index built", "table": "bookings",
            "sql": "CREATE INDEX CONCURRENTLY dbopt_bookings_wedding_id ON bookings (wedding_id)",
            "rollback_sql": "DROP INDEX CONCURRENTLY dbopt_bookings_wedding_id",
            "index_name": "dbopt_bookings_wedding_id", "finished_at": T0 + 9000, "duration_ms": 8123.5,
            "p95_before_ms": 61.5, "p95_after_ms": 4.25, "write_p95_before_ms": 2.0, "write_p95_after_ms": 2.5,
            "cost_before": 35811.0, "cost_after": 8.44, "executor_id": "executor-0",
            "database": "weddings_eu",
        },
        {
            "command_id": "cmd-3", "status": "deferred", "reason": "Saturday freeze", "table": None,
            "sql": "ANALYZE payments", "rollback_sql": None, "index_name": None, "finished_at": T0,
            "duration_ms": None, "p95_before_ms": None, "p95_after_ms": None, "write_p95_before_ms": None,
            "write_p95_after_ms": None, "cost_before": None, "cost_after": None, "executor_id": "",
            "database": None,
        },
    ],
    "DeadLetter": [
        {
            "reason": "undecodable", "detail": "unknown magic byte 0x7b", "source_topic": "dbopt.query-events.v1",
            "source_partition": 3, "source_offset": 1_234_567, "original_key": b"booking-service",
            "original_value": b'{"not": "avro"}\x00\xff', "received_at": T0,
        },
        {
            "reason": "missing_field", "detail": "", "source_topic": "dbopt.query-events.v1",
            "source_partition": 0, "source_offset": 0, "original_key": None, "original_value": b"",
            "received_at": T0,
        },
    ],
    "NotificationResult": [
        {
            "notification_id": "al-1", "source": "alert", "channel": "sms", "target": "+15550100",
            "status": "delivered", "reason": "", "severity": "critical", "state": "firing", "attempts": 2,
            "latency_ms": 412.5, "digest_id": None, "finished_at": T0 + 500,
        },
        {
            "notification_id": "result:cmd-1:applied", "source": "result", "channel": "slack", "target": "",
            "status": "digested", "reason": "held by the slack rate limit 20/60s", "severity": "info",
            "state": "applied", "attempts": 0, "latency_ms": None, "digest_id": "digest:slack:0123456789abcdef01234567",
            "finished_at": T0 + 60_000,
        },
    ],
    "ServerSnapshot": [
        {
            "server": "127.0.0.1:15432/dbopt", "database": "dbopt", "snapshot_time": T0, "up": True, "error": None,
            "max_connections": 100, "reserved_connections": 3, "total_connections": 41,
            "databases": ["dbopt", "postgres"],
            "connections": [
                {"database": "dbopt", "application_name": "booking-service", "active": 12, "idle": 6,
                 "idle_in_transaction": 1, "waiting_on_lock": 2, "other": 0},
                {"database": "dbopt", "application_name": "", "active": 0, "idle": 1, "idle_in_transaction": 0,
                 "waiting_on_lock": 0, "other": 0},
            ],
            "longest_transaction_ms": 93_500, "longest_transaction_application": "booking-service",
            "longest_transaction_state": "idle in transaction",
        },
        {
            "server": "orders-db", "database": "orders", "snapshot_time": T0, "up": False,
            "error": "connection refused", "max_connections": 0, "reserved_connections": 0, "total_connections": 0,
            "databases": [], "connections": [], "longest_transaction_ms": None,
            "longest_transaction_application": None, "longest_transaction_state": None,
        },
    ],
    "StatementStats": [
        {
            "server": "127.0.0.1:15432/dbopt", "database": "dbopt", "interval_start": T0 - 10_000, "interval_end": T0,
            "queryid": -6_917_282_113_874_421_250, "userid": 16_384, "toplevel": True,
            "fingerprint": "a6c3085224957fd8", "query_text": "SELECT * FROM bookings WHERE wedding_id = $1",
            "statement_type": "SELECT", "tables": ["bookings"], "context": "booking", "criticality": "critical",
            "calls": 420, "total_exec_ms": 27_300.5, "mean_exec_ms": 65.0, "max_exec_ms": 412.25, "rows": 1260,
            "shared_blks_hit": 99_000, "shared_blks_read": 1_200, "reset": False,
        },
        {
            "server": "orders-db", "database": "orders", "interval_start": T0, "interval_end": T0 + 10_000,
            "queryid": 42, "userid": 10, "toplevel": False, "fingerprint": None, "query_text": "NOTIFY ch, $1",
            "statement_type": None, "tables": [], "context": "other", "criticality": "medium", "calls": 1,
            "total_exec_ms": 0.0, "mean_exec_ms": 0.0, "max_exec_ms": 0.0, "rows": 0, "shared_blks_hit": 0,
            "shared_blks_read": 0, "reset": True,
        },
    ],
    "StatementSketch": [
        {
            "sketch_id": "0b6e1c1e-8f4a-4c1e-9d0b-2f7b1d0e9a01", "service": "booking-service",
            "instance_id": "booking-7d9f-abcde", "interval_start": T0 - 7_125, "interval_end": T0 + 2_875,
            "last_event_time": T0 + 2_001, "fingerprint": "a6c3085224957fd8",
            "query_text": "SELECT * FROM bookings WHERE wedding_id = $1 AND status = $2", "statement_type": "SELECT",
            "tables": ["bookings"], "database": "dbopt", "vendor_category": "photography", "wedding_id": "w-000042",
            "relative_accuracy": 0.005, "count": 5, "errors": 1, "rows": 12, "sum_ms": 96.5, "min_ms": 0.0,
            "max_ms": 48.25, "zero_count": 1, "bin_keys": [190, 361, 388], "bin_counts": [2, 1, 1],
        },
        {
            "sketch_id": "0b6e1c1e-8f4a-4c1e-9d0b-2f7b1d0e9a02", "service": "payment-service",
            "instance_id": "payment-1", "interval_start": T0 + 2_875, "interval_end": T0 + 12_875,
            "last_event_time": T0 + 2_875, "fingerprint": None, "query_text": "UPDATE payments SET status = $1 WHERE id = $2",
            "statement_type": "UPDATE", "tables": [], "database": None, "vendor_category": None, "wedding_id": None,
            "relative_accuracy": 0.005, "count": 1, "errors": 0, "rows": 0, "sum_ms": 0.5, "min_ms": 0.5, "max_ms": 0.5,
            "zero_count": 0, "bin_keys": [-100], "bin_counts": [1],
        },
    ],
}


# -- schema revisions -----------------------------------------------------------------------------


def revisions() -> dict[tuple[str, int], dict[str, Any]]:
    """Every revision of every schema, current and old, as (name, version) -> .avsc dict."""
    found: dict[tuple[str, int], dict[str, Any]] = {}
    for path in [*sorted((SCHEMA_DIR / "revisions").glob("*.avsc")), *sorted(SCHEMA_DIR.glob("*.avsc"))]:
        raw = json.loads(path.read_text())
        found[(raw["name"], int(raw.get("version", 1)))] = raw
    return found


def current() -> dict[str, dict[str, Any]]:
    return {raw["name"]: raw for raw in (json.loads(p.read_text()) for p in sorted(SCHEMA_DIR.glob("*.avsc")))}


def _without_appended_symbols(new: Any, old_enums: dict[str, list[str]]) -> Any:
    """``new`` with the symbols appended to an enum of ``old`` removed again."""
    if isinstance(new, list):
        return [_without_appended_symbols(item, old_enums) for item in new]
    if not isinstance(new, dict):
        return new
    out = {k: _without_appended_symbols(v, old_enums) for k, v in new.items()}
    before = old_enums.get(str(new.get("name")))
    if new.get("type") == "enum" and before is not None and new["symbols"][: len(before)] == before:
        out["symbols"] = before
    return out


def _enums(raw: Any) -> dict[str, list[str]]:
    if isinstance(raw, list):
        return {k: v for item in raw for k, v in _enums(item).items()}
    if not isinstance(raw, dict):
        return {}
    found = {k: v for value in raw.values() for k, v in _enums(value).items()}
    if raw.get("type") == "enum":
        found[raw["name"]] = list(raw["symbols"])
    return found


def compatibility_problems(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Why ``new`` may not replace ``old``: empty when new readers read old data (backward)
    and old readers read new data (forward), per the Avro schema-resolution rules.

    Symbols appended at the end of an enum are the one allowed exception to forward
    compatibility (``schemas/README.md``): old readers fail only on records that use them.
    """
    checker = ReaderWriterCompatibilityChecker()
    old_s, new_s = avro_parse(json.dumps(old)), avro_parse(json.dumps(new))
    new_as_old_knows_it = avro_parse(json.dumps(_without_appended_symbols(new, _enums(old))))
    problems = []
    directions = (
        ("backward: the new schema cannot read old data", new_s, old_s),
        ("forward: old readers cannot read new data", old_s, new_as_old_knows_it),
    )
    for direction, reader, writer in directions:
        result = checker.get_compatibility(reader, writer)
        if result.compatibility is not SchemaCompatibilityType.compatible:
            where = ", ".join(sorted(result.locations))
            problems += [f"{direction} ({where}): {m}" for m in sorted(result.messages)]
    return problems


# -- sample files ---------------------------------------------------------------------------------


def sample_path(name: str, version: int) -> Path:
    return SAMPLE_DIR / f"{name}.v{version}.json"


def single_object(raw: dict[str, Any], record: dict[str, Any]) -> bytes:
    """Avro single-object encoding, built from the spec with fastavro (not with the Codec)."""
    rev = parse_revision(raw)
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, rev.parsed, record)
    return b"\xc3\x01" + rev.fingerprint + buf.getvalue()


def avro_json(raw: dict[str, Any], record: dict[str, Any]) -> dict[str, Any]:
    buf = io.StringIO()
    fastavro.json_writer(buf, parse_revision(raw).parsed, [record])
    return json.loads(buf.getvalue())


def read_avro_json(raw: dict[str, Any], value: dict[str, Any]) -> dict[str, Any]:
    (record,) = fastavro.json_reader(io.StringIO(json.dumps(value)), parse_revision(raw).parsed)
    return record


def resolve(writer: dict[str, Any], reader: dict[str, Any], record: dict[str, Any]) -> dict[str, Any]:
    """``record`` written with ``writer``, read with ``reader`` (fastavro schema resolution)."""
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, parse_revision(writer).parsed, record)
    buf.seek(0)
    return fastavro.schemaless_reader(buf, parse_revision(writer).parsed, parse_revision(reader).parsed)


def write_sample(raw: dict[str, Any], records: list[dict[str, Any]]) -> Path:
    path = sample_path(raw["name"], int(raw.get("version", 1)))
    doc = {
        "schema": raw["name"],
        "version": int(raw.get("version", 1)),
        "fingerprint": parse_revision(raw).fingerprint.hex(),
        "records": [{"avro_json": avro_json(raw, r), "single_object": single_object(raw, r).hex()} for r in records],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1) + "\n")
    return path


def write_missing_samples() -> list[Path]:
    """Sample files for current revisions that have none (existing files are kept as they are)."""
    written = []
    all_revs = revisions()
    for name, raw in current().items():
        version = int(raw.get("version", 1))
        if sample_path(name, version).exists():
            continue
        older = sorted(v for (n, v) in all_revs if n == name and v < version and sample_path(n, v).exists())
        if older:
            prev = all_revs[(name, older[-1])]
            doc = json.loads(sample_path(name, older[-1]).read_text())
            records = [resolve(prev, raw, read_avro_json(prev, r["avro_json"])) for r in doc["records"]]
        else:
            records = EXAMPLES[name]
        written.append(write_sample(raw, records))
    return written


if __name__ == "__main__":
    for p in write_missing_samples():
        print(f"wrote {p}")
