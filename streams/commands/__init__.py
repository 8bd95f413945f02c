"""OptimizationCommand records: building, deterministic ids, HMAC signing and verification.

Shared by everything that writes commands (the advisor, its verifier, ``dbopt command submit``)
and by the executor that checks them. A command is a :class:`streams.records.OptimizationCommand`;
the signature covers its Avro form (every field of the schema), so a record that went through
Avro and back verifies exactly like the one that was signed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Iterable, Mapping

import msgspec
from pglast import parse_sql
from pglast.parser import ParseError
from pglast.stream import RawStream

from streams.config import ConfigError, Settings
from streams.records import EvidenceFigure, OptimizationCommand

ORIGINS = ("advisor", "operator", "verifier")
ACTIONS = ("create_index", "drop_index", "analyze", "vacuum", "reindex")
# actions only a human carries out: a command with one of them is always a recommendation
HUMAN_ACTIONS = ("create_extension",)
# an action an operator's statement could not be classified as; the executor rejects it
UNKNOWN_ACTION = "unknown"


class CommandKeyError(ConfigError):
    """No signing key: commands can be neither signed nor verified."""


def command_key(settings: Settings) -> bytes:
    """The HMAC key from ``DBOPT_COMMAND_KEY``, or a clear error when it is not set."""
    if not settings.command_key:
        raise CommandKeyError(
            "DBOPT_COMMAND_KEY is not set: commands are HMAC-signed and the executor refuses "
            "unsigned ones; set the same secret for the advisor, `dbopt command submit` and the executor"
        )
    return settings.command_key.get_secret_value().encode()


def normalized_sql(sql: str) -> str:
    """The statement as PostgreSQL's parser sees it (case, spacing and comments unified).

    Literals are kept: two partial indexes that differ only in their constant are different
    commands. Text that does not parse is only stripped, so it still gets a stable id."""
    try:
        statements = parse_sql(sql)
    except ParseError:
        return sql.strip()
    return "; ".join(RawStream()(raw.stmt) for raw in statements if raw.stmt is not None)


# maintenance is meant to be repeated: the same ANALYZE/VACUUM is a new command on a new (UTC) day
RECURRING_ACTIONS = ("analyze", "vacuum")
DAY_MS = 86_400_000


def command_id(origin: str, action: str, sql: str, rollback_of: str | None = None, created_at: int = 0,
               database: str | None = None) -> str:
    """Deterministic id: the same statement from the same origin is the same command.

    Schema changes keep their id forever (an index that failed or was rolled back is not
    retried by re-sending it); ANALYZE and VACUUM get one id per UTC day of ``created_at``.
    The same statement for another database (``database``, when set) is another command.
    """
    day = created_at // DAY_MS if action in RECURRING_ACTIONS else None
    material = json.dumps([origin, action, normalized_sql(sql), rollback_of, *([day] if day is not None else []),
                           *([{"database": database}] if database is not None else [])], separators=(",", ":"))
    return hashlib.sha256(material.encode()).hexdigest()[:32]


def build_command(
    origin: str,
    action: str,
    sql: str,
    rollback_sql: str | None = None,
    table: str | None = None,
    emergency: bool = False,
    rollback_of: str | None = None,
    *,
    service: str | None = None,
    context: str | None = None,
    fingerprints: Iterable[str] = (),
    p95_before_ms: float | None = None,
    cost_before: float | None = None,
    cost_after: float | None = None,
    reason: str = "",
    created_at: int | None = None,
    priority: int = 0,
    evidence: Mapping[str, float] | None = None,
    requires: Iterable[str] = (),
    recommendation: bool = False,
    database: str | None = None,
) -> OptimizationCommand:
    """An unsigned command (``signature`` is empty until :func:`sign`)."""
    if origin not in ORIGINS:
        raise ValueError(f"origin must be one of {ORIGINS}, got {origin!r}")
    if action in HUMAN_ACTIONS and not recommendation:
        raise ValueError(f"{action} is only ever a recommendation for a human")
    if action not in (*ACTIONS, *HUMAN_ACTIONS) and action != UNKNOWN_ACTION:
        raise ValueError(f"action must be one of {ACTIONS}, got {action!r}")
    if emergency and origin != "operator":
        raise ValueError("only an operator may mark a command as emergency")
    created = int(time.time() * 1000) if created_at is None else int(created_at)
    return OptimizationCommand(
        command_id=command_id(origin, action, sql, rollback_of, created, database),
        created_at=created,
        origin=origin,
        action=action,
        sql=sql,
        rollback_sql=rollback_sql,
        table=table,
        emergency=bool(emergency),
        rollback_of=rollback_of,
        service=service,
        context=context,
        fingerprints=tuple(fingerprints),
        p95_before_ms=None if p95_before_ms is None else float(p95_before_ms),
        cost_before=None if cost_before is None else float(cost_before),
        cost_after=None if cost_after is None else float(cost_after),
        reason=reason,
        signature="",
        priority=int(priority),
        evidence=tuple(EvidenceFigure(name=k, value=float(v)) for k, v in (evidence or {}).items()),
        requires=tuple(requires),
        recommendation=bool(recommendation),
        database=database,
    )


def canonical_bytes(record: OptimizationCommand) -> bytes:
    """Canonical JSON of every Avro field except ``signature`` (sorted keys, no spaces, UTF-8)."""
    body = record.to_avro()
    del body["signature"]
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _mac(record: OptimizationCommand, key: bytes) -> str:
    return hmac.new(key, canonical_bytes(record), hashlib.sha256).hexdigest()


def sign(record: OptimizationCommand, key: bytes) -> OptimizationCommand:
    """A copy of ``record`` with its HMAC-SHA256 signature (hex)."""
    return msgspec.structs.replace(record, signature=_mac(record, key))


def verify(record: OptimizationCommand, key: bytes) -> bool:
    """True when ``record`` carries the signature ``key`` makes for it (constant-time compare)."""
    if not record.signature:
        return False
    return hmac.compare_digest(record.signature.encode(), _mac(record, key).encode())


def signature_problem(record: OptimizationCommand, key: bytes) -> str | None:
    """Why ``record`` must not be trusted, or None when its signature is good."""
    if not record.signature:
        return "unsigned command: it carries no signature"
    if not verify(record, key):
        return "forged or altered command: the signature does not match its content (HMAC-SHA256, DBOPT_COMMAND_KEY)"
    return None
