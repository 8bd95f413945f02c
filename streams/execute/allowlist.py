"""Which statements the executor may run at all (pure; PostgreSQL's own parser via pglast).

Exactly one statement, one of:

* ``CREATE INDEX CONCURRENTLY name ON table (...)`` — explicit name, not UNIQUE, no tablespace;
  index expressions and predicates may hold columns, constants, operators, casts and calls of
  functions, never subqueries. Which functions, operators, types and operator classes they
  resolve to is the catalog's business (:mod:`streams.execute.catalog` plans ``probe_expressions``
  in a temporary view and reads its dependencies): only built-in objects (``pg_catalog``) and
  those of :data:`ALLOWED_EXTENSIONS`, every function IMMUTABLE — never a user-defined function,
  which would run with the executor's DDL role during the build;
* ``DROP INDEX CONCURRENTLY name`` — one index, no CASCADE (that it is dbopt's own is checked
  against the audit table);
* ``ANALYZE table`` and ``VACUUM table`` without FULL — exactly one table;
* ``REINDEX (CONCURRENTLY) INDEX|TABLE name``.

Never a system schema (``pg_catalog``, ``information_schema``, ``pg_toast``, any ``pg_*``), a
``pg_*`` relation, or dbopt's own audit schema. Every identifier must be a plain name (letters,
digits, ``_``, ``$``): a quoted identifier holding ``;``, quotes, spaces or
control characters is refused as an injection attempt. What runs is not the submitted text but
the statement deparsed from its parse tree (``sql_to_run``).

Whether the table exists, is a user table, has room for another index, and whether the
functions are IMMUTABLE is decided by :mod:`streams.execute.catalog`, against the database;
an unqualified name is resolved there with the executor's pinned search path
(``DBOPT_DATABASE_SEARCH_PATH``), the same one the statement then runs with.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from pglast import ast, enums, parse_sql
from pglast.parser import ParseError
from pglast.stream import RawStream
from pglast.visitors import Visitor

from streams.commands import UNKNOWN_ACTION

SYSTEM_SCHEMAS = frozenset({"pg_catalog", "information_schema", "pg_toast"})
INDEX_METHODS = frozenset({"btree", "hash", "gin", "gist", "brin", "spgist"})
# extensions whose functions, operators and operator classes an index may use besides pg_catalog's:
# reviewed C code shipped with PostgreSQL (contrib), never something a database user can redefine
ALLOWED_EXTENSIONS = ("pg_trgm",)
# operator classes that only exist once their extension is installed (for a clear rejection)
EXTENSION_OPCLASSES = {"gin_trgm_ops": "pg_trgm", "gist_trgm_ops": "pg_trgm"}

# node types an index expression or predicate may contain (anything else is refused)
_EXPRESSION_NODES: tuple[type, ...] = (
    ast.IndexElem,
    ast.ColumnRef,
    ast.A_Const,
    ast.String,
    ast.Integer,
    ast.Float,
    ast.Boolean,
    ast.BitString,
    ast.A_Expr,
    ast.BoolExpr,
    ast.NullTest,
    ast.BooleanTest,
    ast.TypeCast,
    ast.TypeName,
    ast.CollateClause,
    ast.FuncCall,
    ast.A_ArrayExpr,
    ast.CoalesceExpr,
    ast.CaseExpr,
    ast.CaseWhen,
    ast.MinMaxExpr,
)

_STATEMENT_NAMES: dict[type, str] = {
    ast.TruncateStmt: "TRUNCATE",
    ast.SelectStmt: "SELECT",
    ast.InsertStmt: "INSERT",
    ast.UpdateStmt: "UPDATE",
    ast.DeleteStmt: "DELETE",
    ast.MergeStmt: "MERGE",
    ast.CreateStmt: "CREATE TABLE",
    ast.AlterTableStmt: "ALTER TABLE",
    ast.RenameStmt: "ALTER ... RENAME",
    ast.ClusterStmt: "CLUSTER",
    ast.CopyStmt: "COPY",
    ast.DoStmt: "DO",
    ast.CreateFunctionStmt: "CREATE FUNCTION",
    ast.GrantStmt: "GRANT/REVOKE",
    ast.VariableSetStmt: "SET",
    ast.TransactionStmt: "transaction control",
    ast.ExplainStmt: "EXPLAIN",
    ast.CallStmt: "CALL",
}

_ALLOWED_SUMMARY = (
    "allowed: CREATE INDEX CONCURRENTLY, DROP INDEX CONCURRENTLY, ANALYZE, VACUUM (not FULL), "
    "REINDEX ... CONCURRENTLY"
)


class Refused(ValueError):
    """dbopt refuses the command: its statement is not allowed (or, from the catalog and executor checks,
    not safe to run); ``reason`` says exactly why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Name:
    """A possibly schema-qualified relation or function name, as written."""

    schema: str | None
    name: str

    def __str__(self) -> str:
        return self.name if self.schema is None else f"{self.schema}.{self.name}"


