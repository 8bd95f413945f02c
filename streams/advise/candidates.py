"""Candidate indexes for a :class:`~streams.advise.analysis.QueryShape`, and their statements.

Pure. Per table: one single-key index per column (or indexable expression) the statement
filters, joins or sorts on, and multi-column indexes in B-tree order — equality keys first, then
join columns, then one range key (a B-tree can only range-scan on one column past its equality
prefix), then the ORDER BY columns. Every constant filter the evaluator let through
(``status = 'pending'`` on a status column) also yields partial variants: the same keys without
that column, ``WHERE`` the filter. Predicates a B-tree cannot serve get GIN candidates
(:func:`text_candidates`): pg_trgm's ``gin_trgm_ops`` for LIKE/ILIKE/regex/similarity, the
expression or tsvector column itself for ``@@``, ``jsonb_path_ops`` for ``@>``. A top-level OR
gets index *sets*, one index per branch (:func:`or_sets`).

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
from pglast.visitors import Visitor

from streams.advise.analysis import (
    Constant,
    ConstantFilter,
    OrderColumn,
    QueryShape,
    TableUsage,
    TextPredicate,
    expression_node,
)

INDEX_PREFIX = "dbopt_idx_"
_MAX_IDENTIFIER = 63  # NAMEDATALEN - 1


@dataclass(frozen=True, slots=True)
class IndexCandidate:
    table: str
    schema: str | None  # the resolved schema; None only for a shape not checked against a database
    columns: tuple[OrderColumn, ...]
    predicate: ConstantFilter | None = None
    method: str = "btree"  # btree (HypoPG can model it) or gin/gist (validated by a sampled build)

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.column for c in self.columns)

    @property
    def hypothetical(self) -> bool:
        """Whether HypoPG can model this index (B-tree); GIN/GiST need a sampled build."""
        return self.method == "btree"

    @property
    def extensions(self) -> tuple[str, ...]:
        """Extensions the index needs (its operator classes come from them)."""
        return tuple(sorted({_OPCLASS_EXTENSIONS[c.opclass] for c in self.columns if c.opclass in _OPCLASS_EXTENSIONS}))

    @property
    def qualified_table(self) -> str:
        return f"{self.schema}.{self.table}" if self.schema else self.table

    @property
    def name(self) -> str:
        parts: tuple[object, ...] = (self.schema, self.table, self.columns, self.predicate)
        key = repr(parts if self.method == "btree" else (*parts, self.method))  # B-tree names never changed
        digest = hashlib.sha256(key.encode()).hexdigest()[:8]
        readable = "_".join((self.table, *(_readable(c) for c in self.columns)))
        readable = "".join(ch if ch.isascii() and (ch.isalnum() or ch == "_") else "_" for ch in readable.lower())
        room = _MAX_IDENTIFIER - len(INDEX_PREFIX) - len(digest) - 1
        return f"{INDEX_PREFIX}{readable[:room]}_{digest}"

    def create_sql(self, concurrently: bool = True) -> str:
        """``CREATE INDEX [CONCURRENTLY] name ON table (cols) [WHERE predicate]``."""
        stmt = ast.IndexStmt(
            idxname=self.name,
            relation=_range_var(self.table, self.schema),
            accessMethod=self.method,
            indexParams=tuple(
                ast.IndexElem(
                    name=None if c.expression else c.column,
                    expr=expression_node(c.column) if c.expression else None,
                    opclass=(ast.String(sval=c.opclass),) if c.opclass else None,
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
        return drop_index_statement(self.schema, self.name)

    def describe(self) -> str:
        cols = ", ".join(
            (f"({c.column})" if c.expression else c.column) + (f" {c.opclass}" if c.opclass else "")
            + (" DESC" if c.descending else "")
            for c in self.columns
        )
        using = "" if self.method == "btree" else f" USING {self.method}"
        where = f" WHERE {RawStream()(_predicate(self.predicate))}" if self.predicate else ""
        return f"{self.qualified_table}{using} ({cols}){where}"


@dataclass(frozen=True, slots=True)
class ExistingIndex:
    """An index as the catalog shows it: key column names in order (None for an expression), the
    expressions (normalized with :func:`normalize_expression`, None for a column) and opclasses."""

    name: str
    columns: tuple[str | None, ...]
    partial: bool = False
    valid: bool = True
    method: str = "btree"
    expressions: tuple[str | None, ...] = ()
    opclasses: tuple[str | None, ...] = ()  # None: the type's default operator class
    unique: bool = False

    def key(self, position: int) -> str | None:
        """The column name or normalized expression at ``position``."""
        column = self.columns[position]
        if column is not None:
            return column
        return self.expressions[position] if position < len(self.expressions) else None


# operator classes that come from an extension
_OPCLASS_EXTENSIONS = {"gin_trgm_ops": "pg_trgm", "gist_trgm_ops": "pg_trgm"}


def _readable(column: OrderColumn) -> str:
    return "_".join(part for part in "".join(ch if ch.isalnum() else " " for ch in column.column).split()
                    if part not in ("english", "simple")) if column.expression else column.column


def normalize_expression(text: str) -> str:
    """An expression as pglast deparses it, casts of constants dropped (``'english'::regconfig`` is
    ``'english'``), so an expression written in a statement and one read back from the catalog
    (``pg_get_indexdef``) compare equal."""
    try:
        node = expression_node(text)
    except parser.ParseError:
        return text

    class _DropConstCasts(Visitor):
        def visit_TypeCast(self, ancestors: object, cast: ast.TypeCast) -> object:
            return cast.arg if isinstance(cast.arg, ast.A_Const) else None

    node = _DropConstCasts()(node)
    return RawStream()(node)


def _range_var(table: str, schema: str | None) -> ast.RangeVar:
    return ast.RangeVar(relname=table, schemaname=schema, inh=True, relpersistence="p")


def drop_index_statement(schema: str | None, name: str) -> str:
    """``DROP INDEX CONCURRENTLY [schema.]name``, deparsed from its parse tree."""
    names = (schema, name) if schema else (name,)
    stmt = ast.DropStmt(
        objects=(tuple(ast.String(sval=n) for n in names),),
        removeType=enums.ObjectType.OBJECT_INDEX,
        behavior=enums.DropBehavior.DROP_RESTRICT,
        missing_ok=False,
        concurrent=True,
    )
    return RawStream()(stmt)


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


def _key(usage: TableUsage, key: str) -> OrderColumn:
    return OrderColumn(key, expression=key in usage.expressions)


def _key_orders(usage: TableUsage) -> list[list[OrderColumn]]:
    """Key sequences for one table, each in B-tree order (see the module docstring)."""
    eq = [_key(usage, c) for c in usage.equality]
    join = [OrderColumn(c) for c in usage.join if c not in usage.equality]
    first_range = [_key(usage, c) for c in usage.range[:1] if c not in usage.equality]
    # sorting on a column fixed by equality is free; a uniform direction needs no DESC (backward scan)
    order = [o for o in usage.order_by if o.column not in usage.equality]
    if len({o.descending for o in order}) <= 1:
        order = [OrderColumn(o.column) for o in order]
    singles = [[c] for c in (*eq, *join, *(_key(usage, c) for c in usage.range), *order)]
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


def unique_keys(existing: Iterable[ExistingIndex]) -> set[str]:
    """Columns that alone are a valid unique index's key (a primary key): equality on one finds one row."""
    return {i.columns[0] for i in existing if i.unique and i.valid and not i.partial and len(i.columns) == 1
            and i.columns[0] is not None}


