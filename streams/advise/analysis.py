"""What one SELECT/UPDATE/DELETE asks of each table, read from its pglast parse tree.

Pure: no database. For every table in the statement it collects the keys compared for
equality, the keys in range predicates, the join columns, the ORDER BY columns, the constant
filters (``status IN ('confirmed', 'pending')``) that can become partial-index predicates, and the
predicates only a GIN/GiST index serves (``ILIKE``, regular expressions and ``%`` for pg_trgm,
``@@`` full-text search, ``@>`` containment). A key is a column, or an expression on one table's
columns made of :data:`INDEXABLE_FUNCTIONS` (immutable built-ins: ``lower(email)``,
``to_tsvector('english', description)``) — an expression index can serve it.

Only top-level ``AND`` conjuncts of ``WHERE`` and ``JOIN ... ON`` are conditions every row meets.
A top-level ``OR`` whose every branch is understood becomes an *OR group*: one index per branch
can serve it together (a BitmapOr), so the evaluator measures such sets as a whole. Everything
else the analysis could not use is listed in ``not_understood``, so ``dbopt analyze`` can say why
it tested nothing.

Unqualified columns are attributed to the only table of the statement; with several tables
an unqualified column cannot be attributed without the catalog and is reported in
``ambiguous`` and not used.

Constant filters are ``IN`` lists of string or boolean constants and equality with a string or
boolean constant: numbers are keys (``vendor_id = 7``, ``id IN (1, 2, 3)``), and an index
``WHERE vendor_id = 7`` would serve one value only. Whether a string is a *frequent* value (a
status) rather than a city or an e-mail is the evaluator's question to ``pg_stats``.
Placeholders (``$n``) are what the SDK sends: their uses (``params``) tell the evaluator which
column each stands for, so it can plan with representative values from ``pg_stats``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pglast import ast, enums, parser
from pglast.stream import RawStream
from pglast.visitors import Visitor

from streams.sql import SqlParseError

Constant = str | int | float | bool

_RANGE_OPS = frozenset({"<", "<=", ">", ">="})
_FLIPPED = {"<": ">", "<=": ">=", ">": "<", ">=": "<="}
_BETWEEN = frozenset({enums.A_Expr_Kind.AEXPR_BETWEEN, enums.A_Expr_Kind.AEXPR_BETWEEN_SYM})
# operators pg_trgm's GIN/GiST operator classes serve: LIKE, ILIKE, regular expressions, similarity
_TRIGRAM_OPS = frozenset({"~~", "~~*", "~", "~*", "%", "<%", "%>", "<<%", "%>>"})
_TSQUERY_FUNCTIONS = frozenset({"to_tsquery", "plainto_tsquery", "phraseto_tsquery", "websearch_to_tsquery"})
# immutable built-in functions an expression index may be proposed on (to_tsvector only in its
# two-argument form, whose configuration is fixed: the one-argument form depends on a setting)
INDEXABLE_FUNCTIONS = frozenset(
    {"lower", "upper", "btrim", "ltrim", "rtrim", "md5", "abs", "length", "char_length", "to_tsvector"}
)


class UnsupportedStatement(ValueError):
    """The statement is valid SQL but not one the advisor can index for."""


@dataclass(frozen=True, slots=True)
class OrderColumn:
    """One index key: a column, or (``expression``) an expression's SQL, with its order and opclass."""

    column: str
    descending: bool = False
    expression: bool = False
    opclass: str | None = None

    def __repr__(self) -> str:
        # the repr names indexes (a hash of it): plain columns keep the name they always had
        extra = "".join(
            f", {name}={value!r}" for name, value in (("expression", self.expression), ("opclass", self.opclass)) if value
        )
        return f"OrderColumn(column={self.column!r}, descending={self.descending!r}{extra})"


@dataclass(frozen=True, slots=True)
class ConstantFilter:
    """``column = const`` or ``column IN (const, ...)``: a candidate partial-index predicate."""

    column: str
    values: tuple[Constant, ...]


@dataclass(frozen=True, slots=True)
class TextPredicate:
    """A predicate a B-tree cannot serve: ``trigram`` (LIKE/ILIKE/regex/similarity), ``fulltext`` (``@@``)
    or ``containment`` (``@>``), on a column or an expression (``to_tsvector('english', description)``)."""

    kind: str
    key: str
    expression: bool
    operator: str


@dataclass(frozen=True, slots=True)
class ParamUse:
    """What ``$n`` is compared with: ``role`` is ``eq``, ``lower`` (key >= $n), ``upper`` (key <= $n),
    ``pattern`` (LIKE/regex), ``tsquery``, ``tsconfig`` (the configuration of a tsquery) or ``containment``."""

    table: str
    schema: str | None
    key: str
    expression: bool
    role: str


