"""Representative values for a statement's ``$n``, drawn from ``pg_stats`` — never a service's literals.

A generic plan assumes a default selectivity for a range (a third of the table for
``created_at >= $2``), so an equality plus a *recent* time range looks as expensive with an index
as without. The advisor therefore also plans such statements with values the table's own
statistics suggest: for an equality, values of ``most_common_vals`` (or of the histogram for a
unique column); for ``key >= $n`` an upper histogram bound (a recent range), for ``key <= $n`` a
lower one; for a pattern (``ILIKE $n``) ``%word%`` with a word of a typical value; for a text
search query a lexeme (``most_common_elems`` of a tsvector column, else a word); for ``@>`` one
key/value pair of a typical document. Up to three value sets, spread over the statistics.

Pure but for :func:`column_stats` (one read of ``pg_stats``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import psycopg
from pglast import ast

from streams.advise.analysis import ParamUse, QueryShape, expression_node

SETS = 3
# positions in the histogram (fractions) per value set: recent ranges for >=, early ones for <=
_LOWER = (0.95, 0.99, 0.9)
_UPPER = (0.05, 0.01, 0.1)
_WORD = re.compile(r"[^\W\d_]{4,}")


@dataclass(frozen=True, slots=True)
class ColumnStats:
    type: str
    n_distinct: float
    mcv: tuple[str, ...]
    mcf: tuple[float, ...]
    histogram: tuple[str, ...]
    elems: tuple[str, ...]  # most_common_elems (tsvector and array columns)
    elem_freqs: tuple[float, ...] = ()
    text_search_config: str = "english"  # the database's default_text_search_config

    def typical_elems(self) -> tuple[str, ...]:
        """The most common elements from the median frequency outwards: a typical search term, neither
        a stop-word-like element every row has nor a one-off."""
        if len(self.elem_freqs) < len(self.elems):
            return self.elems
        ranked = sorted(zip(self.elem_freqs, self.elems, strict=False))
        middle = len(ranked) // 2
        order = sorted(range(len(ranked)), key=lambda i: abs(i - middle))
        return tuple(ranked[i][1] for i in order)

    def frequency(self, value: str) -> float:
        """Frequency of ``value`` among the most common values (0 when it is not one)."""
        return next((f for v, f in zip(self.mcv, self.mcf, strict=False) if v == value), 0.0)

    def typical(self) -> tuple[str, ...]:
        return self.mcv + self.histogram


def column_stats(conn: psycopg.Connection[Any], schema: str, table: str, column: str) -> ColumnStats | None:
    row = conn.execute(
        "SELECT format_type(a.atttypid, a.atttypmod), s.n_distinct, s.most_common_vals::text::text[], "
        " s.most_common_freqs, s.histogram_bounds::text::text[], s.most_common_elems::text::text[], "
        " s.most_common_elem_freqs, current_setting('default_text_search_config') "
        "FROM pg_attribute a JOIN pg_stats s ON s.schemaname = %s AND s.tablename = %s AND s.attname = a.attname "
        "WHERE a.attrelid = to_regclass(format('%%I.%%I', %s::text, %s::text)) AND a.attname = %s",
        (schema, table, schema, table, column),
    ).fetchone()
    if row is None:
        return None
    kind, distinct, mcv, mcf, hist, elems, elem_freqs, config = row
    return ColumnStats(kind, float(distinct or 0), tuple(mcv or ()), tuple(float(f) for f in mcf or ()),
                       tuple(hist or ()), tuple(elems or ()), tuple(float(f) for f in elem_freqs or ()), config)


def _column_of(use: ParamUse) -> str | None:
    """The column whose statistics stand for the key: itself, or the text column inside to_tsvector(...)."""
    if not use.expression:
        return use.key
    node = expression_node(use.key)
    args = list(node.args or ()) if isinstance(node, ast.FuncCall) else []
    last = args[-1] if args else None
    names = [f.sval for f in last.fields or () if isinstance(f, ast.String)] if isinstance(last, ast.ColumnRef) else []
    return names[-1] if names else None


def _pick(values: tuple[str, ...], at: float) -> str | None:
    return values[min(len(values) - 1, round(at * (len(values) - 1)))] if values else None


def _word(values: tuple[str, ...], index: int) -> str | None:
    words = sorted({w.lower() for v in values for w in _WORD.findall(v)})
    return words[(index * 7 + len(words) // 2) % len(words)] if words else None


def _pair(values: tuple[str, ...], index: int) -> str | None:
    for value in values[index:] + values[:index]:
        try:
            doc = json.loads(value)
        except ValueError:
            continue
        if isinstance(doc, dict):
            for key, item in sorted(doc.items()):
                if not isinstance(item, (dict, list)):
                    return json.dumps({key: item})
    return None


def value_for(use: ParamUse, stats: ColumnStats, index: int) -> str | None:
    """The ``index``-th representative value of one parameter (None when the statistics have none)."""
    if use.role == "eq" and not use.expression:
        pool = stats.mcv or stats.histogram
        return _pick(pool, (0.0, 0.5, 1.0)[index % SETS])
    if use.role == "lower" and not use.expression:
        return _pick(stats.histogram or stats.mcv, _LOWER[index % SETS])
    if use.role == "upper" and not use.expression:
        return _pick(stats.histogram or stats.mcv, _UPPER[index % SETS])
    if use.role == "pattern":
        word = _word(stats.typical(), index)
        return f"%{word}%" if word else None
    if use.role == "tsquery":
        elems = stats.typical_elems()
        return elems[index % len(elems)] if elems else _word(stats.typical(), index)
    if use.role == "containment":
        return _pair(stats.typical(), index)
    if use.role == "tsconfig":
        return _configuration(use.key) or stats.text_search_config
    return None


def _configuration(key: str) -> str | None:
    """The configuration constant of a ``to_tsvector('config', ...)`` key."""
    node = expression_node(key)
    args = list(node.args or ()) if isinstance(node, ast.FuncCall) else []
    while args and isinstance(args[0], ast.TypeCast):
        args[0] = args[0].arg
    first = args[0] if args else None
    return first.val.sval if isinstance(first, ast.A_Const) and isinstance(first.val, ast.String) else None


def value_sets(conn: psycopg.Connection[Any], shape: QueryShape, schemas: dict[str, str]) -> list[dict[int, str | None]]:
    """Up to :data:`SETS` value sets for ``shape``'s parameters; none when a parameter has no value.

    ``schemas`` maps each table of the shape to the schema it resolved to. Parameters not compared
    with a key (``LIMIT $n``) are NULL, as in the generic plan.
    """
    if not shape.params:
        return []
    stats: dict[int, ColumnStats] = {}
    for number, use in shape.params.items():
        column = _column_of(use)
        schema = schemas.get(use.table)
        found = column_stats(conn, schema, use.table, column) if column and schema else None
        if found is None:
            return []
        stats[number] = found
    sets: list[dict[int, str | None]] = []
    for index in range(SETS):
        values: dict[int, str | None] = {}
        for number, use in shape.params.items():
            value = value_for(use, stats[number], index)
            if value is None:
                return sets
            values[number] = value
        if values not in sets:
            sets.append(values)
    return sets
