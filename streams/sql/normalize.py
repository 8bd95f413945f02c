"""Literal-free understanding of one SQL string, with pglast only (never regular expressions).

``normalize(sql)`` returns the pg_query fingerprint, a canonical text in which every literal
is a ``$n`` placeholder, the statement type and the relations touched. The text is built in
three steps, each done by PostgreSQL's own parser/scanner through pglast:

1. ``pglast.parser.normalize`` replaces the constants pg_query knows about with ``$n``;
2. the result is parsed again, lists that the fingerprint ignores the length of (``IN (...)``,
   ``ARRAY[...]``, multi-row ``VALUES``) are collapsed to one element, and it is deparsed, which
   drops comments and unifies case and spacing;
3. the deparsed text is scanned: every remaining constant token (utility statements such as
   ``COMMENT ... IS '...'`` keep theirs after step 1) becomes a placeholder, comments are dropped,
   and the placeholders are renumbered ``$1..$n`` in text order.

So the same statement with different literals yields the same fingerprint *and* query_text,
and no literal survives into query_text.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeGuard

from pglast import ast, enums, parser
from pglast.stream import RawStream
from pglast.visitors import ReferencedRelations, Visitor

_STATEMENT_TYPES: dict[type, str] = {
    ast.SelectStmt: "SELECT",
    ast.InsertStmt: "INSERT",
    ast.UpdateStmt: "UPDATE",
    ast.DeleteStmt: "DELETE",
    ast.MergeStmt: "MERGE",
}
_CONSTANT_TOKENS = frozenset({"SCONST", "USCONST", "ICONST", "FCONST", "BCONST", "XCONST", "PARAM"})
_COMMENT_TOKENS = frozenset({"C_COMMENT", "SQL_COMMENT"})


class SqlParseError(ValueError):
    """The statement is not valid PostgreSQL SQL (the message never quotes the statement)."""


@dataclass(frozen=True, slots=True)
class NormalizedStatement:
    fingerprint: str
    query_text: str
    statement_type: str
    tables: tuple[str, ...]


class _CollapseLists(Visitor):
    """Shrink lists made only of placeholders to their first element, in place.

    (Not merged into pglast's ReferencedRelations walk: that one hands WITH statements to fresh
    ReferencedRelations instances, which would skip the collapse inside them.)"""

    def visit_A_Expr(self, ancestors: object, node: ast.A_Expr) -> None:
        if node.kind == enums.A_Expr_Kind.AEXPR_IN and _all_params(node.rexpr):
            node.rexpr = tuple(node.rexpr[:1])

    def visit_A_ArrayExpr(self, ancestors: object, node: ast.A_ArrayExpr) -> None:
        if _all_params(node.elements):
            node.elements = tuple(node.elements[:1])

    def visit_SelectStmt(self, ancestors: object, node: ast.SelectStmt) -> None:
        rows = node.valuesLists
        if rows and len(rows) > 1 and all(_all_params(row) for row in rows):
            node.valuesLists = rows[:1]


def _all_params(items: object) -> TypeGuard[Sequence[ast.ParamRef]]:
    return isinstance(items, (list, tuple)) and len(items) > 0 and all(
        isinstance(item, ast.ParamRef) for item in items
    )


def _placeholders_only(text: str) -> str:
    """Replace every constant token by a renumbered ``$n`` and drop comments (via the scanner)."""
    out: list[str] = []
    pos = 0
    number = 0
    for token in parser.scan(text):
        if token.name in _CONSTANT_TOKENS:
            number += 1
            replacement = f"${number}"
        elif token.name in _COMMENT_TOKENS:
            replacement = ""
        else:
            continue
        out.append(text[pos : token.start])
        out.append(replacement)
        pos = token.end + 1
    out.append(text[pos:])
    return " ".join("".join(out).split())


def _deparse(tree: tuple[ast.RawStmt, ...], fallback: str) -> str:
    try:
        return RawStream()(tree)
    except Exception:  # deparser gaps on rare utility statements: the scanner pass still strips
        return fallback


def normalize(sql: str) -> NormalizedStatement:
    """Fingerprint, literal-free text, type and relations of ``sql``; raises :class:`SqlParseError`.

    Only the literal-free text is parsed into a Python tree (the costly step): relation names and
    the statement type are the same in it as in ``sql``.
    """
    try:
        fingerprint = parser.fingerprint(sql)
        stripped = parser.normalize(sql)
        tree = parser.parse_sql(stripped)
    except parser.ParseError as exc:
        # PostgreSQL's message may quote one token of the input: it stays in this exception,
        # which the SDK never forwards (it reports only the reason "unparsable").
        message, position = exc.args
        raise SqlParseError(f"not valid PostgreSQL SQL: {message} (at character {position})") from None
    if not tree:
        raise SqlParseError("no SQL statement (empty or only comments)")
    tables = ReferencedRelations()(tree)
    _CollapseLists()(tree)
    return NormalizedStatement(
        fingerprint=fingerprint,
        query_text=_placeholders_only(_deparse(tree, stripped)),
        statement_type=_STATEMENT_TYPES.get(type(tree[0].stmt), "UTILITY"),
        tables=tuple(sorted(tables)),
    )


class StatementCache:
    """Bounded LRU of :func:`normalize` results keyed by the raw statement text.

    Built on ``functools.lru_cache`` (C implementation, thread-safe), so a repeated statement
    costs one dict lookup. Parse errors are cached too, so a bad statement repeated in a loop
    is not re-parsed each time.
    """

    def __init__(self, maxsize: int = 4096) -> None:
        if maxsize < 1:
            raise ValueError(f"StatementCache maxsize must be at least 1, got {maxsize}")
        self._lookup = functools.lru_cache(maxsize=maxsize)(_normalize_or_error)

    def get(self, sql: str) -> NormalizedStatement:
        result = self._lookup(sql)
        if isinstance(result, SqlParseError):
            raise result
        return result

    @property
    def hits(self) -> int:
        return self._lookup.cache_info().hits

    @property
    def misses(self) -> int:
        return self._lookup.cache_info().misses

    def __len__(self) -> int:
        return self._lookup.cache_info().currsize

    def clear(self) -> None:
        self._lookup.cache_clear()


def _normalize_or_error(sql: str) -> NormalizedStatement | SqlParseError:
    try:
        return normalize(sql)
    except SqlParseError as exc:
        return exc
