"""Checks of an allowlisted statement against the target database's catalog.

The allowlist (pure) cannot know whether a table exists, is a user table, has room for another
index, whether a function is IMMUTABLE, or whether dbopt made the index a DROP names: this
module asks ``pg_catalog`` and the audit table, and raises :class:`Refused` with the reason.
Names are resolved by PostgreSQL itself (``to_regclass``) on the session the statement then runs
on, so what is checked is exactly what the statement will touch. That session's search path is
pinned to ``DBOPT_DATABASE_SEARCH_PATH`` (:func:`streams.db.connect`), never the role's default
``"$user", public``: an unqualified name resolves where the advisor resolved it, and never into
dbopt's own schema (which is refused in any case).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from streams.commands import normalized_sql

from .allowlist import ALLOWED_EXTENSIONS, SYSTEM_SCHEMAS, Name, Refused, ValidatedStatement
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
        raise Refused(f"{what} {name} does not exist")
    if relation.schema in SYSTEM_SCHEMAS or relation.schema.startswith("pg_"):
        raise Refused(f"{what} {relation.qualified} is a system catalog: system catalogs are never touched")
    if relation.schema == protected:
        raise Refused(f"{what} {relation.qualified} is in dbopt's own schema")
    if relation.kind != kind:
        found = _RELKINDS.get(relation.kind, relation.kind)
        raise Refused(f"{relation.qualified} is a {found}, not {'an ordinary user table' if kind == 'r' else 'an index'}")
    return relation


def _index_count(conn: psycopg.Connection[Any], table_oid: int) -> int:
    row = conn.execute("SELECT count(*) FROM pg_index WHERE indrelid = %s", (table_oid,)).fetchone()
    return int(row[0]) if row else 0


def _builtin_only(conn: psycopg.Connection[Any], stmt: ValidatedStatement, table: _Relation) -> None:
    """Index expressions and predicates may use only built-in objects (``pg_catalog``) and those of
    the allowlisted extensions, and only IMMUTABLE functions; a user-defined function would run with
    the executor's role during the build. PostgreSQL itself resolves the names: the keys and the
    predicate become the columns of a temporary view (nothing is evaluated) whose dependencies name
    the exact functions, operators, types and collations chosen; the transaction is rolled back."""
    for extension in stmt.extensions:
        if conn.execute("SELECT 1 FROM pg_extension WHERE extname = %s", (extension,)).fetchone() is None:
            raise Refused(
                f"the index needs extension {extension}, which is not installed in this database; dbopt never "
                f"creates extensions: a human can run CREATE EXTENSION {extension} and resubmit"
            )
    allowed = list(ALLOWED_EXTENSIONS)
    member = (
        "EXISTS (SELECT FROM pg_depend e JOIN pg_extension x ON x.oid = e.refobjid WHERE e.classid = {cls} "
        "AND e.objid = {oid} AND e.deptype = 'e' AND e.refclassid = 'pg_extension'::regclass AND x.extname = ANY(%(allowed)s))"
    )
    for opclass in stmt.opclasses:
        row = conn.execute(
            "SELECT n.nspname, " + member.format(cls="'pg_opclass'::regclass", oid="c.oid") + " FROM pg_opclass c "
            "JOIN pg_namespace n ON n.oid = c.opcnamespace JOIN pg_am a ON a.oid = c.opcmethod "
            "WHERE c.opcname = %(name)s AND a.amname = %(method)s AND (CASE WHEN %(schema)s::text IS NULL "
            "THEN pg_opclass_is_visible(c.oid) ELSE n.nspname = %(schema)s END)",
            {"name": opclass.name, "schema": opclass.schema, "method": stmt.method, "allowed": allowed},
        ).fetchone()
        if row is None:
            raise Refused(f"operator class {opclass} does not exist for index method {stmt.method}")
        if row[0] != "pg_catalog" and not row[1]:
            raise Refused(f"operator class {opclass} is not built in (schema {row[0]}): {_BUILTIN_RULE}")
    if not stmt.probe_expressions:
        return
    columns = sql.SQL(", ").join(
        sql.SQL("({}) AS {}").format(sql.SQL(text), sql.Identifier(f"e{i}")) for i, text in enumerate(stmt.probe_expressions)
    )
    with conn.transaction(force_rollback=True):
        try:
            conn.execute(sql.SQL("CREATE TEMPORARY VIEW dbopt_probe AS SELECT {} FROM ONLY {}").format(
                columns, sql.Identifier(table.schema, table.name)))
        except psycopg.Error as exc:
            if conn.broken:
                raise
            raise Refused(f"the index expression is not valid here: {exc.diag.message_primary}") from None
        rows = conn.execute(
            "SELECT o.type, o.schema, o.identity, " + member.format(cls="d.refclassid", oid="d.refobjid") + " "
            "FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid "
            "CROSS JOIN LATERAL pg_identify_object(d.refclassid, d.refobjid, 0) o "
            "WHERE d.classid = 'pg_rewrite'::regclass AND r.ev_class = 'pg_temp.dbopt_probe'::regclass "
            "AND d.refclassid <> 'pg_class'::regclass ORDER BY 1, 3",
            {"allowed": allowed},
        ).fetchall()
        # dependencies on built-in (pinned) objects are not recorded: the functions the view calls,
        # directly or behind its operators, are read from the stored rule's node tree instead
        (tree,) = conn.execute(
            "SELECT ev_action::text FROM pg_rewrite WHERE ev_class = 'pg_temp.dbopt_probe'::regclass").fetchone()  # type: ignore[misc]
        calls = conn.execute(
            "SELECT p.proname, p.provolatile FROM pg_proc p WHERE p.oid = ANY(%s::oid[]) "
            "OR p.oid IN (SELECT oprcode FROM pg_operator WHERE oid = ANY(%s::oid[])) ORDER BY 1",
            ([int(o) for o in re.findall(r":(?:funcid|opfuncid) (\d+)", tree)],
             [int(o) for o in re.findall(r":opno (\d+)", tree)]),
        ).fetchall()
    for proname, volatility in calls:
        if volatility != "i":
            raise Refused(
                f"function {proname} is {_VOLATILITY.get(volatility, volatility)}, not IMMUTABLE: an index may only "
                "call functions without side effects whose result never changes"
            )
    for kind, schema, identity, in_extension in rows:
        if schema != "pg_catalog" and not in_extension:
            raise Refused(f"{kind} {identity} is not built in (schema {schema}): {_BUILTIN_RULE}")


_BUILTIN_RULE = (
    "index expressions and predicates may use only pg_catalog's functions, operators and types and those of the "
    f"allowlisted extensions ({', '.join(ALLOWED_EXTENSIONS)}), never user-defined ones"
)


def _index(conn: psycopg.Connection[Any], name: Name, protected: str) -> tuple[_Relation, _Relation]:
    """The index named and its table."""
    index = _require(conn, name, protected, "index", "i")
    row = conn.execute("SELECT indrelid FROM pg_index WHERE indexrelid = %s", (index.oid,)).fetchone()
    assert row is not None
    return index, _require(conn, int(row[0]), protected, "table", "r")


def check(conn: psycopg.Connection[Any], stmt: ValidatedStatement, audit: Audit) -> Facts:
    """The catalog facts of ``stmt``; raises :class:`Refused` when the catalog forbids it."""
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
            raise Refused(f"a relation named {new_index} already exists")
        _builtin_only(conn, stmt, table)
        drop = sql.SQL("DROP INDEX CONCURRENTLY {}").format(sql.Identifier(table.schema, stmt.index_name))
        return Facts(table.qualified, new_index, _index_count(conn, table.oid), rollback_sql=normalized_sql(drop.as_string(conn)))
    index, table = _index(conn, stmt.target, protected)
    if stmt.action != "drop_index":
        return Facts(table.qualified, index.qualified)
    creator = audit.index_creator(index.qualified)
    if creator is None:
        raise Refused(f"index {index.qualified} was not created by dbopt (no live create_index in the audit table)")
    return Facts(table.qualified, index.qualified, creator=creator, rollback_sql=creator.sql)
