"""Command model: deterministic ids, HMAC signing and verification (pure, no servers)."""

from __future__ import annotations

import hashlib
import hmac
import json

import msgspec
import pytest

from streams.commands import (
    CommandKeyError,
    build_command,
    command_id,
    command_key,
    sign,
    signature_problem,
    verify,
)
from streams.config import Settings
from streams.records import OptimizationCommand
from streams.serde import Codec

KEY = b"test-key"
SQL = "CREATE INDEX CONCURRENTLY dbopt_idx_b ON bookings (vendor_id) WHERE status = 'confirmed'"


def test_id_is_deterministic_and_ignores_spacing_case_and_comments() -> None:
    a = build_command("advisor", "create_index", SQL, created_at=1)
    b = build_command("advisor", "create_index", "create  index concurrently dbopt_idx_b on bookings(vendor_id) "
                      "/* why */ where status = 'confirmed'", created_at=2)
    assert a.command_id == b.command_id
    assert len(a.command_id) == 32


def test_id_changes_with_literal_origin_and_rollback_of() -> None:
    base = command_id("advisor", "create_index", SQL)
    assert command_id("advisor", "create_index", SQL.replace("confirmed", "pending")) != base
    assert command_id("operator", "create_index", SQL) != base
    assert command_id("advisor", "create_index", SQL, rollback_of="x") != base


def test_signature_is_hmac_sha256_over_canonical_json_without_signature() -> None:
    record = sign(build_command("operator", "analyze", "ANALYZE bookings", reason="stale stats"), KEY)
    body = {k: v for k, v in record.to_avro().items() if k != "signature"}
    expected = hmac.new(KEY, json.dumps(body, sort_keys=True, separators=(",", ":")).encode(), hashlib.sha256)
    assert record.signature == expected.hexdigest()
    assert verify(record, KEY)
    assert signature_problem(record, KEY) is None


@pytest.mark.parametrize(
    "change",
    [
        {"sql": "DROP TABLE bookings"},
        {"emergency": True},
        {"fingerprints": ("abc",)},
        {"cost_after": 1.0},
        {"origin": "advisor"},
    ],
)
def test_any_change_breaks_the_signature(change: dict[str, object]) -> None:
    record = sign(build_command("operator", "analyze", "ANALYZE bookings"), KEY)
    tampered = msgspec.structs.replace(record, **change)
    assert not verify(tampered, KEY)
    assert "forged" in (signature_problem(tampered, KEY) or "")


def test_wrong_key_and_missing_signature_are_refused() -> None:
    record = sign(build_command("operator", "analyze", "ANALYZE bookings"), KEY)
    assert not verify(record, b"other-key")
    unsigned = msgspec.structs.replace(record, signature="")
    assert not verify(unsigned, KEY)
    assert "unsigned" in (signature_problem(unsigned, KEY) or "")


def test_signed_command_survives_avro_round_trip() -> None:
    record = sign(
        build_command("advisor", "create_index", SQL, rollback_sql="DROP INDEX CONCURRENTLY dbopt_idx_b",
                      table="bookings", fingerprints=["f1", "f2"], p95_before_ms=812.5, cost_before=1234.0,
                      cost_after=8.25, context="booking"),
        KEY,
    )
    codec = Codec()
    decoded = codec.decode_record(codec.encode_record(record, topic="dbopt.commands.v1"))
    assert isinstance(decoded, OptimizationCommand) and decoded == record
    assert verify(decoded, KEY)


def test_build_refuses_unknown_origin_action_and_non_operator_emergency() -> None:
    with pytest.raises(ValueError, match="origin"):
        build_command("someone", "analyze", "ANALYZE t")
    with pytest.raises(ValueError, match="action"):
        build_command("operator", "drop_table", "DROP TABLE t")
    with pytest.raises(ValueError, match="emergency"):
        build_command("advisor", "analyze", "ANALYZE t", emergency=True)


def test_missing_key_is_a_clear_error() -> None:
    with pytest.raises(CommandKeyError, match="DBOPT_COMMAND_KEY"):
        command_key(Settings(command_key=None))
    assert command_key(Settings(command_key="s3cret")) == b"s3cret"


def test_maintenance_gets_a_new_id_each_day_schema_changes_never() -> None:
    from streams.commands import DAY_MS

    day1, later_day1, day2 = 10 * DAY_MS + 5, 10 * DAY_MS + DAY_MS - 1, 11 * DAY_MS
    analyze = [build_command("advisor", "analyze", "ANALYZE public.bookings", created_at=t).command_id
               for t in (day1, later_day1, day2)]
    assert analyze[0] == analyze[1] != analyze[2]
    index = "CREATE INDEX CONCURRENTLY dbopt_idx_b ON public.bookings (vendor_id)"
    created = {build_command("advisor", "create_index", index, created_at=t).command_id for t in (day1, day2)}
    assert len(created) == 1
