"""What one SELECT/UPDATE/DELETE asks of each table, read from its pglast parse tree.

Pure: no database. For every table in the statement it collects the columns compared for
equality, the columns in range predicates, the join columns, the ORDER BY columns and the
constant filters (``status IN ('confirmed', 'pending')``) that can become partial-index
predicates. Only top-level ``AND`` conjuncts of ``WHERE`` and ``JOIN ... ON`` are read: an
``OR`` branch or a subquery is not a condition every row must meet, so it is left out.

Unqualified columns are attributed to the only table of the statement; with several tables
an unqualified column cannot be attributed without the catalog and is reported in
``ambiguous`` and not used.

Constant filters are ``IN`` lists of constants and equality with a string or boolean constant:
``vendor_id = 7`` is a key lookup, and an index ``WHERE vendor_id = 7`` would serve one value only.
Placeholders (``$n``) are what the SDK sends: it strips literals before an event leaves the
service, so constant filters come mainly from raw SQL given to ``dbopt analyze``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pglast import ast, enums, parser
from pglast.stream import RawStream
from pglast.visitors import Visitor

from streams.sql import SqlParseError

Constant = str | int | float | bool

_RANGE_OPS = frozenset({"<", "<=", ">", ">="})
_BETWEEN = frozenset({enums.A_Expr_Kind.AEXPR_BETWEEN, enums.A_Expr_Kind.AEXPR_BETWEEN_SYM})


class UnsupportedStatement(ValueError):
    """The statement is valid SQL but not one the advisor can index for."""


@dataclass(frozen=True, slots=True)
class OrderColumn:
    column: str
    descending: bool = False


@dataclass(frozen=True, slots=True)
class ConstantFilter:
    """``column = const`` or ``column IN (const, ...)``: a candidate partial-index predicate."""

    column: str
    values: tuple[Constant, ...]


@dataclass(slots=True)
class TableUsage:
    """What the statement asks of one table (columns in the order they appear, no repeats)."""

    table: str
    schema: str | None = None  # as written; the evaluator resolves None against the configured search path
    aliases: list[str] = field(default_factory=list)
    equality: list[str] = field(default_factory=list)
    range: list[str] = field(default_factory=list)
    join: list[str] = field(default_factory=list)
    order_by: list[OrderColumn] = field(default_factory=list)
    constant_filters: list[ConstantFilter] = field(default_factory=list)

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.table}" if self.schema else self.table


@dataclass(slots=True)
class QueryShape:
    statement_type: str
    sql: str  # the statement deparsed from its tree: exactly one statement, canonical text
    tables: list[TableUsage]
    limit: int | None = None
    has_limit: bool = False
    param_count: int = 0
    ambiguous: list[str] = field(default_factory=list)

    def table(self, name: str) -> TableUsage | None:
        return next((t for t in self.tables if t.table == name or t.qualified == name), None)


def _add(items: list, item: object) -> None:
    if item not in items:
        items.append(item)


class _Builder:
    def __init__(self) -> None:
        self.tables: list[TableUsage] = []
        self.by_ref: dict[str, TableUsage] = {}
        self.ambiguous: list[str] = []

    def relation(self, rv: ast.RangeVar) -> None:
        assert rv.relname is not None  # a parsed RangeVar always names its relation
        usage = next((t for t in self.tables if t.table == rv.relname and t.schema == rv.schemaname), None)
        if usage is None:
            usage = TableUsage(table=rv.relname, schema=rv.schemaname)
            self.tables.append(usage)
        alias = rv.alias.aliasname if rv.alias else None
        if alias:
            _add(usage.aliases, alias)
            self.by_ref[alias] = usage
        else:
            self.by_ref[rv.relname] = usage
            if rv.schemaname:
                self.by_ref[f"{rv.schemaname}.{rv.relname}"] = usage

    def from_item(self, node: object, quals: list[tuple[object, bool]]) -> None:
        if isinstance(node, ast.RangeVar):
            self.relation(node)
        elif isinstance(node, ast.JoinExpr):
            self.from_item(node.larg, quals)
            self.from_item(node.rarg, quals)
            # outer-join ON conditions are join conditions, not row filters of the statement:
            # only their column = column pairs are kept (see _conjunct)
            if node.quals is not None:
                quals.append((node.quals, node.jointype == enums.JoinType.JOIN_INNER))
        # subqueries, functions and VALUES in FROM are not indexable tables: skipped

    def column(self, node: object) -> tuple[TableUsage, str] | None:
        """The (table, column) of a plain column reference, or None."""
        if not isinstance(node, ast.ColumnRef):
            return None
        fields = node.fields or ()
        names = [f.sval for f in fields if isinstance(f, ast.String) and f.sval is not None]
        if len(names) != len(fields) or not names:
            return None  # t.* or similar
        if len(names) == 1:
            if len(self.tables) == 1:
                return self.tables[0], names[0]
            _add(self.ambiguous, names[0])
            return None
        usage = self.by_ref.get(".".join(names[:-1]))
        return (usage, names[-1]) if usage is not None else None


def _constant(node: object) -> Constant | None:
    while isinstance(node, ast.TypeCast):
        node = node.arg
    if not isinstance(node, ast.A_Const) or node.isnull:
        return None
    val = node.val
    if isinstance(val, ast.Integer):
        return val.ival
    if isinstance(val, ast.Float) and val.fval is not None:
        return float(val.fval)
    if isinstance(val, ast.Boolean):
        return val.boolval
    if isinstance(val, ast.String):
        return val.sval
    return None


def _is_value(node: object) -> bool:
    """A placeholder or a constant: something fixed while the row varies."""
    while isinstance(node, ast.TypeCast):
        node = node.arg
    return isinstance(node, (ast.ParamRef, ast.A_Const))


def _op(node: ast.A_Expr) -> str | None:
    return node.name[-1].sval if node.name and isinstance(node.name[-1], ast.String) else None


def _conjuncts(node: object) -> list[object]:
    if isinstance(node, ast.BoolExpr) and node.boolop == enums.BoolExprType.AND_EXPR:
        return [c for arg in node.args or () for c in _conjuncts(arg)]
    return [node]


def _conjunct(b: _Builder, node: object, row_filter: bool) -> None:
    if isinstance(node, ast.NullTest) and row_filter:
        ref = b.column(node.arg)
        if ref and node.nulltesttype == enums.NullTestType.IS_NULL:
            _add(ref[0].equality, ref[1])
        return
    if not isinstance(node, ast.A_Expr):
        return
    op = _op(node)
    kind = node.kind
    if kind == enums.A_Expr_Kind.AEXPR_OP and op == "=":
        left, right = b.column(node.lexpr), b.column(node.rexpr)
        if left and right:
            if left[0] is not right[0]:
                _add(left[0].join, left[1])
                _add(right[0].join, right[1])
            return
        ref, other = (left, node.rexpr) if left else (right, node.lexpr)
        if ref and row_filter and _is_value(other):
            _add(ref[0].equality, ref[1])
            value = _constant(other)
            if isinstance(value, (str, bool)):  # a number compared for equality is usually a key
                _add(ref[0].constant_filters, ConstantFilter(ref[1], (value,)))
        return
    if not row_filter:
        return
    if kind == enums.A_Expr_Kind.AEXPR_OP and op in _RANGE_OPS:
        ref = b.column(node.lexpr) if _is_value(node.rexpr) else b.column(node.rexpr) if _is_value(node.lexpr) else None
        if ref:
            _add(ref[0].range, ref[1])
    elif kind == enums.A_Expr_Kind.AEXPR_IN and op == "=":
        ref = b.column(node.lexpr)
        if ref and isinstance(node.rexpr, tuple) and all(_is_value(v) for v in node.rexpr):
            _add(ref[0].equality, ref[1])
            values = [_constant(v) for v in node.rexpr]
            constants = tuple(v for v in values if v is not None)
            if len(constants) == len(values):
                _add(ref[0].constant_filters, ConstantFilter(ref[1], constants))
    elif kind == enums.A_Expr_Kind.AEXPR_OP_ANY and op == "=":
        ref = b.column(node.lexpr)
        if ref and _is_value(node.rexpr):
            _add(ref[0].equality, ref[1])
    elif kind in _BETWEEN:
        ref = b.column(node.lexpr)
        if ref and isinstance(node.rexpr, tuple) and all(_is_value(v) for v in node.rexpr):
            _add(ref[0].range, ref[1])


class _HighestParam(Visitor):
    def __init__(self) -> None:
        self.highest = 0

    def visit_ParamRef(self, ancestors: object, node: ast.ParamRef) -> None:
        self.highest = max(self.highest, node.number or 0)


def _count_params(tree: ast.Node | tuple[ast.Node, ...]) -> int:
    """Number of parameters ``$1..$n`` the statement needs (the highest number used)."""
    visitor = _HighestParam()
    visitor(tree)
    return visitor.highest


def analyze_sql(sql: str) -> QueryShape:
    """The :class:`QueryShape` of one SELECT, UPDATE or DELETE statement.

    Raises :class:`streams.sql.SqlParseError` for invalid SQL and :class:`UnsupportedStatement`
    for several statements or another kind of statement.
    """
    try:
        stmts = parser.parse_sql(sql)
    except parser.ParseError as exc:
        raise SqlParseError(f"not valid PostgreSQL SQL: {exc.args[0]}") from None
    if len(stmts) != 1:
        raise UnsupportedStatement(f"expected exactly one statement, got {len(stmts)}")
    stmt = stmts[0].stmt
    b = _Builder()
    quals: list[tuple[object, bool]] = []
    limit: Constant | None = None
    has_limit = False
    order: list[ast.SortBy] = []
    if isinstance(stmt, ast.SelectStmt):
        if stmt.op != enums.SetOperation.SETOP_NONE:
            raise UnsupportedStatement("UNION/INTERSECT/EXCEPT: analyze each branch on its own")
        if stmt.fromClause is None:
            raise UnsupportedStatement("SELECT without FROM reads no table")
        for item in stmt.fromClause:
            b.from_item(item, quals)
        kind = "SELECT"
        order = list(stmt.sortClause or ())
        has_limit = stmt.limitCount is not None
        limit = _constant(stmt.limitCount)
    elif isinstance(stmt, ast.UpdateStmt):
        assert stmt.relation is not None  # the table UPDATE names
        b.relation(stmt.relation)
        for item in stmt.fromClause or ():
            b.from_item(item, quals)
        kind = "UPDATE"
    elif isinstance(stmt, ast.DeleteStmt):
        assert stmt.relation is not None  # the table DELETE names
        b.relation(stmt.relation)
        for item in stmt.usingClause or ():
            b.from_item(item, quals)
        kind = "DELETE"
    else:
        raise UnsupportedStatement(f"{type(stmt).__name__} is not a SELECT, UPDATE or DELETE")
    if stmt.whereClause is not None:
        quals.append((stmt.whereClause, True))
    for expr, row_filter in quals:
        for node in _conjuncts(expr):
            _conjunct(b, node, row_filter)
    for sort in order:
        ref = b.column(sort.node)
        if ref:
            _add(ref[0].order_by, OrderColumn(ref[1], sort.sortby_dir == enums.SortByDir.SORTBY_DESC))
    return QueryShape(
        statement_type=kind,
        sql=RawStream()(stmts),
        tables=b.tables,
        limit=limit if isinstance(limit, int) and not isinstance(limit, bool) else None,
        has_limit=has_limit,
        param_count=_count_params(stmts),
        ambiguous=b.ambiguous,
    )
