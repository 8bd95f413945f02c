"""The one consume–process–produce loop of every confluent-kafka stage.

A stage (advisor, executor, notify, collect, serve, ...) is a :class:`Stage`: it says which topics
it reads and turns each decoded record into records to produce (:class:`Emit`). The loop does the
rest, with the same guarantees for every stage:

* **Committed-offset start.** A consumer group resumes where it committed; a new group starts at
  the beginning of each topic (``auto.offset.reset=earliest``). Nothing that must not be missed is
  skipped by "starting at the end".
* **At-least-once, never lost.** The offsets of a batch are committed only after every record the
  batch (and the turn's :meth:`Stage.tick`) produced is acknowledged by the broker and
  :meth:`Stage.checkpoint` has saved the stage's own state. A failed delivery is produced again,
  with backoff, until the broker takes it; the commit waits. A crash anywhere before the commit
  replays the batch, so a stage's side effects must be idempotent (deterministic ids, ledgers).
* **Clean shutdown.** Setting ``stop`` (see :func:`stop_on_signals` for SIGTERM/SIGINT) ends the
  loop after the current batch; a batch whose output is not acknowledged yet is not committed.
* **Health.** :class:`~streams.kafka.health.Health` is live while the loop turns and ready once
  partitions are assigned.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, TopicPartition
from prometheus_client import Counter

from streams.config import Settings
from streams.records import Record
from streams.serde import Codec, DecodeError

from . import clients
from .health import Health
from .topics import ensure_topics

log = logging.getLogger("dbopt.loop")

RECORDS_IN = Counter("dbopt_stage_records_in", "Records consumed by a stage, by topic.", ["stage", "topic"])
RECORDS_OUT = Counter("dbopt_stage_records_out", "Records a stage produced and the broker acknowledged.",
                      ["stage", "topic"])
UNDECODABLE = Counter("dbopt_stage_undecodable", "Consumed records that are not dbopt records.", ["stage", "topic"])
DELIVERY_RETRIES = Counter("dbopt_stage_delivery_retries", "Records produced again after a failed delivery.",
                           ["stage"])


class Stopped(Exception):
    """The loop was asked to stop while it waited; the current batch is not committed."""


@dataclass(frozen=True, slots=True)
class Incoming:
    """One consumed record. ``record`` is the decoded typed record (None for a raw stage)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    record: Record | None


@dataclass(frozen=True, slots=True)
class Emit:
    """One record to produce, keyed by ``key``."""

    topic: str
    key: str
    record: Record


class Stage:
    """What a stage implements; the defaults suit a stage with nothing to say about that step."""

    name: str = "stage"
    #: False: values are handed over as bytes (``Incoming.record`` is None), e.g. OTLP protobuf
    decode_values: bool = True

    def topics(self) -> list[str]:
        raise NotImplementedError

    def restore(self) -> None:
        """Load the stage's own durable state; called once before the first poll."""

    def on_record(self, incoming: Incoming) -> Iterable[Emit]:
        raise NotImplementedError

    def on_undecodable(self, incoming: Incoming, error: DecodeError) -> Iterable[Emit]:
        log.warning("%s: skipping undecodable record %s[%d]@%d: %s", self.name, incoming.topic,
                    incoming.partition, incoming.offset, error)
        return ()

    def tick(self, now_ms: int) -> Iterable[Emit]:
        """Called every loop turn, also when no record arrived (timers, verdicts, retries)."""
        return ()

    def checkpoint(self) -> None:
        """Save the stage's own state: the turn's output is acknowledged, its offsets not yet committed."""

    def finished(self) -> bool:
        """True ends the loop (bounded runs such as ``--once``)."""
        return False


def stop_on_signals(stop: threading.Event) -> None:
    """SIGTERM and SIGINT set ``stop`` (call from the main thread)."""
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())


