"""``dbopt demo``: the whole loop on one machine, shown live.

Creates the topics, makes sure the index-less demo database is there, starts the worker,
the advisor and the executor as child processes, runs the simulator, and prints what
flows through the topics: per-service and per-context p95 of every closed window,
alerts, commands and results. When the booking context breaches its SLO and later
recovers, it prints the time from the first breaching window to the recovery.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import TextIO

from confluent_kafka import KafkaException
from psycopg import sql

from streams import db
from streams.advise.state import TABLE as ADVISOR_STATE_TABLE
from streams.cli_args import add_logging_arguments, logging_argv, positive_float, positive_int
from streams.config import Settings, load_settings, run_dir
from streams.domain.slo import slo_ms
from streams.execute.audit import TABLE as AUDIT_TABLE
from streams.kafka.topics import ensure_topics
from streams.notify.ledger import FINAL, TABLE as LEDGER_TABLE
from streams.records import Alert, OptimizationCommand, OptimizationResult, WindowStats
from streams.serde import Codec, DecodeError

HELP = "run the whole loop locally and show it live: worker, advisor, executor and the simulator"

DEMO_DIR = run_dir() / "demo"
# every topic and consumer group of the demo starts with this: each run deletes what the last one
# left under it (never anything else) and starts clean
NAMESPACE = "dbopt-demo"
# after the recovery the demo waits this long at most for the verifier's verdict on the index
VERDICT_WAIT_S = 120.0


@dataclass
class RecoveryClock:
    """Time from the first breaching booking window to the first good one after an index."""

    context: str
    first_breach_end: int | None = None
    index_applied: bool = False
    recovered_end: int | None = None
    wall_breach: float | None = None
    wall_recovered: float | None = None
    verdict: str | None = None  # the verifier's: a kept result or a rollback

    def done(self) -> bool:
        """Recovered, and the verifier has judged the index (or did not within VERDICT_WAIT_S)."""
        if self.wall_recovered is None:
            return False
        return self.verdict is not None or time.monotonic() > self.wall_recovered + VERDICT_WAIT_S

    def observe(self, row: WindowStats, slo_ms: float) -> str | None:
        if row.context != self.context or row.fingerprint is not None or row.window_kind != "tumbling":
            return None
        breaching = row.p95_ms > slo_ms
        if breaching and self.first_breach_end is None:
            self.first_breach_end, self.wall_breach = row.window_end, time.monotonic()
            return f"first breaching {self.context} window: p95 {row.p95_ms:.1f} ms > SLO {slo_ms:.0f} ms"
        if self.index_applied and not breaching and self.first_breach_end is not None and self.recovered_end is None:
            self.recovered_end, self.wall_recovered = row.window_end, time.monotonic()
            seconds = (self.recovered_end - self.first_breach_end) / 1000
            return (
                f"RECOVERED: {self.context} p95 {row.p95_ms:.1f} ms <= SLO {slo_ms:.0f} ms; "
                f"{seconds:.0f} s from the first breaching window to recovery (event time), "
                f"{self.wall_recovered - (self.wall_breach or self.wall_recovered):.0f} s wall clock"
            )
        return None


@dataclass
class Children:
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        DEMO_DIR.mkdir(parents=True, exist_ok=True)
        log = (DEMO_DIR / f"{name}.log").open("wb")
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", *argv], env=env, stdout=log, stderr=subprocess.STDOUT
        )

    def check(self, out: TextIO) -> bool:
        for name, proc in self.procs.items():
            if proc.poll() is not None and not name.startswith("simulate"):
                out.write(f"!! {name} exited with {proc.returncode}; see {DEMO_DIR / (name + '.log')}\n")
                return False
        return True

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 20
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()


def demo_env(settings: Settings, window_s: int) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("DBOPT_KAFKA_BOOTSTRAP", settings.kafka_bootstrap)
    env.setdefault("DBOPT_DATABASE_URL", settings.database_url.get_secret_value())
    if not env.get("DBOPT_COMMAND_KEY"):
        key_file = DEMO_DIR / "command.key"
        DEMO_DIR.mkdir(parents=True, exist_ok=True)
        if not key_file.exists():
            key_file.write_text(secrets.token_hex(32))
        env["DBOPT_COMMAND_KEY"] = key_file.read_text().strip()
    # short windows so the loop closes within minutes; everything else is the product's default
    env.setdefault("DBOPT_WINDOW_TUMBLING_MS", str(window_s * 1000))
    env.setdefault("DBOPT_WINDOW_HOP_MS", str(window_s * 1000))
    env.setdefault("DBOPT_WINDOW_HOPPING_MS", str(window_s * 5000))
    env.setdefault("DBOPT_WINDOW_GRACE_MS", "2000")
    env.setdefault("DBOPT_WINDOW_IDLE_TIMEOUT_MS", "5000")
    env.setdefault("DBOPT_WORKER_TICK_INTERVAL_MS", "1000")
    env.update(namespace_env(settings))
    return env


def namespace_env(settings: Settings, namespace: str = NAMESPACE) -> dict[str, str]:
    """The demo's own topics (``dbopt-demo.<name>``) and consumer groups (``dbopt-demo-<stage>``):
    a run never reads what tests, the README's commands or an earlier run wrote to the product's."""
    topics = {f"DBOPT_TOPIC_{key.upper()}": f"{namespace}.{name.removeprefix('dbopt.')}"
              for key, name in settings.topics.all().items()}  # fmt: skip
    return topics | _group_env(namespace)


def _group_env(namespace: str) -> dict[str, str]:
    """The stages' consumer groups under ``namespace`` (the Faust agents' group derives from the
    worker's: :func:`streams.app.faust_app.agents_app_id`)."""
    return {
        "DBOPT_WORKER_APP_ID": namespace,
        "DBOPT_ADVISOR_GROUP": f"{namespace}-advisor",
        "DBOPT_EXECUTOR_GROUP": f"{namespace}-executor",
        "DBOPT_NOTIFY_GROUP": f"{namespace}-notify",
        "DBOPT_COLLECT_CONSUMER_GROUP": f"{namespace}-collect",
        "DBOPT_SERVE_CONSUMER_GROUP": f"{namespace}-serve",
    }