def union_candidate(usage: TableUsage, equality_columns: list[str], max_columns: int = 4,
                    unique: set[str] | None = None) -> IndexCandidate | None:
    """One B-tree on the equality columns several statements of a batch ask of one table
    (``equality_columns`` ordered by how many statements use each: a shared prefix serves them all);
    a unique key (``unique``) is left out: the statements filtering on it are served already."""
    columns = [OrderColumn(c) for c in equality_columns if c not in (unique or set())][:max_columns]
    if len(columns) < 2:
        return None
    return IndexCandidate(usage.table, usage.schema, tuple(columns))


def text_candidates(usage: TableUsage) -> list[IndexCandidate]:
    """GIN candidates for the predicates a B-tree cannot serve (see the module docstring)."""
    out: list[IndexCandidate] = []
    for text in usage.text_search:
        candidate = IndexCandidate(usage.table, usage.schema, (_text_key(text),), method="gin")
        if candidate not in out:
            out.append(candidate)
    return out


def _text_key(text: TextPredicate) -> OrderColumn:
    opclass = {"trigram": "gin_trgm_ops", "containment": "jsonb_path_ops"}.get(text.kind)
    return OrderColumn(text.key, expression=text.expression, opclass=opclass)


def candidates_for(shape: QueryShape, max_columns: int = 4) -> list[IndexCandidate]:
    """Every single candidate index of every table of ``shape``, in a deterministic order."""
    return [c for usage in shape.tables for c in (*candidates_for_table(usage, max_columns), *text_candidates(usage))]


