"""Checks of an allowlisted statement against the target database's catalog.

The allowlist (pure) cannot know whether a table exists, is a user table, has room for another
index, whether a function is IMMUTABLE, or whether dbopt made the index a DROP names: this
module asks ``pg_catalog`` and the audit table, and raises :class:`Rejected` with the reason.
Names are resolved by PostgreSQL itself (``to_regclass``) on the session the statement then runs
on, so what is checked is exactly what the statement will touch. That session's search path is
pinned to ``DBOPT_DATABASE_SEARCH_PATH`` (:func:`streams.db.connect`), never the role's default
``"$user", public``: an unqualified name resolves where the advisor resolved it, and never into
dbopt's own schema (which is refused in any case).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from streams.commands import normalized_sql

from .allowlist import SYSTEM_SCHEMAS, Name, Rejected, ValidatedStatement
from .audit import Audit, AuditRow

_VOLATILITY = {"i": "IMMUTABLE", "s": "STABLE", "v": "VOLATILE"}
_RELKINDS = {
    "r": "table",
    "p": "partitioned table",
    "v": "view",
    "m": "materialized view",
    "f": "foreign table",
    "i": "index",
    "I": "partitioned index",
    "S": "sequence",
    "c": "composite type",
    "t": "TOAST table",
}


@dataclass(frozen=True)
class Facts:
    """What the catalog says about the statement's target."""

    table: str  # schema.table, quoted where needed
    index: str | None = None  # schema.index (create_index: the new one; drop/reindex INDEX: the target)
    index_count: int | None = None  # indexes the table has now
    creator: AuditRow | None = None  # drop_index: the audited command that created the index
    rollback_sql: str | None = None  # what undoes the statement (None: ANALYZE, VACUUM, REINDEX change no schema)


@dataclass(frozen=True)
class _Relation:
    oid: int
    schema: str
    name: str
    qualified: str
    kind: str


def _resolve(conn: psycopg.Connection[Any], name: Name | int) -> _Relation | None:
    """The relation ``name`` (resolved with the pinned search path, as the statement will be) or oid."""
    where = (
        "%(oid)s"
        if isinstance(name, int)
        else "to_regclass(CASE WHEN %(schema)s::text IS NULL THEN quote_ident(%(name)s) "
        "ELSE quote_ident(%(schema)s) || '.' || quote_ident(%(name)s) END)"
    )
    params = {"oid": name} if isinstance(name, int) else {"schema": name.schema, "name": name.name}
    row = conn.execute(
        "SELECT c.oid, n.nspname, c.relname, format('%%I.%%I', n.nspname, c.relname), c.relkind "
        "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = " + where,
        params,
    ).fetchone()
    return None if row is None else _Relation(*row)


def _require(conn: psycopg.Connection[Any], name: Name | int, protected: str, what: str, kind: str) -> _Relation:
    """The relation, which must exist, be outside system and dbopt schemas, and be of ``kind``."""
    relation = _resolve(conn, name)
    if relation is None:
        raise Rejected(f"{what} {name} does not exist")
    if relation.schema in SYSTEM_SCHEMAS or relation.schema.startswith("pg_"):
        raise Rejected(f"{what} {relation.qualified} is a system catalog: system catalogs are never touched")
    if relation.schema == protected:
        raise Rejected(f"{what} {relation.qualified} is in dbopt's own schema")
    if relation.kind != kind:
        found = _RELKINDS.get(relation.kind, relation.kind)
        raise Rejected(f"{relation.qualified} is a {found}, not {'an ordinary user table' if kind == 'r' else 'an index'}")
    return relation


def _index_count(conn: psycopg.Connection[Any], table_oid: int) -> int:
    row = conn.execute("SELECT count(*) FROM pg_index WHERE indrelid = %s", (table_oid,)).fetchone()
    return int(row[0]) if row else 0


def _immutable(conn: psycopg.Connection[Any], function: Name) -> None:
    rows = conn.execute(
        """
        SELECT p.provolatile FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE p.proname = %(name)s
          AND (CASE WHEN %(schema)s::text IS NULL THEN n.nspname = ANY(current_schemas(true))
                    ELSE n.nspname = %(schema)s END)
        """,
        {"schema": function.schema, "name": function.name},
    ).fetchall()
    if not rows:
        raise Rejected(f"function {function} does not exist")
    volatile = sorted({_VOLATILITY.get(r[0], r[0]) for r in rows if r[0] != "i"})
    if volatile:
        raise Rejected(
            f"function {function} is {'/'.join(volatile)}, not IMMUTABLE: an index may only call "
            "functions without side effects whose result never changes"
        )


def _index(conn: psycopg.Connection[Any], name: Name, protected: str) -> tuple[_Relation, _Relation]:
    """The index named and its table."""
    index = _require(conn, name, protected, "index", "i")
    row = conn.execute("SELECT indrelid FROM pg_index WHERE indexrelid = %s", (index.oid,)).fetchone()
    assert row is not None
    return index, _require(conn, int(row[0]), protected, "table", "r")


def check(conn: psycopg.Connection[Any], stmt: ValidatedStatement, audit: Audit) -> Facts:
    """The catalog facts of ``stmt``; raises :class:`Rejected` when the catalog forbids it."""
    protected = audit.schema
    if stmt.target_kind == "table":
        table = _require(conn, stmt.target, protected, "table", "r")
        if stmt.action != "create_index":
            return Facts(table.qualified)
        assert stmt.index_name is not None
        new_index = conn.execute(
            "SELECT format('%%I.%%I', %s::text, %s::text)", (table.schema, stmt.index_name)
        ).fetchone()[0]  # type: ignore[index]
        if _resolve(conn, Name(table.schema, stmt.index_name)) is not None:
            raise Rejected(f"a relation named {new_index} already exists")
        for function in stmt.functions_to_check:
            _immutable(conn, function)
        drop = sql.SQL("DROP INDEX CONCURRENTLY {}").format(sql.Identifier(table.schema, stmt.index_name))
        return Facts(table.qualified, new_index, _index_count(conn, table.oid), rollback_sql=normalized_sql(drop.as_string(conn)))
    index, table = _index(conn, stmt.target, protected)
    if stmt.action != "drop_index":
        return Facts(table.qualified, index.qualified)
    creator = audit.index_creator(index.qualified)
    if creator is None:
        raise Rejected(f"index {index.qualified} was not created by dbopt (no live create_index in the audit table)")
    return Facts(table.qualified, index.qualified, creator=creator, rollback_sql=creator.sql)