@dataclass(frozen=True)
class ValidatedStatement:
    action: str  # create_index | drop_index | analyze | vacuum | reindex
    sql_to_run: str  # deparsed from the parse tree: what the executor actually runs
    target: Name  # the table (create_index, analyze, vacuum, reindex TABLE) or index (drop, reindex INDEX)
    target_kind: str  # "table" or "index"
    index_name: str | None = None  # create_index: the new index's name (created in the table's schema)
    functions_to_check: tuple[Name, ...] = ()  # functions the index calls, as written
    # create_index: each key expression (or column) and the predicate, deparsed, for the catalog's
    # probe view; the operator classes named; the extensions those need
    probe_expressions: tuple[str, ...] = ()
    opclasses: tuple[Name, ...] = ()
    extensions: tuple[str, ...] = ()
    method: str = "btree"


def action_of(sql: str) -> str:
    """The action a statement asks for (even when it would be rejected), else ``unknown``."""
    try:
        statements = parse_sql(sql)
    except ParseError:
        return UNKNOWN_ACTION
    if len(statements) != 1:
        return UNKNOWN_ACTION
    return _classify(statements[0].stmt)


def _classify(stmt: ast.Node | None) -> str:
    if isinstance(stmt, ast.IndexStmt):
        return "create_index"
    if isinstance(stmt, ast.DropStmt) and stmt.removeType == enums.ObjectType.OBJECT_INDEX:
        return "drop_index"
    if isinstance(stmt, ast.VacuumStmt):
        return "vacuum" if stmt.is_vacuumcmd else "analyze"
    if isinstance(stmt, ast.ReindexStmt):
        return "reindex"
    return UNKNOWN_ACTION


def check_statement(sql: str, protected_schemas: Iterable[str] = ("dbopt",)) -> ValidatedStatement:
    """The statement, checked and re-deparsed; raises :class:`Refused` with the reason."""
    try:
        statements = parse_sql(sql)
    except ParseError as exc:
        raise Refused(f"not valid SQL: {exc}") from None
    if len(statements) != 1:
        raise Refused(f"exactly one statement is allowed, got {len(statements)}")
    stmt = statements[0].stmt
    protected = frozenset(protected_schemas)
    if isinstance(stmt, ast.IndexStmt):
        checked = _create_index(stmt, protected)
    elif isinstance(stmt, ast.DropStmt):
        checked = _drop_index(stmt, protected)
    elif isinstance(stmt, ast.VacuumStmt):
        checked = _vacuum(stmt, protected)
    elif isinstance(stmt, ast.ReindexStmt):
        checked = _reindex(stmt, protected)
    else:
        what = _STATEMENT_NAMES.get(type(stmt), type(stmt).__name__)
        raise Refused(f"{what} is not allowed; {_ALLOWED_SUMMARY}")
    _same_statement_after_deparse(stmt, checked.sql_to_run)
    return checked


# -- statements ------------------------------------------------------------------------