def in_namespace(name: str, namespace: str = NAMESPACE) -> bool:
    """A topic or group of the demo: the namespace, then ``.`` or ``-``."""
    return name == namespace or name.startswith((f"{namespace}.", f"{namespace}-"))


def reset_namespace(settings: Settings, out: TextIO, namespace: str = NAMESPACE, timeout: float = 60.0) -> None:
    """Delete the consumer groups and topics an earlier run left under ``namespace`` (the worker's
    changelogs included), the worker's local tables, the advisor's saved state and the deliveries
    notify had not finished, so nothing of it comes back; nothing outside the namespace is touched."""
    from streams.app.faust_app import agents_app_id, data_dir
    from streams.kafka import clients

    admin = clients.admin(settings)
    # the stages' groups asked by name first: right after the broker starts, a listing misses the
    # groups whose coordinator is still loading, and their offsets would outlive the deleted topics
    groups_env = _group_env(namespace)
    agents = agents_app_id(groups_env["DBOPT_WORKER_APP_ID"])
    try:
        found = clients.existing_groups(admin, [*groups_env.values(), agents], timeout=timeout)
    except TimeoutError as exc:
        raise SystemExit(f"demo: cannot reset the consumer groups: {exc}") from exc
    listed = admin.list_consumer_groups(request_timeout=10).result()
    groups = sorted(g for g in {*found, *(g.group_id for g in listed.valid)} if in_namespace(g, namespace))
    if groups:
        for group, future in admin.delete_consumer_groups(groups, request_timeout=10).items():
            try:
                future.result()
            except KafkaException as exc:  # a member still in it: a demo still running
                raise SystemExit(
                    f"demo: cannot reset consumer group {group} (is another demo running?): {exc}"
                ) from exc
    topics = [t for t in admin.list_topics(timeout=10).topics if in_namespace(t, namespace)]
    if topics:
        for future in admin.delete_topics(topics, operation_timeout=30).values():
            future.result()
        deadline = time.monotonic() + timeout
        while set(topics) & set(admin.list_topics(timeout=10).topics):
            if time.monotonic() > deadline:
                raise SystemExit(f"demo: the broker has not deleted {namespace}.* topics within {timeout:.0f} s")
            time.sleep(0.5)
        out.write(f"   deleted {len(topics)} topic(s) and {len(groups)} consumer group(s) of an earlier demo run\n")
    shutil.rmtree(data_dir(settings), ignore_errors=True)  # the agents' local tables match the deleted changelogs
    with db.connect(settings, application_name="dbopt-demo") as conn:
        schema = settings.executor.audit_schema
        advisor, ledger = sql.Identifier(schema, ADVISOR_STATE_TABLE), sql.Identifier(schema, LEDGER_TABLE)
        if db.table_exists(conn, schema, ADVISOR_STATE_TABLE):
            conn.execute(sql.SQL("DELETE FROM {} WHERE group_id = %s").format(advisor), (settings.advise.consumer_group,))
        if db.table_exists(conn, schema, LEDGER_TABLE):  # deliveries the last run's notify had not finished
            conn.execute(sql.SQL("DELETE FROM {} WHERE status <> ALL(%s)").format(ledger), (list(FINAL),))


