"""dbopt's index advice side by side with PoWA's (``pg_qualstats_index_advisor`` of pg_qualstats 2).

    .venv/bin/python bench/powa_compare.py [--bookings 200000] [--values 5] [--vendor-copies 20] [--keep]

pg_qualstats must be in ``shared_preload_libraries``, which needs a server restart: the shared
dev/test cluster is never touched. The bench creates a throwaway PostgreSQL 15 cluster of its own
(``pg_createcluster 15 dbopt_powa`` on port 15433, data in ``<run dir>/powa``, the project's
devenv settings plus ``shared_preload_libraries = 'pg_stat_statements,pg_qualstats'`` and
``pg_qualstats.sample_rate = 1``), and drops it at the end (``--keep`` leaves it). Debian's
``postgresql-15-pg-qualstats`` is in the devenv package list (``make up`` installs it).

Workload: the demo database (``dbopt demo-db init`` with ``--bookings`` rows, vendors with
description/tsvector/jsonb) with ``pg_trgm`` installed, the simulator's SELECTs
(``streams.demo.workload``) with their own value generators, and statements written here (the
shapes of issue 16: two-column equality, batch of one table, equality + recent range, a join with
filters on both sides, an OR across columns, ``lower(email)``, ILIKE / full-text / jsonb vendor
search, ORDER BY ... LIMIT, an IN list of ids the primary key serves). Each statement runs with
``--values`` different literal values drawn from the data.

* **PoWA** sees what pg_qualstats sampled while the literal statements ran and answers with
  ``pg_qualstats_index_advisor()`` (default thresholds: 1000 filtered rows, 30% selectivity).
* **dbopt** sees what the SDK sends: each statement normalized to ``$n`` (the stream path), all of
  them in one batch through ``Evaluator.advise`` (HypoPG, sampled builds for GIN).

Scoring, the same for both: each tool's indexes are built for real (B-tree, GIN and GiST alike,
so GIN is scored too), every literal statement is planned (``EXPLAIN``) with and without them;
a statement is *improved* when its mean planner cost over its values falls by at least 50%.
*Useless*: an index no plan of the workload uses with the tool's full set in place (duplicates
included). *Invalid*: a proposal that fails to build. *Size*: ``pg_relation_size`` of the built
indexes.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from streams.advise.evaluate import Evaluator, QueryInput  # noqa: E402
from streams.config import AdviseSettings, load_settings, run_dir  # noqa: E402
from streams.demo import workload  # noqa: E402
from streams.demo.load import init_demo_db  # noqa: E402
from streams.demo.schema import CITIES, plan_rows  # noqa: E402
from streams.devenv.postgres import PG_MAJOR, PostgresCluster  # noqa: E402
from streams.sql import normalize  # noqa: E402

PORT = 15433
NAME = "dbopt_powa"
Values = Callable[[random.Random], str]


@dataclass
class Statement:
    name: str
    literal: list[str]  # the statement with each set of values
    origin: str  # simulator or written here


@dataclass
class Score:
    proposed: list[str]
    invalid: list[str] = field(default_factory=list)
    useless: list[str] = field(default_factory=list)
    size_bytes: int = 0
    improved: dict[str, float] = field(default_factory=dict)  # statement -> mean cost gain
    seconds: float = 0.0


def quote(value: object) -> str:
    return "'" + str(value).replace("'", "''") + "'" if isinstance(value, str) else str(value)


def simulator_statements(pop: workload.Population, rng: random.Random, count: int) -> list[Statement]:
    out = []
    for queries in workload.QUERIES.values():
        for q in queries:
            if not q.sql.lstrip().upper().startswith("SELECT"):
                continue
            texts = []
            for _ in range(count):
                call = q.make(rng, pop)
                text = q.sql
                for value in call.params:
                    text = text.replace("%s", quote(value.isoformat() if hasattr(value, "isoformat") else value), 1)
                texts.append(text)
            out.append(Statement(q.name, texts, "simulator"))
    return out


def written_statements(conn: psycopg.Connection, rng: random.Random, count: int, pop: workload.Population) -> list[Statement]:
    """The shapes of issue 16, values drawn from the data."""
    def pick(query: str) -> list[str]:
        return [r[0] for r in conn.execute(query).fetchall()]

    dates = pick("SELECT DISTINCT wedding_date::text FROM weddings ORDER BY 1")
    emails = pick("SELECT contact_email FROM weddings ORDER BY random() LIMIT 50")
    vendor_emails = pick("SELECT email FROM vendors ORDER BY random() LIMIT 50")
    words = ["florist", "photo", "venue", "catering", "music", "beauty", "jewel"]
    lexemes = ["peoni", "wildflow", "vegan", "drone", "jazz", "calligraphi"]
    styles = ["rustic", "modern", "classic", "bohemian", "vintage"]
    recent = pick("SELECT (now() - interval '1 day' * g)::date::text FROM generate_series(3, 30, 3) g")

    def many(make: Callable[[], str]) -> list[str]:
        return [make() for _ in range(count)]

    c = rng.choice
    return [
        Statement("two_equalities", many(lambda: f"SELECT id, couple_name FROM weddings WHERE city = {quote(c(CITIES))} "
                                         f"AND wedding_date = {quote(c(dates))}"), "here"),
        Statement("same_table_date", many(lambda: f"SELECT id, guest_count FROM weddings WHERE wedding_date = {quote(c(dates))}"),
                  "here"),
        Statement("status_recent", many(lambda: "SELECT id, amount FROM bookings WHERE status = "
                                        f"{quote(c(['pending', 'cancelled', 'confirmed']))} AND created_at >= {quote(c(recent))}"),
                  "here"),
        Statement("join_both_sides", many(lambda: "SELECT b.id, p.amount FROM bookings b JOIN payments p ON p.booking_id = b.id "
                                          f"WHERE b.vendor_id = {rng.randint(1, pop.vendors)} AND p.status = 'failed'"), "here"),
        Statement("or_columns", many(lambda: f"SELECT id FROM weddings WHERE contact_email = {quote(c(emails))} "
                                     f"OR wedding_date = {quote(c(dates))}"), "here"),
        Statement("lower_email", many(lambda: f"SELECT id, name FROM vendors WHERE lower(email) = {quote(c(vendor_emails))}"),
                  "here"),
        Statement("ilike_search", many(lambda: f"SELECT id, name FROM vendors WHERE name ILIKE {quote('%' + c(words) + '%')}"),
                  "here"),
        Statement("fulltext_search", many(lambda: "SELECT id FROM vendors WHERE search @@ to_tsquery('english', "
                                          f"{quote(c(lexemes))})"), "here"),
        Statement("jsonb_filter", many(lambda: "SELECT id FROM vendors WHERE attributes @> "
                                       f"{quote(json.dumps({'style': c(styles), 'vegan_options': True}))}"), "here"),
        Statement("order_by_limit", many(lambda: "SELECT id, amount FROM payments WHERE status = 'settled' "
                                         "ORDER BY created_at DESC LIMIT 20"), "here"),
        Statement("in_list_ids", many(lambda: "SELECT id, status FROM bookings WHERE id IN ("
                                      + ", ".join(str(rng.randint(1, pop.bookings)) for _ in range(5)) + ")"), "here"),
    ]


def cluster() -> PostgresCluster:
    return PostgresCluster(run_dir=run_dir() / "powa", port=PORT, name=NAME)


def start_cluster() -> PostgresCluster:
    pg = cluster()
    pg.install()
    pg._create()
    conf = Path(f"/etc/postgresql/{PG_MAJOR}/{NAME}/conf.d/powa.conf")  # after dbopt.conf: it wins
    conf.write_text("shared_preload_libraries = 'pg_stat_statements,pg_qualstats'\n"
                    "pg_qualstats.sample_rate = 1\npg_qualstats.max = 10000\n")
    pg.start()
    return pg


def drop_cluster() -> None:
    subprocess.run(["pg_dropcluster", PG_MAJOR, NAME, "--stop"], capture_output=True)
    shutil.rmtree(run_dir() / "powa", ignore_errors=True)


def plan_cost(conn: psycopg.Connection, sql: str) -> tuple[float, str]:
    (doc,) = conn.execute(f"EXPLAIN (FORMAT JSON) {sql}").fetchone()  # type: ignore[misc]
    return float(doc[0]["Plan"]["Total Cost"]), json.dumps(doc)


def score(conn: psycopg.Connection, proposals: list[str], statements: list[Statement],
          baseline: dict[str, float]) -> Score:
    result = Score(proposals)
    built: list[str] = []
    for i, create in enumerate(proposals):
        name = f"bench_idx_{i}"
        # give every index a name of ours (PoWA's statements have none), keep the rest as proposed
        rest = create.partition(" ON ")[2]
        try:
            conn.execute(f"CREATE INDEX {name} ON {rest}")
        except psycopg.Error as exc:
            result.invalid.append(f"{create}: {str(exc).strip().splitlines()[0]}")
            continue
        built.append(name)
    conn.execute("ANALYZE")
    used: set[str] = set()
    for st in statements:
        costs = []
        for text in st.literal:
            cost, plan = plan_cost(conn, text)
            costs.append(cost)
            used |= {n for n in built if f'"{n}"' in plan}
        gain = 1 - statistics.mean(costs) / baseline[st.name] if baseline[st.name] > 0 else 0.0
        if gain >= 0.5:
            result.improved[st.name] = gain
    for name in built:
        result.size_bytes += conn.execute("SELECT pg_relation_size(%s::regclass)", (name,)).fetchone()[0]  # type: ignore[index]
        if name not in used:
            result.useless.append(proposals[int(name.rsplit("_", 1)[1])])
        conn.execute(f"DROP INDEX {name}")
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bookings", type=int, default=200_000)
    parser.add_argument("--values", type=int, default=5, help="literal value sets per statement")
    parser.add_argument("--vendor-copies", type=int, default=20,
                        help="extra copies of the vendors (the demo has bookings/50): vendor search needs rows")
    parser.add_argument("--keep", action="store_true", help="leave the throwaway cluster running")
    args = parser.parse_args()
    settings = load_settings()
    rng = random.Random(16)
    pg = start_cluster()
    url = pg.url
    try:
        target = settings.with_overrides(database_url=url, advise=AdviseSettings())
        started = time.monotonic()
        init_demo_db(target, url, args.bookings, say=lambda _: None)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm; CREATE EXTENSION IF NOT EXISTS pg_qualstats")
            conn.execute(
                "INSERT INTO vendors (name, category, city, email, rating, base_price, is_active, created_at, description, "
                "attributes) SELECT name || ' ' || g, category, city, 'v' || g || '.' || email, rating, base_price, "
                "is_active, created_at, description, attributes FROM vendors, generate_series(1, %s) g",
                (args.vendor_copies,))
            conn.execute("ANALYZE")
            rows = plan_rows(args.bookings)
            pop = workload.Population(**{k: rows[k] for k in ("vendors", "weddings", "bookings", "payments",
                                                                 "timeline_events", "guests", "notifications")})
            statements = simulator_statements(pop, rng, args.values) + written_statements(conn, rng, args.values, pop)
            print(f"demo database: {args.bookings:,} bookings, {rows['vendors'] * (1 + args.vendor_copies):,} vendors, "
                  f"loaded in {time.monotonic() - started:.1f}s; "
                  f"{len(statements)} statements x {args.values} values", flush=True)
            conn.execute("SELECT pg_qualstats_reset()")
            baseline: dict[str, float] = {}
            for st in statements:
                costs = []
                for text in st.literal:
                    conn.execute(text).fetchall()  # pg_qualstats samples the quals as they run
                    costs.append(plan_cost(conn, text)[0])
                baseline[st.name] = statistics.mean(costs)
            t = time.monotonic()
            (advice,) = conn.execute("SELECT pg_qualstats_index_advisor()").fetchone()  # type: ignore[misc]
            advice = json.loads(advice) if isinstance(advice, str) else advice
            powa = Score(list(advice.get("indexes") or []), seconds=time.monotonic() - t)
            unoptimised = advice.get("unoptimised") or []
        t = time.monotonic()
        evaluator = Evaluator.connect(target, url)
        try:
            decision, _ = evaluator.advise(
                [QueryInput(st.name, normalize(st.literal[0]).query_text) for st in statements])
        finally:
            evaluator.close()
        dbopt_seconds = time.monotonic() - t
        dbopt_indexes = [p.candidate.create_sql() for p in decision.proposals]
        with psycopg.connect(url, autocommit=True) as conn:
            scored = {"PoWA (pg_qualstats_index_advisor)": score(conn, powa.proposed, statements, baseline),
                      "dbopt (stream path, $n)": score(conn, dbopt_indexes, statements, baseline)}
        scored["PoWA (pg_qualstats_index_advisor)"].seconds = powa.seconds
        scored["dbopt (stream path, $n)"].seconds = dbopt_seconds
        report(statements, scored, unoptimised)
    finally:
        if not args.keep:
            drop_cluster()
    return 0


def report(statements: list[Statement], scored: dict[str, Score], unoptimised: list[object]) -> None:
    names = list(scored)
    print("\n| | " + " | ".join(names) + " |\n|---|" + "---|" * len(names))
    rows = [
        ("statements improved >= 50%", lambda s: f"{len(s.improved)} of {len(statements)}"),
        ("indexes proposed", lambda s: str(len(s.proposed))),
        ("useless (no plan uses them)", lambda s: str(len(s.useless))),
        ("invalid (fail to build)", lambda s: str(len(s.invalid))),
        ("total size", lambda s: f"{s.size_bytes / 2**20:.1f} MiB"),
        ("advice time", lambda s: f"{s.seconds:.1f} s"),
    ]
    for label, cell in rows:
        print(f"| {label} | " + " | ".join(cell(scored[n]) for n in names) + " |")
    print("\nper statement (mean planner-cost gain over its values; - : below 50%):\n")
    print("| statement | origin | " + " | ".join(names) + " |\n|---|---|" + "---|" * len(names))
    for st in statements:
        cells = [f"{scored[n].improved[st.name]:.0%}" if st.name in scored[n].improved else "-" for n in names]
        print(f"| {st.name} | {st.origin} | " + " | ".join(cells) + " |")
    for name in names:
        print(f"\n{name} proposed:")
        for create in scored[name].proposed:
            flag = " (useless)" if create in scored[name].useless else ""
            print(f"  {create}{flag}")
        for bad in scored[name].invalid:
            print(f"  invalid: {bad}")
    if unoptimised:
        print(f"\nPoWA's unoptimised quals: {len(unoptimised)}")


if __name__ == "__main__":
    raise SystemExit(main())