def _create_index(stmt: ast.IndexStmt, protected: frozenset[str]) -> ValidatedStatement:
    if not stmt.concurrent:
        raise Refused("CREATE INDEX without CONCURRENTLY is not allowed: it blocks writes to the table while it builds")
    if stmt.unique or stmt.primary or stmt.isconstraint:
        raise Refused("UNIQUE indexes are not allowed: they change which writes the table accepts")
    if not stmt.idxname:
        raise Refused("CREATE INDEX needs an explicit index name, so that its rollback can drop it")
    _identifier(stmt.idxname, "index name")
    if stmt.tableSpace:
        raise Refused("a TABLESPACE clause is not allowed")
    if stmt.accessMethod not in INDEX_METHODS:
        raise Refused(f"index method {stmt.accessMethod!r} is not allowed (use one of {sorted(INDEX_METHODS)})")
    table = _relation(stmt.relation, protected, "table")
    functions: list[Name] = []
    for element in (*(stmt.indexParams or ()), *(stmt.indexIncludingParams or ())):
        functions += _expression(element, "index expression")
    for option in stmt.options or ():
        _identifier(option.defname, "storage parameter")
    if stmt.whereClause is not None:
        functions += _expression(stmt.whereClause, "index predicate (WHERE)")
    opclasses = [
        Name(*([None] * (2 - len(e.opclass)) + [p.sval for p in e.opclass])) for e in stmt.indexParams or () if e.opclass
    ]
    return ValidatedStatement(
        action="create_index",
        sql_to_run=RawStream()(stmt),
        target=table,
        target_kind="table",
        index_name=stmt.idxname,
        functions_to_check=tuple(dict.fromkeys(functions)),
        probe_expressions=_probe_expressions(stmt),
        opclasses=tuple(dict.fromkeys(opclasses)),
        extensions=tuple(sorted({EXTENSION_OPCLASSES[o.name] for o in opclasses if o.name in EXTENSION_OPCLASSES})),
        method=stmt.accessMethod or "btree",
    )


def _probe_expressions(stmt: ast.IndexStmt) -> tuple[str, ...]:
    """Every key (column or expression, with its collation) and the predicate, each deparsed alone."""
    out = []
    for element in (*(stmt.indexParams or ()), *(stmt.indexIncludingParams or ())):
        node: ast.Node = element.expr if element.expr is not None else ast.ColumnRef(fields=(ast.String(sval=element.name),))
        if element.collation:
            node = ast.CollateClause(arg=node, collname=element.collation)
        out.append(RawStream()(node))
    if stmt.whereClause is not None:
        out.append(RawStream()(stmt.whereClause))
    return tuple(out)


def _drop_index(stmt: ast.DropStmt, protected: frozenset[str]) -> ValidatedStatement:
    assert stmt.removeType is not None  # the parser names the kind of every DROP
    kind = enums.ObjectType(stmt.removeType).name.removeprefix("OBJECT_").replace("_", " ")
    if stmt.removeType != enums.ObjectType.OBJECT_INDEX:
        raise Refused(f"DROP {kind} is not allowed: only DROP INDEX CONCURRENTLY of an index dbopt created")
    if not stmt.concurrent:
        raise Refused("DROP INDEX without CONCURRENTLY is not allowed: it blocks the table while it runs")
    if stmt.behavior == enums.DropBehavior.DROP_CASCADE:
        raise Refused("DROP INDEX ... CASCADE is not allowed: it can drop dependent objects")
    objects = stmt.objects or ()
    if len(objects) != 1:
        raise Refused(f"DROP INDEX must name exactly one index, got {len(objects)}")
    parts = [part.sval for part in objects[0]]
    if len(parts) > 2:
        raise Refused("a database-qualified index name is not allowed")
    index = Name(parts[0] if len(parts) == 2 else None, parts[-1])
    _check_name(index, protected, "index")
    return ValidatedStatement("drop_index", RawStream()(stmt), index, "index")


def _vacuum(stmt: ast.VacuumStmt, protected: frozenset[str]) -> ValidatedStatement:
    action = "vacuum" if stmt.is_vacuumcmd else "analyze"
    verb = action.upper()
    for option in stmt.options or ():
        if option.defname == "full":
            raise Refused("VACUUM FULL is not allowed: it rewrites the table under an exclusive lock")
        _identifier(option.defname, f"{verb} option")
    relations = stmt.rels or ()
    if len(relations) != 1:
        raise Refused(f"{verb} must name exactly one table, got {len(relations)}")
    table = _relation(relations[0].relation, protected, "table")
    for column in relations[0].va_cols or ():
        _identifier(column.sval, "column")
    return ValidatedStatement(action, RawStream()(stmt), table, "table")


def _reindex(stmt: ast.ReindexStmt, protected: frozenset[str]) -> ValidatedStatement:
    concurrently = False
    for param in stmt.params or ():
        if param.defname == "concurrently":
            concurrently = _option_is_true(param)
        elif param.defname == "tablespace":
            raise Refused("REINDEX ... TABLESPACE is not allowed")
        else:
            _identifier(param.defname, "REINDEX option")
    if not concurrently:
        raise Refused("REINDEX without CONCURRENTLY is not allowed: it blocks writes while it rebuilds")
    kinds: dict[enums.ReindexObjectType | None, str] = {
        enums.ReindexObjectType.REINDEX_OBJECT_INDEX: "index", enums.ReindexObjectType.REINDEX_OBJECT_TABLE: "table"
    }
    kind = kinds.get(stmt.kind)
    if kind is None:
        raise Refused("only REINDEX INDEX or REINDEX TABLE is allowed (not SCHEMA, DATABASE or SYSTEM)")
    target = _relation(stmt.relation, protected, kind)
    return ValidatedStatement("reindex", RawStream()(stmt), target, kind)


