"""Indexes nobody uses, and indexes another one already contains (prefix duplicates).

* **Unused**: no scan (``pg_stat_user_indexes.idx_scan = 0``) over an observation period of at
  least ``unused_min_age_days`` (default 35, pganalyze's choice). The period starts at the later
  of the statistics reset (``pg_stat_database.stats_reset``; never reset: the server's start) and,
  for an index dbopt created, its creation (the audit table). Indexes that enforce something
  (primary key, unique, exclusion, a constraint) are never reported: they are used by every write.
* **Prefix duplicates**: a valid, non-partial B-tree whose key columns (with the same operator
  classes and collations) are the leading key columns of another valid, non-partial B-tree of the
  same table — every scan it serves, the longer one serves too. Never a constraint's index.

Each finding carries its size and write cost (the rows written to the table since the reset,
each of which had to update the index). ``DROP INDEX CONCURRENTLY`` is proposed as an automatic
command only for indexes dbopt created (a live ``create_index`` row in the executor's audit; the
executor's allowlist and policy rule stay); every other one is a recommendation for a human.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from streams import db
from streams.execute.audit import LIVE_INDEX_STATUSES, TABLE as AUDIT_TABLE


@dataclass(frozen=True, slots=True)
class IndexUse:
    schema: str
    table: str
    index: str
    bytes: int
    scans: int
    enforces: bool  # primary key, unique, exclusion or constraint index
    usable: bool  # valid and not partial
    method: str
    keys: tuple[str, ...]  # pg_get_indexdef of each key column
    opclasses: tuple[int, ...]
    collations: tuple[int, ...]
    writes: int  # rows inserted, updated (not HOT) or deleted since the statistics reset
    observed_days: float  # how long idx_scan has been counting for this index
    dbopt_created: bool

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.index}"

    def figures(self) -> dict[str, float]:
        return {"index_bytes": float(self.bytes), "idx_scan": float(self.scans), "writes_since_reset": float(self.writes),
                "observed_days": round(self.observed_days, 2)}

    def costs(self) -> str:
        return f"{self.bytes / 2**20:.1f} MiB, {self.writes} index writes since the statistics reset"


@dataclass(frozen=True, slots=True)
class Finding:
    index: IndexUse
    kind: str  # "unused" or "duplicate"
    reason: str


def unused(indexes: list[IndexUse], min_age_days: float) -> list[Finding]:
    return [
        Finding(i, "unused", f"index {i.qualified} had no scan in {i.observed_days:.1f} days "
                f"(>= {min_age_days:g}); it costs {i.costs()}")
        for i in indexes
        if i.scans == 0 and not i.enforces and i.observed_days >= min_age_days
    ]


def prefix_duplicates(indexes: list[IndexUse]) -> list[Finding]:
    out = []
    for short in indexes:
        if short.enforces or not short.usable or short.method != "btree":
            continue
        n = len(short.keys)
        longer = [
            other for other in indexes
            if other is not short and other.usable and other.method == "btree" and other.table == short.table
            and other.schema == short.schema and len(other.keys) >= n and other.keys[:n] == short.keys
            and other.opclasses[:n] == short.opclasses and other.collations[:n] == short.collations
            # of two identical indexes, keep the one that enforces something, else the first by name
            and (len(other.keys) > n or other.enforces or other.index < short.index)
        ]
        if longer:
            keeper = longer[0]
            out.append(Finding(short, "duplicate", f"index {short.qualified} ({', '.join(short.keys)}) is a prefix of "
                               f"{keeper.qualified} ({', '.join(keeper.keys)}); it costs {short.costs()}"))
    return out


_INDEXES = """
SELECT n.nspname, t.relname, ic.relname, pg_relation_size(ic.oid), coalesce(s.idx_scan, 0),
       i.indisprimary OR i.indisunique OR i.indisexclusion
           OR EXISTS (SELECT FROM pg_constraint k WHERE k.conindid = i.indexrelid),
       i.indisvalid AND i.indpred IS NULL, am.amname,
       array(SELECT pg_get_indexdef(i.indexrelid, k, true) FROM generate_series(1, i.indnkeyatts) k ORDER BY k),
       (i.indclass::oid[])[0:i.indnkeyatts - 1]::int8[], (i.indcollation::oid[])[0:i.indnkeyatts - 1]::int8[],
       coalesce(ts.n_tup_ins + ts.n_tup_upd - ts.n_tup_hot_upd + ts.n_tup_del, 0),
       extract(epoch FROM now() - greatest(
           coalesce((SELECT stats_reset FROM pg_stat_database WHERE datname = current_database()),
                    pg_postmaster_start_time()),
           coalesce(created.at, '-infinity'))) / 86400,
       created.at IS NOT NULL
FROM pg_index i
JOIN pg_class ic ON ic.oid = i.indexrelid
JOIN pg_class t ON t.oid = i.indrelid
JOIN pg_namespace n ON n.oid = t.relnamespace
JOIN pg_am am ON am.oid = ic.relam
LEFT JOIN pg_stat_user_indexes s ON s.indexrelid = i.indexrelid
LEFT JOIN pg_stat_user_tables ts ON ts.relid = i.indrelid
LEFT JOIN LATERAL (SELECT max(a.finished_at) AS at FROM {audit} a
                   WHERE a.action = 'create_index' AND a.status = ANY(%(live)s)
                     AND a.index_name = format('%%I.%%I', n.nspname, ic.relname)) created ON true
WHERE n.nspname = ANY(%(schemas)s) AND t.relkind = 'r'
ORDER BY 1, 2, 3
"""


def read_index_use(conn: psycopg.Connection[Any], schemas: list[str], audit_schema: str) -> list[IndexUse]:
    """Every index of the tables in ``schemas`` with its scans, size, write cost and origin."""
    audited = db.table_exists(conn, audit_schema, AUDIT_TABLE)
    query = sql.SQL(_INDEXES).format(
        audit=sql.Identifier(audit_schema, AUDIT_TABLE) if audited else sql.SQL(
            "(SELECT NULL::text AS action, NULL::text AS status, NULL::text AS index_name, NULL::timestamptz AS finished_at)"),
    )
    conn.execute("SELECT pg_stat_clear_snapshot()")
    rows = conn.execute(query, {"schemas": schemas, "live": list(LIVE_INDEX_STATUSES)}).fetchall()
    return [
        IndexUse(r[0], r[1], r[2], int(r[3]), int(r[4]), bool(r[5]), bool(r[6]), r[7], tuple(r[8]),
                 tuple(int(x) for x in r[9]), tuple(int(x) for x in r[10]), int(r[11]), float(r[12]), bool(r[13]))
        for r in rows
    ]