@dataclass(slots=True)
class TableUsage:
    """What the statement asks of one table (keys in the order they appear, no repeats)."""

    table: str
    schema: str | None = None  # as written; the evaluator resolves None against the configured search path
    aliases: list[str] = field(default_factory=list)
    equality: list[str] = field(default_factory=list)
    range: list[str] = field(default_factory=list)
    join: list[str] = field(default_factory=list)
    order_by: list[OrderColumn] = field(default_factory=list)
    constant_filters: list[ConstantFilter] = field(default_factory=list)
    text_search: list[TextPredicate] = field(default_factory=list)
    expressions: list[str] = field(default_factory=list)  # the keys of equality/range that are expressions

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.table}" if self.schema else self.table

    def branch(self) -> TableUsage:
        """An empty usage of the same table (for one OR branch)."""
        return TableUsage(self.table, self.schema, list(self.aliases))


@dataclass(slots=True)
class QueryShape:
    statement_type: str
    sql: str  # the statement deparsed from its tree: exactly one statement, canonical text
    tables: list[TableUsage]
    limit: int | None = None
    has_limit: bool = False
    param_count: int = 0
    ambiguous: list[str] = field(default_factory=list)
    params: dict[int, ParamUse] = field(default_factory=dict)
    or_groups: list[list[TableUsage]] = field(default_factory=list)  # per top-level OR: one usage per branch
    not_understood: list[str] = field(default_factory=list)  # predicates no candidate was derived from, and why

    def table(self, name: str) -> TableUsage | None:
        return next((t for t in self.tables if t.table == name or t.qualified == name), None)


def _add(items: list, item: object) -> None:
    if item not in items:
        items.append(item)


def _text(node: object) -> str:
    return RawStream()(node)  # type: ignore[arg-type]


class _Builder:
    def __init__(self) -> None:
        self.tables: list[TableUsage] = []
        self.by_ref: dict[str, TableUsage] = {}
        self.ambiguous: list[str] = []
        self.params: dict[int, ParamUse] = {}

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

    def key(self, node: object) -> tuple[TableUsage, str, bool] | None:
        """(table, key, is expression) of a column or of an indexable expression on one table's columns."""
        ref = self.column(node)
        if ref is not None:
            return ref[0], ref[1], False
        if not isinstance(node, ast.FuncCall) or not _indexable_call(node):
            return None
        tables = set()
        columns = _ColumnRefs()
        columns(node)
        for ref_node in columns.found:
            ref = self.column(ref_node)
            if ref is None:
                return None
            tables.add(id(ref[0]))
            owner = ref[0]
        if len(tables) != 1:
            return None
        # the expression as the index will hold it: columns unqualified (an index names no alias)
        return owner, _text(_unqualified(node)), True

    def param(self, node: object, usage: TableUsage, key: str, expression: bool, role: str) -> None:
        while isinstance(node, ast.TypeCast):
            node = node.arg
        if isinstance(node, ast.ParamRef) and node.number:
            self.params.setdefault(node.number, ParamUse(usage.table, usage.schema, key, expression, role))


class _ColumnRefs(Visitor):
    def __init__(self) -> None:
        self.found: list[ast.ColumnRef] = []

    def visit_ColumnRef(self, ancestors: object, node: ast.ColumnRef) -> None:
        self.found.append(node)


def expression_node(text: str) -> ast.Node:
    """The parse tree of one scalar expression."""
    stmt = parser.parse_sql(f"SELECT {text}")[0].stmt
    assert isinstance(stmt, ast.SelectStmt) and stmt.targetList
    target = stmt.targetList[0]
    assert isinstance(target, ast.ResTarget) and target.val is not None
    return target.val


def _unqualified(node: ast.FuncCall) -> ast.Node:
    """A copy of ``node`` whose column references carry only the column name."""
    copy = expression_node(_text(node))

    class _Strip(Visitor):
        def visit_ColumnRef(self, ancestors: object, ref: ast.ColumnRef) -> None:
            ref.fields = ref.fields[-1:] if ref.fields else ref.fields

    _Strip()(copy)
    return copy


def _indexable_call(node: ast.FuncCall) -> bool:
    names = [n.sval for n in node.funcname or () if isinstance(n, ast.String)]
    if not names or len(names) > 2 or (len(names) == 2 and names[0] != "pg_catalog"):
        return False
    if names[-1] not in INDEXABLE_FUNCTIONS or node.agg_star or node.over is not None or node.agg_distinct:
        return False
    args = list(node.args or ())
    if names[-1] == "to_tsvector" and (len(args) != 2 or _constant(args[0]) is None):
        return False  # to_tsvector(text) depends on default_text_search_config: not immutable
    return all(isinstance(a, (ast.ColumnRef, ast.A_Const, ast.TypeCast)) or
               (isinstance(a, ast.FuncCall) and _indexable_call(a)) for a in args)


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