class _Sender:
    """Produces a turn's records and waits until the broker has acknowledged every one."""

    def __init__(self, settings: Settings, stage: Stage, codec: Codec, stop: threading.Event,
                 health: Health) -> None:
        self.producer = clients.producer(settings)
        self.stage, self.codec, self.stop, self.health = stage, codec, stop, health

    def send(self, emits: list[Emit]) -> None:
        pending = [(e, self.codec.encode_record(e.record, topic=e.topic)) for e in emits]
        delay = 0.5
        while pending:
            outcomes: list[tuple[tuple[Emit, bytes], KafkaError | None]] = []
            for item in pending:
                self._produce(item, outcomes)
            while self.producer.flush(1.0) > 0:
                self.health.beat()
                if self.stop.is_set():
                    raise Stopped()
            pending = []
            for item, err in outcomes:
                if err is None:
                    RECORDS_OUT.labels(self.stage.name, item[0].topic).inc()
                else:
                    pending.append(item)
            if not pending:
                if delay > 0.5:  # recovered from failed deliveries
                    self.health.set_ready(self.health.ready_event.is_set())
                return
            DELIVERY_RETRIES.labels(self.stage.name).inc(len(pending))
            problem = f"{len(pending)} record(s) not delivered: {next(e for _, e in outcomes if e is not None)}"
            log.warning("%s: %s; producing again in %.1fs", self.stage.name, problem, delay)
            self.health.set_ready(self.health.ready_event.is_set(), problem)
            if self.stop.wait(delay):
                raise Stopped()
            delay = min(delay * 2, 30.0)

    def _produce(self, item: tuple[Emit, bytes], outcomes: list[tuple[tuple[Emit, bytes], KafkaError | None]]) -> None:
        emit, value = item

        def delivered(err: KafkaError | None, _msg: Message) -> None:
            outcomes.append((item, err))

        while True:
            try:
                self.producer.produce(emit.topic, key=emit.key.encode(), value=value, on_delivery=delivered)
                return
            except BufferError:  # the local queue is full: let it drain
                self.producer.poll(0.1)

    def close(self) -> None:
        self.producer.flush(10)


def run_stage(
    settings: Settings,
    stage: Stage,
    *,
    group_id: str,
    stop: threading.Event,
    health: Health | None = None,
    batch_size: int = 500,
    poll_timeout_s: float = 0.5,
    consumer_overrides: dict[str, Any] | None = None,
) -> None:
    """Run ``stage`` until ``stop`` is set or the stage is finished (see the module docstring)."""
    health = health or Health(stage.name)
    ensure_topics(settings)
    codec = Codec.from_settings(settings)
    sender = _Sender(settings, stage, codec, stop, health)
    consumer = clients.consumer(settings, group_id, **(consumer_overrides or {}))

    def on_assign(_c: Any, partitions: list[TopicPartition]) -> None:
        log.info("%s: assigned %d partition(s)", stage.name, len(partitions))
        health.set_ready(True)

    def on_revoke(_c: Any, partitions: list[TopicPartition]) -> None:
        log.info("%s: %d partition(s) revoked", stage.name, len(partitions))

    try:
        stage.restore()
        topics = stage.topics()
        if topics:
            consumer.subscribe(topics, on_assign=on_assign, on_revoke=on_revoke)
        else:  # a stage that only produces (dbopt collect): each turn waits poll_timeout_s, then ticks
            health.set_ready(True)
        while not stop.is_set() and not stage.finished():
            health.beat()
            messages = consumer.consume(batch_size, timeout=poll_timeout_s) if topics else _idle(stop, poll_timeout_s)
            emits: list[Emit] = []
            offsets: dict[tuple[str, int], int] = {}
            for msg in messages:
                if msg.error() is not None:
                    log.warning("%s: consumer: %s", stage.name, msg.error())
                    continue
                topic, partition, offset = _position(msg)
                offsets[(topic, partition)] = offset + 1
                RECORDS_IN.labels(stage.name, topic).inc()
                emits.extend(_handle(stage, codec, msg))
            emits.extend(stage.tick(int(time.time() * 1000)))
            sender.send(emits)
            stage.checkpoint()
            if offsets:
                _commit(consumer, offsets, stage.name)
    except Stopped:
        log.info("%s: stopped before its last batch was acknowledged; it is consumed again on restart",
                 stage.name)
    finally:
        health.set_ready(False, "stopped")
        sender.close()
        consumer.close()


def _idle(stop: threading.Event, seconds: float) -> list[Message]:
    stop.wait(seconds)
    return []


def _position(msg: Message) -> tuple[str, int, int]:
    """Topic, partition and offset of a consumed record (set on every message without an error)."""
    topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
    assert topic is not None and partition is not None and offset is not None
    return topic, partition, offset


def _handle(stage: Stage, codec: Codec, msg: Message) -> Iterable[Emit]:
    value = msg.value() or b""
    raw = Incoming(*_position(msg), msg.key(), value, None)
    if not stage.decode_values:
        return stage.on_record(raw)
    try:
        record = codec.decode_record(value)
    except DecodeError as exc:
        UNDECODABLE.labels(stage.name, raw.topic).inc()
        return stage.on_undecodable(raw, exc)
    return stage.on_record(Incoming(raw.topic, raw.partition, raw.offset, raw.key, value, record))


def _commit(consumer: Any, offsets: dict[tuple[str, int], int], name: str) -> None:
    try:
        consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()], asynchronous=False)
    except KafkaException as exc:  # e.g. a rebalance took the partitions: they are consumed again
        log.warning("%s: offsets not committed (the records are redelivered): %s", name, exc)
