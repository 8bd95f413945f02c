"""``dbopt collect``: one process per target database, reading it every ``DBOPT_COLLECT_INTERVAL_S``.

Each read produces one ServerSnapshot (``DBOPT_TOPIC_SERVER_SNAPSHOTS``), the StatementStats of the
statements that ran since the previous read (``DBOPT_TOPIC_STATEMENT_STATS``), and Alerts of kind
``statement`` for statements over their SLO (``DBOPT_TOPIC_ALERTS``), all keyed by the server name
(alerts by id). The stage runs in the shared loop (:mod:`streams.kafka.loop`) with no input topic:
the loop calls :meth:`CollectStage.tick` every turn and produces what it returns, retrying until the
broker acknowledges every record.

A database that cannot be reached (or a read that fails) is reported, never fatal: a ServerSnapshot
with ``up=false`` and the error, a warning in the log, ``dbopt_collect_up{server}`` 0 and /readyz
503; the next attempt waits 1 s, doubling up to ``DBOPT_COLLECT_RETRY_MAX_S``.
"""

from __future__ import annotations

import argparse
import logging
import threading
import time
from typing import Iterable

import psycopg
from prometheus_client import Counter, Gauge

from streams.cli_args import add_logging_arguments, positive_int
from streams.collect.core import (
    SloWatch,
    StatementRead,
    StatementStatsBuilder,
    biggest,
    deltas,
    down_snapshot,
    server_snapshot,
)
from streams.collect.read import Reader, server_name, target_database
from streams.config import Settings, load_settings
from streams.kafka.health import Health, serve
from streams.kafka.loop import Emit, Stage, run_stage, stop_on_signals

HELP = "read a database's own view (pg_stat_activity, pg_stat_statements deltas) into ServerSnapshot and StatementStats"

log = logging.getLogger("dbopt.collect")

UP = Gauge("dbopt_collect_up", "1 when the last read of the target database succeeded.", ["server"])
READS = Counter("dbopt_collect_reads", "Reads of the target database, by outcome.", ["server", "outcome"])
FIRST_RETRY_S = 1.0


class CollectStage(Stage):
    """Reads on :meth:`tick` when a read is due; nothing to consume."""

    name = "collect"

    def __init__(self, settings: Settings, health: Health | None = None, reads: int | None = None) -> None:
        self.settings = settings
        self.config = settings.collect
        self.health = health
        self.reads_left = reads
        self.server = server_name(settings)
        self.topics_ = settings.topics
        self.builder = StatementStatsBuilder(settings, self.server)
        self.slo = SloWatch(settings, self.server)
        self.reader: Reader | None = None
        self.previous: StatementRead | None = None
        self.missing_extension_logged = False
        self.due_ms = 0
        self.retry_s = FIRST_RETRY_S

    def topics(self) -> list[str]:
        return []

    def finished(self) -> bool:
        return self.reads_left is not None and self.reads_left <= 0

    def tick(self, now_ms: int) -> Iterable[Emit]:
        if now_ms < self.due_ms:
            return ()
        try:
            emits = self._read()
        except psycopg.Error as exc:
            return self._failed(exc, now_ms)
        self.due_ms = now_ms + int(self.config.interval_s * 1000)
        self.retry_s = FIRST_RETRY_S
        if self.reads_left is not None:
            self.reads_left -= 1
        UP.labels(self.server).set(1)
        READS.labels(self.server, "ok").inc()
        if self.health is not None:
            self.health.set_ready(True)
        return emits

    def _read(self) -> list[Emit]:
        if self.reader is None:
            self.reader = Reader(self.settings)
            log.info("collect: connected to %s", self.server)
        reader = self.reader
        facts = reader.facts()
        snapshot = server_snapshot(self.server, facts, reader.activity(), int(time.time() * 1000))
        emits = [Emit(self.topics_.server_snapshots, self.server, snapshot)]
        schema = reader.statements_schema()
        if schema is None:
            if not self.missing_extension_logged:
                log.warning("collect: pg_stat_statements is not installed in %s (CREATE EXTENSION pg_stat_statements "
                            "as its owner): reading connections only", facts.database)
                self.missing_extension_logged = True
            self.previous = None
            return emits
        current = reader.statements(schema)
        stats = [self.builder.build(d, current) for d in deltas(self.previous, current)]
        self.previous = current
        emits += [Emit(self.topics_.statement_stats, self.server, s) for s in biggest(stats, self.config.max_statements)]
        emits += [Emit(self.topics_.alerts, a.alert_id, a) for a in self.slo.judge(stats, current.at_ms)]
        return emits

    def _failed(self, exc: psycopg.Error, now_ms: int) -> list[Emit]:
        problem = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        log.warning("collect: cannot read %s: %s; next attempt in %.0f s", self.server, problem, self.retry_s)
        if self.reader is not None:
            self.reader.close()
            self.reader = None
        self.due_ms = now_ms + int(self.retry_s * 1000)
        self.retry_s = min(self.retry_s * 2, self.config.retry_max_s)
        UP.labels(self.server).set(0)
        READS.labels(self.server, "failed").inc()
        if self.health is not None:
            self.health.set_ready(False, f"database unreachable: {problem}")
        snapshot = down_snapshot(self.server, target_database(self.settings), problem, now_ms)
        return [Emit(self.topics_.server_snapshots, self.server, snapshot)]

    def close(self) -> None:
        if self.reader is not None:
            self.reader.close()
            self.reader = None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (f"{HELP}. Reads DBOPT_COLLECT_DATABASE_URL (default DBOPT_DATABASE_URL) every "
                          "DBOPT_COLLECT_INTERVAL_S as a read-only role that needs only pg_monitor.")
    parser.add_argument("--reads", type=positive_int, default=None,
                        help="stop after this many successful reads (default: run until stopped)")
    add_logging_arguments(parser)


def run(args: argparse.Namespace) -> int:
    settings = load_settings()
    stop = threading.Event()
    stop_on_signals(stop)
    health = Health("collect")
    if settings.collect.probe_port:
        probes = serve(health, settings.collect.probe_host, settings.collect.probe_port)
        log.info("probes on http://%s:%d", *probes.server_address[:2])
    stage = CollectStage(settings, health, reads=args.reads)
    log.info("collecting %s every %g s", stage.server, settings.collect.interval_s)
    try:
        run_stage(settings, stage, group_id=settings.collect.consumer_group, stop=stop, health=health,
                  poll_timeout_s=min(0.5, settings.collect.interval_s))
    finally:
        stage.close()
    return 0