def _tsquery_param(node: object) -> tuple[object | None, object] | None:
    """(configuration argument or None, searched argument) of ``to_tsquery([cfg,] $n)`` and friends,
    or (None, the value itself)."""
    while isinstance(node, ast.TypeCast):
        node = node.arg
    if isinstance(node, ast.FuncCall):
        names = [n.sval for n in node.funcname or () if isinstance(n, ast.String)]
        args = list(node.args or ())
        if names and names[-1] in _TSQUERY_FUNCTIONS and args and all(_is_value(a) for a in args):
            return (args[0] if len(args) == 2 else None), args[-1]
        return None
    return (None, node) if _is_value(node) else None


def _op(node: ast.A_Expr) -> str | None:
    return node.name[-1].sval if node.name and isinstance(node.name[-1], ast.String) else None


def _conjuncts(node: object) -> list[object]:
    if isinstance(node, ast.BoolExpr) and node.boolop == enums.BoolExprType.AND_EXPR:
        return [c for arg in node.args or () for c in _conjuncts(arg)]
    return [node]


def _conjunct(b: _Builder, node: object, row_filter: bool) -> str | None:
    """Record what one conjunct asks; the reason it was not understood, or None."""
    if isinstance(node, ast.NullTest):
        ref = b.column(node.arg)
        if ref and row_filter and node.nulltesttype == enums.NullTestType.IS_NULL:
            _add(ref[0].equality, ref[1])
            return None
        return "IS NOT NULL filters few rows" if ref else "not a column of a known table"
    if isinstance(node, ast.BoolExpr):
        return "OR across different kinds of predicates" if node.boolop == enums.BoolExprType.OR_EXPR else "NOT"
    if isinstance(node, ast.SubLink):
        return "subquery"
    if not isinstance(node, ast.A_Expr):
        return f"{type(node).__name__} is not a comparison"
    op = _op(node)
    kind = node.kind
    if kind == enums.A_Expr_Kind.AEXPR_OP and op == "=":
        left, right = b.column(node.lexpr), b.column(node.rexpr)
        if left and right:
            if left[0] is not right[0]:
                _add(left[0].join, left[1])
                _add(right[0].join, right[1])
                return None
            return "compares two columns of one table"
        key_left, key_right = b.key(node.lexpr), b.key(node.rexpr)
        key, other = (key_left, node.rexpr) if key_left else (key_right, node.lexpr)
        if key is None or not _is_value(other):
            return "neither side is a column (or an indexable expression) compared with a value"
        if not row_filter:
            return None
        usage, name, expression = key
        _add(usage.equality, name)
        if expression:
            _add(usage.expressions, name)
        b.param(other, usage, name, expression, "eq")
        value = _constant(other)
        if not expression and isinstance(value, (str, bool)):  # a number compared for equality is a key
            _add(usage.constant_filters, ConstantFilter(name, (value,)))
        return None
    if not row_filter:
        return None
    if kind == enums.A_Expr_Kind.AEXPR_OP and op in _RANGE_OPS:
        if _is_value(node.rexpr) and (key := b.key(node.lexpr)):
            bound, direction = node.rexpr, op
        elif _is_value(node.lexpr) and (key := b.key(node.rexpr)):
            bound, direction = node.lexpr, _FLIPPED[op]
        else:
            return "range comparison without a column and a value"
        usage, name, expression = key
        _add(usage.range, name)
        if expression:
            _add(usage.expressions, name)
        b.param(bound, usage, name, expression, "lower" if direction.startswith(">") else "upper")
        return None
    if kind in (enums.A_Expr_Kind.AEXPR_LIKE, enums.A_Expr_Kind.AEXPR_ILIKE) or (
        kind == enums.A_Expr_Kind.AEXPR_OP and op in _TRIGRAM_OPS
    ):
        key = b.key(node.lexpr)
        if key is None or not _is_value(node.rexpr) or op is None or op.startswith("!"):
            return "negated or not a column matched against a value" if key else "pattern match on no column"
        usage, name, expression = key
        _add(usage.text_search, TextPredicate("trigram", name, expression, op))
        b.param(node.rexpr, usage, name, expression, "pattern")
        return None
    if kind == enums.A_Expr_Kind.AEXPR_OP and op == "@@":
        for side, query in ((node.lexpr, node.rexpr), (node.rexpr, node.lexpr)):
            key = b.key(side)
            searched = _tsquery_param(query)
            if key is not None and searched is not None:
                usage, name, expression = key
                _add(usage.text_search, TextPredicate("fulltext", name, expression, op))
                b.param(searched[1], usage, name, expression, "tsquery")
                b.param(searched[0], usage, name, expression, "tsconfig")  # the SDK turns 'english' into $n too
                return None
        return "@@ needs a tsvector column or to_tsvector(configuration, columns) and a query value"
    if kind == enums.A_Expr_Kind.AEXPR_OP and op == "@>":
        key = b.key(node.lexpr)
        if key is None or key[2] or not _is_value(node.rexpr):
            return "@> needs a column on the left and a value on the right"
        usage, name, _ = key
        _add(usage.text_search, TextPredicate("containment", name, False, op))
        b.param(node.rexpr, usage, name, False, "containment")
        return None
    if kind == enums.A_Expr_Kind.AEXPR_IN and op == "=":
        key = b.key(node.lexpr)
        if key is None or not isinstance(node.rexpr, tuple) or not all(_is_value(v) for v in node.rexpr):
            return "IN without a column and a list of values"
        usage, name, expression = key
        _add(usage.equality, name)
        if expression:
            _add(usage.expressions, name)
        for item in node.rexpr:
            b.param(item, usage, name, expression, "eq")
        values = [_constant(v) for v in node.rexpr]
        # only strings and booleans: an IN list of numbers is a list of ids, never a predicate
        if not expression and all(isinstance(v, (str, bool)) for v in values):
            _add(usage.constant_filters, ConstantFilter(name, tuple(v for v in values if v is not None)))
        return None
    if kind == enums.A_Expr_Kind.AEXPR_OP_ANY and op == "=":
        key = b.key(node.lexpr)
        if key is None or not _is_value(node.rexpr):
            return "= ANY without a column and an array value"
        _add(key[0].equality, key[1])
        if key[2]:
            _add(key[0].expressions, key[1])
        return None
    if kind in _BETWEEN:
        key = b.key(node.lexpr)
        if key is None or not isinstance(node.rexpr, tuple) or not all(_is_value(v) for v in node.rexpr):
            return "BETWEEN without a column and two values"
        usage, name, expression = key
        _add(usage.range, name)
        if expression:
            _add(usage.expressions, name)
        for item, role in zip(node.rexpr, ("lower", "upper"), strict=False):
            b.param(item, usage, name, expression, role)
        return None
    return f"operator {op} has no index candidate"