# -- parts -----------------------------------------------------------------------------


def _identifier(name: str | None, what: str) -> str:
    if not name:
        raise Refused(f"empty {what}")
    for ch in name:
        if not (ch.isalnum() or ch in "_$"):
            raise Refused(
                f"{what} {name!r} contains {ch!r}: possible injection through a quoted identifier "
                "(identifiers may hold only letters, digits, _ and $)"
            )
    return name


def _check_name(name: Name, protected: frozenset[str], what: str) -> None:
    if name.schema is not None:
        _identifier(name.schema, "schema name")
        if name.schema in SYSTEM_SCHEMAS or name.schema.startswith("pg_"):
            raise Refused(f"{what} {name} is in system schema {name.schema}: system catalogs are never touched")
        if name.schema in protected:
            raise Refused(f"{what} {name} is in dbopt's own schema {name.schema}")
    _identifier(name.name, f"{what} name")
    if name.name.startswith("pg_"):
        raise Refused(f"{what} {name} looks like a system catalog (pg_*): system catalogs are never touched")


def _relation(rangevar: ast.RangeVar | None, protected: frozenset[str], what: str) -> Name:
    if rangevar is None:
        raise Refused(f"a {what} must be named")
    if rangevar.catalogname:
        raise Refused(f"a database-qualified {what} name is not allowed")
    name = Name(rangevar.schemaname, rangevar.relname or "")  # an empty name is rejected below
    _check_name(name, protected, what)
    return name


def _option_is_true(option: ast.DefElem) -> bool:
    arg = option.arg
    if arg is None:
        return True
    if isinstance(arg, ast.Boolean):
        return bool(arg.boolval)
    if isinstance(arg, ast.Integer):
        return arg.ival != 0
    if isinstance(arg, ast.String):
        return (arg.sval or "").lower() in ("true", "on", "yes", "1")
    return False


class _ExpressionCheck(Visitor):
    """Refuses subqueries and anything outside :data:`_EXPRESSION_NODES`; collects functions."""

    def __init__(self, where: str) -> None:
        super().__init__()
        self.where = where
        self.functions: list[Name] = []

    def visit(self, ancestors: Any, node: ast.Node) -> None:
        if isinstance(node, ast.SubLink):
            raise Refused(f"a subquery in the {self.where} is not allowed")
        if not isinstance(node, _EXPRESSION_NODES):
            raise Refused(f"{type(node).__name__} in the {self.where} is not allowed")
        if isinstance(node, ast.ColumnRef):
            for part in node.fields or ():
                if not isinstance(part, ast.String):
                    raise Refused(f"'*' in the {self.where} is not allowed")
                _identifier(part.sval, "column")
        elif isinstance(node, ast.IndexElem):
            if node.name:
                _identifier(node.name, "column")
            for part in (*(node.collation or ()), *(node.opclass or ())):
                _identifier(part.sval, "collation or operator class")
        elif isinstance(node, ast.FuncCall):
            self._function(node)
        elif isinstance(node, ast.TypeName):
            for part in node.names or ():
                _identifier(part.sval, "type name")

    def _function(self, node: ast.FuncCall) -> None:
        if node.over is not None or node.agg_star or node.agg_order or node.agg_filter is not None:
            raise Refused(f"aggregate or window calls in the {self.where} are not allowed")
        parts = [_identifier(part.sval, "function name") for part in node.funcname or ()]
        if len(parts) > 2:
            raise Refused(f"function name {'.'.join(parts)} has too many parts")
        self.functions.append(Name(parts[0] if len(parts) == 2 else None, parts[-1]))


def _expression(node: ast.Node, where: str) -> list[Name]:
    check = _ExpressionCheck(where)
    check(node)
    return check.functions


def _same_statement_after_deparse(original: ast.Node, sql_to_run: str) -> None:
    """Belt and braces: what runs must parse back to one statement of the same kind."""
    again = parse_sql(sql_to_run)
    if len(again) != 1 or type(again[0].stmt) is not type(original):
        raise Refused("the statement does not survive a parse/deparse round trip")
