"""``dbopt pools``: every service's connection pools now, and the servers' connection budgets.

It reads the pool-snapshots and server-snapshots topics back over the advice window
(``DBOPT_POOLS_ADVICE_WINDOW_S``, or ``--since``) up to their current end, and runs them through
the same pure monitor as the worker (:class:`streams.pools.PoolMonitor`), so the table shows what
the worker judges: utilization, waits, checkout timeouts, the alert state, the recommended
``max_size`` (a recommendation, never applied) and each server's budget. ``--json`` prints the
same as one JSON object. Topics that do not exist: exit status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
import uuid
from datetime import datetime, timezone
from typing import Any, TextIO

from confluent_kafka import KafkaError, TopicPartition

from streams.cli_args import positive_float
from streams.config import Settings, load_settings
from streams.kafka import clients
from streams.kafka.consume import NOT_FOUND
from streams.pools.monitor import CLOCK, BudgetView, PoolMonitor, PoolView
from streams.records import PoolSnapshot, ServerSnapshot
from streams.serde import Codec, DecodeError

HELP = "every service's connection pools now: utilization, waits, recommended max_size, the connection budget"
READ_TIMEOUT_S = 30.0


class MissingTopic(LookupError):
    """A topic to read is not on the broker."""


def read_snapshots(settings: Settings, since_ms: int) -> list[PoolSnapshot | ServerSnapshot]:
    """Pool and server snapshots written since ``since_ms``, up to each partition's current end."""
    consumer = clients.consumer(settings, f"dbopt-pools-{uuid.uuid4().hex}", enable_partition_eof=True)
    codec = Codec.from_settings(settings)
    try:
        wanted = []
        for topic in (settings.topics.pool_snapshots, settings.topics.server_snapshots):
            meta = consumer.list_topics(topic, timeout=10).topics.get(topic)
            if meta is None or (meta.error is not None and meta.error.code() in NOT_FOUND):
                raise MissingTopic(topic)
            wanted += [TopicPartition(topic, p, since_ms) for p in sorted(meta.partitions)]
        starts = consumer.offsets_for_times(wanted, timeout=10)
        consumer.assign(starts)
        open_ = {(tp.topic, tp.partition) for tp in starts if tp.offset >= 0}
        records: list[PoolSnapshot | ServerSnapshot] = []
        deadline = time.monotonic() + READ_TIMEOUT_S
        while open_ and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            error = msg.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    open_.discard((msg.topic(), msg.partition()))
                continue
            try:
                record = codec.decode_record(msg.value())
            except DecodeError:
                continue  # the worker sends those to the DLQ
            if isinstance(record, (PoolSnapshot, ServerSnapshot)):
                records.append(record)
        return sorted(records, key=lambda r: r.snapshot_time)
    finally:
        consumer.close()


def current_state(settings: Settings, since_ms: int) -> tuple[PoolMonitor, dict[str, Any]]:
    monitor = PoolMonitor(settings)
    state: dict[str, Any] = {}
    for record in read_snapshots(settings, since_ms):
        for key, value in monitor.on_record(record, state, record.snapshot_time).state.items():
            if value is None:
                state.pop(key, None)
            else:
                state[key] = value
    return monitor, state


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, timezone.utc).isoformat(timespec="seconds")


def as_json(pools: list[PoolView], budgets: list[BudgetView], as_of: int) -> dict[str, Any]:
    return {
        "as_of": _iso(as_of) if as_of else None,
        "pools": [{**dataclasses.asdict(p), "advice": {**dataclasses.asdict(p.advice), "text": p.advice.describe()},
                   "last_seen": _iso(p.last_seen)} for p in pools],
        "servers": [{**dataclasses.asdict(b), "contributors": [
            {"service": s, "pool": p, "instances": n, "max_size": m} for s, p, n, m in b.contributors
        ]} for b in budgets],
    }


def print_table(pools: list[PoolView], budgets: list[BudgetView], as_of: int, out: TextIO) -> None:
    if not pools and not budgets:
        out.write("no pool or server snapshots in the window: services report pools with "
                  "streams.client.watch_pool, servers with dbopt collect\n")
        return
    out.write(f"as of {_iso(as_of)}\n")
    header = (f"{'service':<22} {'pool':<10} {'inst':>4} {'in use':>9} {'util':>5} {'wait':>5} {'t/o':>4} "
              f"{'wait p95':>9} {'advice':>7}  {'alert':<7} note")
    out.write(header + "\n")
    for p in pools:
        p95 = f"{p.checkout_wait_p95_ms:.0f} ms" if p.checkout_wait_p95_ms is not None else "-"
        advice = "held" if p.advice.held else str(p.advice.recommended or "-")
        note = (f"peak demand {p.advice.peak_demand}, x{p.advice.multiplier:g} {p.advice.season}"
                + (", capped by budget" if p.advice.capped else "") if not p.advice.held
                else "ceremony hours on a wedding day")
        out.write(f"{p.service:<22} {p.pool:<10} {p.instances:>4} {f'{p.in_use}/{p.max_size}':>9} "
                  f"{p.utilization:>5.0%} {p.waiting:>5} {p.timeouts:>4} {p95:>9} {advice:>7}  {p.alert:<7} {note}\n")
    for b in budgets:
        state = "down: " + (b.error or "") if not b.up else f"{b.total_connections} connected"
        verdict = "OVER BUDGET" if b.over else "within budget"
        out.write(f"server {b.server}: max_connections {b.max_connections} - {b.reserved} reserved = {b.allowed} "
                  f"allowed; pool maxima {b.pool_maxima} ({verdict}, alert {b.alert}); {state}\n")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="one JSON object instead of the table")
    parser.add_argument("--since", type=positive_float, metavar="S", default=None,
                        help="read this many seconds of snapshots (default DBOPT_POOLS_ADVICE_WINDOW_S)")


def run(args: argparse.Namespace) -> int:
    settings = load_settings()
    since_s = args.since or settings.pools.advice_window_s
    try:
        monitor, state = current_state(settings, int((time.time() - since_s) * 1000))
    except MissingTopic as exc:
        print(f"dbopt pools: topic {exc} does not exist (dbopt topics create)", file=sys.stderr)
        return 2
    pools, budgets = monitor.views(state)
    as_of = state.get(CLOCK) or 0
    if args.json:
        json.dump(as_json(pools, budgets, as_of), sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        print_table(pools, budgets, as_of, sys.stdout)
    return 0
