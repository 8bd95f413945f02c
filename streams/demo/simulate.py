"""``dbopt simulate``: the wedding platform's services running real queries through the SDK.

Each service (booking, vendor, payment, ...) gets its own EventProducer, a psycopg_pool
ConnectionPool watched by ``streams.client.watch_pool`` (PoolSnapshots every few seconds) and a
few worker threads that check a connection out per request; each statement runs on a connection
instrumented by ``streams.client.instrument``, so it becomes a QueryEvent exactly as in a real
microservice. The offered load is open-loop (``streams.demo.workload.Pacer``); the achieved rate is
reported as measured. The ``wedding-day`` profile has the notification service keep its connection
while it "calls the SMS provider", with more threads than its pool has connections: the pool
saturates and ``dbopt worker`` raises a pool alert with a recommended size.
"""

from __future__ import annotations

import argparse
import random
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, TextIO

import psycopg
from psycopg import sql
from psycopg_pool import ConnectionPool

from streams import db
from streams.cli_args import add_logging_arguments, positive_float, positive_int
from streams.client import EventProducer, instrument, watch_pool
from streams.client.pool import percentile
from streams.config import Settings, load_settings
from streams.demo.schema import TABLE_NAMES
from streams.demo.workload import (
    PROFILES,
    SERVICES,
    Call,
    Pacer,
    Population,
    Query,
    pick,
    service_rates,
    threads_for,
)
from streams.kafka.topics_cli import ready_to_produce

HELP = "run the wedding platform's services against the demo database, emitting QueryEvents via the SDK"
STATEMENT_TIMEOUT_MS = 15_000
CHECKOUT_TIMEOUT_S = 5.0  # a request waits this long for a pooled connection, then fails (PoolTimeout)
POOL_SNAPSHOT_S = 5.0


class SimulateError(RuntimeError):
    """The simulation cannot start; the message says why."""


# -- statistics ------------------------------------------------------------------------------


@dataclass
class ServiceStats:
    """What one service's workers did; updated from several threads."""

    sent: int = 0
    errors: int = 0
    latencies: dict[str, list[float]] = field(default_factory=dict)  # query name -> client-side ms
    error_kinds: Counter[str] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record(self, query: str, ms: float | None, error: str | None = None) -> None:
        with self._lock:
            self.sent += 1
            if error is None and ms is not None:
                self.latencies.setdefault(query, []).append(ms)
            else:
                self.errors += 1
                self.error_kinds[error or "unknown"] += 1

    def all_latencies(self) -> list[float]:
        with self._lock:
            return [ms for values in self.latencies.values() for ms in values]


def progress_line(elapsed: float, target: float, stats: dict[str, ServiceStats]) -> str:
    sent = sum(s.sent for s in stats.values())
    errors = sum(s.errors for s in stats.values())
    rate = sent / elapsed if elapsed > 0 else 0.0
    per_service = " ".join(f"{name} {s.sent}" for name, s in stats.items())
    return f"[{elapsed:6.1f}s] sent {sent:,}  {rate:7.1f} q/s (target {target:.1f})  errors {errors} | {per_service}"


def summary_lines(
    window: float, rates: dict[str, float], stats: dict[str, ServiceStats], pacers: dict[str, Pacer],
    events: dict[str, tuple[int, int]],
) -> list[str]:
    """The end-of-run report: per service, then the slowest queries, then what the SDK sent."""
    lines = [
        f"{'service':<13} {'target/s':>9} {'achieved/s':>10} {'sent':>8} {'errors':>7} {'p50 ms':>8} {'p95 ms':>8}"
        f" {'events':>8} {'dropped':>8}"
    ]
    for name, s in stats.items():
        values = s.all_latencies()
        p50, p95 = (f"{percentile(values, 50):.1f}", f"{percentile(values, 95):.1f}") if values else ("-", "-")
        sent_events, dropped = events.get(name, (0, 0))
        lines.append(
            f"{name:<13} {rates[name]:>9.1f} {s.sent / window:>10.1f} {s.sent:>8,} {s.errors:>7,} {p50:>8} {p95:>8}"
            f" {sent_events:>8,} {dropped:>8,}"
        )
    skipped = sum(p.skipped for p in pacers.values())
    if skipped:
        lines.append(f"the database could not keep up: {skipped:,} scheduled queries were skipped")
    by_query = [(q, ms) for s in stats.values() for q, ms in s.latencies.items()]
    slowest = sorted(by_query, key=lambda item: percentile(item[1], 95), reverse=True)[:5]
    if slowest:
        lines.append("slowest queries (client-side p95): " + ", ".join(
            f"{q} {percentile(ms, 95):.1f} ms (n={len(ms)})" for q, ms in slowest
        ))
    kinds = Counter[str]()
    for s in stats.values():
        kinds.update(s.error_kinds)
    if kinds:
        lines.append("errors: " + ", ".join(f"{k} x{n}" for k, n in kinds.most_common()))
    return lines


# -- database I/O ----------------------------------------------------------------------------