def _or_group(b: _Builder, node: ast.BoolExpr) -> list[TableUsage] | None:
    """One usage per branch of a top-level OR, when every branch is understood and names one table."""
    branches: list[TableUsage] = []
    for arg in node.args or ():
        # analyse the branch into scratch usages, then keep what it asks of its single table
        scratch = _Builder()
        scratch.tables = [t.branch() for t in b.tables]
        scratch.by_ref = {ref: scratch.tables[b.tables.index(u)] for ref, u in b.by_ref.items()}
        if any(_conjunct(scratch, c, True) for c in _conjuncts(arg)):
            return None
        used = [t for t in scratch.tables if t.equality or t.range or t.text_search]
        if len(used) != 1 or used[0].join:
            return None
        branches.append(used[0])
        for number, use in scratch.params.items():
            b.params.setdefault(number, use)
    return branches


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
    or_groups: list[list[TableUsage]] = []
    not_understood: list[str] = []
    for expr, row_filter in quals:
        for node in _conjuncts(expr):
            if row_filter and isinstance(node, ast.BoolExpr) and node.boolop == enums.BoolExprType.OR_EXPR:
                group = _or_group(b, node)
                if group is not None:
                    or_groups.append(group)
                    continue
                not_understood.append(f"{_text(node)}: an OR whose branches do not each filter one table")
                continue
            why = _conjunct(b, node, row_filter)
            if why and row_filter:
                not_understood.append(f"{_text(node)}: {why}")
    for sort in order:
        ref = b.column(sort.node)
        if ref:
            _add(ref[0].order_by, OrderColumn(ref[1], sort.sortby_dir == enums.SortByDir.SORTBY_DESC))
        else:
            not_understood.append(f"ORDER BY {_text(sort.node)}: not a column")
    return QueryShape(
        statement_type=kind,
        sql=RawStream()(stmts),
        tables=b.tables,
        limit=limit if isinstance(limit, int) and not isinstance(limit, bool) else None,
        has_limit=has_limit,
        param_count=_count_params(stmts),
        ambiguous=b.ambiguous,
        params=b.params,
        or_groups=or_groups,
        not_understood=not_understood,
    )
