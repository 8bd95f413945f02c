"""``dbopt advisor``: from firing alerts to signed index commands, and verification of the result.

One confluent-kafka consumer (group ``DBOPT_ADVISOR_GROUP``) reads four topics:

* alerts — a firing SLO/regression alert with a fingerprint and query text marks the
  fingerprint as needing help; a resolved one clears it;
* latency windows — the history behind call rates, write rates and verification;
* commands — the evidence (fingerprints) of every index command, for the verifier;
* results — an ``applied`` CREATE INDEX starts a verification.

Each loop turn (:meth:`Advisor.tick`) evaluates the fingerprints that fired since the last turn
together against ``DBOPT_DATABASE_URL`` (HypoPG, see ``evaluate``), sends one signed command per
chosen index and per stale table, and judges due verifications: keep (a ``kept`` result) or
roll back (a signed ``drop_index`` command from origin ``verifier``). Offsets are committed
after the turn that handled them: a crash repeats work, and deterministic command ids make the
repeat harmless. New consumer groups start at the end of each topic.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
import time
from typing import Any, Callable

import psycopg
from confluent_kafka import OFFSET_INVALID, Consumer, KafkaException, Producer, TopicPartition

from streams.advise.analysis import analyze_sql
from streams.advise.candidates import created_index_name
from streams.advise.evaluate import EvaluationError, Evaluator, QueryInput
from streams.advise.records import analyze_command, index_command, kept_result, rollback_command
from streams.advise.verify import Verifier
from streams.cli_args import add_logging_arguments
from streams.commands import command_key
from streams.config import Settings, load_settings
from streams.kafka.topics import ensure_topics
from streams.records import Alert, OptimizationCommand, OptimizationResult, Record, WindowStats
from streams.serde import Codec, DecodeError

HELP = "run the advisor: firing alerts -> HypoPG-checked index commands; verify applied indexes, roll back"

log = logging.getLogger("dbopt.advisor")
_ACTIONABLE = frozenset({"slo", "regression"})
_RETRY_MS = 10_000


class Advisor:
    """The advisor's state and decisions; I/O goes through ``send`` and the evaluator factory."""

    def __init__(
        self,
        settings: Settings,
        send: Callable[[str, str, Record], None],
        connect: Callable[[], Evaluator] | None = None,
    ) -> None:
        self.settings = settings
        self.key = command_key(settings)
        self.send = send  # (topic, key, record)
        self.connect = connect or (lambda: Evaluator.connect(settings))
        self.verifier = Verifier(settings.advise)
        self.firing: dict[str, Alert] = {}  # fingerprint -> latest firing alert
        self.waiting: set[str] = set()  # firing fingerprints not evaluated yet
        self.proposed: set[str] = set()  # command ids sent by this process
        self.retry_at_ms = 0  # after a database failure, evaluation waits until then

    # --- input -----------------------------------------------------------------------------------

    def on_alert(self, alert: Alert) -> None:
        fp = alert.fingerprint
        if not fp or alert.kind not in _ACTIONABLE:
            return
        if alert.state == "resolved":
            self.firing.pop(fp, None)
            self.waiting.discard(fp)
        elif alert.query_text:
            if fp not in self.firing:
                self.waiting.add(fp)
            self.firing[fp] = alert

    def on_window(self, window: WindowStats) -> None:
        self.verifier.history.add(window)

    def on_command(self, command: OptimizationCommand) -> None:
        self.verifier.on_command(command)

    def on_result(self, result: OptimizationResult) -> None:
        created = created_index_name(result.sql)  # only CREATE INDEX results are verified
        pending = self.verifier.on_result(result, created and (result.index_name or created))
        if pending is not None:
            log.info("verifying %s on %s (applied at %d)", pending.index_name, pending.table, pending.applied_at)

    # --- work ------------------------------------------------------------------------------------

    def tick(self, now_ms: int | None = None) -> None:
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        if self.waiting and now_ms >= self.retry_at_ms:
            if not self._advise():
                self.retry_at_ms = now_ms + _RETRY_MS
        for pending, verdict in self.verifier.due(now_ms):
            if verdict.keep:
                log.info("keeping %s: %s", pending.index_name, verdict.reason)
                self.send(self.settings.topics.results, pending.command_id, kept_result(pending, verdict, now_ms))
            else:
                command = rollback_command(pending, verdict, self.key)
                log.warning("rolling back %s: %s (command %s)", pending.index_name, verdict.reason, command.command_id)
                self._send_command(command)

    def _send_command(self, command: OptimizationCommand) -> None:
        if command.command_id in self.proposed:
            return
        self.proposed.add(command.command_id)
        self.send(self.settings.topics.commands, command.command_id, command)

    def _advise(self) -> bool:
        """Evaluate the waiting fingerprints and send commands; False when the database failed."""
        fingerprints = sorted(self.waiting)
        history = self.verifier.history
        queries = [QueryInput.from_alert(self.firing[fp], history.calls_per_s(fp)) for fp in fingerprints]
        try:
            evaluator = self.connect()
        except (psycopg.Error, EvaluationError) as exc:
            log.error("cannot evaluate %d fingerprint(s) now, will retry: %s", len(queries), exc)
            return False
        try:
            tables = {t for q in queries for t in self._tables_of(q.fingerprint)}
            rates = {t: r for t in tables if (r := history.write_rate(t)) is not None}
            decision, _ = evaluator.advise(queries, write_rates=rates)
        except psycopg.OperationalError as exc:
            log.error("database unavailable during evaluation, will retry: %s", exc)
            return False
        finally:
            evaluator.close()
        self.waiting.clear()
        for proposal in decision.proposals:
            alert = self.firing.get(proposal.fingerprints[0])
            self._send_command(index_command(proposal, alert, self.key))
            log.info("proposed %s for %s", proposal.candidate.describe(), ", ".join(proposal.fingerprints))
        served = tuple(fingerprints)
        for stats, why in decision.analyze:
            self._send_command(analyze_command(stats, why, served, self.key))
        for fp, why in decision.unserved:
            log.info("no index for %s: %s", fp, why)
        return True

    def _tables_of(self, fingerprint: str) -> list[str]:
        try:
            return [t.table for t in analyze_sql(self.firing[fingerprint].query_text or "").tables]
        except ValueError:
            return []


