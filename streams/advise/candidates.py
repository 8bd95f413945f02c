"""Candidate indexes for a :class:`~streams.advise.analysis.QueryShape`, and their statements.

Pure. Per table: one single-column index per column the statement filters, joins or sorts
on, and multi-column indexes in B-tree order — equality columns first, then join columns,
then one range column (a B-tree can only range-scan on one column past its equality prefix),
then the ORDER BY columns. Every constant filter (``status IN ('confirmed', 'pending')``)
also yields partial variants: the same keys without that column, ``WHERE`` the filter.

Names are deterministic (``dbopt_idx_<table>_<columns>_<hash>``), so the same candidate found
twice is the same index and the same command id; the executor recognises the indexes it may
drop by the ``dbopt_idx_`` prefix and its audit table. Statements are built as pglast parse
trees and deparsed, so identifiers are quoted by PostgreSQL's own rules.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Iterable

from pglast import ast, enums, parser
from pglast.stream import RawStream

from streams.advise.analysis import Constant, ConstantFilter, OrderColumn, QueryShape, TableUsage

INDEX_PREFIX = "dbopt_idx_"
_MAX_IDENTIFIER = 63  # NAMEDATALEN - 1


@dataclass(frozen=True, slots=True)
class IndexCandidate:
    table: str
    schema: str | None  # the resolved schema; None only for a shape not checked against a database
    columns: tuple[OrderColumn, ...]
    predicate: ConstantFilter | None = None

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.column for c in self.columns)

    @property
    def qualified_table(self) -> str:
        return f"{self.schema}.{self.table}" if self.schema else self.table

    @property
    def name(self) -> str:
        key = repr((self.schema, self.table, self.columns, self.predicate))
        digest = hashlib.sha256(key.encode()).hexdigest()[:8]
        readable = "_".join((self.table, *self.column_names))
        readable = "".join(ch if ch.isascii() and (ch.isalnum() or ch == "_") else "_" for ch in readable.lower())
        room = _MAX_IDENTIFIER - len(INDEX_PREFIX) - len(digest) - 1
        return f"{INDEX_PREFIX}{readable[:room]}_{digest}"

    def create_sql(self, concurrently: bool = True) -> str:
        """``CREATE INDEX [CONCURRENTLY] name ON table (cols) [WHERE predicate]``."""
        stmt = ast.IndexStmt(
            idxname=self.name,
            relation=_range_var(self.table, self.schema),
            accessMethod="btree",
            indexParams=tuple(
                ast.IndexElem(
                    name=c.column,
                    ordering=enums.SortByDir.SORTBY_DESC if c.descending else enums.SortByDir.SORTBY_DEFAULT,
                    nulls_ordering=enums.SortByNulls.SORTBY_NULLS_DEFAULT,
                )
                for c in self.columns
            ),
            whereClause=_predicate(self.predicate) if self.predicate else None,
            concurrent=concurrently,
        )
        return RawStream()(stmt)

    def drop_sql(self) -> str:
        """``DROP INDEX CONCURRENTLY [schema.]name`` — the rollback of :meth:`create_sql`."""
        names = (self.schema, self.name) if self.schema else (self.name,)
        stmt = ast.DropStmt(
            objects=(tuple(ast.String(sval=n) for n in names),),
            removeType=enums.ObjectType.OBJECT_INDEX,
            behavior=enums.DropBehavior.DROP_RESTRICT,
            missing_ok=False,
            concurrent=True,
        )
        return RawStream()(stmt)

    def describe(self) -> str:
        cols = ", ".join(c.column + (" DESC" if c.descending else "") for c in self.columns)
        where = f" WHERE {RawStream()(_predicate(self.predicate))}" if self.predicate else ""
        return f"{self.qualified_table} ({cols}){where}"


@dataclass(frozen=True, slots=True)
class ExistingIndex:
    """An index as the catalog shows it: key column names in order (None for an expression)."""

    name: str
    columns: tuple[str | None, ...]
    partial: bool = False
    valid: bool = True


def _range_var(table: str, schema: str | None) -> ast.RangeVar:
    return ast.RangeVar(relname=table, schemaname=schema, inh=True, relpersistence="p")


def analyze_statement(table: str, schema: str | None) -> str:
    """``ANALYZE [schema.]table``, deparsed from its parse tree."""
    stmt = ast.VacuumStmt(rels=(ast.VacuumRelation(relation=_range_var(table, schema)),), is_vacuumcmd=False)
    return RawStream()(stmt)


def created_index_name(sql: str) -> str | None:
    """The index a ``CREATE INDEX`` statement creates, or None for any other statement."""
    try:
        stmts = parser.parse_sql(sql)
    except parser.ParseError:
        return None
    if len(stmts) != 1 or not isinstance(stmts[0].stmt, ast.IndexStmt):
        return None
    return stmts[0].stmt.idxname


def _const(value: Constant) -> ast.A_Const:
    if isinstance(value, bool):
        val: ast.Node = ast.Boolean(boolval=value)
    elif isinstance(value, int):
        val = ast.Integer(ival=value)
    elif isinstance(value, float):
        val = ast.Float(fval=repr(value))
    else:
        val = ast.String(sval=value)
    return ast.A_Const(isnull=False, val=val)


def _predicate(flt: ConstantFilter) -> ast.A_Expr:
    column = ast.ColumnRef(fields=(ast.String(sval=flt.column),))
    if len(flt.values) == 1:
        return ast.A_Expr(
            kind=enums.A_Expr_Kind.AEXPR_OP, name=(ast.String(sval="="),), lexpr=column, rexpr=_const(flt.values[0])
        )
    return ast.A_Expr(
        kind=enums.A_Expr_Kind.AEXPR_IN,
        name=(ast.String(sval="="),),
        lexpr=column,
        rexpr=tuple(_const(v) for v in flt.values),
    )


def _key_orders(usage: TableUsage) -> list[list[OrderColumn]]:
    """Column sequences for one table, each in B-tree order (see the module docstring)."""
    eq = [OrderColumn(c) for c in usage.equality]
    join = [OrderColumn(c) for c in usage.join if c not in usage.equality]
    first_range = [OrderColumn(c) for c in usage.range[:1] if c not in usage.equality]
    # sorting on a column fixed by equality is free; a uniform direction needs no DESC (backward scan)
    order = [o for o in usage.order_by if o.column not in usage.equality]
    if len({o.descending for o in order}) <= 1:
        order = [OrderColumn(o.column) for o in order]
    singles = [[c] for c in (*eq, *join, *(OrderColumn(c) for c in usage.range), *order)]
    prefix = eq + join
    return [*singles, prefix, prefix + first_range, prefix + order, prefix + first_range + order]


def candidates_for_table(usage: TableUsage, max_columns: int = 4) -> list[IndexCandidate]:
    seen: set[tuple[tuple[str, ...], ConstantFilter | None]] = set()
    out: list[IndexCandidate] = []

    def add(columns: list[OrderColumn], predicate: ConstantFilter | None) -> None:
        names = tuple(c.column for c in columns)
        if not columns or len(columns) > max_columns or len(set(names)) != len(names):
            return
        if (names, predicate) in seen:
            return
        seen.add((names, predicate))
        out.append(IndexCandidate(usage.table, usage.schema, tuple(columns), predicate))

    orders = _key_orders(usage)
    for columns in orders:
        add(columns, None)
    for flt in usage.constant_filters:
        for columns in orders:
            add([c for c in columns if c.column != flt.column], flt)
    return out


def candidates_for(shape: QueryShape, max_columns: int = 4) -> list[IndexCandidate]:
    """Every candidate index of every table of ``shape``, in a deterministic order."""
    return [c for usage in shape.tables for c in candidates_for_table(usage, max_columns)]


def covering_index(candidate: IndexCandidate, existing: Iterable[ExistingIndex]) -> ExistingIndex | None:
    """The existing index that makes ``candidate`` redundant, if any.

    A valid index covers a candidate when it is that very index (same name), or when it is
    not partial and its leading key columns are the candidate's columns. A partial existing
    index is not assumed to cover anything else: its predicate may exclude the rows needed.
    """
    wanted = candidate.column_names
    for index in existing:
        if not index.valid:
            continue
        if index.name == candidate.name:
            return index
        if not index.partial and index.columns[: len(wanted)] == wanted:
            return index
    return None