def demo_tables_ready(settings: Settings, bookings: int) -> bool:
    with db.connect(settings, application_name="dbopt-demo") as conn:
        row = conn.execute(
            "SELECT reltuples FROM pg_class WHERE oid = to_regclass(format('%%I.bookings', %s::text)) AND relkind = 'r'",
            (db.target_schema(settings),),
        ).fetchone()
    return row is not None and row[0] >= bookings * 0.9


def reset_previous_run(settings: Settings, out: TextIO) -> None:
    """Drop indexes an earlier demo run made, so this run starts index-less again."""
    schema, audit = db.target_schema(settings), settings.executor.audit_schema
    with db.connect(settings, application_name="dbopt-demo") as conn:
        names = [
            r[0]
            for r in conn.execute(
                "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                "WHERE c.relname LIKE 'dbopt\\_idx\\_%%' AND c.relnamespace = to_regnamespace(%s)",
                (schema,),
            )
        ]
        for name in names:
            conn.execute(sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(sql.Identifier(schema, name)))
            out.write(f"   dropped {schema}.{name} left by an earlier demo run\n")
        if db.table_exists(conn, audit, AUDIT_TABLE):
            conn.execute(sql.SQL("DELETE FROM {}").format(sql.Identifier(audit, AUDIT_TABLE)))


def format_window(row: WindowStats, slo: float | None) -> str:
    start = time.strftime("%H:%M:%S", time.gmtime(row.window_start / 1000))
    who = row.context if row.fingerprint is None else row.fingerprint[:10]
    mark = "" if slo is None else ("  BREACH" if row.p95_ms > slo else "  ok")
    return (
        f"   {start} {row.service:<22} {who:<16} n={row.count:<6} "
        f"p50={row.p50_ms:7.1f} p95={row.p95_ms:7.1f} p99={row.p99_ms:7.1f} ms"
        + (f"  (SLO {slo:.0f}){mark}" if slo is not None else "")
    )


def watch(settings: Settings, children: Children, deadline: float, out: TextIO) -> RecoveryClock:
    from confluent_kafka import OFFSET_END, TopicPartition

    from streams.kafka import clients

    codec = Codec.from_settings(settings)
    topics = [
        settings.topics.latency_windows,
        settings.topics.alerts,
        settings.topics.commands,
        settings.topics.results,
    ]
    # a viewer: assigned by hand at the end of each partition, never joins its group nor commits
    consumer = clients.consumer(settings, f"dbopt-demo-view-{secrets.token_hex(4)}")
    metadata = consumer.list_topics(timeout=10)
    consumer.assign([TopicPartition(t, p, OFFSET_END) for t in topics for p in metadata.topics[t].partitions])
    clock = RecoveryClock(context="booking")
    try:
        while time.monotonic() < deadline and children.check(out) and not clock.done():
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            try:
                rec = codec.decode_record(msg.value())
            except DecodeError as exc:
                out.write(f"   (undecodable record on {msg.topic()}: {exc})\n")
                continue
            if isinstance(rec, WindowStats):
                if rec.window_kind != "tumbling" or rec.fingerprint is not None:
                    continue
                slo = slo_ms(rec.context, rec.window_start, settings.domain, settings.timezone)
                out.write(format_window(rec, slo) + "\n")
                note = clock.observe(rec, slo)
                if note:
                    out.write(f">> {note}\n")
            elif isinstance(rec, Alert):
                figure = (
                    f"p95 {rec.p95_ms:.1f} ms vs {rec.threshold_ms:.1f} ms"
                    if rec.kind in ("slo", "regression")
                    else rec.message
                )  # pool, budget, errors, surge, statement: the message has the figures and advice
                where = f"{rec.service}/{rec.context}" + (f" query {rec.fingerprint}" if rec.fingerprint else "")
                out.write(
                    f"!! ALERT {rec.state.upper()} {rec.severity} {rec.kind} {where} {figure}\n"
                )
            elif isinstance(rec, OptimizationCommand):
                out.write(f"-> COMMAND {rec.command_id[:12]} ({rec.origin}): {rec.sql}\n")
                if rec.origin == "verifier":
                    clock.verdict = rec.reason
            elif isinstance(rec, OptimizationResult):
                out.write(f"<- RESULT {rec.command_id[:12]} {rec.status}: {rec.reason}\n")
                if rec.status == "kept":
                    clock.verdict = rec.reason
                if rec.status == "applied" and (rec.index_name or "").rpartition(".")[2].startswith("dbopt_idx_"):
                    clock.index_applied = True
            out.flush()
    finally:
        consumer.close()
    return clock