def _start_at_end(consumer: Consumer, partitions: list[TopicPartition]) -> None:
    """On assignment: resume from committed offsets, else from the current end (resolved now,
    so a record produced after the advisor reported ready is never skipped)."""
    committed = consumer.committed(partitions, timeout=10)
    for tp, done in zip(partitions, committed):
        tp.offset = _end_offset(consumer, tp) if done.offset == OFFSET_INVALID or done.offset < 0 else done.offset
    consumer.assign(partitions)


def _end_offset(consumer: Consumer, tp: TopicPartition, timeout_s: float = 30.0) -> int:
    """The partition's high watermark, retried while a just-created topic has no leader yet."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return int(consumer.get_watermark_offsets(tp, timeout=5)[1])
        except KafkaException:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.2)


def run_advisor(
    settings: Settings,
    stop: threading.Event,
    ready: threading.Event | None = None,
    connect: Callable[[], Evaluator] | None = None,
) -> None:
    """Run until ``stop`` is set; ``ready`` is set once partitions are assigned and positioned."""
    ensure_topics(settings)
    codec = Codec.from_settings(settings)
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "enable.idempotence": True})

    def send(topic: str, key: str, record: Record) -> None:
        producer.produce(topic, key=key.encode(), value=codec.encode_record(record, topic=topic))

    advisor = Advisor(settings, send, connect)
    topics = settings.topics
    handlers: dict[str, tuple[type[Record], Callable[[Any], None]]] = {  # topic -> (record it carries, handler)
        topics.alerts: (Alert, advisor.on_alert),
        topics.latency_windows: (WindowStats, advisor.on_window),
        topics.commands: (OptimizationCommand, advisor.on_command),
        topics.results: (OptimizationResult, advisor.on_result),
    }
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": settings.advise.consumer_group,
            "enable.auto.commit": False,
            "auto.offset.reset": "latest",
        }
    )

    def on_assign(c: Consumer, partitions: list[TopicPartition]) -> None:
        _start_at_end(c, partitions)
        if ready is not None:
            ready.set()

    consumer.subscribe(list(handlers), on_assign=on_assign)
    try:
        while not stop.is_set():
            messages = consumer.consume(500, timeout=settings.advise.poll_timeout_s)
            for msg in messages:
                if msg.error() is not None:
                    log.warning("consumer: %s", msg.error())
                    continue
                try:
                    record = codec.decode_record(msg.value())
                except DecodeError as exc:
                    log.warning("skipping undecodable record on %s@%d: %s", msg.topic(), msg.offset(), exc)
                    continue
                expected, handle = handlers[msg.topic()]
                if not isinstance(record, expected):
                    log.warning("skipping a %s on %s@%d", record.SCHEMA, msg.topic(), msg.offset())
                    continue
                handle(record)
            advisor.tick()
            producer.flush(10)
            if messages:
                consumer.commit(asynchronous=False)
    finally:
        producer.flush(10)
        consumer.close()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_logging_arguments(parser)


def run(args: argparse.Namespace) -> int:
    settings = load_settings()
    command_key(settings)  # fail now, clearly, when DBOPT_COMMAND_KEY is missing
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    run_advisor(settings, stop)
    return 0