def read_population(settings: Settings, url: str | None) -> Population:
    """Highest id of every demo table; a clear error when the demo database is not there."""
    schema = db.target_schema(settings)
    try:
        with db.connect(settings, url=url, application_name="dbopt-simulate") as conn:
            missing = [name for name in TABLE_NAMES if not db.table_exists(conn, schema, name)]
            if missing:
                raise SimulateError(f"demo tables missing ({', '.join(missing)}): run `dbopt demo-db init` first")
            counts = {
                name: conn.execute(
                    sql.SQL("SELECT coalesce(max(id), 0) FROM {}").format(sql.Identifier(schema, name))
                ).fetchone()[0]  # type: ignore[index]
                for name in TABLE_NAMES
            }
    except psycopg.OperationalError as exc:
        raise SimulateError(f"cannot reach the demo database: {exc}") from None
    empty = [name for name in ("vendors", "weddings", "bookings") if counts[name] == 0]
    if empty:
        raise SimulateError(f"demo tables are empty ({', '.join(empty)}): run `dbopt demo-db init`")
    return Population(**{name: int(count) for name, count in counts.items()})


def execute(conn: psycopg.Connection[Any], query: Query, call: Call, producer: EventProducer) -> None:
    """Run one query on an instrumented connection (the SDK emits the event)."""
    instrument(conn, producer, **call.context)  # this request's business context
    if query.inline:
        text = psycopg.ClientCursor(conn).mogrify(query.sql, call.params)
        cursor = conn.execute(text)
    else:
        cursor = conn.execute(query.sql, call.params)
    if cursor.description is not None:
        cursor.fetchall()


def service_pool(settings: Settings, url: str | None, service: str, max_size: int) -> ConnectionPool[Any]:
    """A simulated service's pool: its unqualified statements resolve through the configured search path."""
    conninfo, kwargs = db.connection_args(
        settings, url=url, application_name=f"dbopt-sim-{service}", session={"statement_timeout": STATEMENT_TIMEOUT_MS},
    )
    return ConnectionPool(conninfo, kwargs=kwargs, min_size=1, max_size=max_size, timeout=CHECKOUT_TIMEOUT_S,
                          name=f"sim-{service}", open=True)


@dataclass
class Worker:
    service: str
    pool: ConnectionPool[Any]
    hold_s: float  # the request keeps its connection this long after its query
    pacer: Pacer
    producer: EventProducer
    population: Population
    stats: ServiceStats
    rng: random.Random
    stop: threading.Event

    def run(self) -> None:
        while not self.stop.is_set():
            due = self.pacer.claim(time.monotonic())
            if due is None or self.stop.wait(max(0.0, due - time.monotonic())):
                return
            query = pick(self.rng, self.service)
            call = query.make(self.rng, self.population)
            try:  # a broken connection goes back to the pool, which replaces it
                with self.pool.connection() as conn:
                    started = time.perf_counter()
                    execute(conn, query, call, self.producer)
                    self.stats.record(query.name, (time.perf_counter() - started) * 1000)
                    if self.hold_s:
                        self.stop.wait(self.hold_s)
            except psycopg.Error as exc:  # PoolTimeout included: no connection within CHECKOUT_TIMEOUT_S
                self.stats.record(query.name, None, exc.sqlstate or type(exc).__name__)


# -- the run ---------------------------------------------------------------------------------


@dataclass
class Result:
    elapsed: float  # until the last in-flight query returned
    window: float  # the part of it queries were sent in: the duration, or less when interrupted
    rates: dict[str, float]
    stats: dict[str, ServiceStats]
    pacers: dict[str, Pacer]
    events: dict[str, tuple[int, int]]  # service -> (events sent, events dropped)
    interrupted: bool = False

    @property
    def sent(self) -> int:
        return sum(s.sent for s in self.stats.values())

    @property
    def errors(self) -> int:
        return sum(s.errors for s in self.stats.values())