def show_pools(settings: Settings, out: TextIO) -> None:
    """What `dbopt pools` shows: every pool's utilization, waits and recommended size, and the budget."""
    from streams.pools.cli import current_state, print_table
    from streams.pools.monitor import CLOCK

    monitor, state = current_state(settings, int((time.time() - 600) * 1000))
    pools, budgets = monitor.views(state)
    out.write("pools (dbopt pools):\n")
    print_table(pools, budgets, state.get(CLOCK) or 0, out)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--profile",
        default="peak-season",
        choices=["off-season", "peak-season", "proposal-surge", "saturday", "wedding-day"],
    )
    parser.add_argument(
        "--rate",
        type=positive_float,
        default=15.0,
        help="simulator base rate in queries/s before the profile multiplier (default 15)",
    )
    parser.add_argument(
        "--duration",
        type=positive_int,
        default=300,
        help="longest the demo runs, seconds (default 300; it stops after recovery)",
    )
    parser.add_argument(
        "--bookings",
        type=positive_int,
        default=1_000_000,
        help="bookings in the demo database when it must be created (default 1,000,000)",
    )
    parser.add_argument(
        "--window-seconds",
        type=positive_int,
        default=15,
        help="tumbling window size for the demo (default 15 s; the product default is 60 s)",
    )
    add_logging_arguments(parser)  # also given to the worker, advisor, executor and simulator


def run(args: argparse.Namespace) -> int:
    out = sys.stdout
    env = demo_env(load_settings(), args.window_seconds)
    settings = load_settings(env)  # the demo's own topics and groups
    if "DBOPT_FREEZE_WEEKDAYS" not in os.environ:
        env["DBOPT_FREEZE_WEEKDAYS"] = ""
        out.write("demo: freeze days disabled for the demo (set DBOPT_FREEZE_WEEKDAYS to keep them)\n")
    out.write(f"1. topics ({NAMESPACE}.*; to tail them: set -a; . {DEMO_DIR / 'env'}; set +a)\n")
    reset_namespace(settings, out)
    ensure_topics(settings)
    DEMO_DIR.mkdir(parents=True, exist_ok=True)
    (DEMO_DIR / "env").write_text("".join(f"{k}={v}\n" for k, v in sorted(namespace_env(load_settings()).items())))
    out.write("2. demo database\n")
    if not demo_tables_ready(settings, args.bookings):
        subprocess.run(
            [sys.executable, "-m", "streams.cli", "demo-db", "init", "--bookings", str(args.bookings)],
            check=True,
            env=env,
        )
    reset_previous_run(settings, out)
    children = Children()
    try:
        out.write(f"3. worker, advisor, executor (logs in {DEMO_DIR})\n")
        logging_options = logging_argv(args)
        children.start("worker", ["worker", *logging_options], env)
        children.start("advisor", ["advisor", *logging_options], env)
        children.start("executor", ["executor", *logging_options], env)
        from streams.serve.demo import demo_login  # dbopt serve: the live page, a demo operator, notify's links

        page = demo_login(env, settings, DEMO_DIR)
        children.start("serve", ["serve", *logging_options], env)
        out.write(f"   {page}\n")
        from streams.notify.demo import start_demo_slack, url_of  # dbopt notify -> a local Slack-compatible endpoint

        env["DBOPT_NOTIFY_SLACK_WEBHOOK_URL"] = url_of(start_demo_slack(out))
        children.start("notify", ["notify", *logging_options], env)
        children.start("collect", ["collect", *logging_options], env)  # the database's own view: the budget
        time.sleep(3)
        out.write(f"4. simulator: {args.profile} at base rate {args.rate}/s; windows of {args.window_seconds} s\n")
        children.start(
            "simulate",
            [
                "simulate",
                "--profile",
                args.profile,
                "--rate",
                str(args.rate),
                "--duration",
                str(args.duration),
                *logging_options,
            ],
            env,
        )
        out.write("   and the wedding-day notification service: its pool of 4 saturates -> a pool alert with advice\n")
        children.start(
            "simulate-pools",
            [
                "simulate",
                "--profile",
                "wedding-day",
                "--services",
                "notification",
                "--rate",
                str(args.rate),
                "--duration",
                str(min(args.duration, 120)),
                *logging_options,
            ],
            env,
        )
        clock = watch(settings, children, time.monotonic() + args.duration + 30, out)
    except KeyboardInterrupt:
        clock = None
    finally:
        children.stop()
    show_pools(settings, out)
    if clock is None or clock.recovered_end is None or clock.first_breach_end is None:
        out.write("demo ended before a breach and its recovery were both seen\n")
        return 1
    out.write(
        f"loop closed: {(clock.recovered_end - clock.first_breach_end) / 1000:.0f} s from the first breaching "
        f"window to recovery (target: under 120 s)\n"
    )
    out.write(f"verifier: {clock.verdict}\n" if clock.verdict else
              f"verifier: no verdict within {VERDICT_WAIT_S:.0f} s of the recovery\n")  # fmt: skip
    return 0
