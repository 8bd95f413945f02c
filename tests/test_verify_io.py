"""`dbopt advisor` against the real broker and database: a firing alert becomes a signed index
command, and an applied index that slowed writes becomes a signed rollback command — also when
the advisor is killed between "index applied" and its verdict."""

from __future__ import annotations

import signal
import socket
import subprocess
import threading
import time
import urllib.request
import uuid
from typing import Iterator, Sequence

import msgspec
import psycopg
import pytest

from clienv import DBOPT, settings_env
from streams.advise.agent import run_advisor
from streams.commands import verify
from streams.config import Settings
from streams.kafka import clients
from streams.kafka.consume import assigned_consumer, read_messages
from streams.kafka.health import Health
from streams.records import Alert, OptimizationCommand, OptimizationResult, Record, WindowStats
from streams.serde import Codec
from test_advise_db import VENDOR_Q, bookings_db  # noqa: F401  (fixture)

pytestmark = pytest.mark.infra

KEY = "verify-io-test-key"
MIN = 60_000


@pytest.fixture
def advisor(settings: Settings, bookings_db: str) -> Iterator[Settings]:  # noqa: F811
    """A running advisor on this test's topics and scratch database."""
    adv = settings.advise.with_overrides(consumer_group=f"advisor-{uuid.uuid4().hex[:8]}", min_cost=500)
    s = settings.with_overrides(command_key=KEY, database_url=bookings_db, advise=adv)
    stop, health = threading.Event(), Health("advisor")
    thread = threading.Thread(target=run_advisor, args=(s, stop, health), daemon=True)
    thread.start()
    assert health.ready_event.wait(60), "advisor did not get its partitions"
    yield s
    stop.set()
    thread.join(30)
    assert not thread.is_alive()


def _produce(s: Settings, topic: str, records: Sequence[Record], key: str) -> None:
    codec = Codec.from_settings(s)
    producer = clients.producer(s)
    for record in records:
        producer.produce(topic, key=key.encode(), value=codec.encode_record(record, topic=topic))
    assert producer.flush(30) == 0


def _commands(s: Settings, want: int, timeout: float = 60.0) -> list[OptimizationCommand]:
    codec = Codec.from_settings(s)
    consumer = assigned_consumer(s, s.topics.commands)
    try:
        out = []
        deadline = time.monotonic() + timeout
        while len(out) < want and time.monotonic() < deadline:
            for msg in read_messages(consumer, max_messages=want - len(out), idle_timeout=5):
                if msg.error() is None:
                    record = codec.decode_record(msg.value())
                    assert isinstance(record, OptimizationCommand)
                    out.append(record)
        return out
    finally:
        consumer.close()


def _window(fp: str, start: int, p95: float, kind: str) -> WindowStats:
    return WindowStats(
        window_id=f"{fp}-{start}", window_kind="tumbling", window_start=start, window_end=start + MIN,
        service="booking-api", fingerprint=fp, context="booking", criticality="critical",
        count=600, errors=0, rows=600, min_ms=p95 / 4, max_ms=p95 * 2, sum_ms=600 * p95 / 2,
        p50_ms=p95 / 2, p95_ms=p95, p99_ms=p95 * 1.5, statement_type=kind, tables=("bookings",), emitted_at=start + MIN,
    )


def _alert(now: int) -> Alert:
    return Alert(
        alert_id="a1", state="firing", severity="critical", kind="slo", service="booking-api", context="booking",
        fingerprint="fp-vendor", p95_ms=180.0, threshold_ms=50.0, window_start=now - MIN, window_end=now,
        query_text=VENDOR_Q, created_at=now,
    )


def _applied(command: OptimizationCommand, applied_at: int) -> OptimizationResult:
    return OptimizationResult(
        command_id=command.command_id, status="applied", reason="created", table=command.table, sql=command.sql,
        rollback_sql=command.rollback_sql, finished_at=applied_at, duration_ms=120.0,
        cost_before=command.cost_before, cost_after=command.cost_after, executor_id="test",
    )


def _windows(first: int, after: bool) -> list[WindowStats]:
    """Before the index (after=False) or after it: reads got faster, inserts 5x slower."""
    if not after:
        return [_window("fp-vendor", first - k * MIN, 180.0, "SELECT") for k in (3, 2, 1)] + [
            _window("fp-insert", first - k * MIN, 2.0, "INSERT") for k in (3, 2, 1)]
    return [_window("fp-vendor", first + k * MIN, 12.0, "SELECT") for k in (1, 2, 3)] + [
        _window("fp-insert", first + k * MIN, 10.0, "INSERT") for k in (1, 2, 3)]