def simulate(
    settings: Settings,
    url: str | None,
    rates: dict[str, float],
    duration: float,
    *,
    workers: int | None = None,
    seed: int | None = None,
    progress: Callable[[float, dict[str, ServiceStats]], None] | None = None,
    progress_every: float = 1.0,
    stop: threading.Event | None = None,
    hold_ms: Mapping[str, float] | None = None,
    pool_size: Mapping[str, int] | None = None,
) -> Result:
    """Run the services at ``rates`` (queries/s) for ``duration`` seconds; returns what happened.

    ``hold_ms`` and ``pool_size`` per service as in :class:`streams.demo.workload.Profile`."""
    population = read_population(settings, url)
    stop = stop or threading.Event()
    hold_ms, pool_size = hold_ms or {}, pool_size or {}
    seeder = random.Random(seed)
    start = time.monotonic()
    stats = {s: ServiceStats() for s in rates}
    pacers = {s: Pacer(rate, start, start + duration) for s, rate in rates.items()}
    producers = {s: EventProducer(settings, service=f"{s}-service") for s in rates}
    count = {s: workers or threads_for(rate, hold_ms.get(s, 0.0)) for s, rate in rates.items()}
    pools = {s: service_pool(settings, url, s, pool_size.get(s, count[s])) for s in rates}
    watches = [watch_pool(pools[s], producers[s], interval=POOL_SNAPSHOT_S) for s in rates]
    threads = [
        threading.Thread(
            target=Worker(s, pools[s], hold_ms.get(s, 0.0) / 1000, pacers[s], producers[s], population, stats[s],
                          random.Random(seeder.getrandbits(64)), stop).run,
            name=f"sim-{s}-{i}", daemon=True,
        )
        for s in rates
        for i in range(count[s])
    ]
    for thread in threads:
        thread.start()
    interrupted = False
    try:
        next_report = start + progress_every
        while alive := [t for t in threads if t.is_alive()]:
            alive[0].join(timeout=max(0.0, next_report - time.monotonic()))
            if time.monotonic() >= next_report:
                next_report += progress_every
                if progress is not None:
                    progress(time.monotonic() - start, stats)
    except KeyboardInterrupt:
        interrupted = True  # stop the workers, still flush the events and report
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=STATEMENT_TIMEOUT_MS / 1000 + 5)
        elapsed = time.monotonic() - start
        for watch in watches:
            watch.stop()
        for pool in pools.values():
            pool.close()
        for producer in producers.values():
            producer.close(timeout=10.0)
    events = {s: (p.sent, sum(p.dropped.values())) for s, p in producers.items()}
    return Result(elapsed, min(elapsed, duration), rates, stats, pacers, events, interrupted)


# -- command line ----------------------------------------------------------------------------


def services_arg(raw: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(n.strip() for n in raw.split(",") if n.strip()))
    unknown = [n for n in names if n not in SERVICES]
    if not names or unknown:
        raise argparse.ArgumentTypeError(
            f"unknown service(s) {', '.join(unknown) or '(none given)'}; choose from {','.join(SERVICES)}"
        )
    return names


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        f"{HELP}. The total rate is RATE (the off-season base) times the profile's multiplier per "
        "service; the booking service's vendor-schedule query is slow until bookings gets an index."
    )
    profiles = "; ".join(f"{p.name}: {p.description}" for p in PROFILES.values())
    parser.add_argument("--profile", choices=list(PROFILES), default="off-season", help=f"season ({profiles})")
    parser.add_argument("--rate", type=positive_float, default=20.0,
                        help="off-season base rate in queries/s over all services (default 20)")
    parser.add_argument("--duration", type=positive_float, default=60.0, help="seconds to run (default 60)")
    parser.add_argument("--services", type=services_arg, default=SERVICES,
                        help=f"comma-separated subset of {','.join(SERVICES)} (default: all)")
    parser.add_argument("--workers", type=positive_int, default=None,
                        help="worker threads per service (default: from the service's rate, 1-4; more for a "
                        "service that holds its connections); each service's pool has one connection per thread "
                        "unless the profile sizes it")
    parser.add_argument("--seed", type=int, default=None, help="random seed for a repeatable query sequence")
    parser.add_argument("--database-url", help="demo database (default: DBOPT_DATABASE_URL)")
    add_logging_arguments(parser)


def _progress_printer(out: TextIO, target: float) -> Callable[[float, dict[str, ServiceStats]], None]:
    """Carriage-return updates on a terminal; a plain line every 5 s otherwise (logs, pipes)."""
    tty = out.isatty()
    last = [0.0]

    def show(elapsed: float, stats: dict[str, ServiceStats]) -> None:
        line = progress_line(elapsed, target, stats)
        if tty:
            out.write("\r" + line + "\x1b[K")
        elif elapsed - last[0] >= 5.0:
            last[0] = elapsed
            out.write(line + "\n")
        out.flush()

    return show


def run(args: argparse.Namespace) -> int:
    settings = load_settings()
    profile = PROFILES[args.profile]
    rates = service_rates(profile, args.rate, args.services)
    target = sum(rates.values())
    print(
        f"simulating {args.profile} for {args.duration:g}s: target {target:.1f} q/s "
        f"(base {args.rate:g} q/s) over {', '.join(rates)}; events -> {settings.topics.query_events}",
        flush=True,
    )
    # the SDK would ensure its topic too, but in the background: a broker that cannot be used is said at once
    if not ready_to_produce(settings, ["query_events"], "dbopt simulate"):
        return 1
    stop = threading.Event()
    try:
        result = simulate(settings, args.database_url, rates, args.duration, workers=args.workers, seed=args.seed,
                          progress=_progress_printer(sys.stdout, target), stop=stop, hold_ms=profile.hold_ms,
                          pool_size=profile.pool_size)
    except SimulateError as exc:
        print(f"dbopt simulate: {exc}", file=sys.stderr)
        return 1
    if sys.stdout.isatty():
        print()
    print(f"done in {result.elapsed:.1f}s: {result.sent:,} queries, {result.sent / result.window:.1f} q/s achieved "
          f"(target {target:.1f}), {result.errors:,} errors")
    print("\n".join(summary_lines(result.window, rates, result.stats, result.pacers, result.events)))
    if result.interrupted:
        return 130
    return 1 if result.sent and result.errors == result.sent else 0