def branch_candidate(branch: TableUsage, max_columns: int = 4) -> IndexCandidate | None:
    """The one index an OR branch needs: its equality keys then one range key (B-tree), or its GIN index."""
    texts = text_candidates(branch)
    if texts:
        return texts[0]
    keys = [_key(branch, c) for c in branch.equality] + [_key(branch, c) for c in branch.range[:1] if c not in branch.equality]
    return IndexCandidate(branch.table, branch.schema, tuple(keys[:max_columns])) if keys else None


def or_sets(shape: QueryShape, max_columns: int = 4) -> list[tuple[IndexCandidate, ...]]:
    """Per top-level OR, the set of one index per branch: only together do they serve it (BitmapOr)."""
    sets = []
    for group in shape.or_groups:
        members = [branch_candidate(b, max_columns) for b in group]
        if all(m is not None for m in members):
            unique = tuple(dict.fromkeys(m for m in members if m is not None))
            if unique not in sets:
                sets.append(unique)
    return sets


def covering_index(candidate: IndexCandidate, existing: Iterable[ExistingIndex]) -> ExistingIndex | None:
    """The existing index that makes ``candidate`` redundant, if any.

    A valid index covers a candidate when it is that very index (same name), or when it is
    not partial and its leading keys are the candidate's keys (B-tree), or when it indexes the
    candidate's key with an operator class serving the same operators (GIN/GiST). A partial
    existing index is not assumed to cover anything else: its predicate may exclude the rows needed.
    """
    wanted = tuple(normalize_expression(c.column) if c.expression else c.column for c in candidate.columns)
    for index in existing:
        if not index.valid:
            continue
        if index.name == candidate.name:
            return index
        if index.partial:
            continue
        keys = tuple(index.key(i) for i in range(len(index.columns)))
        if candidate.method == "btree":
            if index.method == "btree" and keys[: len(wanted)] == wanted:
                return index
        elif any(key == wanted[0] and _serves(candidate, index, i) for i, key in enumerate(keys)):
            return index
    return None


def _serves(candidate: IndexCandidate, index: ExistingIndex, position: int) -> bool:
    """Whether ``index``'s key at ``position`` serves the operators of ``candidate``'s (GIN/GiST) key."""
    opclass = index.opclasses[position] if position < len(index.opclasses) else None
    wanted = candidate.columns[0].opclass
    if wanted in _OPCLASS_EXTENSIONS:  # trigram: any pg_trgm operator class, GIN or GiST
        return opclass in _OPCLASS_EXTENSIONS
    if wanted == "jsonb_path_ops":  # containment: both jsonb GIN operator classes serve @>
        return index.method == "gin" and opclass in (None, "jsonb_path_ops")
    return index.method in ("gin", "gist")  # a tsvector column or to_tsvector(...) expression