def test_alert_to_index_command_then_rollback_when_writes_regress(advisor: Settings) -> None:
    s = advisor
    now = int(time.time() * 1000)
    alert = _alert(now)
    _produce(s, s.topics.alerts, [alert], "a1")
    (command,) = _commands(s, 1)
    assert verify(command, KEY.encode())
    assert command.origin == "advisor" and command.action == "create_index"
    assert command.sql.startswith("CREATE INDEX CONCURRENTLY dbopt_idx_bookings_vendor_id")
    assert command.rollback_sql.startswith("DROP INDEX CONCURRENTLY public.dbopt_idx_bookings_vendor_id")
    assert command.fingerprints == ("fp-vendor",) and command.p95_before_ms == 180.0
    assert command.cost_after <= 0.5 * command.cost_before

    # the executor applied it: build the index for real, then report as the executor does
    with psycopg.connect(s.database_url.get_secret_value(), autocommit=True) as conn:
        conn.execute(command.sql)
    applied_at = (now // MIN - 6) * MIN + 1_000  # event time: a minute boundary just passed
    first = applied_at // MIN * MIN
    _produce(s, s.topics.latency_windows, _windows(first, False) + _windows(first, True), "bookings")
    _produce(s, s.topics.results, [_applied(command, applied_at)], command.command_id)

    commands = _commands(s, 2)
    assert len(commands) == 2, commands
    (rollback,) = [c for c in commands if c.command_id != command.command_id]  # partitions: any order
    assert verify(rollback, KEY.encode())
    assert rollback.origin == "verifier" and rollback.action == "drop_index", commands
    assert rollback.rollback_of == command.command_id and rollback.sql == command.rollback_sql
    assert "writes regressed" in rollback.reason and "2.0 -> 10.0" in rollback.reason
    # the condition resolves and fires again: nothing new, the index exists now (covered)
    _produce(s, s.topics.alerts, [msgspec.structs.replace(alert, alert_id="a2", state="resolved"),
                                  msgspec.structs.replace(alert, alert_id="a3")], "a2")
    time.sleep(3)
    assert len(_commands(s, 3, timeout=8)) == 2


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start(env: dict[str, str], port: int, log: object) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([DBOPT, "advisor"], env=env, stdout=log, stderr=subprocess.STDOUT)  # type: ignore[arg-type]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as answer:
                if answer.status == 200:
                    return proc
        except OSError:
            pass
        assert proc.poll() is None, "the advisor exited"
        time.sleep(0.3)
    raise AssertionError("the advisor did not become ready")


def _pending_saved(url: str, group: str, command_id: str) -> bool:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT to_regclass('dbopt.dbopt_advisor_state') IS NOT NULL").fetchone()
        if not row or not row[0]:
            return False
        row = conn.execute("SELECT state FROM dbopt.dbopt_advisor_state WHERE group_id = %s", (group,)).fetchone()
    return row is not None and command_id in row[0]["verifier"]["pending"]


def test_killed_between_applied_and_verdict_still_gets_the_verdict(
    settings: Settings, bookings_db: str, tmp_path: object  # noqa: F811
) -> None:
    group, port = f"advisor-{uuid.uuid4().hex[:8]}", _free_port()
    s = settings.with_overrides(command_key=KEY, database_url=bookings_db)
    env = settings_env(s, DBOPT_COMMAND_KEY=KEY, DBOPT_ADVISOR_GROUP=group, DBOPT_ADVISE_MIN_COST="500",
                       DBOPT_ADVISE_PROBE_PORT=str(port))
    log = open(f"{tmp_path}/advisor.log", "wb")  # noqa: SIM115 - both advisor runs write it; closed at the end
    proc = _start(env, port, log)
    try:
        now = int(time.time() * 1000)
        _produce(s, s.topics.alerts, [_alert(now)], "a1")
        (command,) = _commands(s, 1)
        with psycopg.connect(bookings_db, autocommit=True) as conn:
            conn.execute(command.sql)
        applied_at = (now // MIN - 6) * MIN + 1_000
        first = applied_at // MIN * MIN
        _produce(s, s.topics.latency_windows, _windows(first, False), "bookings")
        _produce(s, s.topics.results, [_applied(command, applied_at)], command.command_id)
        deadline = time.monotonic() + 30
        while not _pending_saved(bookings_db, group, command.command_id):
            assert time.monotonic() < deadline, "the pending verification was never saved"
            time.sleep(0.3)
        proc.send_signal(signal.SIGKILL)  # between "index applied" and the verdict
        proc.wait(10)
        _produce(s, s.topics.latency_windows, _windows(first, True), "bookings")  # arrive while it is down
        proc = _start(env, port, log)
        commands = _commands(s, 2)
        assert len(commands) == 2, commands
        (rollback,) = [c for c in commands if c.command_id != command.command_id]
        assert rollback.rollback_of == command.command_id and "writes regressed" in rollback.reason
        assert verify(rollback, KEY.encode())
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        log.close()
    with open(f"{tmp_path}/advisor.log") as f:
        output = f.read()
    assert proc.returncode == 0, output[-3000:]
    assert "restored: 1 firing fingerprint(s), 1 pending verification(s)" in output
