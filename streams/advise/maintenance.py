"""Maintenance from evidence: VACUUM (ANALYZE), REINDEX INDEX CONCURRENTLY and ANALYZE, each proposed
with the figures that justify it and checked against the same figures after it ran.

Evidence comes from ``pg_stat_user_tables``, ``pg_class`` and, for index bloat, ``pgstattuple``'s
``pgstatindex`` when that extension is installed, otherwise the usual size estimate. Rules
(thresholds in ``AdviseSettings``, see ``docs/advisor.md``):

* **VACUUM (ANALYZE)** when dead tuples are at least ``vacuum_min_dead`` and exceed
  ``vacuum_dead_ratio`` of the live ones *and autovacuum is behind*: it is disabled for the table,
  or the dead tuples already passed the point where it should have started
  (``autovacuum_vacuum_threshold + autovacuum_vacuum_scale_factor x reltuples``, per table when set
  in its storage parameters) and it has not come. Verified: dead tuples down by half or more.
* **REINDEX INDEX CONCURRENTLY** when a B-tree of at least ``reindex_min_bytes`` is estimated
  ``reindex_bloat_ratio`` or more bloat. Verified: the index is smaller afterwards.
* **ANALYZE** when the statistics are stale (``evaluate.stale_reason``: modifications since the
  last analyze above ``stale_ratio`` of the rows). Verified: modifications since analyze down.

Pure rules (``vacuum_reason``, ``reindex_reason``, ``verify``) and the catalog reads
(``read_tables``, ``read_indexes``, ``current_figures``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import psycopg
from pglast import ast, enums
from pglast.stream import RawStream

from streams.advise.candidates import analyze_statement
from streams.advise.evaluate import TableStats, stale_reason
from streams.config import AdviseSettings

_PAGE = 8192
_PAGE_OVERHEAD = 24 + 16  # page header + B-tree special space
_INDEX_TUPLE = 8 + 4  # index tuple header + line pointer


@dataclass(frozen=True, slots=True)
class TableHealth:
    schema: str
    table: str
    n_live_tup: int
    n_dead_tup: int
    n_mod_since_analyze: int
    analyzed: bool
    autovacuum_enabled: bool
    autovacuum_trigger: float  # dead tuples at which autovacuum should start on this table

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.table}"


@dataclass(frozen=True, slots=True)
class IndexHealth:
    schema: str
    table: str
    index: str
    bytes: int
    bloat: float  # estimated share of the index that is bloat, 0..1
    source: str  # "pgstattuple" or "estimate"

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.index}"


@dataclass(frozen=True, slots=True)
class Maintenance:
    """One maintenance statement with the evidence for it."""

    action: str  # vacuum | reindex | analyze
    sql: str
    schema: str
    table: str
    reason: str
    gain: float  # 0..1: what it is expected to recover (for the priority)
    evidence: dict[str, float] = field(default_factory=dict)
    index: str | None = None

    @property
    def qualified_table(self) -> str:
        return f"{self.schema}.{self.table}"


def _range_var(schema: str, name: str) -> ast.RangeVar:
    return ast.RangeVar(relname=name, schemaname=schema, inh=True, relpersistence="p")


def vacuum_statement(schema: str, table: str) -> str:
    """``VACUUM (ANALYZE) schema.table``, deparsed from its parse tree."""
    stmt = ast.VacuumStmt(options=(ast.DefElem(defname="analyze"),),
                          rels=(ast.VacuumRelation(relation=_range_var(schema, table)),), is_vacuumcmd=True)
    return RawStream()(stmt)


def reindex_statement(schema: str, index: str) -> str:
    """``REINDEX (CONCURRENTLY) INDEX schema.index``, deparsed from its parse tree."""
    stmt = ast.ReindexStmt(kind=enums.ReindexObjectType.REINDEX_OBJECT_INDEX, relation=_range_var(schema, index),
                           params=(ast.DefElem(defname="concurrently"),))
    return RawStream()(stmt)


def vacuum_reason(t: TableHealth, settings: AdviseSettings) -> Maintenance | None:
    """VACUUM (ANALYZE) when dead tuples pile up and autovacuum is behind (see module docstring)."""
    if t.n_dead_tup < settings.vacuum_min_dead or t.n_dead_tup <= settings.vacuum_dead_ratio * t.n_live_tup:
        return None
    if t.autovacuum_enabled and t.n_dead_tup < t.autovacuum_trigger:
        return None  # autovacuum has not reached its trigger yet: it will come
    behind = "autovacuum is disabled for the table" if not t.autovacuum_enabled else (
        f"past autovacuum's trigger of {t.autovacuum_trigger:.0f} and not vacuumed yet")
    share = t.n_dead_tup / max(1, t.n_live_tup)
    return Maintenance(
        "vacuum", vacuum_statement(t.schema, t.table), t.schema, t.table,
        f"{t.n_dead_tup} dead tuples, {share:.0%} of {t.n_live_tup} live (> {settings.vacuum_dead_ratio:.0%}); {behind}",
        gain=t.n_dead_tup / max(1, t.n_dead_tup + t.n_live_tup),
        evidence={"n_dead_tup": float(t.n_dead_tup), "n_live_tup": float(t.n_live_tup), "dead_ratio": round(share, 4)},
    )


def reindex_reason(i: IndexHealth, settings: AdviseSettings) -> Maintenance | None:
    """REINDEX INDEX CONCURRENTLY when an index is large enough and mostly bloat."""
    if i.bytes < settings.reindex_min_bytes or i.bloat < settings.reindex_bloat_ratio:
        return None
    return Maintenance(
        "reindex", reindex_statement(i.schema, i.index), i.schema, i.table,
        f"index {i.qualified} is {i.bytes / 2**20:.1f} MiB, about {i.bloat:.0%} bloat ({i.source}; "
        f">= {settings.reindex_bloat_ratio:.0%})",
        gain=i.bloat, evidence={"index_bytes": float(i.bytes), "bloat_ratio": round(i.bloat, 4)}, index=i.index,
    )


def analyze_reason(t: TableHealth, settings: AdviseSettings) -> Maintenance | None:
    why = stale_reason(TableStats(t.schema, t.table, t.n_live_tup, t.n_mod_since_analyze, t.analyzed), settings)
    if why is None:
        return None
    return Maintenance("analyze", analyze_statement(t.table, t.schema), t.schema, t.table, f"statistics are stale: {why}",
                       gain=min(1.0, t.n_mod_since_analyze / max(1, t.n_live_tup)),
                       evidence={"n_mod_since_analyze": float(t.n_mod_since_analyze), "n_live_tup": float(t.n_live_tup)})


def plan(tables: list[TableHealth], indexes: list[IndexHealth], settings: AdviseSettings) -> list[Maintenance]:
    """Every maintenance the evidence calls for: per table VACUUM (ANALYZE) (which also analyzes) or
    else ANALYZE, and REINDEX of each bloated index."""
    out: list[Maintenance] = []
    for t in tables:
        vacuum = vacuum_reason(t, settings)
        chosen = vacuum or analyze_reason(t, settings)
        if chosen is not None:
            out.append(chosen)
    out += [m for i in indexes if (m := reindex_reason(i, settings)) is not None]
    return out


def verify(action: str, before: dict[str, float], after: dict[str, float]) -> tuple[bool, str]:
    """Whether the maintenance did what its evidence promised: (verified, the figures before -> after)."""
    if action == "vacuum":
        b, a = before.get("n_dead_tup"), after.get("n_dead_tup")
        if b is None or a is None:
            return False, "dead tuples unknown"
        return a <= b / 2, f"dead tuples {b:.0f} -> {a:.0f}"
    if action == "reindex":
        b, a = before.get("index_bytes"), after.get("index_bytes")
        if b is None or a is None:
            return False, "index size unknown"
        return a < b, f"index size {b / 2**20:.2f} MiB -> {a / 2**20:.2f} MiB"
    b, a = before.get("n_mod_since_analyze"), after.get("n_mod_since_analyze")
    if b is None or a is None:
        return False, "modifications since ANALYZE unknown"
    return a < b, f"rows modified since ANALYZE {b:.0f} -> {a:.0f}"


# --- catalog -----------------------------------------------------------------------------------------

_TABLES = """
SELECT s.schemaname, s.relname, s.n_live_tup, s.n_dead_tup, s.n_mod_since_analyze,
       (s.last_analyze IS NOT NULL OR s.last_autoanalyze IS NOT NULL),
       current_setting('autovacuum')::bool AND coalesce(
           (SELECT option_value::bool FROM pg_options_to_table(c.reloptions) WHERE option_name = 'autovacuum_enabled'),
           true),
       coalesce((SELECT option_value::float FROM pg_options_to_table(c.reloptions)
                 WHERE option_name = 'autovacuum_vacuum_threshold'),
                current_setting('autovacuum_vacuum_threshold')::float)
       + coalesce((SELECT option_value::float FROM pg_options_to_table(c.reloptions)
                   WHERE option_name = 'autovacuum_vacuum_scale_factor'),
                  current_setting('autovacuum_vacuum_scale_factor')::float) * greatest(c.reltuples, 0)
FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid
WHERE s.schemaname = ANY(%(schemas)s) AND (%(table)s::text IS NULL OR s.relname = %(table)s)
ORDER BY 1, 2
"""

_INDEXES = """
SELECT n.nspname, t.relname, ic.relname, pg_relation_size(ic.oid), ic.oid, greatest(ic.reltuples, 0),
       coalesce((SELECT option_value::int FROM pg_options_to_table(ic.reloptions) WHERE option_name = 'fillfactor'), 90),
       (SELECT sum(coalesce(st.avg_width, 8)) FROM unnest(i.indkey::int2[]) k(attnum)
        JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
        LEFT JOIN pg_stats st ON st.schemaname = n.nspname AND st.tablename = t.relname AND st.attname = a.attname)
FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid JOIN pg_class t ON t.oid = i.indrelid
JOIN pg_namespace n ON n.oid = t.relnamespace JOIN pg_am am ON am.oid = ic.relam
WHERE am.amname = 'btree' AND i.indisvalid AND n.nspname = ANY(%(schemas)s)
  AND (%(index)s::text IS NULL OR ic.relname = %(index)s) AND pg_relation_size(ic.oid) >= %(min_bytes)s
ORDER BY 1, 3
"""


def read_tables(conn: psycopg.Connection[Any], schemas: list[str], table: str | None = None) -> list[TableHealth]:
    rows = conn.execute(_TABLES, {"schemas": schemas, "table": table}).fetchall()
    return [TableHealth(r[0], r[1], int(r[2]), int(r[3]), int(r[4]), bool(r[5]), bool(r[6]), float(r[7])) for r in rows]


def pgstattuple_schema(conn: psycopg.Connection[Any]) -> str | None:
    row = conn.execute("SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace "
                       "WHERE e.extname = 'pgstattuple'").fetchone()
    return row[0] if row else None


def estimated_bloat(size: int, tuples: float, fillfactor: int, width: float | None) -> float:
    """The usual B-tree estimate: expected leaf pages for ``tuples`` keys of ``width`` bytes at the
    index's fill factor, against its actual size."""
    if size <= 0 or width is None:
        return 0.0
    per_page = (_PAGE - _PAGE_OVERHEAD) * fillfactor / 100 // (_INDEX_TUPLE + 8 * math.ceil(width / 8))
    expected = (math.ceil(tuples / max(1, per_page)) + 1) * _PAGE
    return max(0.0, 1.0 - expected / size)


def read_indexes(conn: psycopg.Connection[Any], schemas: list[str], min_bytes: int,
                 index: str | None = None) -> list[IndexHealth]:
    """B-tree health: ``pgstatindex`` (avg_leaf_density against the fill factor) when pgstattuple is
    installed, else :func:`estimated_bloat`."""
    stattuple = pgstattuple_schema(conn)
    out = []
    for schema, table, name, size, oid, tuples, fillfactor, width in conn.execute(
            _INDEXES, {"schemas": schemas, "index": index, "min_bytes": min_bytes}).fetchall():
        if stattuple is not None:
            row = conn.execute(f'SELECT avg_leaf_density FROM "{stattuple}".pgstatindex(%s::regclass)', (oid,)).fetchone()
            density = float(row[0]) if row and row[0] == row[0] else fillfactor  # NaN: an empty index
            bloat, source = max(0.0, 1.0 - density / fillfactor), "pgstattuple"
        else:
            bloat, source = estimated_bloat(int(size), float(tuples), int(fillfactor),
                                            float(width) if width is not None else None), "estimate"
        out.append(IndexHealth(schema, table, name, int(size), bloat, source))
    return out


def current_figures(conn: psycopg.Connection[Any], action: str, schema: str, table: str,
                    index: str | None) -> dict[str, float]:
    """The figures :func:`verify` compares, read now."""
    if action == "reindex" and index is not None:
        row = conn.execute("SELECT pg_relation_size(to_regclass(format('%%I.%%I', %s::text, %s::text)))",
                           (schema, index)).fetchone()
        return {"index_bytes": float(row[0])} if row and row[0] is not None else {}
    conn.execute("SELECT pg_stat_clear_snapshot()")
    found = read_tables(conn, [schema], table)
    if not found:
        return {}
    t = found[0]
    return {"n_dead_tup": float(t.n_dead_tup), "n_live_tup": float(t.n_live_tup),
            "n_mod_since_analyze": float(t.n_mod_since_analyze)}
